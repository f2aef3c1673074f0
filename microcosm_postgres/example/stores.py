"""The example service's stores, bound as `company_store` and `employee_store`; `ExampleGraph` types them."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from microcosm.api import binding
from sqlalchemy import Select

from microcosm_postgres.example.models import Company, Employee
from microcosm_postgres.graph import Graph, GraphLike
from microcosm_postgres.store import Store

__all__ = [
    "CompanyStore",
    "EmployeeStore",
    "ExampleGraph",
]


@binding("company_store")
class CompanyStore(Store[Company]):
    def __init__(self, graph: GraphLike) -> None:
        super().__init__(graph, Company, auto_filter_fields=[Company.name])


@binding("employee_store")
class EmployeeStore(Store[Employee]):
    def __init__(self, graph: GraphLike) -> None:
        super().__init__(graph, Employee)

    def search_by_company(self, company_id: UUID, **kwargs: Any) -> list[Employee]:
        return self.search(company_id=company_id, **kwargs)

    def _filter(
        self, query: Select[tuple[Employee]], company_id: Any = None, first: Any = None, **filters: Any
    ) -> Select[tuple[Employee]]:
        if company_id is not None:
            query = query.where(Employee.company_id == company_id)
        if first is not None:
            query = query.where(Employee.first == first)
        filtered: Select[tuple[Employee]] = super()._filter(query, **filters)
        return filtered

    def _order_by(self, query: Select[tuple[Employee]], **filters: Any) -> Select[tuple[Employee]]:
        return query.order_by(Employee.last.asc())


class ExampleGraph(Graph, Protocol):
    """The example service's graph, its stores typed (a service declares its own the same way).

    `cast(ExampleGraph, create_object_graph(name="example"))` tells mypy what microcosm
    binds at run time.

    """

    @property
    def company_store(self) -> CompanyStore:
        """The `company_store` component."""
        ...

    @property
    def employee_store(self) -> EmployeeStore:
        """The `employee_store` component."""
        ...

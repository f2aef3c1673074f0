"""The example service's stores, bound as `company_store` and `employee_store`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from microcosm.api import binding
from sqlalchemy.orm import Query

from microcosm_postgres.example.models import Company, Employee
from microcosm_postgres.store import Store

__all__ = [
    "CompanyStore",
    "EmployeeStore",
]


@binding("company_store")
class CompanyStore(Store[Company]):
    def __init__(self, graph: Any) -> None:
        super().__init__(graph, Company, auto_filter_fields=[Company.name])


@binding("employee_store")
class EmployeeStore(Store[Employee]):
    def __init__(self, graph: Any) -> None:
        super().__init__(graph, Employee)

    def search_by_company(self, company_id: UUID, **kwargs: Any) -> list[Employee]:
        return self.search(company_id=company_id, **kwargs)

    def _filter(
        self, query: Query[Employee], company_id: Any = None, first: Any = None, **filters: Any
    ) -> Query[Employee]:
        if company_id is not None:
            query = query.filter(Employee.company_id == company_id)
        if first is not None:
            query = query.filter(Employee.first == first)
        return super()._filter(query, **filters)

    def _order_by(self, query: Query[Employee], **filters: Any) -> Query[Employee]:
        return query.order_by(Employee.last.asc())

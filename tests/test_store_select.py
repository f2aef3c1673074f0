"""One read path on SQLAlchemy 2 statements (issue #9): hooks take and return `Select`,
and 3.x overrides (that call .filter/.join/.order_by, or return a Query) keep working."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Select

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import ModelNotFoundError
from microcosm_postgres.example import Company, CompanyType, Employee
from microcosm_postgres.store import Store


class EmployeesOfPublicCompanies(Store[Employee]):
    """A 3.x-style store: joins in `_query`, filters and orders in the other hooks."""

    seen: list[Any]

    def __init__(self, graph: Any) -> None:
        super().__init__(graph, Employee, auto_filter_fields=[Employee.last])
        self.seen = []

    def _query(self, *criteria: Any) -> Any:
        query = super()._query(*criteria)
        self.seen.append(query)
        return query.join(Company, Company.id == Employee.company_id).filter(Company.type == CompanyType.public)

    def _filter(self, query: Any, company_name: Any = None, **filters: Any) -> Any:
        self.seen.append(query)
        if company_name is not None:
            query = query.filter(Company.name == company_name)
        return super()._filter(query, **filters)

    def _order_by(self, query: Any, **filters: Any) -> Any:
        self.seen.append(query)
        return query.order_by(Employee.first.desc())


class LegacyQueryStore(Store[Company]):
    """A 3.x override that builds a Query on the session, as 3.x services do."""

    def _query(self, *criteria: Any) -> Any:
        return self.session.query(Company).filter(Company.type == CompanyType.private, *criteria)


@pytest.fixture
def people(graph: Any, context: SessionContext) -> dict[str, Any]:
    with transaction():
        public = graph.company_store.create(Company(name="Public", type=CompanyType.public))
        private = graph.company_store.create(Company(name="Private", type=CompanyType.private))
        employees = graph.employee_store.create_many(
            [
                Employee(first="a", last="x", company_id=public.id),
                Employee(first="b", last="y", company_id=public.id),
                Employee(first="c", last="x", company_id=private.id),
            ]
        )
    return {"public": public, "private": private, "employees": employees}


def test_hooks_take_and_return_select(graph: Any, people: dict[str, Any]) -> None:
    store = EmployeesOfPublicCompanies(graph)
    assert [e.first for e in store.search()] == ["b", "a"]
    assert all(isinstance(statement, Select) for statement in store.seen)


def test_joins_filters_and_order_apply_to_every_read(graph: Any, people: dict[str, Any]) -> None:
    store = EmployeesOfPublicCompanies(graph)
    public_a, public_b, private_c = people["employees"]
    assert [e.first for e in store.search(last="x")] == ["a"]
    assert [e.first for e in store.search(company_name="Public", offset=1, limit=5)] == ["a"]
    assert store.count() == 2
    assert store.count(last="x") == 1
    assert store.retrieve(public_a.id) is public_a
    with pytest.raises(ModelNotFoundError):
        store.retrieve(private_c.id)
    second = store.search_first(offset=1)
    assert second is not None
    assert second.first == "a"
    page = store.search_page(limit=1)
    assert len(page.items) == 1
    assert store.search_page(limit=1, after=page.next_cursor).next_cursor is None


def test_delete_through_a_joining_hook_deletes_only_what_it_selects(graph: Any, people: dict[str, Any]) -> None:
    store = EmployeesOfPublicCompanies(graph)
    public_a, _, private_c = people["employees"]
    with pytest.raises(ModelNotFoundError), transaction():
        store.delete(private_c.id)
    with transaction():
        assert store.delete(public_a.id) is True
    assert sorted(e.first for e in graph.employee_store.search()) == ["b", "c"]


def test_a_hook_returning_a_query_still_works(graph: Any, people: dict[str, Any]) -> None:
    store = LegacyQueryStore(graph, Company, auto_filter_fields=[Company.name])
    assert [c.name for c in store.search()] == ["Private"]
    assert store.count() == 1
    assert store.count(name="Public") == 0
    assert store.retrieve(people["private"].id) is people["private"]
    with pytest.raises(ModelNotFoundError):
        store.retrieve(people["public"].id)
    with transaction():
        graph.employee_store.delete_many(Employee.company_id == people["private"].id)
        assert store.delete(people["private"].id) is True
    assert [c.name for c in graph.company_store.search()] == ["Public"]


def test_a_join_that_repeats_a_row_returns_it_once(graph: Any, people: dict[str, Any]) -> None:
    class CompaniesWithEmployees(Store[Company]):
        def _query(self, *criteria: Any) -> Any:
            return super()._query(*criteria).join(Employee, Employee.company_id == Company.id)

    store = CompaniesWithEmployees(graph, Company)
    assert sorted(str(c.name) for c in store.search()) == ["Private", "Public"]  # as Query.all() did

from __future__ import annotations

from typing import Any

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.diff import Change, Delta, Version
from microcosm_postgres.example import Company, CompanyType


def test_before_minus_after_is_the_delta_from_before_to_after() -> None:
    # microcosm-postgres 3.x: Version(before) - Version(after) gives Change(before, after).
    company = Company(name="Acme", type=CompanyType.private)
    before = Version(company)
    company.name = "Acme 2"
    company.type = CompanyType.public
    after = Version(company)
    delta = before - after
    assert isinstance(delta, Delta)
    assert delta == {
        "name": Change("Acme", "Acme 2"),
        "type": Change(CompanyType.private, CompanyType.public),
    }
    assert before.difference(after) == delta
    assert Delta(before, after) == delta
    assert (delta.left, delta.right) == (before, after)
    assert before["name"] == "Acme"
    assert set(before) >= {"id", "name", "type", "created_at"}
    assert Version(company) - Version(company) == {}
    assert Delta() == {}


def test_delta_of_mappings_with_different_keys() -> None:
    assert Delta({"a": 1, "b": 2}, {"b": 2, "c": 3}) == {"a": Change(1, None), "c": Change(None, 3)}


def test_update_with_diff_returns_the_delta_from_stored_to_new(graph: Any, context: SessionContext) -> None:
    with transaction():
        company = graph.company_store.create(Company(name="Acme", type=CompanyType.private))
    with transaction():
        _, delta = graph.company_store.update_with_diff(company.id, Company(name="Acme 2"))
    assert set(delta) == {"name", "updated_at"}
    assert delta["name"] == Change("Acme", "Acme 2")
    assert delta["updated_at"].before < delta["updated_at"].after

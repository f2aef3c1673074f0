"""Bulk writes (issue #9): create_many, update_many, delete_many, upsert, upsert_many."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import inspect, text, true

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DuplicateModelError, InvalidInputError, ReferencedModelError
from microcosm_postgres.example import Company, CompanyType, Employee
from microcosm_postgres.store import Store
from tests.models import Gadget


@pytest.fixture
def gadgets(graph: Any, context: SessionContext) -> Store[Gadget]:
    return Store(graph, Gadget, auto_filter_fields=[Gadget.name])


def committed(graph: Any, table: str, column: str = "name") -> list[Any]:
    with graph.postgres.connect() as connection:
        return sorted(connection.execute(text(f"SELECT {column} FROM {table}")).scalars())


@pytest.mark.postgres_commit
def test_create_many_inserts_in_one_statement(gadgets: Store[Gadget], statement_verbs: list[str], graph: Any) -> None:
    instances = [Gadget(name=f"g{index}", size=index) for index in range(200)]
    statement_verbs.clear()
    with transaction():
        created = gadgets.create_many(instances)
    assert created == instances
    assert statement_verbs.count("INSERT") == 1
    assert "SAVEPOINT" not in statement_verbs
    assert all(isinstance(gadget.id, UUID) and inspect(gadget).persistent for gadget in created)
    assert len(committed(graph, "test_gadget")) == 200
    assert gadgets.retrieve(instances[7].id) is instances[7]


@pytest.mark.postgres_commit
@pytest.mark.parametrize("in_block", [True, False], ids=["in-block", "outside"])
def test_a_refused_batch_writes_nothing(gadgets: Store[Gadget], graph: Any, in_block: bool) -> None:
    with transaction():
        gadgets.create(Gadget(name="taken"))
    batch = [Gadget(name="new-1"), Gadget(name="taken"), Gadget(name="new-2")]
    if in_block:
        with pytest.raises(DuplicateModelError), transaction():
            gadgets.create_many(batch)
    else:
        with pytest.raises(DuplicateModelError):
            gadgets.create_many(batch)
    assert committed(graph, "test_gadget") == ["taken"]
    assert gadgets.count() == 1


def test_update_many_and_delete_many_return_counts(gadgets: Store[Gadget], graph: Any) -> None:
    with transaction():
        loaded = gadgets.create_many([Gadget(name=f"g{index}", size=index % 3) for index in range(9)])
    before = loaded[0].updated_at
    with transaction():
        assert gadgets.update_many(Gadget.size == 0, size=10) == 3
    assert loaded[0].size == 10  # the loaded instance sees it
    assert loaded[0].updated_at > before
    assert gadgets.count(Gadget.size == 10) == 3
    with transaction():
        assert gadgets.delete_many(Gadget.size == 10) == 3
        assert gadgets.delete_many(Gadget.size == 99) == 0
    assert gadgets.count() == 6
    with transaction():
        assert gadgets.update_many(true(), size=1) == 6
        assert gadgets.delete_many(true()) == 6
    assert committed(graph, "test_gadget") == []


def test_bulk_writes_without_criteria_or_with_unknown_columns_are_refused(
    gadgets: Store[Gadget], statement_verbs: list[str]
) -> None:
    statement_verbs.clear()
    with pytest.raises(InvalidInputError, match="needs criteria; pass sqlalchemy.true()"):
        gadgets.update_many(size=1)
    with pytest.raises(InvalidInputError, match="needs criteria"):
        gadgets.delete_many()
    with pytest.raises(InvalidInputError, match="has no column"):
        gadgets.update_many(Gadget.size == 1, colour="red")
    with pytest.raises(InvalidInputError, match="allowed names: private, public"):
        Store(gadgets.graph, Company).update_many(Company.name == "x", type="bogus")
    assert statement_verbs == []


@pytest.mark.postgres_commit
def test_delete_many_of_referenced_rows_deletes_nothing(graph: Any, context: SessionContext) -> None:
    companies = graph.company_store
    with transaction():
        kept, free = companies.create_many([Company(name="kept"), Company(name="free")])
        graph.employee_store.create(Employee(first="a", last="b", company_id=kept.id))
    with pytest.raises(ReferencedModelError):
        companies.delete_many(Company.name.in_(["kept", "free"]))
    assert committed(graph, "company") == ["free", "kept"]


@pytest.mark.postgres_commit
def test_upsert_inserts_then_updates_or_leaves_the_row(graph: Any, context: SessionContext) -> None:
    companies = Store(graph, Company)
    with transaction():
        created = companies.upsert(Company(name="Acme", type=CompanyType.private), on=[Company.name])
    assert created.type is CompanyType.private
    with transaction():
        same = companies.upsert(Company(name="Acme", type=CompanyType.public), on=["name"])
    assert (same.id, same.type) == (created.id, CompanyType.private)  # DO NOTHING: stored row
    with transaction():
        updated = companies.upsert(Company(name="Acme", type="public"), on=["name"], update=[Company.type])
    assert (updated.id, updated.type) == (created.id, CompanyType.public)
    assert updated.updated_at > created.created_at
    assert committed(graph, "company", "type") == ["public"]


def test_upsert_many_returns_stored_rows_in_order(
    graph: Any, context: SessionContext, statement_verbs: list[str]
) -> None:
    companies = Store(graph, Company)
    with transaction():
        companies.create(Company(name="b", type=CompanyType.private))
    statement_verbs.clear()
    with transaction():
        rows = companies.upsert_many(
            [Company(name="c"), Company(name="b", type=CompanyType.public), Company(name="a")],
            on=[Company.name],
            update=[Company.type],
        )
    assert [row.name for row in rows] == ["c", "b", "a"]
    assert rows[1].type is CompanyType.public
    assert statement_verbs.count("INSERT") == 2  # one per set of given columns
    assert companies.count() == 3
    with pytest.raises(InvalidInputError, match="same \\(name\\)"):
        companies.upsert_many([Company(name="x"), Company(name="x")], on=["name"])
    with pytest.raises(InvalidInputError, match="on= must name columns of Company"):
        companies.upsert(Company(name="x"), on=["nope"])


@pytest.mark.postgres_commit
def test_concurrent_upserts_of_the_same_key_neither_fail_nor_duplicate(graph: Any, context: SessionContext) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    ids: list[Any] = []

    def upsert(kind: CompanyType) -> None:
        try:
            with SessionContext(graph):
                barrier.wait(timeout=10)
                with transaction():
                    row = graph.company_store.upsert(Company(name="same", type=kind), on=["name"], update=["type"])
                    ids.append(row.id)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    for _ in range(5):
        threads = [threading.Thread(target=upsert, args=(kind,)) for kind in CompanyType]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(set(ids)) == 1
    assert committed(graph, "company") == ["same"]


def test_create_many_assigns_given_ids_and_checks_enums(graph: Any, context: SessionContext) -> None:
    identifier = uuid4()
    with transaction():
        rows = graph.company_store.create_many([Company(id=identifier, name="a"), Company(name="b")])
    assert rows[0].id == identifier
    with pytest.raises(InvalidInputError, match="allowed names"):
        graph.company_store.create_many([Company(name="c", type="bogus")])


@pytest.mark.postgres_commit
def test_create_is_one_insert_and_leaves_nothing_to_load(
    graph: Any, context: SessionContext, statement_verbs: list[str]
) -> None:
    statement_verbs.clear()
    with transaction():
        company = graph.company_store.create(Company(name="Acme"))
    assert statement_verbs.count("INSERT") == 1
    assert [s for s in statement_verbs if s not in ("BEGIN", "INSERT", "COMMIT")] == []
    state = inspect(company)
    assert state.persistent
    assert not state.expired_attributes
    statement_verbs.clear()
    assert (company.name, company.type) == ("Acme", None)
    assert company.created_at is not None
    assert graph.company_store.retrieve(company.id) is company
    assert statement_verbs == ["SELECT"]  # the retrieve only


def test_models_with_server_defaults_or_versions_still_insert(graph: Any, context: SessionContext) -> None:
    from tests.models import Ticket

    tickets = Store(graph, Ticket)
    with transaction():
        made = tickets.create_many([Ticket(), Ticket()])
    first, second = (ticket.number for ticket in made)
    assert second == first + 1  # relative: a sequence is not rolled back by isolation

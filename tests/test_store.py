from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import (
    DuplicateModelError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotFoundError,
    PersistenceError,
    ReferencedModelError,
    TransactionAbortedError,
)
from microcosm_postgres.example import Company, CompanyType, Employee
from microcosm_postgres.store import Store
from tests.models import Gadget, UnixGadget


def committed(graph: Any, table: str, column: str = "name") -> list[Any]:
    with graph.postgres.connect() as connection:
        return sorted(connection.execute(text(f"SELECT {column} FROM {table}")).scalars())


@pytest.fixture(params=[Gadget, UnixGadget], ids=["PrimaryKeyMixin", "UnixTimestampPrimaryKeyMixin"])
def gadgets(request: pytest.FixtureRequest, graph: Any, context: SessionContext) -> Store[Any]:
    return Store(graph, request.param, auto_filter_fields=[request.param.name])


def test_create_assigns_id_and_timestamps(gadgets: Store[Any]) -> None:
    with transaction():
        gadget = gadgets.create(gadgets.model_class(name="a", size=1))
    assert gadget.id is not None
    assert gadget.created_timestamp == pytest.approx(datetime.now(timezone.utc).timestamp(), abs=5)
    assert gadget.updated_timestamp >= gadget.created_timestamp
    assert gadgets.retrieve(gadget.id) is gadget


def test_create_keeps_a_given_id(gadgets: Store[Any]) -> None:
    identifier = uuid4()
    with transaction():
        gadgets.create(gadgets.model_class(id=identifier, name="a"))
    assert gadgets.retrieve(str(identifier)).id == identifier


def test_retrieve_missing(gadgets: Store[Any]) -> None:
    with pytest.raises(ModelNotFoundError, match=f"^{gadgets.model_name} not found$") as raised:
        gadgets.retrieve(uuid4())
    assert raised.value.status_code == 404
    assert not raised.value.include_stack_trace


@pytest.mark.parametrize("identifier", ["not-a-uuid", "", None, 42])
def test_invalid_identifier_is_not_found_without_sql(
    gadgets: Store[Any], statement_verbs: list[str], identifier: Any
) -> None:
    with transaction():
        gadgets.create(gadgets.model_class(name="first"))
        for call in (
            gadgets.retrieve,
            gadgets.delete,
            lambda i: gadgets.update(i, gadgets.model_class(name="x")),
        ):
            statement_verbs.clear()
            with pytest.raises(ModelNotFoundError):
                call(identifier)
            assert statement_verbs == []  # no SQL at all, not even a SAVEPOINT
        gadgets.create(gadgets.model_class(name="second"))  # the transaction is not poisoned
    assert gadgets.count() == 2


def test_update_merges_set_fields_and_refreshes_updated_at(gadgets: Store[Any]) -> None:
    with transaction():
        gadget = gadgets.create(gadgets.model_class(name="a", size=1))
    before = gadget.updated_timestamp
    created = gadget.created_timestamp
    with transaction():
        updated = gadgets.update(gadget.id, gadgets.model_class(size=2))
    assert (updated.name, updated.size) == ("a", 2)
    assert updated.updated_timestamp > before
    assert updated.created_timestamp == created
    with transaction():
        gadgets.update(gadget.id, gadgets.model_class(size=None))  # an explicit None clears
    assert gadgets.retrieve(gadget.id).size is None


@pytest.mark.postgres_commit
def test_update_missing(gadgets: Store[Any], statement_verbs: list[str]) -> None:
    with pytest.raises(ModelNotFoundError), transaction():
        statement_verbs.clear()
        gadgets.update(uuid4(), gadgets.model_class(name="x"))
    assert statement_verbs[:1] == ["UPDATE"]
    assert "SAVEPOINT" not in statement_verbs


@pytest.mark.postgres_commit
def test_update_is_one_statement_and_refreshes_the_loaded_instance(
    gadgets: Store[Any], statement_verbs: list[str]
) -> None:
    with transaction():
        gadget = gadgets.create(gadgets.model_class(name="a", size=1))
    statement_verbs.clear()
    with transaction():
        updated = gadgets.update(gadget.id, gadgets.model_class(size=5))
    assert [s for s in statement_verbs if s not in ("BEGIN", "COMMIT")] == ["UPDATE"]
    assert updated is gadget
    assert (gadget.name, gadget.size) == ("a", 5)


def test_update_with_diff(gadgets: Store[Any]) -> None:
    with transaction():
        gadget = gadgets.create(gadgets.model_class(name="a", size=1))
    with transaction():
        _, delta = gadgets.update_with_diff(gadget.id, gadgets.model_class(name="a", size=5))
    assert set(delta) == {"size", "updated_at"}
    assert (delta["size"].before, delta["size"].after) == (1, 5)


def test_replace_updates_or_creates(gadgets: Store[Any]) -> None:
    identifier = uuid4()
    with transaction():
        created = gadgets.replace(identifier, gadgets.model_class(name="new", size=1))
    assert created.id == identifier
    with transaction():
        replaced = gadgets.replace(identifier, gadgets.model_class(name="newer", size=2))
    assert (replaced.id, replaced.name, replaced.size) == (identifier, "newer", 2)
    assert gadgets.count() == 1


def test_delete_is_one_statement(gadgets: Store[Any], statement_verbs: list[str]) -> None:
    with transaction():
        gadget = gadgets.create(gadgets.model_class(name="a"))
    statement_verbs.clear()
    with transaction():
        assert gadgets.delete(gadget.id) is True
    assert statement_verbs.count("DELETE") == 1
    assert "SELECT" not in statement_verbs
    with pytest.raises(ModelNotFoundError), transaction():
        gadgets.delete(gadget.id)
    assert gadgets.count() == 0


def test_search_count_filters_and_pagination(gadgets: Store[Any]) -> None:
    with transaction():
        for index in range(5):
            gadgets.create(gadgets.model_class(name=f"g{index}", size=index % 2))
    assert gadgets.count() == 5
    assert [g.name for g in gadgets.search(name="g3")] == ["g3"]
    assert gadgets.count(name="g3") == 1
    assert gadgets.count(name=None, unknown="ignored") == 5  # None skipped, unknown keywords ignored
    assert gadgets.count(gadgets.model_class.size == 1) == 2
    ordered = gadgets.search(gadgets.model_class.size == 0)
    assert len(ordered) == 3
    first = gadgets.search_first(name="g4")
    assert first is not None
    assert first.name == "g4"
    assert gadgets.search_first(name="nope") is None


@pytest.mark.parametrize(("offset", "limit"), [(-1, None), (None, -1), ("1", None), (None, 1.5)])
def test_bad_pagination_sends_no_sql(gadgets: Store[Any], statement_verbs: list[str], offset: Any, limit: Any) -> None:
    statement_verbs.clear()
    with pytest.raises(InvalidInputError) as raised:
        gadgets.search(offset=offset, limit=limit)
    assert statement_verbs == []
    assert raised.value.status_code == 400


def test_expunge_merge_and_names(gadgets: Store[Any]) -> None:
    with transaction():
        gadget = gadgets.create(gadgets.model_class(name="a", size=1))
    gadgets.expunge(gadget)
    gadget.size = 99
    assert gadgets.retrieve(gadget.id).size == 1  # the expunged change is not saved
    target = gadgets.model_class(name="t", size=1)
    gadgets.merge(target, gadgets.model_class(size=3))
    assert (target.name, target.size) == ("t", 3)
    assert gadgets.model_name == gadgets.model_class.__name__
    assert gadgets.new_object_id() != gadgets.new_object_id()
    assert gadgets.session is SessionContext.session


@pytest.mark.postgres_commit
def test_duplicate_in_a_nested_block_then_the_transaction_goes_on(gadgets: Store[Any], graph: Any) -> None:
    table = gadgets.model_class.__tablename__
    with transaction():
        gadgets.create(gadgets.model_class(name="kept"))
        with pytest.raises(DuplicateModelError) as raised, transaction():
            gadgets.create(gadgets.model_class(name="kept"))
        assert raised.value.status_code == 409
        assert raised.value.constraint == f"{table}_name_key"
        gadgets.create(gadgets.model_class(name="after"))
    assert committed(graph, table) == ["after", "kept"]


@pytest.mark.postgres_commit
def test_a_refused_write_aborts_its_block_and_nothing_of_it_is_committed(gadgets: Store[Any], graph: Any) -> None:
    table = gadgets.model_class.__tablename__
    with pytest.raises(TransactionAbortedError) as raised, transaction():
        gadgets.create(gadgets.model_class(name="kept"))
        with pytest.raises(DuplicateModelError):
            gadgets.create(gadgets.model_class(name="kept"))
        gadgets.create(gadgets.model_class(name="after"))
    assert f"{gadgets.model_name}.create raised DuplicateModelError, SQLSTATE 23505" in str(raised.value)
    assert committed(graph, table) == []
    # Leaving the block normally after catching the error does not claim a commit either.
    with pytest.raises(TransactionAbortedError, match="DuplicateModelError"), transaction():
        gadgets.create(gadgets.model_class(name="kept"))
        with pytest.raises(DuplicateModelError):
            gadgets.create(gadgets.model_class(name="kept"))
    assert committed(graph, table) == []
    with transaction():
        gadgets.create(gadgets.model_class(name="next"))
    assert committed(graph, table) == ["next"]


@pytest.mark.postgres_commit
def test_get_or_create(gadgets: Store[Any], graph: Any) -> None:
    """The README's pattern: the write that may fail goes in a nested block."""
    model = gadgets.model_class

    def get_or_create(name: str) -> Any:
        try:
            with transaction():
                return gadgets.create(model(name=name))
        except DuplicateModelError:
            return gadgets.search_first(name=name)

    with transaction():
        first = get_or_create("g")
        again = get_or_create("g")
    assert again.id == first.id
    assert committed(graph, model.__tablename__) == ["g"]


def test_a_refused_write_outside_any_block_leaves_the_session_usable(gadgets: Store[Any]) -> None:
    with transaction():
        gadgets.create(gadgets.model_class(name="kept"))
    with pytest.raises(DuplicateModelError):
        gadgets.create(gadgets.model_class(name="kept"))
    assert gadgets.count() == 1
    with transaction():
        gadgets.create(gadgets.model_class(name="after"))
    assert gadgets.count() == 2


# --- the example service's stores -------------------------------------------------


@pytest.mark.postgres_commit
def test_missing_company_referenced_company_and_follow_up_writes(graph: Any, context: SessionContext) -> None:
    companies, employees = graph.company_store, graph.employee_store
    with transaction():
        acme = companies.create(Company(name="Acme", type=CompanyType.private))
        with pytest.raises(MissingDependencyError) as missing, transaction():
            employees.create(Employee(first="A", last="B", company_id=uuid4()))
        assert missing.value.status_code == 404
        assert missing.value.table == "employee"
        employees.create(Employee(first="Jane", last="Doe", company_id=acme.id))
    with transaction():
        with pytest.raises(ReferencedModelError) as referenced, transaction():
            companies.delete(acme.id)
        assert referenced.value.status_code == 403
        companies.create(Company(name="Other"))
    assert committed(graph, "company") == ["Acme", "Other"]
    assert committed(graph, "employee", "first") == ["Jane"]


@pytest.mark.postgres_commit
@pytest.mark.parametrize(
    ("store_name", "make", "error_class"),
    [
        ("company_store", lambda: Company(name="a\x00b"), InvalidInputError),
        ("company_store", lambda: Company(name="x" * 300), InvalidInputError),
        ("company_store", lambda: Company(name="ok", type="unknown"), InvalidInputError),
        ("employee_store", lambda: Employee(first=None, last="x", company_id=uuid4()), PersistenceError),
    ],
    ids=["nul-byte", "too-long", "bad-enum-name", "not-null"],
)
def test_refused_values_in_a_nested_block_leave_the_transaction_usable(
    graph: Any, context: SessionContext, store_name: str, make: Any, error_class: type
) -> None:
    with transaction():
        graph.company_store.create(Company(name="before"))
        with pytest.raises(error_class), transaction():
            graph[store_name].create(make())
        graph.company_store.create(Company(name="after"))
    assert committed(graph, "company") == ["after", "before"]


def test_employee_store_filters_and_order(graph: Any, context: SessionContext) -> None:
    with transaction():
        acme = graph.company_store.create(Company(name="Acme"))
        other = graph.company_store.create(Company(name="Other"))
        for first, last, company in [
            ("b", "Zed", acme),
            ("a", "Abe", acme),
            ("c", "Mid", other),
            ("b", "Kay", other),
        ]:
            graph.employee_store.create(Employee(first=first, last=last, company_id=company.id))
    assert [e.last for e in graph.employee_store.search()] == ["Abe", "Kay", "Mid", "Zed"]
    assert [e.last for e in graph.employee_store.search_by_company(acme.id)] == ["Abe", "Zed"]
    assert [e.last for e in graph.employee_store.search(first="b")] == ["Kay", "Zed"]
    assert graph.employee_store.count(company_id=other.id, first="b") == 1
    assert [e.last for e in graph.employee_store.search(offset=1, limit=2)] == ["Kay", "Mid"]


class PublicCompanyStore(Store[Company]):
    """A store whose `_query` hook narrows every operation."""

    def _query(self, *criteria: Any) -> Any:
        return super()._query(Company.type == CompanyType.public, *criteria)


def test_query_hook_narrows_every_operation(graph: Any, context: SessionContext) -> None:
    public = PublicCompanyStore(graph, Company)
    with transaction():
        hidden = graph.company_store.create(Company(name="Private", type=CompanyType.private))
        graph.company_store.create(Company(name="Public", type="public"))
    assert [c.name for c in public.search()] == ["Public"]
    assert public.count() == 1
    with pytest.raises(ModelNotFoundError):
        public.retrieve(hidden.id)
    with pytest.raises(ModelNotFoundError), transaction():
        public.delete(hidden.id)
    assert graph.company_store.count() == 2


def test_upsert_many_of_nothing_sends_no_statement(gadgets: Store[Any], statement_verbs: list[str]) -> None:
    assert gadgets.upsert_many([], on=["name"]) == []
    assert statement_verbs == []


class SizedGadgets(Store[Any]):
    """A 3.x-style store that narrows every retrieve by overriding the `_retrieve` hook."""

    def _retrieve(self, *criteria: Any) -> Any:
        return super()._retrieve(self.model_class.size > 0, *criteria)


def test_an_overridden_retrieve_hook_is_used(graph: Any, context: SessionContext) -> None:
    sized = SizedGadgets(graph, Gadget)
    with transaction():
        empty = sized.create(Gadget(name="empty", size=0))
        full = sized.create(Gadget(name="full", size=2))
    assert sized.retrieve(full.id) is full
    with pytest.raises(ModelNotFoundError, match="^Gadget not found$"):
        sized.retrieve(empty.id)
    with pytest.raises(ModelNotFoundError):
        sized.retrieve(full.id, Gadget.name == "other")
    # A locking read builds on `_query`, not on the hook (documented on `retrieve`).
    with transaction():
        assert sized.retrieve(empty.id, for_update=True) is empty


def test_a_locking_read_with_criteria_locks_the_row(
    gadgets: Store[Any], context: SessionContext, statements: list[str]
) -> None:
    with transaction():
        gadget = gadgets.create(gadgets.model_class(name="a", size=1))
        statements.clear()
        assert gadgets.retrieve(gadget.id, gadgets.model_class.size == 1, for_update=True) is gadget
        with pytest.raises(ModelNotFoundError):
            gadgets.retrieve(gadget.id, gadgets.model_class.size == 2, for_update="nowait")
    selects = [statement for statement in statements if statement.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2
    assert selects[0].rstrip().endswith("FOR UPDATE")
    assert selects[1].rstrip().endswith("FOR UPDATE NOWAIT")


def test_a_block_whose_own_flush_failed_refuses_store_calls(gadgets: Store[Any], context: SessionContext) -> None:
    session = SessionContext.session
    with pytest.raises(PersistenceError), transaction():
        session.add_all([gadgets.model_class(name="twin"), gadgets.model_class(name="twin")])
        with pytest.raises(sa_exc.IntegrityError):
            session.flush()  # the service's own flush, not the store's
        with pytest.raises(TransactionAbortedError, match="already aborted") as write:
            gadgets.create(gadgets.model_class(name="other"))
        with pytest.raises(TransactionAbortedError, match="already aborted") as read:
            gadgets.count()
    # The write is refused before it touches the session; the read meets SQLAlchemy's refusal.
    assert write.value.__cause__ is None
    assert isinstance(read.value.__cause__, sa_exc.PendingRollbackError)
    assert committed(gadgets.graph, gadgets.model_class.__tablename__) == []

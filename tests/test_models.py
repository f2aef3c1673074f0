from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import InvalidInputError
from microcosm_postgres.example import Company, CompanyType, Employee, ExampleGraph
from microcosm_postgres.models import UTCDateTime
from microcosm_postgres.store import Store, store_for
from tests.conftest import SECONDARY_DATABASE, make_graph
from tests.models import Gadget, Ticket, UnixGadget


def column_types(graph: ExampleGraph, table: str) -> dict[str, str]:
    with graph.postgres.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns "
                "WHERE table_name = :table"
            ),
            {"table": table},
        )
        return {name: f"{kind}({length})" if length else kind for name, kind, length in rows}


def test_schema_is_what_existing_services_have(graph: ExampleGraph, context: SessionContext) -> None:
    assert column_types(graph, "company") == {
        "id": "uuid",
        "created_at": "timestamp without time zone",
        "updated_at": "timestamp without time zone",
        "name": "character varying(255)",
        "type": "character varying(255)",
    }
    assert column_types(graph, "test_unix_gadget")["created_at"] == "double precision"
    with graph.postgres.connect() as connection:
        constraints = set(
            connection.execute(
                text("SELECT conname FROM pg_constraint WHERE conrelid IN ('company'::regclass, 'employee'::regclass)")
            ).scalars()
        )
    # PostgreSQL's own default names, made explicit by the naming convention.
    assert constraints == {"company_pkey", "company_name_key", "employee_pkey", "employee_company_id_fkey"}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (datetime(2024, 5, 1, 12, 0), datetime(2024, 5, 1, 12, 0)),  # naive: taken as UTC
        (datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc), datetime(2024, 5, 1, 12, 0)),
        (
            datetime(2024, 5, 1, 17, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            datetime(2024, 5, 1, 12, 0),
        ),
    ],
    ids=["naive", "utc", "other-zone"],
)
def test_utc_datetime(graph: ExampleGraph, context: SessionContext, given: datetime, stored: datetime) -> None:
    with transaction():
        company = graph.company_store.create(Company(name="Acme", created_at=given))
    assert context.session is not None
    raw = context.session.execute(text("SELECT created_at FROM company")).scalar()
    assert raw == stored  # the column holds UTC wall time, without a zone
    context.session.expunge_all()
    loaded = graph.company_store.retrieve(company.id)
    assert loaded.created_at == stored.replace(tzinfo=timezone.utc)
    assert loaded.created_at.tzinfo is timezone.utc


def test_utc_datetime_rejects_non_datetimes(graph: ExampleGraph, context: SessionContext) -> None:
    assert UTCDateTime().python_type is datetime
    with pytest.raises(InvalidInputError), transaction():
        graph.company_store.create(Company(name="Acme", created_at="yesterday"))


def test_enum_type_round_trip(graph: ExampleGraph, context: SessionContext) -> None:
    with transaction():
        by_member = graph.company_store.create(Company(name="a", type=CompanyType.public))
        graph.company_store.create(Company(name="b", type="private"))
    assert context.session is not None
    assert sorted(context.session.execute(text("SELECT type FROM company")).scalars()) == ["private", "public"]
    context.session.expunge_all()
    assert graph.company_store.retrieve(by_member.id).type is CompanyType.public
    by_value = graph.company_store.search_first(name="b")
    assert by_value is not None
    assert by_value.type is CompanyType.private


def test_serial_values_after_insert_and_delete(graph: ExampleGraph, context: SessionContext) -> None:
    tickets = Store(graph, Ticket)
    with transaction():
        first, second = tickets.create(Ticket()), tickets.create(Ticket())
    # Relative numbers: a sequence is not rolled back, so an isolated test before this one
    # may have taken some.
    assert second.number == first.number + 1
    assert second.big_number == first.big_number + 1
    with transaction():
        tickets.delete(second.id)
        third = tickets.create(Ticket())
    assert third.number == second.number + 1  # the sequence is not reset by deletes
    with graph.postgres.connect() as connection:
        default = connection.execute(
            text(
                "SELECT column_default FROM information_schema.columns "
                "WHERE table_name = 'test_ticket' AND column_name = 'number'"
            )
        ).scalar()
    assert isinstance(default, str)
    assert default.startswith("nextval(")


@pytest.mark.postgres_commit
@pytest.mark.parametrize("model", [Gadget, UnixGadget])
def test_identity_and_hash_across_sessions(
    graph: ExampleGraph, context: SessionContext, model: type[Gadget] | type[UnixGadget]
) -> None:
    store: Store[Gadget | UnixGadget] = Store(graph, model)
    with transaction():
        created = store.create(model(name="a", size=1))
    with SessionContext(graph):
        other = Store(graph, model).retrieve(created.id)
        assert other is not created
        assert other == created
        assert not (other != created)
        assert hash(other) == hash(created) == hash(created.id)
        assert len({other, created}) == 1
        other.size = 2
        assert other != created


def test_equality_ignores_relationships_and_private_state() -> None:
    a = Employee(first="a", last="b")
    b = Employee(first="a", last="b")
    a._private = "x"  # type: ignore[attr-defined]  # an attribute the model does not declare, on purpose
    assert a == b
    assert a != Employee(first="a", last="c")
    assert a != Company(name="a")


def test_smart_mixin_shortcuts(graph: ExampleGraph, context: SessionContext) -> None:
    graph.use("company_store")
    with transaction():
        company = Company(name="Acme").create()
        Company(name="Other").create()
    assert Company.count() == 2
    assert [c.name for c in Company.search(name="Acme")] == ["Acme"]
    assert Company.retrieve(company.id) is company
    with transaction():
        assert Company(id=company.id, name="Acme 2").update().name == "Acme 2"
        _, delta = Company(id=company.id, type=CompanyType.public).update_with_diff()
        assert delta["type"].after is CompanyType.public
        assert Company(id=company.id, name="Acme 3").replace() is company
    assert Company.retrieve(company.id).name == "Acme 3"
    with transaction():
        assert company.delete() is True
    assert Company.count() == 1


def test_smart_mixin_uses_the_current_graphs_store(graph: ExampleGraph, context: SessionContext) -> None:
    second = make_graph(database_name=SECONDARY_DATABASE)
    first_store = graph.company_store
    with SessionContext(second) as inner:
        inner.recreate_all()
        second_store = second.company_store  # made after the first graph's: must not replace it
        with transaction():
            Company(name="in second").create()
        assert Company.count() == 1
    assert Company.count() == 0
    assert first_store is not second_store
    second.postgres.dispose()


def test_smart_mixin_without_a_store_is_a_clear_error(context: SessionContext) -> None:
    with pytest.raises(LookupError, match="no store for Ticket"):
        store_for(Ticket)

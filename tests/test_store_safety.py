"""Issue #15 for the store: typed errors before any SQL for values of the wrong type or
unknown enum names, and sessions that recover after a refused statement."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import Integer, cast, literal, text
from sqlalchemy import exc as sa_exc

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import InvalidInputError, TransactionAbortedError
from microcosm_postgres.example import Company, CompanyType, Employee
from microcosm_postgres.store import Store
from tests.legacy_models import Shop, ShopKind, legacy_tables
from tests.models import Gadget


@pytest.fixture
def legacy(graph: Any, context: SessionContext) -> Iterator[Store[Shop]]:
    with legacy_tables(graph, context.session):
        yield Store(graph, Shop, auto_filter_fields=[Shop.name, Shop.kind])


class OrderedCompanyStore(Store[Company]):
    """Overrides a hook, so searches take the Query path rather than the cached statement."""

    def _order_by(self, query: Any, **filters: Any) -> Any:
        return query.order_by(Company.name)


# A read the server refuses (22P02, invalid input syntax for type integer), on both drivers.
REFUSED = cast(literal("not a number"), Integer) > 0


# --- filter values are checked before any SQL -----------------------------------------


@pytest.mark.parametrize("store_class", [Store, OrderedCompanyStore], ids=["cached", "hooks"])
@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"name": 12345}, "filter 'name' of Company must be a str"),
        ({"name": b"Acme"}, "filter 'name' of Company must be a str"),
        ({"type": "bogus"}, r"'bogus' is not a CompanyType name .*allowed names: private, public"),
        ({"type": 1}, "allowed names: private, public"),
    ],
)
@pytest.mark.parametrize("method", ["search", "count", "search_first"])
def test_filter_values_of_the_wrong_type_are_invalid_input_without_sql(
    graph: Any,
    context: SessionContext,
    statements: list[str],
    store_class: type[Store[Company]],
    filters: dict[str, Any],
    message: str,
    method: str,
) -> None:
    store = store_class(graph, Company, auto_filter_fields=[Company.name, Company.type])
    statements.clear()
    with pytest.raises(InvalidInputError, match=message) as raised:
        getattr(store, method)(**filters)
    assert statements == []
    assert raised.value.status_code == 400


def test_uuid_and_number_filters_accept_their_text_form_on_every_driver(graph: Any, context: SessionContext) -> None:
    employees = Store(graph, Employee, auto_filter_fields=[Employee.company_id])
    gadgets = Store(graph, Gadget, auto_filter_fields=[Gadget.size])
    with transaction():
        company = graph.company_store.create(Company(name="Acme", type=CompanyType.public))
        employees.create(Employee(first="a", last="b", company_id=company.id))
        gadgets.create(Gadget(name="g", size=3))
    assert employees.count(company_id=str(company.id)) == 1
    assert employees.count(company_id=company.id) == 1
    assert gadgets.count(size="3") == gadgets.count(size=3) == 1
    typed = Store(graph, Company, auto_filter_fields=[Company.type])
    assert typed.count(type="public") == typed.count(type=CompanyType.public) == 1
    assert typed.count(type="private") == 0


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"company_id": "not-a-uuid"}, "filter 'company_id' of Employee must be a UUID"),
        ({"company_id": 42}, "filter 'company_id' of Employee must be a UUID"),
    ],
)
def test_uuid_filter_that_is_not_one_is_invalid_input_without_sql(
    graph: Any, context: SessionContext, statements: list[str], filters: dict[str, Any], message: str
) -> None:
    employees = Store(graph, Employee, auto_filter_fields=[Employee.company_id])
    statements.clear()
    with pytest.raises(InvalidInputError, match=message):
        employees.search(**filters)
    assert statements == []


@pytest.mark.parametrize("size", ["three", True, 1.5])
def test_integer_filter_that_is_not_one_is_invalid_input(
    graph: Any, context: SessionContext, statements: list[str], size: Any
) -> None:
    gadgets = Store(graph, Gadget, auto_filter_fields=[Gadget.size])
    statements.clear()
    with pytest.raises(InvalidInputError, match="filter 'size' of Gadget must be an int"):
        gadgets.count(size=size)
    assert statements == []


# --- unknown enum names ------------------------------------------------------------------


def test_unknown_enum_type_name_is_invalid_input_naming_value_and_allowed_names(
    graph: Any, context: SessionContext, statements: list[str]
) -> None:
    store = graph.company_store
    statements.clear()
    with pytest.raises(InvalidInputError) as raised, transaction():
        store.create(Company(name="Acme", type="bogus"))
    assert str(raised.value) == "'bogus' is not a CompanyType name for Company.type; allowed names: private, public."
    assert [s for s in statements if "company" in s.lower()] == []
    with transaction():
        identifier = store.create(Company(name="Acme", type="public")).id
    with pytest.raises(InvalidInputError, match="allowed names: private, public"), transaction():
        store.update(identifier, Company(type="bogus"))
    SessionContext.session.expunge_all()
    assert store.retrieve(identifier).type is CompanyType.public


def test_mapped_enum_column_never_stores_an_unknown_name(
    graph: Any, context: SessionContext, legacy: Store[Shop]
) -> None:
    with pytest.raises(InvalidInputError) as raised, transaction():
        legacy.create(Shop(name="a", kind="florist"))
    assert str(raised.value) == "'florist' is not a ShopKind name for Shop.kind; allowed names: bakery, butcher."
    # Past the store too: the column type refuses it, nothing is written.
    with pytest.raises(sa_exc.StatementError, match="florist"), transaction() as session:
        session.add(Shop(id=uuid4(), name="b", kind="florist"))
        session.flush()
    assert SessionContext.session.execute(text("SELECT count(*) FROM legacy_shop")).scalar() == 0
    with transaction():
        legacy.create(Shop(name="c", kind="bakery"))
    SessionContext.session.expunge_all()
    assert [shop.kind for shop in legacy.search()] == [ShopKind.bakery]
    assert legacy.count(kind="bakery") == 1
    with pytest.raises(InvalidInputError, match="'florist' is not a ShopKind name"):
        legacy.search(kind="florist")


# --- a session always recovers -----------------------------------------------------------


@pytest.mark.parametrize("method", ["search", "count", "retrieve"])
def test_refused_read_outside_a_block_leaves_the_session_usable(
    graph: Any, context: SessionContext, method: str
) -> None:
    store = graph.company_store
    calls: dict[str, Callable[[], object]] = {
        "search": lambda: store.search(REFUSED),
        "count": lambda: store.count(REFUSED),
        "retrieve": lambda: store.retrieve(uuid4(), REFUSED),
    }
    call = calls[method]
    with pytest.raises(InvalidInputError):
        call()
    assert store.count() == 0
    with transaction():
        store.create(Company(name="after"))
    assert [company.name for company in store.search()] == ["after"]


def test_refused_read_inside_a_block_aborts_it_and_later_statements_name_the_first_failure(
    graph: Any, context: SessionContext
) -> None:
    store = graph.company_store
    with pytest.raises(TransactionAbortedError) as raised, transaction():
        store.create(Company(name="before"))
        with pytest.raises(InvalidInputError):
            store.count(REFUSED)
        store.search(name="before")
    message = str(raised.value)
    assert "Company.count raised InvalidInputError, SQLSTATE 22P02" in message
    assert "wrap that statement in a nested `transaction()`" in message
    assert raised.value.sqlstate == "25P02"
    # The block rolled back; the session goes on.
    assert store.count() == 0


def test_a_raw_statement_after_a_refused_one_names_the_first_failure_too(graph: Any, context: SessionContext) -> None:
    with pytest.raises(TransactionAbortedError, match="Company.search raised InvalidInputError"), transaction():
        with pytest.raises(InvalidInputError):
            graph.company_store.search(REFUSED)
        SessionContext.session.execute(text("SELECT 1"))


def test_a_statement_that_may_fail_goes_in_a_nested_block(graph: Any, context: SessionContext) -> None:
    store = graph.company_store
    with pytest.raises(TransactionAbortedError) as at_exit, transaction():
        with pytest.raises(InvalidInputError), transaction():
            store.count(REFUSED)
        store.create(Company(name="kept"))
        # The failure recovered above is not the one a later abort names.
        with pytest.raises(TransactionAbortedError) as raised:
            with pytest.raises(InvalidInputError):
                store.search(REFUSED)
            store.count()
        assert "Company.search raised" in str(raised.value)
        assert "Company.count raised" not in str(raised.value)
    # Leaving the aborted block is not a commit: it says so, and nothing was written.
    assert "Company.search raised" in str(at_exit.value)
    assert store.count() == 0


def test_a_block_whose_raw_statement_failed_is_not_reported_as_committed(graph: Any, context: SessionContext) -> None:
    with pytest.raises(TransactionAbortedError, match="already aborted"), transaction() as session:
        graph.company_store.create(Company(name="lost"))
        with pytest.raises(sa_exc.DataError):
            session.execute(text("SELECT 1/0"))  # caught here, not raised out of the block
    assert graph.company_store.count() == 0
    with transaction():
        graph.company_store.create(Company(name="kept"))
    assert graph.company_store.count() == 1

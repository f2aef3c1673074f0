"""cloning.clone: copies every column (loading expired and deferred ones), new id, substitutions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar
from uuid import UUID

import pytest
from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, defer, mapped_column

from microcosm_postgres.cloning import clone
from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DuplicateModelError
from microcosm_postgres.example import Company, CompanyType, Employee, ExampleGraph
from microcosm_postgres.models import EntityMixin, Model
from microcosm_postgres.store import Store, store_for

LONG_AGO = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc)

StoreT = TypeVar("StoreT", bound=Store[Any])


class ClonedDocument(EntityMixin, Model):
    __tablename__ = "test_cloning_document"

    title: Mapped[str] = mapped_column(String(255), nullable=False)
    body: Mapped[Any] = mapped_column(JSON, nullable=True)


def registered(store: StoreT) -> StoreT:
    """Make an ad-hoc store the one `store_for` finds (keep a reference: registries may be weak).

    Stores register on creation here; where the registry moved to smart.py, only stores that
    ask (`assign_model_class_store`) or graph components do.
    """
    assign = getattr(store, "assign_model_class_store", None)
    if assign is not None:
        assign()
    return store


@pytest.fixture
def stores(graph: ExampleGraph, context: SessionContext) -> Iterator[ExampleGraph]:
    graph.use("company_store", "employee_store")
    document_store = registered(Store(graph, ClonedDocument))
    yield graph
    del document_store


@pytest.fixture
def acme(stores: ExampleGraph) -> Company:
    with transaction():
        return stores.company_store.create(
            Company(name="Acme", type=CompanyType.public, created_at=LONG_AGO, updated_at=LONG_AGO)
        )


def _row(company_id: UUID) -> Any:
    return SessionContext.session.execute(
        select(Company.name, Company.type, Company.created_at).where(Company.id == company_id)
    ).one()


def test_clone_copies_the_columns_with_a_new_id_and_records_it(acme: Company) -> None:
    substitutions: dict[Any, Any] = {"Acme": "Acme Copy"}

    with transaction():
        copy = clone(acme, substitutions)

    assert copy.id != acme.id
    assert substitutions == {"Acme": "Acme Copy", acme.id: copy.id}
    assert _row(copy.id) == ("Acme Copy", CompanyType.public, LONG_AGO)
    assert _row(acme.id) == ("Acme", CompanyType.public, LONG_AGO)


def test_clone_loads_expired_columns(acme: Company) -> None:
    # 3.x read instance.__dict__, where expired columns are missing, and wrote NULLs.
    # (Expiring only `type`: reading the id would reload a fully expired instance.)
    SessionContext.session.expire(acme, ["type"])
    assert "type" not in acme.__dict__

    with transaction():
        copy = clone(acme, {"Acme": "Acme Copy"})

    assert _row(copy.id)[:2] == ("Acme Copy", CompanyType.public)


def test_clone_loads_deferred_columns(acme: Company) -> None:
    session = SessionContext.session
    session.expunge_all()
    loaded = session.execute(select(Company).options(defer(Company.type)).where(Company.id == acme.id)).scalar_one()
    assert "type" not in loaded.__dict__

    with transaction():
        copy = clone(loaded, {"Acme": "Acme Copy"})

    assert _row(copy.id)[:2] == ("Acme Copy", CompanyType.public)


def test_ignored_columns_take_their_defaults(acme: Company) -> None:
    with transaction():
        copy = clone(acme, {"Acme": "Acme Copy"}, ignore=("created_at", "updated_at"))

    assert copy.created_at != LONG_AGO
    assert copy.updated_at != LONG_AGO


def test_references_follow_the_substitutions(stores: ExampleGraph, acme: Company) -> None:
    with transaction():
        employee = stores.employee_store.create(Employee(first="Ada", last="Lovelace", company_id=acme.id))
        substitutions: dict[Any, Any] = {"Acme": "Acme Copy"}
        company_copy = clone(acme, substitutions)
        employee_copy = clone(employee, substitutions)

    assert employee_copy.company_id == company_copy.id
    assert (employee_copy.first, employee_copy.last) == ("Ada", "Lovelace")
    assert stores.employee_store.count() == 2


def test_unhashable_values_are_copied_unchanged(stores: ExampleGraph) -> None:
    with transaction():
        document = store_for(ClonedDocument).create(ClonedDocument(title="t", body={"items": [1, 2]}))
        copy = clone(document, {"t": "u"})

    stored = SessionContext.session.execute(
        select(ClonedDocument.title, ClonedDocument.body).where(ClonedDocument.id == copy.id)
    ).one()
    assert stored == ("u", {"items": [1, 2]})


def test_a_refused_clone_is_a_typed_error_and_leaves_substitutions_alone(stores: ExampleGraph, acme: Company) -> None:
    substitutions: dict[Any, Any] = {"unrelated": "value"}

    with transaction():
        with pytest.raises(DuplicateModelError):
            with transaction():  # a SAVEPOINT: the outer block stays usable
                clone(acme, substitutions)  # the unique name is copied as is
        assert stores.company_store.count() == 1

    assert substitutions == {"unrelated": "value"}

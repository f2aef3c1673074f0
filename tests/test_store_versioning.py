"""Optimistic locking (issue #9): VersionedMixin, and stale updates as ModelConflictError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import ModelConflictError, TransactionAbortedError
from microcosm_postgres.store import Store
from tests.legacy_models import Document, legacy_tables


@pytest.fixture
def documents(graph: Any, context: SessionContext) -> Iterator[Store[Document]]:
    with legacy_tables(graph, context.session):
        yield Store(graph, Document)


def stored(graph: Any) -> list[tuple[str, int]]:
    """The stored rows, read through the test's session (which isolation may keep uncommitted)."""
    return [tuple(row) for row in SessionContext.session.execute(text("SELECT title, version FROM legacy_document"))]


def test_each_update_increments_the_version(documents: Store[Document], graph: Any) -> None:
    with transaction():
        document = documents.create(Document(title="a"))
    assert document.version == 1
    with transaction():
        documents.update(document.id, Document(title="b"))
    assert document.version == 2
    with transaction():
        documents.update(document.id, Document(title="c", version=2))  # the version the client read
    assert stored(graph) == [("c", 3)]


def test_an_update_carrying_an_old_version_writes_nothing(documents: Store[Document], graph: Any) -> None:
    with transaction():
        document = documents.create(Document(title="a"))
        documents.update(document.id, Document(title="b"))
    with pytest.raises(ModelConflictError, match="version 1, now 2") as raised, transaction():
        documents.update(document.id, Document(title="stale", version=1))
    assert raised.value.status_code == 409
    assert stored(graph) == [("b", 2)]


@pytest.mark.postgres_commit
def test_a_concurrent_change_makes_the_update_stale(documents: Store[Document], graph: Any) -> None:
    with transaction():
        identifier = documents.create(Document(title="a")).id
    with pytest.raises(TransactionAbortedError, match="ModelConflictError"), transaction():
        read = documents.retrieve(identifier)  # this transaction reads version 1 (and keeps it)
        with SessionContext(graph), transaction():  # another one changes the row and commits
            documents.update(identifier, Document(title="theirs"))
        with pytest.raises(ModelConflictError, match="changed in another transaction"):
            documents.update(identifier, Document(title="mine"))
        assert read.version == 1
    assert stored(graph) == [("theirs", 2)]
    # Outside a block, the stale update leaves the session usable.
    documents.session.expunge_all()
    with transaction():
        documents.update(identifier, Document(title="mine"))
    assert stored(graph) == [("mine", 3)]


@pytest.mark.postgres_commit
def test_a_stale_delete_is_a_conflict_too(documents: Store[Document], graph: Any) -> None:
    with transaction():
        document = documents.create(Document(title="a"))
    with graph.postgres.begin() as connection:
        connection.execute(text("UPDATE legacy_document SET version = 5"))
    with pytest.raises(ModelConflictError):
        with transaction():
            documents.session.delete(document)
            with documents.flushing("delete"):
                pass
    assert stored(graph) == [("a", 5)]

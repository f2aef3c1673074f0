"""Temporary tables for bulk loads and upserts: `transient(Model)`.

with SessionContext(graph), transaction():
    with transient(Company) as companies:
        companies.insert_many(rows)
        companies.upsert_into_on_conflict_do_nothing(Company)

"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from microcosm_postgres.temporary.factories import TemporaryTable, create_temporary_table, create_transient_table

__all__ = [
    "TemporaryTable",
    "create_temporary_table",
    "create_transient_table",
    "transient",
]


@contextmanager
def transient(from_table: Any, name: str | None = None, *, session: Session | None = None) -> Iterator[TemporaryTable]:
    """Create `temporary_<table name>` like `from_table` (a model class or Table) and yield it.

    The table is `ON COMMIT DROP`, on the connection of `session` (default: the current
    SessionContext's), so use it within one transaction. It is dropped when the block
    ends without an error (so the same name can be used again in this transaction); after
    an error, the rollback that follows removes it.

    Raises:
        SessionNotOpenError: no session given and no SessionContext open.
        TypeError, InvalidNameError: see `create_temporary_table`.

    """
    table = create_transient_table(from_table, name=name).create(session)
    yield table
    table.drop()

"""Schema operations on a graph's database: create, drop, recreate, and raw sessions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from microcosm_postgres.errors import translating
from microcosm_postgres.models import Model

__all__ = [
    "create_all",
    "drop_all",
    "new_session",
    "recreate_all",
    "truncate_all",
]

# Databases (url, metadata, tables) whose tables this process has already (re)created:
# afterwards recreate_all only empties them. A record of what was done to a database,
# not of any graph.
_created: set[tuple[str, int, frozenset[str]]] = set()


def _key(engine: Engine, metadata: MetaData) -> tuple[str, int, frozenset[str]]:
    return (engine.url.render_as_string(hide_password=True), id(metadata), frozenset(metadata.tables))


def create_all(graph: Any, model_cls: type[Any] = Model) -> None:
    """Create the tables of `model_cls.metadata` that do not exist yet.

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    with translating():
        model_cls.metadata.create_all(graph.postgres)


def drop_all(graph: Any, model_cls: type[Any] = Model) -> None:
    """Drop the tables of `model_cls.metadata`."""
    _created.discard(_key(graph.postgres, model_cls.metadata))
    with translating():
        model_cls.metadata.drop_all(graph.postgres)


def truncate_all(engine: Engine, metadata: MetaData) -> None:
    """Empty every table of `metadata` with one `TRUNCATE ... RESTART IDENTITY CASCADE`."""
    tables = list(metadata.sorted_tables)
    if not tables:
        return
    with engine.begin() as connection:
        preparer = connection.dialect.identifier_preparer
        names = ", ".join(preparer.format_table(table) for table in tables)
        connection.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


def recreate_all(graph: Any, model_cls: type[Any] = Model) -> None:
    """Give the database fresh, empty tables.

    The first call in a process for a database drops and creates the tables; later
    calls empty them all with one TRUNCATE. No connection stays checked out.

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    engine, metadata = graph.postgres, model_cls.metadata
    key = _key(engine, metadata)
    with translating():
        if key in _created:
            try:
                truncate_all(engine, metadata)
                return
            except ProgrammingError:
                # Somebody dropped a table behind our back: start over.
                _created.discard(key)
        metadata.drop_all(engine)
        metadata.create_all(engine)
    _created.add(key)


def new_session(graph: Any, expire_on_commit: bool = False) -> Session:
    """A new session from the graph's sessionmaker (the caller closes it)."""
    session: Session = graph.sessionmaker(expire_on_commit=expire_on_commit)
    return session

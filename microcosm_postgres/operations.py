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
    "reset_all",
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

    When the service has migrations, the database is then stamped with the head
    revision, so Alembic cannot tell it from one built by `upgrade head`.

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    from microcosm_postgres.migrate import head_revision, stamp

    with translating():
        model_cls.metadata.create_all(graph.postgres)
        if head_revision(graph, model_cls) is not None:
            stamp(graph, "head", model_cls)


def drop_all(graph: Any, model_cls: type[Any] = Model) -> None:
    """Drop the tables of `model_cls.metadata`, and Alembic's version table."""
    _created.discard(_key(graph.postgres, model_cls.metadata))
    with translating():
        model_cls.metadata.drop_all(graph.postgres)
        with graph.postgres.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


# Tables holding more rows than this are TRUNCATEd by reset_all; smaller ones are
# DELETEd from, which is far cheaper for a handful of rows (TRUNCATE makes new files).
_DELETE_ROW_LIMIT = 1000


def reset_all(engine: Engine, metadata: MetaData, *, lock_timeout_ms: int = 10_000) -> None:
    """Empty every table of `metadata` and restart their sequences, in one statement.

    One DO block: tables with more than 1,000 rows go in one `TRUNCATE ... CASCADE`,
    the rest are DELETEd from (children first); then every sequence the tables own
    restarts. Measured on a durable server, 30 near-empty tables take about 1 ms this
    way and 50-100 ms with TRUNCATE (see benchmarks/isolation_bench.py). A table locked
    by another transaction fails after `lock_timeout_ms` rather than hanging.

    Raises:
        QueryTimeoutError: when a table stays locked past `lock_timeout_ms`.

    """
    tables = list(metadata.sorted_tables)
    if not tables:
        return
    preparer = engine.dialect.identifier_preparer
    # Children before parents, so plain DELETEs satisfy foreign keys.
    names = [preparer.format_table(table) for table in reversed(tables)]
    # No '%' anywhere in the block: psycopg2 would take it for a parameter marker.
    array = "ARRAY[" + ", ".join("'" + name.replace("'", "''") + "'" for name in names) + "]::text[]"
    block = f"""
DO $microcosm_reset$
DECLARE
    tables text[] := {array};
    big text[] := ARRAY[]::text[];
    name text;
    is_big boolean;
    sequence regclass;
BEGIN
    PERFORM set_config('lock_timeout', '{int(lock_timeout_ms)}ms', true);
    FOREACH name IN ARRAY tables LOOP
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM ' || name || ' OFFSET {_DELETE_ROW_LIMIT})' INTO is_big;
        IF is_big THEN
            big := big || name;
        END IF;
    END LOOP;
    IF cardinality(big) > 0 THEN
        EXECUTE 'TRUNCATE ' || array_to_string(big, ', ') || ' CASCADE';
    END IF;
    FOREACH name IN ARRAY tables LOOP
        IF NOT name = ANY(big) THEN
            EXECUTE 'DELETE FROM ' || name;
        END IF;
    END LOOP;
    FOR sequence IN
        SELECT d.objid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid AND c.relkind = 'S'
        WHERE d.refobjid = ANY (SELECT t::regclass::oid FROM unnest(tables) AS t) AND d.deptype IN ('a', 'i')
    LOOP
        PERFORM setval(sequence, (SELECT seqstart FROM pg_sequence WHERE seqrelid = sequence), false);
    END LOOP;
END
$microcosm_reset$"""
    with engine.begin() as connection:
        connection.exec_driver_sql(block)


def truncate_all(engine: Engine, metadata: MetaData) -> None:
    """Empty every table of `metadata` with one `TRUNCATE ... RESTART IDENTITY CASCADE`.

    Simple and right for big tables; for the near-empty tables of a test suite
    `reset_all` is much faster on a durable server.

    """
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
    calls empty them all with one statement (`reset_all`). No connection stays
    checked out.

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    engine, metadata = graph.postgres, model_cls.metadata
    key = _key(engine, metadata)
    with translating():
        if key in _created:
            try:
                reset_all(engine, metadata)
                return
            except ProgrammingError:
                # Somebody dropped a table behind our back: start over.
                _created.discard(key)
    drop_all(graph, model_cls)
    create_all(graph, model_cls)
    _created.add(key)


def new_session(graph: Any, expire_on_commit: bool = False) -> Session:
    """A new session from the graph's sessionmaker (the caller closes it)."""
    session: Session = graph.sessionmaker(expire_on_commit=expire_on_commit)
    return session

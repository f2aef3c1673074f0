"""Schema operations on a graph's database: create, drop, recreate, empty, and raw sessions.

Only test data may be destroyed. `drop_all`, `recreate_all`, `reset_all`, `truncate_all`
and `drop_alembic_table` act only on a database that is provably a test database:

- its name follows the test naming convention (`naming.is_test_database_name`):
  `{service}_test_db`, `{service}_test_<anything>_db`, or a pytest-xdist copy of either; or
- it lives on a throwaway server this library started (`testing.server.is_throwaway_server`).

Anything else raises `UnsafeOperationError` before any SQL is sent, unless the caller opts
in explicitly: `postgres.allow_destructive = true` in the graph's config (for example
`ACME__POSTGRES__ALLOW_DESTRUCTIVE=true`), `allow_destructive=True` for the functions that
take an engine, or pytest's `--postgres-allow-destructive`.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import Session

from microcosm_postgres.errors import MigrationsBehindError, UnsafeOperationError, translating
from microcosm_postgres.factories.routing import router_for, tables_by_engine
from microcosm_postgres.graph import Graph, GraphLike, HasMetadata, as_graph
from microcosm_postgres.models import Model
from microcosm_postgres.naming import is_test_database_name

__all__ = [
    "EngineTables",
    "create_all",
    "create_all_by_engine",
    "engine_tables",
    "drop_alembic_table",
    "drop_all",
    "get_current_head",
    "new_session",
    "recreate_all",
    "require_test_database",
    "require_test_graph",
    "reset_all",
    "stamp_head",
    "truncate_all",
]

# Databases (url, metadata, tables) whose tables this process has already (re)created:
# afterwards recreate_all only empties them. A record of what was done to a database,
# not of any graph.
_created: set[tuple[str, int, frozenset[str]]] = set()


def _key(engine: Engine, metadata: MetaData, tables: Sequence[Table] | None = None) -> tuple[str, int, frozenset[str]]:
    names = frozenset(metadata.tables) if tables is None else frozenset(table.key for table in tables)
    return (engine.url.render_as_string(hide_password=True), id(metadata), names)


class EngineTables(NamedTuple):
    """The tables of a graph's metadata that one engine holds (see `engine_tables`)."""

    #: `postgres` (the graph's engine: on a shard graph, the shard's) or a routed engine's name.
    name: str
    engine: Engine
    tables: list[Table]


def engine_tables(graph: GraphLike, metadata: MetaData) -> list[EngineTables]:
    """The engines the schema operations of `graph` act on, with their tables of `metadata`
    (in dependency order): the `postgres` engine first (also when it holds none of them),
    then each routed engine (`__engine__`).

    A shard's graph (`sharded_subgraph`) has only its own engine: the routed engines are
    shared by every shard, so they are created, dropped and emptied with `global` (the
    parent graph) only, never once per shard.

    """
    from microcosm_postgres.constants import GLOBAL_SHARD_NAME
    from microcosm_postgres.sharded_subgraph import shard_of

    graph = as_graph(graph)
    routed: Mapping[str, Engine] = getattr(router_for(graph), "engines", {})
    names = {engine: name for name, engine in routed.items()}
    groups = []
    for engine, tables in tables_by_engine(graph, metadata):
        if engine is graph.postgres:
            groups.append(EngineTables("postgres", engine, tables))
        elif shard_of(graph) == GLOBAL_SHARD_NAME:
            groups.append(EngineTables(names.get(engine, str(engine.url.database)), engine, tables))
    return groups


def require_test_database(
    engine: Engine,
    *,
    service: str | None = None,
    allow_destructive: bool = False,
    action: str = "destroy data",
    key: str = "postgres",
) -> None:
    """Check that `engine`'s database may lose its data; no SQL is sent.

    Args:
        service: the service whose test naming convention applies (None: any service's).
        allow_destructive: the caller's explicit opt-in for any database.
        action: what is about to happen, for the message ("drop tables", ...).
        key: the engine's configuration section, named in the message
            (`shards.east.postgres.allow_destructive`).

    Raises:
        UnsafeOperationError: when the database is neither named as a test database nor on
            a throwaway server started by this library, and `allow_destructive` is false.

    """
    from microcosm_postgres.testing.server import is_throwaway_server

    url = engine.url
    database = url.database or ""
    if allow_destructive or is_test_database_name(database, service):
        return
    if is_throwaway_server(url.host, url.port or 5432):
        return
    convention = f"{service}_test_db or {service}_test_<anything>_db" if service else "<name>_test_db"
    raise UnsafeOperationError(
        f"Refused to {action} in database {database!r} on {url.host}:{url.port or 5432}: it is not a test "
        f"database (its name does not follow {convention}, and it is not on a throwaway server started by "
        "microcosm-postgres). If its data may really be destroyed, opt in explicitly: set "
        f"{key}.allow_destructive = true in the config, or run pytest with --postgres-allow-destructive."
    )


def require_test_graph(graph: GraphLike, *, action: str = "destroy data") -> None:
    """`require_test_database` for a graph: its engine, its service name, its `postgres.allow_destructive`.

    Raises:
        UnsafeOperationError: when the graph's database is not a test database and the
            config does not opt in.

    """
    from microcosm_postgres.constants import GLOBAL_SHARD_NAME
    from microcosm_postgres.sharded_subgraph import shard_of  # imports operations' users: not at module level

    graph = as_graph(graph)
    shard = shard_of(graph)
    require_test_database(
        graph.postgres,
        service=graph.metadata.name,
        allow_destructive=bool(graph.config["postgres"].get("allow_destructive")),
        action=action,
        key="postgres" if shard == GLOBAL_SHARD_NAME else f"shards.{shard}.postgres",
    )


def _existing_tables(connection: Connection, metadata: MetaData) -> set[tuple[str | None, str]]:
    inspector = inspect(connection)
    existing: set[tuple[str | None, str]] = set()
    for schema in {table.schema for table in metadata.tables.values()}:
        existing.update((schema, name) for name in inspector.get_table_names(schema=schema))
    return existing


def create_all(graph: GraphLike, model_cls: HasMetadata = Model) -> list[str]:
    """Create the tables of `model_cls.metadata` that do not exist yet; return their names
    (`create_all_by_engine` says which engine each went to).

    When the service has migrations, a database without a revision is then stamped with
    the head revision, so Alembic cannot tell it from one built by `upgrade head`. A
    database at another revision is refused: creating the missing tables and stamping
    head would hide the migrations it has not run (columns added since, for instance).
    Each routed engine (`__engine__`) with a history of its own (`migrations/<engine>/`)
    is checked and stamped the same way, in its own database.

    Raises:
        MigrationsBehindError: when the database is at a revision other than the code's
            head (run `migrate upgrade head` instead).
        DatabaseUnavailableError: when the database cannot be reached.

    """
    created = create_all_by_engine(graph, model_cls)
    names = {name for tables in created.values() for name in tables}
    return [table.fullname for table in model_cls.metadata.sorted_tables if table.fullname in names]


def create_all_by_engine(graph: GraphLike, model_cls: HasMetadata = Model) -> dict[str, list[str]]:
    """`create_all`, returning engine name (`postgres`, or a routed engine's) -> the tables
    created through it. On a shard's graph only the shard's own tables (see `engine_tables`).

    Raises:
        MigrationsBehindError: when a database is at a revision other than the code's head.
        DatabaseUnavailableError: when a database cannot be reached.

    """
    from microcosm_postgres.migrate import (
        DEFAULT_ENGINE,
        MissingEngineMigrationsError,
        current_revision,
        engine_named,
        engine_names,
        head_revision,
        stamp,
    )

    graph = as_graph(graph)
    metadata = model_cls.metadata
    groups = engine_tables(graph, metadata)
    to_stamp = []
    for name in engine_names(graph):
        if name not in {group.name for group in groups}:
            continue  # a routed engine, handled with `global`
        try:
            head = head_revision(graph, model_cls, engine=name)
        except MissingEngineMigrationsError:
            if name == DEFAULT_ENGINE:
                raise
            continue  # a routed engine without a history of its own: tables only
        current = current_revision(graph, engine=name) if head is not None else None
        if current is not None and current != head:
            url = engine_named(graph, name).url
            raise MigrationsBehindError(
                f"Database {url.database!r} (engine {name!r}) is at revision {current}, not at the code's head "
                f"{head}: creating tables now would skip the migrations in between. Run `migrate upgrade head` "
                "instead."
            )
        if head is not None and current is None:
            to_stamp.append(name)
    created: dict[str, list[str]] = {}
    with translating():
        for group in groups:
            with group.engine.begin() as connection:
                existing = _existing_tables(connection, metadata)
                metadata.create_all(connection, tables=group.tables)
            created[group.name] = [
                table.fullname for table in group.tables if (table.schema, table.name) not in existing
            ]
        for name in to_stamp:
            stamp(graph, "head", model_cls, engine=name)
    return created


def _drop_version_table(graph: Graph, connection: Connection) -> None:
    from microcosm_postgres.migrate import version_table

    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {version_table(graph)}")


def drop_all(graph: GraphLike, model_cls: HasMetadata = Model) -> None:
    """Drop the tables of `model_cls.metadata`, and Alembic's version table (in the database
    of every engine the tables route to; on a shard's graph, the shard's own only: see
    `engine_tables`).

    Tables of the database that are not in the metadata stay, but their foreign keys to
    ours are dropped with ours (`CASCADE`), as are views over ours: a test database may
    hold tables left by another branch or service, and they must not block the drop.

    Raises:
        UnsafeOperationError: when the database is not a test database (see the module).
        DatabaseUnavailableError: when the database cannot be reached.

    """
    graph = as_graph(graph)
    metadata = model_cls.metadata
    groups = [(group.engine, group.tables) for group in engine_tables(graph, metadata)]
    require_test_graph(graph, action="drop tables")
    for routed, _ in groups[1:]:
        _require_routed_test_database(graph, routed, action="drop tables")
    for routed, tables in groups:
        _created.discard(_key(routed, metadata, tables))
        with translating(), routed.begin() as connection:
            preparer = connection.dialect.identifier_preparer
            names = ", ".join(preparer.format_table(table) for table in tables)
            if names:
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {names} CASCADE")
            # What the tables leave behind: enum types, sequences.
            metadata.drop_all(connection, tables=tables)
            # Each engine's own history (see migrate) has its version table in its own database.
            _drop_version_table(graph, connection)


def _require_routed_test_database(graph: Graph, engine: Engine, *, action: str) -> None:
    """`require_test_database` for an engine that models route to (`__engine__ = name`):
    `<name>.postgres.allow_destructive` opts in, as does the graph's `postgres.allow_destructive`."""
    engines: Mapping[str, Engine] = getattr(router_for(graph), "engines", {})
    names = [name for name, routed in engines.items() if routed is engine]
    sections = [graph.config[name]["postgres"] for name in names]
    allow = bool(graph.config["postgres"].get("allow_destructive")) or any(
        bool(section.get("allow_destructive")) for section in sections
    )
    require_test_database(
        engine,
        service=graph.metadata.name,
        allow_destructive=allow,
        action=action,
        key=f"{names[0]}.postgres" if names else "postgres",
    )


# Tables holding more rows than this are TRUNCATEd by reset_all; smaller ones are
# DELETEd from, which is far cheaper for a handful of rows (TRUNCATE makes new files).
_DELETE_ROW_LIMIT = 1000


def reset_all(
    engine: Engine,
    metadata: MetaData,
    *,
    lock_timeout_ms: int = 10_000,
    allow_destructive: bool = False,
    tables: Sequence[Table] | None = None,
) -> None:
    """Empty every table of `metadata` and restart their sequences, in one statement.

    One DO block: tables with more than 1,000 rows go in one `TRUNCATE ... CASCADE`,
    the rest are DELETEd from (children first); then every sequence the tables own
    restarts; `tables` limits all this to those tables of `metadata`. Measured on a durable
    server, 30 near-empty tables take about 1 ms this
    way and 50-100 ms with TRUNCATE (see benchmarks/isolation_bench.py). A table locked
    by another transaction fails after `lock_timeout_ms` rather than hanging.

    Raises:
        UnsafeOperationError: when the database is not a test database and
            `allow_destructive` is false (see the module).
        QueryTimeoutError: when a table stays locked past `lock_timeout_ms`.

    """
    require_test_database(engine, allow_destructive=allow_destructive, action="empty tables")
    chosen = set(metadata.sorted_tables if tables is None else tables)
    tables = [table for table in metadata.sorted_tables if table in chosen]
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


def truncate_all(engine: Engine, metadata: MetaData, *, allow_destructive: bool = False) -> None:
    """Empty every table of `metadata` with one `TRUNCATE ... RESTART IDENTITY CASCADE`.

    Simple and right for big tables; for the near-empty tables of a test suite
    `reset_all` is much faster on a durable server.

    Raises:
        UnsafeOperationError: when the database is not a test database and
            `allow_destructive` is false (see the module).

    """
    require_test_database(engine, allow_destructive=allow_destructive, action="empty tables")
    tables = list(metadata.sorted_tables)
    if not tables:
        return
    with engine.begin() as connection:
        preparer = connection.dialect.identifier_preparer
        names = ", ".join(preparer.format_table(table) for table in tables)
        connection.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


def recreate_all(graph: GraphLike, model_cls: HasMetadata = Model) -> dict[str, list[str]]:
    """Give the database fresh, empty tables; returns what `create_all_by_engine` created
    (engine name -> tables; empty lists when the tables were only emptied).

    The first call in a process for a database drops and creates the tables; later
    calls empty them all with one statement (`reset_all`). No connection stays
    checked out. On a shard's graph only the shard's own tables (see `engine_tables`).

    Raises:
        UnsafeOperationError: when the database is not a test database (see the module).
        DatabaseUnavailableError: when the database cannot be reached.

    """
    require_test_graph(graph, action="recreate tables")
    graph = as_graph(graph)
    metadata = model_cls.metadata
    named = engine_tables(graph, metadata)
    groups = [(group.engine, group.tables) for group in named]
    for routed, _ in groups[1:]:
        _require_routed_test_database(graph, routed, action="recreate tables")
    keys = [_key(routed, metadata, tables) for routed, tables in groups]
    with translating():
        if all(key in _created for key in keys):
            try:
                for routed, tables in groups:
                    # Checked above, for this graph and each engine.
                    reset_all(routed, metadata, tables=tables, allow_destructive=True)
                return {group.name: [] for group in named}
            except (ProgrammingError, IntegrityError):
                # A table was dropped behind our back, or a foreign table now references
                # ours with rows: start over (drop_all cascades).
                _created.difference_update(keys)
    drop_all(graph, model_cls)
    created = create_all_by_engine(graph, model_cls)
    _created.update(keys)
    return created


def stamp_head(graph: GraphLike, model_cls: HasMetadata = Model) -> None:
    """Record the code's head revision in the database, without running migrations.

    A compatibility name (3.x); the same as `migrate.stamp(graph, "head")`.

    """
    from microcosm_postgres.migrate import stamp

    stamp(graph, "head", model_cls)


def get_current_head(graph: GraphLike) -> str | None:
    """The database's current revision, None when it has none.

    A compatibility name (3.x); the same as `migrate.current_revision(graph)`.

    Raises:
        DatabaseUnavailableError: when the database cannot be reached.

    """
    from microcosm_postgres.migrate import current_revision

    return current_revision(graph)


def drop_alembic_table(graph: GraphLike) -> bool:
    """Drop Alembic's version table (the database forgets its revision); returns True.

    A compatibility name (3.x).

    Raises:
        UnsafeOperationError: when the database is not a test database (see the module).
        DatabaseUnavailableError: when the database cannot be reached.

    """
    require_test_graph(graph, action="drop the migration version table")
    graph = as_graph(graph)
    with translating(), graph.postgres.begin() as connection:
        _drop_version_table(graph, connection)
    return True


def new_session(graph: GraphLike, expire_on_commit: bool = False) -> Session:
    """A new session from the graph's sessionmaker (the caller closes it)."""
    session: Session = as_graph(graph).sessionmaker(expire_on_commit=expire_on_commit)
    return session

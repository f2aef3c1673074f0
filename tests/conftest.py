"""Shared fixtures: the `example` service's graph, on databases of this run's own.

The suite is hermetic: it never uses the conventional `example_test_db` (which may hold
anything on a shared server), but databases named for this run,
`example_test_<run>_db` and `example_test_<run>_<purpose>_db` (test databases by the
naming convention), created on the plugin's server and dropped at the end. Each process
(each pytest-xdist worker) has its own run id, so runs and workers never share a database.

`EXAMPLE__POSTGRES__DATABASE_NAME` names the run's database for the whole session, so every
graph made by `make_graph`, by the plugin, and by subprocesses (the example, the README
snippets, pytester runs) uses it.

The driver comes from the environment like any microcosm config
(`EXAMPLE__POSTGRES__DRIVER=postgresql+psycopg` selects psycopg 3); CI runs the
suite once per driver.

"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast
from uuid import uuid4

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool, QueuePool

from microcosm_postgres.context import SessionContext
from microcosm_postgres.example import ExampleGraph
from microcosm_postgres.graph import Graph
from microcosm_postgres.models import Model
from microcosm_postgres.naming import is_test_database_name
from microcosm_postgres.operations import recreate_all
from microcosm_postgres.provision import provision
from microcosm_postgres.testing.database import PostgresServer, ensure_test_database
from microcosm_postgres.testing.isolation import committed, isolated

pytest_plugins = ["pytester"]

RUN_ID = uuid4().hex[:10]
DATABASE = f"example_test_{RUN_ID}_db"
SECONDARY_DATABASE = f"example_test_{RUN_ID}_secondary_db"
MIGRATION_DATABASES = (f"example_test_{RUN_ID}_migrate_db", f"example_test_{RUN_ID}_migrate2_db")
DATABASE_VARIABLE = "EXAMPLE__POSTGRES__DATABASE_NAME"
_SAVED_DATABASE = pytest.StashKey[str | None]()


def run_database(purpose: str) -> str:
    """Another database name of this run (dropped at the end with the others)."""
    return f"example_test_{RUN_ID}_{purpose}_db"


def database_in_use() -> str:
    """The database this session's graphs use (the run's, or the plugin's per-worker copy of it)."""
    return os.environ[DATABASE_VARIABLE]


def make_graph(**postgres: Any) -> ExampleGraph:
    """A testing graph for the example service, with `postgres` config overrides."""
    loader = load_each(load_from_environ, load_from_dict(postgres=postgres))
    return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))


def tables_on(url: URL, database: str) -> set[str]:
    """The tables of `database` on the server of `url` (an admin URL), read on a connection of its own."""
    engine = create_engine(url.set(database=database), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def checked_out(engine: Engine) -> int:
    """How many of `engine`'s pooled connections are checked out now."""
    pool = engine.pool
    assert isinstance(pool, QueuePool), pool
    return pool.checkedout()


def pytest_configure(config: pytest.Config) -> None:
    # Before any graph exists: the plugin's session graph, `make_graph`, subprocesses.
    config.stash[_SAVED_DATABASE] = os.environ.get(DATABASE_VARIABLE)
    os.environ[DATABASE_VARIABLE] = DATABASE


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = config.stash.get(_SAVED_DATABASE, None)
    if saved is None:
        os.environ.pop(DATABASE_VARIABLE, None)
    else:
        os.environ[DATABASE_VARIABLE] = saved


def _drop_run_databases(server: PostgresServer) -> None:
    """Drop every database of this run (the plugin's per-worker copies too)."""
    engine = create_engine(server.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            names = connection.execute(
                text("SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)"),
                {"prefix": f"example_test_{RUN_ID}_"},
            ).scalars()
            quote = connection.dialect.identifier_preparer.quote_identifier
            for name in list(names):
                assert is_test_database_name(name, "example"), name
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
    finally:
        engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def example_databases(postgres_server: PostgresServer, postgres_session_graph: Graph) -> Iterator[PostgresServer]:
    """The plugin's server, with this run's databases; they are dropped at the end.

    The plugin's session graph creates the main one (and its tables); under pytest-xdist
    it switches to its per-worker copy, which every graph of the session then uses.

    """
    try:
        ensure_test_database("example", postgres_server, database_name=SECONDARY_DATABASE)
        yield postgres_server
    finally:
        postgres_session_graph.postgres.dispose()
        _drop_run_databases(postgres_server)


@pytest.fixture(scope="session")
def migration_databases(example_databases: PostgresServer) -> None:
    """Two more databases for the migration tests, where models come and go."""
    for database in MIGRATION_DATABASES:
        provision("example", testing=True, database_name=database, admin_url=example_databases.admin_url)


@pytest.fixture
def graph(example_databases: PostgresServer) -> Iterator[ExampleGraph]:
    """A fresh graph on this run's database (its tables exist; rows may be left by other tests)."""
    graph = make_graph()
    yield graph
    graph.postgres.dispose()


def runs_isolated(item: pytest.Item) -> bool:
    """Whether `item` runs inside a rolled-back outer transaction (`context` or the plugin's
    `postgres_graph`, not marked `postgres_commit`)."""
    fixtures = getattr(item, "fixturenames", ())
    uses = "context" in fixtures or "postgres_graph" in fixtures
    return uses and item.get_closest_marker("postgres_commit") is None


@pytest.fixture
def context(graph: ExampleGraph, request: pytest.FixtureRequest) -> Iterator[SessionContext]:
    """A SessionContext on `graph`, on empty tables, by the plugin's rules (`testing.isolation`).

    By default the test runs isolated: in an outer transaction rolled back at the end, so
    what it writes is gone for the next test, and it costs a BEGIN and a ROLLBACK.

    A test marked `@pytest.mark.postgres_commit` (the plugin's marker) really commits, and
    every table is emptied (sequences restarted) before and after it. Only tests that need
    it are marked: those that look at the outcome from another connection (what COMMIT
    made visible, a row lock, a concurrent change), run threads or second sessions, kill
    the session's connection, count the statements of a top-level transaction (isolated,
    its BEGIN and COMMIT are a SAVEPOINT and a RELEASE), or need a real COMMIT (ON COMMIT
    DROP).

    """
    if request.node.get_closest_marker("postgres_commit"):
        with committed(graph) as context:
            context.recreate_all()  # isolated tests may have advanced the sequences
            yield context
    else:
        with isolated(graph) as context:
            yield context


def _tables_holding_rows(graph: Graph) -> list[str] | None:
    """The tables of `Model.metadata` that hold rows in `graph`'s database, in one query;
    None when one of them is missing (a test dropped it)."""
    tables = Model.metadata.sorted_tables
    if not tables:
        return []
    quote = graph.postgres.dialect.identifier_preparer.format_table
    probes = " UNION ALL ".join(
        f"(SELECT CAST(:t{number} AS text) FROM {quote(table)} LIMIT 1)" for number, table in enumerate(tables)
    )
    names = {f"t{number}": table.name for number, table in enumerate(tables)}
    try:
        with graph.postgres.connect() as connection:
            return sorted(connection.execute(text(probes), names).scalars())
    except ProgrammingError:
        return None


@pytest.fixture(autouse=True)
def _tables_left_empty(request: pytest.FixtureRequest, postgres_session_graph: Graph) -> Iterator[None]:
    """After each test, the run's database has its tables and they are empty.

    Isolated tests trust this: they start from what the previous test left. Tests that
    commit (marked, or through subprocesses, threads and graphs of their own) are cleaned
    up after here, in one place; an isolated test that left rows fails, naming the tables:
    it committed through another connection and must be marked `postgres_commit`.

    """
    yield
    holding = _tables_holding_rows(postgres_session_graph)
    if holding == []:
        return
    recreate_all(postgres_session_graph)
    if holding and runs_isolated(request.node):
        pytest.fail(
            f"{request.node.nodeid} ran isolated but left committed rows in {', '.join(holding)}: "
            "it commits through another connection, so mark it @pytest.mark.postgres_commit",
            pytrace=False,
        )


@contextmanager
def _recording(graph: ExampleGraph, transform: Callable[[str], str]) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(transform(statement))

    event.listen(graph.postgres, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(graph.postgres, "before_cursor_execute", record)


@pytest.fixture
def statements(graph: ExampleGraph) -> Iterator[list[str]]:
    """The SQL statements `graph`'s engine sends while the test runs (to prove what is, or
    is not, sent)."""
    with _recording(graph, lambda statement: statement) as sent:
        yield sent


@pytest.fixture
def statement_verbs(graph: ExampleGraph) -> Iterator[list[str]]:
    """The first word of each statement `graph`'s engine sends (INSERT, SAVEPOINT, ...)."""
    with _recording(graph, lambda statement: statement.split()[0].upper()) as sent:
        yield sent


@pytest.fixture
def driver(graph: ExampleGraph) -> str:
    return str(graph.postgres.dialect.driver)

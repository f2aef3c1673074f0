"""pytest plugin (entry point `pytest11`): test databases that set themselves up.

Configure the service name once (pyproject.toml):

    [tool.pytest.ini_options]
    microcosm_postgres_service = "example"
    # optional: the modules that bind the service's stores (default: the module named
    # like the service, `example`, when there is one)
    microcosm_postgres_import = ["microcosm_postgres.example"]

then use the fixtures:

    def test_create(postgres_graph):
        with transaction():
            postgres_graph.company_store.create(Company(name="Acme"))
        assert postgres_graph.company_store.count() == 1

Fixtures:
    postgres_server         (session) the server used: the configured one when it answers,
                            else a throwaway one (see `--postgres-server`).
    postgres_session_graph  (session) the service's testing graph; its role and database
                            are created when missing, and its tables once per test session
                            (by `upgrade head` when the service has migrations). So are the
                            databases of its shards (`shards.<name>.postgres`) and routed
                            engines (`<engine>.postgres`) that are test databases on the
                            plugin's server (same host and port); the tables of every shard
                            and routed engine are (re)created, test databases only.
    postgres_topology       (session) a throwaway primary and its streaming standby, started on
                            first use, stopped and deleted at the end (see `testing.topology`).
    postgres_graph          (function) that graph with a SessionContext open in which the
                            test runs inside outer transactions rolled back at the end, one
                            per engine it reaches: routed engines, and the shards of
                            `SessionContext(postgres_graph, shard=...)` opened in the test.
                            Tests marked `@pytest.mark.postgres_commit` really commit
                            instead, and every table is emptied after them.

The fixtures drop and empty tables only in a test database: named `{name}_test_db` or
`{name}_test_<anything>_db`, or on a throwaway server started by this plugin; for any
other database they stop the run (with `UnsafeOperationError`'s message) unless pytest runs
with `--postgres-allow-destructive` (see `microcosm_postgres.operations`). A fixture that
cannot set up its server or database ends the run with one message and exit status 4 (a
usage error), rather than failing each test that uses it with the plugin's traceback.

Under pytest-xdist each worker gets its own database, `{database}_{worker}`, copied
from the first one as a template (and its own shard and routed databases on the plugin's
server, `{database}_{worker}`, set through the environment). A shard or routed engine on
another server whose database is a test database gets its worker's copy there too, made
from it with that engine's own configured credentials (its role needs CREATEDB and to own
the database), and dropped at the end; when it cannot be made the run stops, saying why.

At session start the plugin imports the service's modules (`microcosm_postgres_import`,
else the module named like the service when one exists), so `graph.<name>_store` is bound
even when a test module imports no models. The pytest header says which server and
database the run will use; the summary names the throwaway server's directory, if any.

"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from typing import NoReturn

import pytest
from microcosm.api import create_object_graph
from microcosm.errors import ValidationError
from sqlalchemy.engine import URL, Engine

from microcosm_postgres.errors import PersistenceError, UnsafeOperationError
from microcosm_postgres.factories.engine import database_name_for, username_for
from microcosm_postgres.factories.routing import router_for
from microcosm_postgres.factories.shards import shard_names
from microcosm_postgres.graph import Graph, as_graph
from microcosm_postgres.naming import is_test_database_name
from microcosm_postgres.operations import drop_all, recreate_all, require_test_graph
from microcosm_postgres.provision import clone_database, drop_database
from microcosm_postgres.sharded_subgraph import subgraph
from microcosm_postgres.testing.database import (
    MODES,
    SERVER_MODE_VARIABLE,
    PostgresServer,
    TestDatabaseError,
    describe_test_server,
    ensure_test_database,
    env_prefix,
    use_test_server,
)
from microcosm_postgres.testing.isolation import committed, isolated
from microcosm_postgres.testing.topology import ReplicationTopology

__all__ = [
    "postgres_graph",
    "postgres_server",
    "postgres_service_name",
    "postgres_session_graph",
    "postgres_topology",
]

logger = logging.getLogger(__name__)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "microcosm_postgres_service",
        "service (graph) name whose test database the microcosm-postgres fixtures use",
        default=None,
    )
    parser.addini(
        "microcosm_postgres_import",
        "modules imported at session start so that the service's stores are bound "
        "(default: the module named like the service, when it exists)",
        type="linelist",
        default=[],
    )
    parser.addoption(
        "--postgres-server",
        choices=MODES,
        default=None,
        help=(
            "auto (default): use the configured server when it answers, else start a throwaway one; "
            "configured: never start one; temporary: always start one. "
            f"Also settable with ${SERVER_MODE_VARIABLE}."
        ),
    )
    parser.addoption(
        "--postgres-allow-destructive",
        action="store_true",
        default=False,
        help=(
            "let the fixtures drop and empty the tables of a database that is not named as a test database "
            "({name}_test_db) and not on a throwaway server (sets postgres.allow_destructive)"
        ),
    )


_USED_SERVER = pytest.StashKey[PostgresServer]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgres_commit: the test really commits, because other connections or threads must see its rows "
        "or it needs a real COMMIT; tables are emptied after it",
    )


def _service_modules(config: pytest.Config, service: str) -> list[str]:
    """The modules to import: the ini option, else the module named like the service if it exists."""
    named = [str(module) for module in config.getini("microcosm_postgres_import")]
    if named:
        return named
    guess = service.replace("-", "_")
    try:
        found = importlib.util.find_spec(guess) is not None
    except (ImportError, ValueError):
        found = False
    return [guess] if found else []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Import the service's modules, so that their `@binding` stores exist in every graph."""
    service = session.config.getini("microcosm_postgres_service")
    if not service:
        return
    for module in _service_modules(session.config, str(service)):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise pytest.UsageError(
                f"microcosm-postgres could not import {module!r} ({error}); fix microcosm_postgres_import "
                "under [tool.pytest.ini_options] (modules that bind the service's stores)."
            ) from error


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which server and database this run uses: a mistyped host or port shows here."""
    service = config.getini("microcosm_postgres_service")
    if not service:
        return []
    try:
        where = describe_test_server(str(service), config.getoption("--postgres-server"))
    except TestDatabaseError as error:
        where = str(error)
    return [f"microcosm-postgres: {where}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    server = config.stash.get(_USED_SERVER, None)
    if server is not None and server.directory is not None:
        terminalreporter.write_line(
            f"microcosm-postgres: used a {server.source} at {server.host}:{server.port}, "
            f"in {server.directory} (now removed)"
        )


def _stop(message: str) -> NoReturn:
    """End the whole run with `message`, as a usage error (exit status 4), without a traceback.

    A fixture raising `pytest.UsageError` would only fail the test that needs it, with the
    plugin's own traceback, and the next test would try again.
    """
    pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def postgres_service_name(pytestconfig: pytest.Config) -> str:
    """The service name; from the `microcosm_postgres_service` ini option (override to compute it)."""
    name = pytestconfig.getini("microcosm_postgres_service")
    if not name:
        _stop(
            'microcosm-postgres fixtures need the service name: set microcosm_postgres_service = "<name>" '
            "under [tool.pytest.ini_options] (or override the postgres_service_name fixture)."
        )
    return str(name)


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config, postgres_service_name: str) -> Iterator[PostgresServer]:
    """The server for this test session (a throwaway one is stopped and deleted at the end)."""
    try:
        with use_test_server(postgres_service_name, pytestconfig.getoption("--postgres-server")) as server:
            pytestconfig.stash[_USED_SERVER] = server
            yield server
    except TestDatabaseError as error:
        _stop(str(error))


@pytest.fixture(scope="session")
def postgres_session_graph(
    postgres_server: PostgresServer, postgres_service_name: str, pytestconfig: pytest.Config
) -> Iterator[Graph]:
    """The testing graph, with its role, database (per xdist worker) and fresh tables.

    When the configured database is not a test database and `--postgres-allow-destructive`
    is not given, the run stops with `UnsafeOperationError`'s message (exit status 4, a
    usage error), and nothing is touched; so it does when the server or database cannot
    be set up.

    """
    from microcosm_postgres.migrate import head_revision, upgrade  # Alembic only when the fixture is used

    name = postgres_service_name
    with pytest.MonkeyPatch.context() as patch:
        if pytestconfig.getoption("--postgres-allow-destructive"):
            patch.setenv(f"{env_prefix(name)}__POSTGRES__ALLOW_DESTRUCTIVE", "true")
        probe = create_object_graph(name=name, testing=True)
        try:
            require_test_graph(probe, action="recreate tables")
        except UnsafeOperationError as error:
            _stop(str(error))
        has_migrations = head_revision(probe) is not None  # a broken lookup fails here, before provisioning
        try:
            ensure_test_database(name, postgres_server)
        except TestDatabaseError as error:
            _stop(str(error))
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            database = database_name_for(probe.metadata, probe.config.postgres)
            # Already the worker's copy (a pytest session run inside a worker's test): keep it.
            if not database.endswith(f"_{worker}"):
                worker_database = f"{database}_{worker}"
                owner = username_for(probe.metadata, probe.config.postgres)
                clone_database(postgres_server.admin_url, database, worker_database, owner)
                patch.setenv(f"{env_prefix(name)}__POSTGRES__DATABASE_NAME", worker_database)
        graph = as_graph(create_object_graph(name=name, testing=True))
        copies: list[tuple[URL, str]] = []  # per-worker copies made on other servers, dropped at the end
        try:
            patch_names = _ensure_other_databases(graph, postgres_server, worker, copies)
        except (TestDatabaseError, PersistenceError, ValidationError) as error:
            _drop_copies(copies)
            _stop(str(error))
        for variable, value in patch_names.items():
            patch.setenv(variable, value)
        if patch_names:
            graph.postgres.dispose()
            graph = as_graph(create_object_graph(name=name, testing=True))
        shards = _all_shards(graph)
        try:
            for shard in shards:
                require_test_graph(shard, action="recreate tables")
            for shard in shards:
                if has_migrations:
                    drop_all(shard)
                    upgrade(shard)  # the service's own migrations build the schema (routed engines with global)
                else:
                    recreate_all(shard)
        except UnsafeOperationError as error:  # a routed engine's database, checked by drop_all
            _stop(str(error))
        try:
            yield graph
        finally:
            for shard in shards:
                shard.postgres.dispose()
            for engine in _routed(graph).values():
                engine.dispose()
            _drop_copies(copies)


def _all_shards(graph: Graph) -> list[Graph]:
    """`global` and every configured shard (whatever `SHARD` says)."""
    if not graph.config.get("shards"):
        return [graph]
    return [subgraph(graph, name) for name in shard_names(graph)]


def _routed(graph: Graph) -> dict[str, Engine]:
    engines: dict[str, Engine] = getattr(router_for(graph), "engines", {})
    return dict(engines)


def _ensure_other_databases(
    graph: Graph, server: PostgresServer, worker: str | None, copies: list[tuple[URL, str]]
) -> dict[str, str]:
    """Create the test databases of the shards and routed engines that live on the plugin's
    server (same host and port) and are named as test databases; under pytest-xdist, a copy
    per worker (`{database}_{worker}`). Returns the environment variables that point the
    graph at the workers' copies.

    Under pytest-xdist, a shard or routed engine on another server whose database is a test
    database gets its per-worker copy there too, made with its own configured credentials
    (`_copy_elsewhere`); each copy made is appended to `copies`, to be dropped at the end.
    Without xdist, a database elsewhere, or one not named as a test database, is left as it
    is: its tables are still (re)created when it is a test database, and the run stops with
    `UnsafeOperationError`'s message otherwise.

    Raises:
        TestDatabaseError: when a per-worker copy on another server cannot be made.

    """
    name = graph.metadata.name
    prefix = env_prefix(name)
    wanted: list[tuple[str, str]] = []  # (database, the variable naming it)
    places = [
        (sub.postgres.url, f"{prefix}__SHARDS__{shard.upper()}__POSTGRES__DATABASE_NAME", f"shards.{shard}.postgres")
        for shard, sub in zip(shard_names(graph)[1:], _all_shards(graph)[1:], strict=True)
    ]
    places += [
        (engine.url, f"{prefix}__{routed.upper()}__POSTGRES__DATABASE_NAME", f"{routed}.postgres")
        for routed, engine in _routed(graph).items()
    ]
    variables = {}
    for url, variable, key in places:
        database = url.database or ""
        on_server = (url.host or "") == server.host and (url.port or 5432) == server.port
        if not is_test_database_name(database, name):
            continue
        if on_server:
            if database not in dict(wanted):
                wanted.append((database, variable))
        elif worker:
            target = _copy_elsewhere(url, key, worker, copies)
            if target != database:
                variables[variable] = target
    for database, variable in wanted:
        if worker and not database.endswith(f"_{worker}"):
            database = variables[variable] = f"{database}_{worker}"
        ensure_test_database(name, server, database_name=database)
    return variables


def _copy_elsewhere(url: URL, key: str, worker: str, copies: list[tuple[URL, str]]) -> str:
    """Make the worker's copy of a test database on another server, connecting with the
    engine's own configured credentials (to that server's `postgres` database); returns its name.

    The source is the configured database (a shard that inherits `postgres.database_name`
    already names the worker's copy, `{database}_{worker}`: its source is `{database}`).

    Raises:
        TestDatabaseError: when the copy cannot be made (the role may not create databases,
            the source is missing, the server does not answer).

    """
    database = url.database or ""
    suffix = f"_{worker}"
    source, target = (
        (database[: -len(suffix)], database) if database.endswith(suffix) else (database, database + suffix)
    )
    where = f"{url.host}:{url.port or 5432}"
    maintenance = url.set(database="postgres")
    try:
        if clone_database(maintenance, source, target, str(url.username)):
            copies.append((maintenance, target))
    except PersistenceError as error:
        raise TestDatabaseError(
            f"Under pytest-xdist each worker needs its own copy of {key}'s database {source!r} on {where}: "
            f"could not create {target!r} from it as {url.username!r} (the {key}.username/password configured) "
            f"({error}). Give that role CREATEDB and ownership of {source!r}, create {target!r} yourself, "
            "or run without -n."
        ) from error
    return target


def _drop_copies(copies: list[tuple[URL, str]]) -> None:
    """Drop the per-worker copies `_copy_elsewhere` made (best effort: a failure is warned about)."""
    while copies:
        url, database = copies.pop()
        try:
            drop_database(url, database)
        except PersistenceError as error:
            logger.warning("could not drop the per-worker copy %r on %s:%s: %s", database, url.host, url.port, error)


@pytest.fixture
def postgres_graph(postgres_session_graph: Graph, request: pytest.FixtureRequest) -> Iterator[Graph]:
    """The testing graph with an isolated SessionContext open for this test."""
    graph = postgres_session_graph
    if request.node.get_closest_marker("postgres_commit"):
        with committed(graph):
            yield graph
    else:
        with isolated(graph):
            yield graph


@pytest.fixture(scope="session")
def postgres_topology() -> Iterator[ReplicationTopology]:
    """A throwaway primary and a streaming standby of it (see `microcosm_postgres.testing.topology`)."""
    topology = ReplicationTopology.start()
    try:
        yield topology
    finally:
        topology.stop()

"""pytest plugin (entry point `pytest11`): test databases that set themselves up.

Configure the service name once (pyproject.toml):

    [tool.pytest.ini_options]
    microcosm_postgres_service = "example"

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
                            (by `upgrade head` when the service has migrations).
    postgres_graph          (function) that graph with a SessionContext open in which the
                            test runs inside an outer transaction rolled back at the end.
                            Tests marked `@pytest.mark.postgres_commit` really commit
                            instead, and every table is emptied after them.

The fixtures drop and empty tables only in a test database: named `{name}_test_db` or
`{name}_test_<anything>_db`, or on a throwaway server started by this plugin; for any
other database they stop with `UnsafeOperationError` unless pytest runs with
`--postgres-allow-destructive` (see `microcosm_postgres.operations`).

Under pytest-xdist each worker gets its own database, `{database}_{worker}`, copied
from the first one as a template.

"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from microcosm.api import create_object_graph

from microcosm_postgres.errors import UnsafeOperationError
from microcosm_postgres.factories.engine import database_name_for, username_for
from microcosm_postgres.operations import drop_all, recreate_all, require_test_graph
from microcosm_postgres.provision import clone_database
from microcosm_postgres.testing.database import (
    MODES,
    SERVER_MODE_VARIABLE,
    PostgresServer,
    TestDatabaseError,
    ensure_test_database,
    env_prefix,
    test_server,
)
from microcosm_postgres.testing.isolation import committed, isolated

__all__ = [
    "postgres_graph",
    "postgres_server",
    "postgres_service_name",
    "postgres_session_graph",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "microcosm_postgres_service",
        "service (graph) name whose test database the microcosm-postgres fixtures use",
        default=None,
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgres_commit: the test really commits (threads, several connections); tables are emptied after it",
    )


@pytest.fixture(scope="session")
def postgres_service_name(pytestconfig: pytest.Config) -> str:
    """The service name; from the `microcosm_postgres_service` ini option (override to compute it)."""
    name = pytestconfig.getini("microcosm_postgres_service")
    if not name:
        raise pytest.UsageError(
            'microcosm-postgres fixtures need the service name: set microcosm_postgres_service = "<name>" '
            "under [tool.pytest.ini_options] (or override the postgres_service_name fixture)."
        )
    return str(name)


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config, postgres_service_name: str) -> Iterator[PostgresServer]:
    """The server for this test session (a throwaway one is stopped and deleted at the end)."""
    try:
        with test_server(postgres_service_name, pytestconfig.getoption("--postgres-server")) as server:
            yield server
    except TestDatabaseError as error:
        raise pytest.UsageError(str(error)) from error


@pytest.fixture(scope="session")
def postgres_session_graph(
    postgres_server: PostgresServer, postgres_service_name: str, pytestconfig: pytest.Config
) -> Iterator[Any]:
    """The testing graph, with its role, database (per xdist worker) and fresh tables.

    Raises:
        UnsafeOperationError: (as a usage error) when the configured database is not a test
            database and `--postgres-allow-destructive` is not given; nothing is touched.

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
            raise pytest.UsageError(str(error)) from error
        has_migrations = head_revision(probe) is not None  # a broken lookup fails here, before provisioning
        try:
            ensure_test_database(name, postgres_server)
        except TestDatabaseError as error:
            raise pytest.UsageError(str(error)) from error
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            database = database_name_for(probe.metadata, probe.config.postgres)
            worker_database = f"{database}_{worker}"
            owner = username_for(probe.metadata, probe.config.postgres)
            clone_database(postgres_server.admin_url, database, worker_database, owner)
            patch.setenv(f"{env_prefix(name)}__POSTGRES__DATABASE_NAME", worker_database)
        graph: Any = create_object_graph(name=name, testing=True)
        if has_migrations:
            drop_all(graph)
            upgrade(graph)  # the service's own migrations build the schema
        else:
            recreate_all(graph)
        try:
            yield graph
        finally:
            graph.postgres.dispose()


@pytest.fixture
def postgres_graph(postgres_session_graph: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The testing graph with an isolated SessionContext open for this test."""
    graph = postgres_session_graph
    if request.node.get_closest_marker("postgres_commit"):
        with committed(graph):
            yield graph
    else:
        with isolated(graph):
            yield graph

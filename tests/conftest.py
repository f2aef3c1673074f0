"""Shared fixtures: the `example` service's graph against the real test database.

The driver comes from the environment like any microcosm config
(`EXAMPLE__POSTGRES__DRIVER=postgresql+psycopg` selects psycopg 3); CI runs the
suite once per driver.

"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

import microcosm_postgres.example  # noqa: F401 - binds company_store / employee_store
from microcosm_postgres.context import SessionContext
from microcosm_postgres.provision import provision
from microcosm_postgres.testing.database import PostgresServer, ensure_test_database

pytest_plugins = ["pytester"]


def make_graph(**postgres: Any) -> Any:
    """A testing graph for the example service, with `postgres` config overrides."""
    loader = load_each(load_from_environ, load_from_dict(postgres=postgres))
    return create_object_graph(name="example", testing=True, loader=loader)


SECONDARY_DATABASE = "example_test_secondary_db"
MIGRATION_DATABASES = ("example_test_migrate_db", "example_test_migrate2_db")


@pytest.fixture(scope="session", autouse=True)
def example_databases(postgres_server: PostgresServer) -> PostgresServer:
    """The plugin's server (a throwaway one when none answers), with our two test databases.

    Inside the test session, `EXAMPLE__POSTGRES__*` point at that server, so every graph
    made by `make_graph` uses it.

    """
    ensure_test_database("example", postgres_server)
    ensure_test_database("example", postgres_server, database_name=SECONDARY_DATABASE)
    return postgres_server


@pytest.fixture(scope="session")
def migration_databases(example_databases: PostgresServer) -> None:
    """Two more databases for the migration tests, where models come and go."""
    for database in MIGRATION_DATABASES:
        provision("example", testing=True, database_name=database, admin_url=example_databases.admin_url)


@pytest.fixture
def graph() -> Iterator[Any]:
    graph = make_graph()
    yield graph
    graph.postgres.dispose()


@pytest.fixture
def context(graph: Any) -> Iterator[SessionContext]:
    with SessionContext(graph) as context:
        context.recreate_all()
        yield context


@pytest.fixture
def driver(graph: Any) -> str:
    return str(graph.postgres.dialect.driver)

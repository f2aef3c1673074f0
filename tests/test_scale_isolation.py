"""The plugin's isolation with routed engines and shards: `isolated()` and `committed()`
act on every engine the graph reaches, each on its own database.

The `secret` engine (`tests.test_scale_routing.ScaleSecret`) and the shard `east` are
databases of this run on the suite's server; what is left in them is read directly, not
through the library.

"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from microcosm_postgres import shards as shard_helpers
from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.provision import provision
from microcosm_postgres.store import Store
from microcosm_postgres.testing.database import PostgresServer, ensure_test_database
from microcosm_postgres.testing.isolation import committed, isolated
from microcosm_postgres.testing.topology import ServerGroup
from tests.conftest import database_in_use, run_database
from tests.test_scale_routing import ScaleSecret
from tests.test_testing import INI

SECRET_DATABASE = run_database("iso_secret")
EAST_DATABASE = run_database("iso_east")


@pytest.fixture(scope="module")
def server(example_databases: PostgresServer) -> PostgresServer:
    for database in (SECRET_DATABASE, EAST_DATABASE):
        ensure_test_database("example", example_databases, database_name=database)
    return example_databases


def scaled_graph(server: PostgresServer) -> ExampleGraph:
    """The model strategy with a `secret` engine, and one shard `east` (a database of its own)."""
    config: dict[str, Any] = {
        "sessionmaker": {"engine_routing_strategy": "model_engine_routing_strategy"},
        "secret": {
            "postgres": {
                "host": server.host,
                "port": server.port,
                "database_name": SECRET_DATABASE,
                "driver": os.environ.get("EXAMPLE__POSTGRES__DRIVER", "postgresql+psycopg2"),
            }
        },
        "shards": {"east": {"postgres": {"database_name": EAST_DATABASE}}},
    }
    loader = load_each(load_from_environ, load_from_dict(config))
    return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))


@pytest.fixture
def graph(server: PostgresServer) -> Iterator[ExampleGraph]:
    graph = scaled_graph(server)
    shard_helpers.recreate_all(graph)
    yield graph
    for engine in cast(Any, graph).shards.values():
        engine.dispose()
    cast(Any, graph).model_engine_routing_strategy.engine("secret").dispose()


def count(server: PostgresServer, database: str, table: str) -> int:
    """Committed rows of `table` in `database`, read on a connection of its own."""
    engine = create_engine(server.admin_url.set(database=database), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_isolated_routes_each_model_to_its_engine_and_rolls_every_engine_back(
    graph: ExampleGraph, server: PostgresServer
) -> None:
    secrets = Store(graph, ScaleSecret)
    with isolated(graph) as context:
        assert context.session is not None
        bind = context.session.get_bind(ScaleSecret)
        assert bind.engine.url.database == SECRET_DATABASE  # not the postgres engine's connection
        with transaction():
            secrets.create(ScaleSecret(value="isolated"))
        with transaction():
            graph.company_store.create(Company(name="global-co"))
        assert [row.value for row in secrets.search()] == ["isolated"]
        assert graph.company_store.count() == 1
    assert count(server, SECRET_DATABASE, "scale_secret") == 0
    assert count(server, database_in_use(), "company") == 0


def test_a_shard_session_inside_isolation_is_isolated_too(graph: ExampleGraph, server: PostgresServer) -> None:
    with isolated(graph):
        with SessionContext(graph, shard="east") as east, transaction():
            assert east.session is not None
            assert east.session.get_bind(Company).engine.url.database == EAST_DATABASE
            graph.company_store.create(Company(name="east-co"))
        with SessionContext(graph, shard="east"):
            assert [company.name for company in graph.company_store.search()] == ["east-co"]
        assert graph.company_store.count() == 0  # global: the row went to east
    assert count(server, EAST_DATABASE, "company") == 0


def test_committed_empties_the_tables_of_every_engine_and_shard_it_wrote(
    graph: ExampleGraph, server: PostgresServer
) -> None:
    with committed(graph):
        with transaction():
            Store(graph, ScaleSecret).create(ScaleSecret(value="committed"))
        with transaction():
            graph.company_store.create(Company(name="global-co"))
        with SessionContext(graph, shard="east"), transaction():
            graph.company_store.create(Company(name="east-co"))
        assert count(server, SECRET_DATABASE, "scale_secret") == 1  # really committed
        assert count(server, EAST_DATABASE, "company") == 1
    assert count(server, SECRET_DATABASE, "scale_secret") == 0
    assert count(server, EAST_DATABASE, "company") == 0
    assert count(server, database_in_use(), "company") == 0


SHARD_PROJECT = """
from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company


def test_writes_on_its_shard(postgres_graph):
    with SessionContext(postgres_graph, shard="east"), transaction():
        postgres_graph.company_store.create(Company(name="east-co"))
    with SessionContext(postgres_graph, shard="east"):
        assert postgres_graph.company_store.count() == 1


def test_sees_nothing_of_the_previous_test(postgres_graph):
    with SessionContext(postgres_graph, shard="east"):
        assert postgres_graph.company_store.count() == 0
"""


def test_the_plugin_sets_up_shard_databases_on_its_server_and_isolates_them(
    pytester: pytest.Pytester, server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = run_database("plug_east")  # not created yet: the plugin creates it
    monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__DATABASE_NAME", database)
    pytester.makeini(INI)
    pytester.makepyfile(test_shard_project=SHARD_PROJECT)
    result = pytester.runpytest("--postgres-server", "configured", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    used = f"{database}_{worker}" if worker else database
    assert count(server, used, "company") == 0


def test_under_xdist_a_shard_on_another_server_gets_each_workers_copy_there(
    pytester: pytest.Pytester, server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shard inherits `postgres.database_name`, which each worker points at its own copy
    (`{database}_gw0`): the plugin makes that copy on the shard's server too, and drops it."""
    database = run_database("plug_far")  # the main database on the plugin's server, and the shard's
    with ServerGroup.start(1) as group:
        other = group.servers[0]
        provision("example", testing=True, database_name=database, admin_url=other.admin_url)
        admin = create_engine(other.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql("ALTER ROLE example CREATEDB")
            monkeypatch.setenv("EXAMPLE__POSTGRES__DATABASE_NAME", database)
            monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__HOST", other.host)
            monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__PORT", str(other.port))
            pytester.makeini(INI)
            pytester.makepyfile(test_shard_project=SHARD_PROJECT.replace("def test_sees_nothing", "def _unordered"))
            result = pytester.runpytest_subprocess("--postgres-server", "configured", "-p", "no:randomly", "-n", "2")
            result.assert_outcomes(passed=1)
            with admin.connect() as connection:
                left = connection.execute(
                    text("SELECT datname FROM pg_database WHERE starts_with(datname, :name) ORDER BY 1"),
                    {"name": database},
                ).scalars()
                assert list(left) == [database]  # the workers' copies were dropped
        finally:
            admin.dispose()

"""Migrations on every routed engine: each `__engine__` keeps its own history and version table.

The `postgres` engine and the `secret` engine (`tests.test_scale_routing.ScaleSecret`) are
two real databases of the suite's server; the histories are in a temporary directory,
`migrations/` for `postgres` and `migrations/secret/` for `secret`.

"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.registry import Registry
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from microcosm_postgres import migrate
from microcosm_postgres.errors import MigrationsBehindError
from microcosm_postgres.factories.routing import router_for
from microcosm_postgres.graph import Graph, as_graph
from microcosm_postgres.health import check_alembic, check_migrations
from microcosm_postgres.migrate import MissingEngineMigrationsError
from microcosm_postgres.operations import create_all, drop_all
from microcosm_postgres.testing.database import PostgresServer, ensure_test_database
from tests.conftest import run_database, tables_on
from tests.test_scale_routing import ScaleSecret

MAIN_DATABASE = run_database("engines_main")
SECRET_DATABASE = run_database("engines_secret")


@pytest.fixture(scope="module")
def server(example_databases: PostgresServer) -> PostgresServer:
    for database in (MAIN_DATABASE, SECRET_DATABASE):
        ensure_test_database("example", example_databases, database_name=database)
    return example_databases


def engine_graph(server: PostgresServer, directory: Path, *, secret_database: str = SECRET_DATABASE) -> Graph:
    registry = Registry()
    registry.bind("migrations_dir", lambda graph: str(directory))
    config: dict[str, Any] = {
        "postgres": {"database_name": MAIN_DATABASE},
        "sessionmaker": {"engine_routing_strategy": "model_engine_routing_strategy"},
        "secret": {
            "postgres": {
                "host": server.host,
                "port": server.port,
                "database_name": secret_database,
                "driver": os.environ.get("EXAMPLE__POSTGRES__DRIVER", "postgresql+psycopg2"),
            }
        },
    }
    loader = load_each(load_from_environ, load_from_dict(config))
    return as_graph(create_object_graph(name="example", testing=True, registry=registry, loader=loader))


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


@pytest.fixture
def graph(server: PostgresServer, directory: Path) -> Iterator[Graph]:
    graph = engine_graph(server, directory)
    drop_all(graph)
    yield graph
    drop_all(graph)
    for engine in (graph.postgres, migrate.engine_named(graph, "secret")):
        engine.dispose()


def version(server: PostgresServer, database: str) -> list[str]:
    engine = create_engine(server.admin_url.set(database=database), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def test_each_engine_keeps_its_own_history(
    graph: Graph, directory: Path, server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ScaleSecret.__engine__ == "secret"
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "main")
    [main_revision] = directory.glob("*.py")
    source = main_revision.read_text()
    assert "op.create_table('company'" in source
    assert "scale_secret" not in source

    # Models route to `secret`, which has no history yet: refused, saying how to create it.
    with pytest.raises(MissingEngineMigrationsError) as raised:
        migrate.main(graph, "--raiseerr", "upgrade", "head")
    assert "revision --engine secret" in str(raised.value)
    assert str(directory / "secret") in str(raised.value)

    (directory / "secret").mkdir()
    migrate.main(graph, "--raiseerr", "revision", "--engine", "secret", "--autogenerate", "-m", "secret")
    [secret_revision] = (directory / "secret").glob("*.py")
    source = secret_revision.read_text()
    assert "op.create_table('scale_secret'" in source
    assert "company" not in source
    assert len(list(directory.glob("*.py"))) == 1  # nothing added to the postgres history

    migrate.main(graph, "--raiseerr", "upgrade", "head")
    main_head = migrate.head_revision(graph)
    secret_head = migrate.head_revision(graph, engine="secret")
    assert main_head is not None
    assert secret_head is not None
    assert main_head != secret_head
    assert "scale_secret" in tables_on(server.admin_url, SECRET_DATABASE)
    assert "company" not in tables_on(server.admin_url, SECRET_DATABASE)
    assert "company" in tables_on(server.admin_url, MAIN_DATABASE)
    assert "scale_secret" not in tables_on(server.admin_url, MAIN_DATABASE)
    assert version(server, MAIN_DATABASE) == [main_head]
    assert version(server, SECRET_DATABASE) == [secret_head]
    assert check_alembic(graph) == main_head
    assert check_alembic(graph, engine="secret") == secret_head
    assert "engine 'secret'" in check_migrations(graph)

    capsys.readouterr()
    migrate.main(graph, "--raiseerr", "current")
    out = capsys.readouterr().out
    assert "shard 'global', engine 'postgres':" in out
    assert "shard 'global', engine 'secret':" in out
    assert main_head in out
    assert secret_head in out

    migrate.main(graph, "--raiseerr", "downgrade", "--engine=secret", "base")
    assert "scale_secret" not in tables_on(server.admin_url, SECRET_DATABASE)
    assert "company" in tables_on(server.admin_url, MAIN_DATABASE)
    assert check_alembic(graph, engine="secret") is None
    with pytest.raises(MigrationsBehindError) as behind:
        check_migrations(graph)
    assert "engine 'secret'" in str(behind.value)

    migrate.main(graph, "--raiseerr", "downgrade", "base")
    assert "company" not in tables_on(server.admin_url, MAIN_DATABASE)
    migrate.upgrade(graph)
    assert check_alembic(graph, engine="secret") == secret_head
    assert check_alembic(graph) == main_head


def test_create_all_stamps_each_engine_with_its_head(graph: Graph, directory: Path, server: PostgresServer) -> None:
    (directory / "secret").mkdir()
    migrate.main(graph, "--raiseerr", "revision", "-m", "main")
    migrate.main(graph, "--raiseerr", "revision", "--engine", "secret", "-m", "secret")
    created = create_all(graph)
    assert "scale_secret" in created
    assert "company" in created
    assert version(server, MAIN_DATABASE) == [migrate.head_revision(graph)]
    assert version(server, SECRET_DATABASE) == [migrate.head_revision(graph, engine="secret")]
    drop_all(graph)
    assert "alembic_version" not in tables_on(server.admin_url, SECRET_DATABASE)


def test_a_routed_engine_on_the_postgres_database_cannot_have_a_history(
    server: PostgresServer, directory: Path
) -> None:
    (directory / "secret").mkdir()
    graph = engine_graph(server, directory, secret_database=MAIN_DATABASE)
    try:
        with pytest.raises(MissingEngineMigrationsError) as raised:
            migrate.main(graph, "--raiseerr", "current", "--engine", "secret")
        assert "same database" in str(raised.value)
        with pytest.raises(MissingEngineMigrationsError) as unknown:
            migrate.main(graph, "--raiseerr", "current", "--engine", "vault")
        assert "'vault'" in str(unknown.value)
    finally:
        graph.postgres.dispose()
        migrate.engine_named(graph, "postgres").dispose()


def test_upgrade_checks_every_engine_before_running_any(graph: Graph, directory: Path, server: PostgresServer) -> None:
    migrate.main(graph, "--raiseerr", "revision", "-m", "main")  # the postgres history only: no secret/
    with pytest.raises(MissingEngineMigrationsError) as raised:
        migrate.main(graph, "--raiseerr", "upgrade", "head")
    assert "secret" in str(raised.value)
    assert "alembic_version" not in tables_on(server.admin_url, MAIN_DATABASE)  # global was not upgraded first
    with pytest.raises(MissingEngineMigrationsError):
        migrate.upgrade(graph)
    assert "alembic_version" not in tables_on(server.admin_url, MAIN_DATABASE)


def test_a_routed_engine_on_the_postgres_database_stops_upgrade_before_anything_runs(
    server: PostgresServer, directory: Path
) -> None:
    (directory / "secret").mkdir()
    graph = engine_graph(server, directory, secret_database=MAIN_DATABASE)
    try:
        drop_all(graph)
        migrate.main(graph, "--raiseerr", "revision", "-m", "main")
        with pytest.raises(MissingEngineMigrationsError) as raised:
            migrate.main(graph, "--raiseerr", "upgrade", "head")
        assert "same database" in str(raised.value)
        assert "alembic_version" not in tables_on(server.admin_url, MAIN_DATABASE)
    finally:
        graph.postgres.dispose()
        getattr(router_for(graph), "engines", {})["secret"].dispose()  # drop_all connected through it


def test_an_unknown_engine_name_is_said_to_be_unknown(graph: Graph, directory: Path) -> None:
    with pytest.raises(MissingEngineMigrationsError) as raised:
        migrate.main(graph, "--raiseerr", "current", "--engine", "nope")
    message = str(raised.value)
    assert "Unknown engine 'nope'" in message
    assert "'postgres', 'secret'" in message
    assert "has no migration history" not in message

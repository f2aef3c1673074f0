"""Destructive operations touch only test databases; a test database is ours to clear."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from microcosm_postgres import createall
from microcosm_postgres.context import SessionContext
from microcosm_postgres.errors import UnsafeOperationError
from microcosm_postgres.example import ExampleGraph
from microcosm_postgres.models import Model
from microcosm_postgres.operations import (
    create_all,
    drop_alembic_table,
    drop_all,
    recreate_all,
    require_test_database,
    reset_all,
    truncate_all,
)
from microcosm_postgres.testing import server as server_module
from microcosm_postgres.testing.database import PostgresServer
from microcosm_postgres.testing.server import THROWAWAY_SERVERS_VARIABLE, TemporaryServer, is_throwaway_server
from tests.conftest import make_graph


@pytest.fixture
def not_on_a_throwaway_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget that this session's server is a throwaway one: it then stands for a real server."""
    monkeypatch.setattr(server_module, "_running", set())
    monkeypatch.delenv(THROWAWAY_SERVERS_VARIABLE, raising=False)


def _admin(server: PostgresServer) -> Engine:
    return create_engine(server.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _company_names(graph: ExampleGraph) -> list[str]:
    with graph.postgres.connect() as connection:
        if not inspect(connection).has_table("company"):
            return []
        return list(connection.execute(text("SELECT name FROM company ORDER BY name")).scalars())


@pytest.fixture
def real_database(example_databases: PostgresServer) -> Iterator[str]:
    """A database named like a service's real one (`example_<unique>_db`), holding a company row."""
    name = f"example_safety_{uuid.uuid4().hex[:8]}_db"
    admin = _admin(example_databases)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER example')
    graph = make_graph(database_name=name)
    try:
        create_all(graph)
        with graph.postgres.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO company (id, name, created_at, updated_at) "
                    "VALUES (gen_random_uuid(), 'precious', now(), now())"
                )
            )
        graph.postgres.dispose()
        yield name
    finally:
        graph.postgres.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _context_recreate_all(graph: ExampleGraph) -> None:
    with SessionContext(graph) as context:
        context.recreate_all()


def _flag(graph: ExampleGraph) -> bool:
    return bool(graph.config["postgres"]["allow_destructive"])


OPERATIONS: dict[str, Callable[[ExampleGraph], object]] = {
    "drop_all": drop_all,
    "recreate_all": recreate_all,
    "reset_all": lambda graph: reset_all(graph.postgres, Model.metadata, allow_destructive=_flag(graph)),
    "truncate_all": lambda graph: truncate_all(graph.postgres, Model.metadata, allow_destructive=_flag(graph)),
    "drop_alembic_table": drop_alembic_table,
    "SessionContext.recreate_all": _context_recreate_all,
    "createall --drop": lambda graph: createall.main(graph, ["--drop", "--raiseerr"]),
}


@pytest.mark.usefixtures("not_on_a_throwaway_server")
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_destructive_operations_refuse_a_real_database_and_send_nothing(real_database: str, operation: str) -> None:
    graph = make_graph(database_name=real_database)
    statements: list[str] = []
    event.listen(graph.postgres, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        with pytest.raises(UnsafeOperationError) as raised:
            OPERATIONS[operation](graph)
        message = str(raised.value)
        assert repr(real_database) in message
        assert "postgres.allow_destructive = true" in message
        assert "--postgres-allow-destructive" in message
        assert raised.value.status_code == 500
        assert statements == []
        assert _company_names(graph) == ["precious"]
    finally:
        graph.postgres.dispose()


@pytest.mark.usefixtures("not_on_a_throwaway_server")
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_the_config_opt_in_allows_them(real_database: str, operation: str) -> None:
    graph = make_graph(database_name=real_database, allow_destructive=True)
    try:
        OPERATIONS[operation](graph)
        if operation != "drop_alembic_table":
            assert _company_names(graph) == []
    finally:
        graph.postgres.dispose()


@pytest.mark.usefixtures("not_on_a_throwaway_server")
def test_the_pytest_plugin_refuses_a_real_database_unless_told(
    pytester: pytest.Pytester, real_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nmicrocosm_postgres_service = example\n")
    pytester.makepyfile(
        test_inner="""
def test_empty(postgres_graph):
    assert postgres_graph.company_store.count() == 0
"""
    )
    monkeypatch.setenv("EXAMPLE__POSTGRES__DATABASE_NAME", real_database)
    # The inner run is a pytest session of its own, not an xdist worker of ours (its plugin
    # would otherwise test a per-worker copy of the database).
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    graph = make_graph(database_name=real_database)
    try:
        refused = pytester.runpytest("--postgres-server", "configured")
        output = "\n".join(refused.outlines + refused.errlines)
        assert refused.ret != 0
        assert f"Refused to recreate tables in database {real_database!r}" in output
        assert repr(real_database) in output
        assert "--postgres-allow-destructive" in output
        assert _company_names(graph) == ["precious"]

        allowed = pytester.runpytest("--postgres-server", "configured", "--postgres-allow-destructive")
        allowed.assert_outcomes(passed=1)
        assert _company_names(graph) == []
    finally:
        graph.postgres.dispose()


def test_servers_started_here_count_as_throwaway_also_in_subprocesses() -> None:
    server = TemporaryServer.start()
    engine = create_engine(server.admin_url.set(database="anything_db"), poolclass=NullPool)
    probe = [
        sys.executable,
        "-c",
        "import sys; from microcosm_postgres.testing.server import is_throwaway_server; "
        f"sys.exit(0 if is_throwaway_server({server.host!r}, {server.port}) else 3)",
    ]
    try:
        assert is_throwaway_server(server.host, server.port)
        assert f"{server.host}:{server.port}" in os.environ[THROWAWAY_SERVERS_VARIABLE].split()
        assert subprocess.run(probe, check=False).returncode == 0
        require_test_database(engine)  # any database on it
    finally:
        server.stop()
    assert not is_throwaway_server(server.host, server.port)
    assert f"{server.host}:{server.port}" not in os.environ.get(THROWAWAY_SERVERS_VARIABLE, "").split()
    assert subprocess.run(probe, check=False).returncode == 3
    with pytest.raises(UnsafeOperationError, match="'anything_db'"):
        require_test_database(engine)


@pytest.mark.usefixtures("not_on_a_throwaway_server")
@pytest.mark.parametrize(
    ("database", "service", "allowed"),
    [
        ("example_test_db", "example", True),
        ("example_test_secondary_db", "example", True),
        ("example_test_db_gw3", "example", True),
        ("example_db", "example", False),
        ("other_test_db", "example", False),
        ("other_test_db", None, True),
        ("production", None, False),
    ],
)
def test_test_databases_are_known_by_name(database: str, service: str | None, allowed: bool) -> None:
    engine = create_engine(f"postgresql+psycopg2://nobody@127.0.0.1:1/{database}", poolclass=NullPool)
    if allowed:
        require_test_database(engine, service=service)
    else:
        with pytest.raises(UnsafeOperationError):
            require_test_database(engine, service=service)
    require_test_database(engine, service=service, allow_destructive=True)


BADGE = "safety_foreign_badge"


def _add_employee_with_badge(graph: ExampleGraph) -> None:
    with graph.postgres.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO company (id, name, created_at, updated_at) "
                "VALUES ('00000000-0000-0000-0000-000000000001', 'Acme', now(), now())"
            )
        )
        connection.execute(
            text(
                "INSERT INTO employee (id, first, last, company_id, created_at, updated_at) VALUES "
                "('00000000-0000-0000-0000-000000000002', 'A', 'B', "
                "'00000000-0000-0000-0000-000000000001', now(), now())"
            )
        )
        connection.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {BADGE} (id serial PRIMARY KEY, employee_id uuid NOT NULL)"
        )
        connection.exec_driver_sql(f"TRUNCATE {BADGE}")
        connection.exec_driver_sql(f"ALTER TABLE {BADGE} ADD FOREIGN KEY (employee_id) REFERENCES employee (id)")
        connection.exec_driver_sql(f"INSERT INTO {BADGE} (employee_id) VALUES ('00000000-0000-0000-0000-000000000002')")


def _badges(graph: ExampleGraph) -> int:
    with graph.postgres.connect() as connection:
        return int(connection.exec_driver_sql(f"SELECT count(*) FROM {BADGE}").scalar() or 0)


@pytest.mark.parametrize("operation", ["recreate_all (tables known)", "recreate_all (first time)", "drop_all"])
def test_tables_referenced_by_foreign_tables_are_cleared(graph: ExampleGraph, operation: str) -> None:
    from microcosm_postgres import operations

    recreate_all(graph)
    _add_employee_with_badge(graph)
    try:
        if operation == "drop_all":
            drop_all(graph)
            assert not inspect(graph.postgres).has_table("employee")
        else:
            if operation == "recreate_all (first time)":
                operations._created.clear()
            recreate_all(graph)
            assert _company_names(graph) == []
        assert _badges(graph) == 1  # the other service's rows stay; only its foreign key to ours went
        assert not inspect(graph.postgres).get_foreign_keys(BADGE)
    finally:
        with graph.postgres.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {BADGE}")
        recreate_all(graph)

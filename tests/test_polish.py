"""What a new user met first: one-line failures of the commands, typed errors kept, plugin stops cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest
from alembic.util import CommandError
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.registry import Registry
from sqlalchemy import MetaData, event, text
from sqlalchemy.exc import DBAPIError

from microcosm_postgres import createall, migrate
from microcosm_postgres.context import SessionContext
from microcosm_postgres.errors import (
    AuthenticationFailedError,
    DatabaseUnavailableError,
    InvalidInputError,
    translating,
)
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.health import check_health
from microcosm_postgres.store import Store
from tests.conftest import make_graph, run_database
from tests.test_migrate import make_graph as make_migration_graph
from tests.test_testing import project  # noqa: F401  (a fixture)

MIGRATE_SCRIPT = """
import sys

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.registry import Registry
from microcosm.registry import Registry

import microcosm_postgres.example  # the models
from microcosm_postgres import migrate

registry = Registry()
registry.bind("migrations_dir", lambda graph: sys.argv[1])
migrate.main(create_object_graph(name="example", testing=True, registry=registry), *sys.argv[2:])
"""


def closed_port() -> int:
    """A port nothing listens on (just released by the kernel)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def failure(error: pytest.ExceptionInfo[SystemExit], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a command printed on stderr when it exited with status 1."""
    assert error.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


# --- migrate: database faults and empty metadata ------------------------------------------


@pytest.mark.parametrize("fault", ["wrong port", "missing database"])
def test_migrate_reports_a_database_fault_in_one_typed_line(tmp_path: Path, fault: str) -> None:
    (tmp_path / "migrations").mkdir()
    script = tmp_path / "migrate_entry.py"
    script.write_text(textwrap.dedent(MIGRATE_SCRIPT))
    environment = {**os.environ, "EXAMPLE__POSTGRES__ENGINE_RETRIES": "0"}
    if fault == "wrong port":
        environment["EXAMPLE__POSTGRES__PORT"] = str(closed_port())
    else:
        environment["EXAMPLE__POSTGRES__DATABASE_NAME"] = run_database(f"missing_{uuid4().hex[:6]}")
    completed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "migrations"), "upgrade", "head"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    lines = completed.stderr.splitlines()
    expected = "DatabaseUnavailableError" if fault == "wrong port" else "DatabaseMissingError"  # not retried
    assert lines[-1].startswith(f"FAILED: {expected}: "), completed.stderr
    assert "Traceback" not in completed.stderr
    assert [line for line in lines if "FAILED" in line] == [lines[-1]]
    if fault == "missing database":
        assert environment["EXAMPLE__POSTGRES__DATABASE_NAME"] in lines[-1]


def test_migrate_raiseerr_raises_the_typed_error(tmp_path: Path) -> None:
    registry = Registry()
    registry.bind("migrations_dir", lambda graph: str(tmp_path))
    loader = load_each(load_from_environ, load_from_dict(postgres={"port": closed_port(), "engine_retries": 0}))
    graph = create_object_graph(name="example", testing=True, registry=registry, loader=loader)
    with pytest.raises(DatabaseUnavailableError) as raised:
        migrate.main(graph, "--raiseerr", "current")
    # The driver's own error stays on the chain (raised by the engine's connect, unwrapped).
    cause = raised.value.__cause__
    assert isinstance(cause, DBAPIError) or type(cause).__name__ == "OperationalError"
    assert "postgres.host/port" in str(raised.value)


@pytest.mark.parametrize("arguments", [("check",), ("revision", "--autogenerate", "-m", "everything")])
def test_migrate_refuses_to_compare_without_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...]
) -> None:
    graph = make_migration_graph(tmp_path)
    statements: list[str] = []
    event.listen(graph.postgres, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        with pytest.raises(SystemExit) as raised:
            migrate.main(graph, *arguments, model_cls=SimpleNamespace(metadata=MetaData()))
        line = failure(raised, capsys)
    finally:
        graph.postgres.dispose()
    assert line.startswith("FAILED: The metadata holds no table")
    assert "Import the service's model modules" in line
    assert list(tmp_path.iterdir()) == []  # no revision written
    assert statements == []


def test_migrate_names_the_fix_when_the_package_is_not_imported() -> None:
    orphan = create_object_graph(name="polish_not_imported_xyz", testing=True)
    with pytest.raises(CommandError) as raised:
        migrate.migrations_dir(orphan)
    message = str(raised.value)
    assert "'polish_not_imported_xyz', which is not imported" in message
    assert "Import your service's package before calling migrate.main" in message
    assert "import_name=" in message
    assert "migrations_dir" in message


# --- createall: one line, exit 1 ----------------------------------------------------------


def test_createall_reports_a_database_fault_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    graph = make_graph(port=closed_port(), engine_retries=0)
    try:
        with pytest.raises(SystemExit) as raised:
            createall.main(graph, [])
        line = failure(raised, capsys)
        assert line.startswith("error: DatabaseUnavailableError: ")
        with pytest.raises(DatabaseUnavailableError):
            createall.main(graph, ["--raiseerr"])
    finally:
        graph.postgres.dispose()


def test_provision_uses_the_same_one_line_report(capsys: pytest.CaptureFixture[str]) -> None:
    from microcosm_postgres.provision import main as provision_main

    admin_url = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    assert provision_main(["--name", "example", "--testing", "--admin-url", admin_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: DatabaseUnavailableError: Could not connect")
    assert err.count("\n") == 1


# --- health: the class of the underlying error is kept ------------------------------------


def test_check_health_keeps_a_refused_login_not_retryable(example_databases: object) -> None:
    role = f"polish_nobody_{uuid4().hex[:8]}"
    graph = make_graph(username=role)
    try:
        with pytest.raises(AuthenticationFailedError) as raised:
            check_health(graph)
    finally:
        graph.postgres.dispose()
    error = raised.value
    assert error.retryable is False
    assert error.status_code == 503
    url = graph.postgres.url
    assert f"PostgreSQL at {url.host}:{url.port}, database {url.database!r} refused the login" in str(error)
    assert repr(role) in str(error)
    assert isinstance(error.__cause__, AuthenticationFailedError)


def test_check_health_down_stays_retryable() -> None:
    graph = make_graph(port=closed_port(), engine_retries=0)
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            check_health(graph)
    finally:
        graph.postgres.dispose()
    assert type(raised.value) is DatabaseUnavailableError
    assert raised.value.retryable is True


# --- errors: `cause` ----------------------------------------------------------------------


def test_cause_of_a_translated_error_is_the_driver_exception(graph: ExampleGraph) -> None:
    with graph.postgres.connect() as connection:
        with pytest.raises(InvalidInputError) as raised, translating():
            connection.execute(text("SELECT CAST('not a uuid' AS uuid)"))
    error = raised.value
    assert error.cause is error.__cause__
    assert isinstance(error.cause, DBAPIError)
    graph.postgres.dispose()


def test_an_explicit_cause_wins_over_the_chained_one() -> None:
    given, chained = KeyError("given"), ValueError("chained")
    with pytest.raises(InvalidInputError) as raised:
        raise InvalidInputError("bad", given) from chained
    assert raised.value.cause is given
    assert raised.value.__cause__ is chained


# --- store: grammar -----------------------------------------------------------------------


def test_filter_type_message_uses_the_right_article(graph: ExampleGraph, context: SessionContext) -> None:
    companies = Store(graph, Company, auto_filter_fields=[Company.name])
    with pytest.raises(InvalidInputError) as raised:
        companies.search(name=12345)
    assert "filter 'name' of Company must be a str (got an int that is not one)" in str(raised.value)


# --- the pytest plugin: a server that does not answer stops the run ------------------------


def test_configured_server_not_answering_stops_the_run_as_a_usage_error(
    project: pytest.Pytester,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = closed_port()
    monkeypatch.setenv("EXAMPLE__POSTGRES__PORT", str(port))
    host = make_graph().postgres.url.host
    result = project.runpytest("--postgres-server", "configured")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert f"No PostgreSQL server answered at {host}:{port}" in output
    assert "UsageError" not in output
    assert "Traceback" not in output
    assert "ERROR at setup" not in output
    assert output.count("No PostgreSQL server answered") == 1  # once, not once per test

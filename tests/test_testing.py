"""The pytest plugin, provisioning and the throwaway server, exercised for real."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from microcosm_postgres.errors import DatabaseUnavailableError, sqlstate_of
from microcosm_postgres.provision import admin_url_for, provision
from microcosm_postgres.testing.server import (
    ServerNotAvailableError,
    TemporaryServer,
    is_listening,
    is_throwaway_server,
)
from tests.conftest import RUN_ID, make_graph, run_database

INI = """
[pytest]
microcosm_postgres_service = example
filterwarnings = error
"""

PROJECT_TESTS = """
import threading

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company


def test_create(postgres_graph):
    with transaction():
        postgres_graph.company_store.create(Company(name="Acme"))
    assert postgres_graph.company_store.count() == 1


def test_sees_no_rows_of_the_previous_test(postgres_graph):
    assert postgres_graph.company_store.count() == 0
    with transaction():
        postgres_graph.company_store.create(Company(name="Acme"))  # no duplicate: the row is gone


def test_nested_rollback_inside_the_fixture(postgres_graph):
    store = postgres_graph.company_store
    with transaction():
        store.create(Company(name="kept"))
        with pytest.raises(ZeroDivisionError), transaction():
            store.create(Company(name="dropped"))
            1 / 0
    assert [company.name for company in store.search()] == ["kept"]


@pytest.mark.postgres_commit
def test_really_commits(postgres_graph):
    with transaction():
        postgres_graph.company_store.create(Company(name="Committed"))
    seen = []

    def other_thread():
        with SessionContext(postgres_graph):
            seen.append(postgres_graph.company_store.count())

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen == [1]


def test_after_the_committing_test(postgres_graph):
    assert postgres_graph.company_store.count() == 0
"""


def company_rows() -> int:
    graph = make_graph()
    try:
        with graph.postgres.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM company")).scalar() or 0)
    finally:
        graph.postgres.dispose()


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makepyfile(test_project=PROJECT_TESTS)
    return pytester


def test_fixtures_isolate_tests_and_leave_nothing_behind(project: pytest.Pytester) -> None:
    # The inner session uses this session's server, so its leftovers would show here.
    result = project.runpytest("--postgres-server", "configured")
    result.assert_outcomes(passed=5)
    assert company_rows() == 0


def test_pytest_xdist_gives_each_worker_its_own_database(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = run_database("xdist")  # dropped with this run's databases
    monkeypatch.setenv("EXAMPLE__POSTGRES__DATABASE_NAME", database)
    project.makepyfile(
        test_worker=f"""
import os

def test_database_name(postgres_graph):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert postgres_graph.postgres.url.database == {database!r} + "_" + worker
"""
    )
    result = project.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=6)


@pytest.fixture
def throwaway_name() -> Iterator[str]:
    """A service name of this run (quotes inside) whose roles and databases are dropped afterwards."""
    name = f"mp_prov'o\"q_{RUN_ID}"
    yield name
    _drop(name)


def _admin() -> Engine:
    return create_engine(admin_url_for(), poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _drop(name: str) -> None:
    engine = _admin()
    try:
        with engine.connect() as connection:
            quote = connection.dialect.identifier_preparer.quote_identifier
            for database in (f"{name}_db", f"{name}_test_db"):
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote(database)}")
            for role in (f"{name}_ro", name):
                connection.exec_driver_sql(f"DROP ROLE IF EXISTS {quote(role)}")
    finally:
        engine.dispose()


def _connect_as(role: str, database: str, password: str | None = None) -> Engine:
    url = make_graph().postgres.url.set(username=role, password=password, database=database)
    return create_engine(url, poolclass=NullPool)


def test_provisioning_is_idempotent_and_quotes_names(throwaway_name: str) -> None:
    first = provision(throwaway_name, testing=True)
    assert first.roles == [throwaway_name]
    assert first.databases == [f"{throwaway_name}_test_db"]
    second = provision(throwaway_name, testing=True)
    assert (second.roles, second.databases, second.grants) == ([], [], [])
    assert "nothing to do" in str(second)
    engine = _connect_as(throwaway_name, f"{throwaway_name}_test_db")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT current_user")).scalar() == throwaway_name
    engine.dispose()


def test_production_role_gets_a_password_and_read_only_role_only_reads(throwaway_name: str) -> None:
    provision(throwaway_name, password="correct horse", read_only_role=True, read_only_password="reader pw")
    database = f"{throwaway_name}_db"
    admin = _admin()
    with admin.connect() as connection:
        hashes: dict[str, str | None] = dict(
            connection.execute(
                text("SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN (:a, :b)"),
                {"a": throwaway_name, "b": f"{throwaway_name}_ro"},
            ).all()
        )
    admin.dispose()
    assert set(hashes) == {throwaway_name, f"{throwaway_name}_ro"}
    for role, value in hashes.items():
        assert value is not None, role
        assert value.startswith("SCRAM-SHA-256$"), role
    owner = _connect_as(throwaway_name, database)
    with owner.begin() as connection:
        connection.execute(text("CREATE TABLE later (n int)"))  # created after the grants
        connection.execute(text("INSERT INTO later VALUES (1)"))
    owner.dispose()
    reader = _connect_as(f"{throwaway_name}_ro", database)
    with reader.connect() as connection:
        assert connection.execute(text("SELECT n FROM later")).scalar() == 1
    with reader.connect() as connection, pytest.raises(DBAPIError) as refused:
        connection.execute(text("INSERT INTO later VALUES (2)"))
    assert sqlstate_of(refused.value) == "42501"  # insufficient_privilege
    reader.dispose()


def test_provision_command(throwaway_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from microcosm_postgres.__main__ import main

    assert main(["provision", "--name", throwaway_name, "--testing"]) == 0
    assert f"created database {throwaway_name}_test_db" in capsys.readouterr().out
    assert main(["provision", "--name", throwaway_name, "--testing"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([]) == 2


def test_provision_without_a_server_is_a_typed_error() -> None:
    with pytest.raises(DatabaseUnavailableError):
        provision("nobody", admin_url=URL.create("postgresql+psycopg2", username="postgres", host="127.0.0.1", port=1))


@pytest.fixture
def temporary() -> Iterator[Path]:
    """An empty directory for TMPDIR that the server's system user can enter (tmp_path's parent is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="microcosm-postgres-suite-tmpdir-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_throwaway_server_is_started_and_removed_even_after_a_failure(
    project: pytest.Pytester, tmp_path: Path, temporary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "server.json"
    monkeypatch.setenv("TMPDIR", str(temporary))  # whatever the inner run leaves shows there
    project.makepyfile(
        test_server=f"""
import json

def test_uses_the_throwaway_server(postgres_server, postgres_graph):
    with open({str(report)!r}, "w") as out:
        json.dump({{"host": postgres_server.host, "port": postgres_server.port,
                   "source": postgres_server.source, "directory": str(postgres_server.directory)}}, out)
    assert postgres_graph.postgres.url.port == postgres_server.port != 5432
    assert postgres_graph.company_store.count() == 0

def test_that_fails(postgres_graph):
    assert False, "deliberately failing"
"""
    )
    result = project.runpytest_subprocess(
        "test_server.py",
        "test_project.py",
        "-p",
        "no:cacheprovider",
        "--postgres-server",
        "temporary",
    )
    result.assert_outcomes(passed=6, failed=1)
    server = json.loads(report.read_text())
    assert server["source"].startswith("throwaway server from")
    directory = Path(server["directory"])
    assert directory.parent == temporary  # it honoured TMPDIR ...
    assert not directory.exists()  # ... and is gone
    assert list(temporary.glob("microcosm-*")) == []
    assert not is_listening(server["host"], server["port"])
    result.stdout.fnmatch_lines([f"microcosm-postgres: used a throwaway server from * in {directory} (now removed)"])


def test_throwaway_server_directly() -> None:
    server = TemporaryServer.start()
    try:
        engine = create_engine(server.admin_url, poolclass=NullPool)
        with engine.connect() as connection:
            settings = connection.execute(
                text(
                    "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
                    "current_setting('full_page_writes')"
                )
            ).one()
        engine.dispose()
        assert tuple(settings) == ("off", "off", "off")
    finally:
        server.stop()
    assert not server.directory.exists()
    assert not is_listening(server.host, server.port)
    server.stop()  # idempotent
    with pytest.raises(ServerNotAvailableError, match="only a running server started from PostgreSQL's binaries"):
        server.restart()


def test_server_mode_from_the_environment_is_validated(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROCOSM_POSTGRES_TEST_SERVER", "sometimes")
    result = project.runpytest("test_project.py::test_create")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*MICROCOSM_POSTGRES_TEST_SERVER must be one of*"])


def test_throwaway_server_from_the_pgserver_wheel() -> None:
    if importlib.util.find_spec("pgserver") is None:
        # Python 3.13+: pgserver has no wheel, so the `test` extra leaves it out (setup.cfg).
        with pytest.raises(ServerNotAvailableError, match="pgserver"):
            TemporaryServer.start(prefer="pgserver")
        return
    server = TemporaryServer.start(prefer="pgserver")
    try:
        assert server.source == "the pgserver package"
        with pytest.raises(ServerNotAvailableError, match="Cannot restart"):
            server.restart()
        engine = create_engine(server.admin_url, poolclass=NullPool)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT current_setting('fsync')")).scalar() == "off"
        engine.dispose()
    finally:
        server.stop()
    assert not server.directory.exists()


def test_no_server_and_nothing_to_start_one_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from microcosm_postgres.testing import server as server_module

    monkeypatch.setattr(server_module, "find_binaries", lambda: None)
    monkeypatch.setitem(sys.modules, "pgserver", None)  # import fails as if not installed
    with pytest.raises(ServerNotAvailableError, match="apt-get install postgresql") as raised:
        TemporaryServer.start()
    assert "pgserver" in str(raised.value)


def test_the_old_test_server_name_is_not_collected_as_a_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_imports="""
from microcosm_postgres.testing.database import test_server, use_test_server

def test_alias():
    assert test_server is use_test_server
"""
    )
    result = project.runpytest("test_imports.py")
    result.assert_outcomes(passed=1)


SERVICE_MODULE_TEST = """
def test_store_is_bound_without_importing_the_models(postgres_graph):
    assert postgres_graph.company_store.count() == 0
"""


def test_plugin_imports_the_module_named_like_the_service(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        example="import microcosm_postgres.example  # noqa: F401 - the service's package binds its stores",
        test_alone=SERVICE_MODULE_TEST,
    )
    # A fresh interpreter: this one has imported the example's stores already.
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)


def test_plugin_imports_the_modules_named_in_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "microcosm_postgres_import = microcosm_postgres.example\n")
    pytester.makepyfile(test_alone=SERVICE_MODULE_TEST)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)


def test_a_module_that_cannot_be_imported_is_named(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "microcosm_postgres_import = microcosm_postgres.exampel\n")
    pytester.makepyfile(test_alone=SERVICE_MODULE_TEST)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*could not import 'microcosm_postgres.exampel'*microcosm_postgres_import*"])


def test_header_names_the_configured_server_and_database(project: pytest.Pytester) -> None:
    url = make_graph().postgres.url
    result = project.runpytest("--collect-only", "--postgres-server", "configured")
    result.stdout.fnmatch_lines(
        [f"microcosm-postgres: the configured server at {url.host}:{url.port}, database {url.database}"]
    )


def test_header_shows_a_mistyped_port(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE__POSTGRES__PORT", "1")
    host = make_graph().postgres.url.host
    auto = project.runpytest("--collect-only", "--postgres-server", "auto")
    auto.stdout.fnmatch_lines([f"microcosm-postgres: nothing answers at {host}:1: a throwaway server will be started*"])
    configured = project.runpytest("--collect-only", "--postgres-server", "configured")
    configured.stdout.fnmatch_lines([f"microcosm-postgres: the configured server at {host}:1, *NOTHING ANSWERS there"])


def test_configured_server_not_answering_says_so(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE__POSTGRES__PORT", "1")
    host = make_graph().postgres.url.host
    result = project.runpytest("--postgres-server", "configured", "test_project.py::test_create")
    assert result.ret != 0
    output = result.stdout.str() + result.stderr.str()
    assert f"No PostgreSQL server answered at {host}:1" in output
    assert "createdb" not in output


def test_is_listening_on_a_socket_directory() -> None:
    import socket

    with tempfile.TemporaryDirectory() as directory:
        assert not is_listening(directory, 5999)
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(Path(directory) / ".s.PGSQL.5999"))
            listener.listen(1)
            assert is_listening(directory, 5999)
            assert not is_listening(directory, 5998)


def test_an_unknown_host_or_port_is_never_a_throwaway_server() -> None:
    assert not is_throwaway_server(None, 5432)
    assert not is_throwaway_server("127.0.0.1", None)


def test_a_server_group_of_no_servers_is_refused() -> None:
    from microcosm_postgres.testing.topology import ServerGroup

    with pytest.raises(ValueError, match="at least one server"):
        ServerGroup.start(0)


def test_topologies_without_server_binaries_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from microcosm_postgres.testing import topology
    from microcosm_postgres.testing.topology import ReplicationTopology, ServerGroup

    monkeypatch.setattr(topology, "find_binaries", lambda: None)
    with pytest.raises(ServerNotAvailableError, match="pg_basebackup.*apt-get install postgresql"):
        ReplicationTopology.start()
    with pytest.raises(ServerNotAvailableError, match="initdb, pg_ctl.*apt-get install postgresql"):
        ServerGroup.start(2)

"""Provisioning against the test session's server: names, secrets, honest reports, CONNECT.

Every role and database made here has a random suffix and is dropped afterwards.

"""

from __future__ import annotations

import base64
import io
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from microcosm_postgres.__main__ import main as command
from microcosm_postgres.errors import InvalidNameError, PermissionDeniedError
from microcosm_postgres.provision import ADMIN_URL_VARIABLE, clone_database, provision, scram_sha_256_verifier
from microcosm_postgres.testing.database import PostgresServer

DRIVERS = ["postgresql+psycopg2", "postgresql+psycopg"]
SENTINEL = "s3ntinel-Pa55word-never-shown"


def _engine(url: URL) -> Engine:
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


class Names:
    """Unique role and database names on the session's server, dropped at the end."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.suffix = secrets.token_hex(4)
        self.roles: list[str] = []
        self.databases: list[str] = []

    def service(self, stem: str = "mp_prov") -> str:
        name = f"{stem}_{self.suffix}"
        self.roles += [name, f"{name}_ro"]
        self.databases += [f"{name}_db", f"{name}_test_db"]
        return name

    def role(self, stem: str, options: str = "LOGIN") -> str:
        name = f"{stem}_{self.suffix}"
        self.roles.append(name)
        self.execute(f'CREATE ROLE "{name}" {options}')
        return name

    def url(self, *, username: str = "postgres", database: str = "postgres", driver: str | None = None) -> URL:
        url = self.server.admin_url.set(username=username, database=database)
        return url.set(drivername=driver) if driver else url

    def execute(self, statement: str, database: str = "postgres") -> list[Any]:
        engine = _engine(self.url(database=database))
        try:
            with engine.connect() as connection:
                result = connection.execute(text(statement))
                return list(result.all()) if result.returns_rows else []
        finally:
            engine.dispose()

    def existing(self) -> tuple[set[str], set[str]]:
        roles = {row[0] for row in self.execute(f"SELECT rolname FROM pg_roles WHERE rolname LIKE '%{self.suffix}%'")}
        databases = {
            row[0] for row in self.execute(f"SELECT datname FROM pg_database WHERE datname LIKE '%{self.suffix}%'")
        }
        return roles, databases

    def can_connect(self, role: str, database: str) -> bool:
        engine = _engine(self.url(username=role, database=database))
        try:
            with engine.connect() as connection:
                return connection.execute(text("SELECT current_user")).scalar() == role
        except OperationalError:
            return False
        finally:
            engine.dispose()

    def drop(self) -> None:
        for database in self.databases:
            self.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in reversed(self.roles):
            self.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def names(postgres_server: PostgresServer) -> Iterator[Names]:
    made = Names(postgres_server)
    yield made
    made.drop()


@pytest.fixture
def admin_driver(driver: str) -> str:
    """The admin connection's driver: the one this run of the suite tests."""
    return f"postgresql+{driver}"


def _stored(names: Names, role: str) -> str:
    rows = names.execute(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")
    return str(rows[0][0])


# --- names -----------------------------------------------------------------------------


def test_a_service_name_over_63_bytes_is_refused_and_nothing_is_created(names: Names) -> None:
    long_name = "x" * 61 + names.service()[len("mp_prov") :]  # 70 characters
    assert len(long_name) == 70
    with pytest.raises(InvalidNameError, match="63"):
        provision(long_name, admin_url=names.url())
    assert names.existing() == (set(), set())


def test_a_name_whose_read_only_role_is_too_long_creates_nothing(names: Names) -> None:
    # 61 bytes: the role and the (overridden) database fit, `{name}_ro` does not: nothing may be half made.
    name = names.service("y" * (61 - 9))
    database = f"mp_short_{names.suffix}_db"
    names.databases.append(database)
    assert len(name) == 61
    with pytest.raises(InvalidNameError, match="_ro"):
        provision(name, database_name=database, read_only_role=True, admin_url=names.url())
    assert names.existing() == (set(), set())


def test_the_command_refuses_a_long_name_in_one_line(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    long_name = "z" * 62 + names.suffix
    assert command(["provision", "--name", long_name, "--testing", "--admin-url", str(names.url())]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: InvalidNameError: ")
    assert err.count("\n") == 1
    assert names.existing() == (set(), set())


def test_a_per_worker_copy_whose_name_is_too_long_is_refused(names: Names) -> None:
    with pytest.raises(InvalidNameError):
        clone_database(names.url(), "postgres", "w" * 60 + "_gw0", "postgres")
    assert not names.execute("SELECT 1 FROM pg_database WHERE datname LIKE 'wwwwwwwwww%'")


# --- passwords -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "pässwörd\u00a0naïve",  # a no-break space SASLprep maps to a space
        "\u2168 soft\u00adhyphen",  # NFKC turns the roman numeral IX into "IX"; the soft hyphen goes
        "\u0627\u0644\u0639",  # right-to-left only: allowed as is
    ],
)
def test_the_verifier_is_the_one_the_server_computes(names: Names, password: str) -> None:
    role = names.role("mp_scram")
    quoted = password.replace("'", "''")
    names.execute(f"SET password_encryption = 'scram-sha-256'; ALTER ROLE \"{role}\" PASSWORD '{quoted}'")
    stored = _stored(names, role)
    iterations, salt = stored.removeprefix("SCRAM-SHA-256$").split("$")[0].split(":")
    assert scram_sha_256_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations)) == stored


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


@pytest.mark.parametrize("driver_name", DRIVERS)
@pytest.mark.parametrize("role_exists", [False, True])
def test_a_refused_provision_never_shows_the_password(
    names: Names,
    driver_name: str,
    role_exists: bool,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    limited = names.role("mp_limited", "LOGIN CREATEDB NOCREATEROLE")
    name = names.service()
    if role_exists:  # then the refused statement is ALTER ROLE ... PASSWORD
        names.execute(f'CREATE ROLE "{name}" LOGIN')
    admin_url = names.url(username=limited, driver=driver_name)
    monkeypatch.setenv("MP_TEST_PASSWORD", SENTINEL)

    code = command(["provision", "--name", name, "--password-env", "MP_TEST_PASSWORD", "--admin-url", str(admin_url)])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("error: PermissionDeniedError: Could not ")
    assert err.count("\n") == 1
    assert "Traceback" not in err

    with pytest.raises(PermissionDeniedError) as refused:
        provision(name, password=SENTINEL, admin_url=admin_url)
    shown = [out, err, caplog.text]
    for error in _chain(refused.value):
        shown += [str(error), repr(error), *map(str, error.args)]
    for text_ in shown:
        assert SENTINEL not in text_
        assert "SCRAM-SHA-256$" not in text_  # not even the verifier
    assert refused.value.sqlstate == "42501"


def test_the_command_run_as_a_program_prints_one_line_and_no_traceback(names: Names) -> None:
    limited = names.role("mp_limited", "LOGIN NOCREATEROLE")
    name = names.service()
    completed = subprocess.run(
        [sys.executable, "-m", "microcosm_postgres", "provision", "--name", name, "--password-stdin"],
        input=SENTINEL + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, ADMIN_URL_VARIABLE: str(names.url(username=limited))},
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr.startswith("error: PermissionDeniedError: ")
    assert completed.stderr.count("\n") == 1
    assert SENTINEL not in completed.stderr


def test_passwords_from_stdin_and_the_environment(
    names: Names, admin_driver: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = names.service()
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\nsecond line ignored\n"))
    monkeypatch.setenv("MP_TEST_RO_PASSWORD", "from env")
    url = str(names.url(driver=admin_driver))
    args = ["provision", "--name", name, "--password-stdin", "--read-only-role"]
    assert command([*args, "--read-only-password-env", "MP_TEST_RO_PASSWORD", "--admin-url", url]) == 0
    out, err = capsys.readouterr()
    assert f"set password for role {name};" in out
    assert f"set password for role {name}_ro;" in out
    assert err == ""
    for role, password in ((name, "from stdin"), (f"{name}_ro", "from env")):
        stored = _stored(names, role)
        salt = stored.split("$")[1].split(":")[1]
        assert scram_sha_256_verifier(password, salt=base64.b64decode(salt)) == stored


def test_a_missing_password_variable_is_a_usage_error(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    name = names.service()
    with pytest.raises(SystemExit) as exited:
        command(["provision", "--name", name, "--password-env", "MP_TEST_UNSET_VARIABLE", "--admin-url", "x://"])
    assert exited.value.code == 2
    assert "MP_TEST_UNSET_VARIABLE is not set" in capsys.readouterr().err
    assert names.existing() == (set(), set())


def test_warnings_for_missing_and_visible_passwords(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    name = names.service()
    url = str(names.url())
    assert command(["provision", "--name", name, "--testing", "--read-only-role", "--admin-url", url]) == 0
    assert f"warning: no password for {name}_ro" in capsys.readouterr().err
    assert command(["provision", "--name", name, "--password", SENTINEL, "--admin-url", url]) == 0
    out, err = capsys.readouterr()
    assert "warning: a password on the command line is visible" in err
    assert f"warning: no password for role {name}" not in err
    assert SENTINEL not in out + err


# --- honest reports ----------------------------------------------------------------------


def test_reports_only_what_changed(names: Names, admin_driver: str) -> None:
    name, url = names.service(), names.url(driver=admin_driver)
    database, reader = f"{name}_db", f"{name}_ro"
    options: dict[str, Any] = dict(read_only_role=True, read_only_password="reader pw", admin_url=url)

    first = provision(name, password="one", **options)
    assert first.roles == [name, reader]
    assert first.passwords == [name, reader]
    assert first.databases == [database]
    assert first.revokes == [f"CONNECT on {database} from PUBLIC"]
    assert first.grants == [
        f"CONNECT on {database} to {reader}",
        f"USAGE on schema public of {database} to {reader}",
        f"SELECT on future tables of {name} in {database} to {reader}",
    ]

    again = provision(name, password="one", **options)
    assert not again.changed
    assert str(again).startswith("nothing to do")

    new_password = provision(name, password="two", **options)
    assert str(new_password) == f"set password for role {name}"

    # A table the owner did not create is not covered by its default privileges.
    names.execute("CREATE TABLE made_by_admin (n int)", database=database)
    regrant = provision(name, password="two", **options)
    assert str(regrant) == f"granted SELECT on 1 existing tables of {database} to {reader}"
    assert not provision(name, password="two", **options).changed


def test_the_command_says_nothing_to_do_only_when_nothing_changed(
    names: Names, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = names.service()
    monkeypatch.setenv("MP_TEST_PASSWORD", "pw")
    args = ["provision", "--name", name, "--password-env", "MP_TEST_PASSWORD", "--admin-url", str(names.url())]
    assert command(args) == 0
    assert f"created role {name}; set password for role {name}; created database {name}_db" in capsys.readouterr().out
    assert command(args) == 0
    assert capsys.readouterr().out.startswith("nothing to do")
    monkeypatch.setenv("MP_TEST_PASSWORD", "another")
    assert command(args) == 0
    assert capsys.readouterr().out == f"set password for role {name}\n"


# --- CONNECT only for the service's roles ------------------------------------------------


def test_a_new_database_admits_only_the_service_roles(names: Names, admin_driver: str) -> None:
    name = names.service()
    database = f"{name}_test_db"
    outsider = names.role("mp_outsider")
    provision(name, testing=True, read_only_role=True, admin_url=names.url(driver=admin_driver))
    assert names.can_connect(outsider, "postgres")  # the role works: the refusal below is the database's
    assert not names.can_connect(outsider, database)
    assert names.can_connect(name, database)
    assert names.can_connect(f"{name}_ro", database)


def test_a_per_worker_copy_admits_only_its_owner(names: Names) -> None:
    name = names.service()
    provision(name, testing=True, admin_url=names.url())
    outsider = names.role("mp_outsider")
    copy = f"{name}_test_db_gw0"
    names.databases.append(copy)
    assert clone_database(names.url(), f"{name}_test_db", copy, name)
    assert not names.can_connect(outsider, copy)
    assert names.can_connect(name, copy)


# --- the command line --------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "microcosm_postgres", *args], capture_output=True, text=True, check=False
    )


def test_help_goes_to_stdout_and_exits_0() -> None:
    for flag in ("--help", "-h"):
        completed = _run(flag)
        assert completed.returncode == 0
        assert "provision" in completed.stdout
        assert completed.stderr == ""
    provision_help = _run("provision", "--help")
    assert provision_help.returncode == 0
    assert "--password-env" in provision_help.stdout


def test_an_unknown_command_is_named_and_exits_2() -> None:
    completed = _run("provison")
    assert completed.returncode == 2
    assert "unknown command 'provison'" in completed.stderr
    assert completed.stdout == ""


def test_no_command_prints_usage_and_exits_2() -> None:
    completed = _run()
    assert completed.returncode == 2
    assert completed.stderr.startswith("usage: python -m microcosm_postgres COMMAND")
    assert completed.stdout == ""


# --- nothing half made -------------------------------------------------------------------


@pytest.mark.parametrize("read_only_role", [False, True])
def test_a_refused_database_leaves_no_role_behind(names: Names, admin_driver: str, read_only_role: bool) -> None:
    limited = names.role("mp_limited", "LOGIN CREATEROLE NOCREATEDB")
    name = names.service()
    url = names.url(username=limited, driver=admin_driver)
    with pytest.raises(PermissionDeniedError, match=f"Could not create database {name}_db"):
        provision(name, password="pw", read_only_role=read_only_role, admin_url=url)
    assert names.existing() == ({limited}, set())


def test_a_refused_grant_drops_what_this_run_created_but_nothing_else(names: Names, admin_driver: str) -> None:
    name = names.service()
    database = f"{name}_db"
    names.execute(f'CREATE DATABASE "{database}"')  # exists before, owned by the admin: kept
    limited = names.role("mp_limited", "LOGIN CREATEROLE")
    names.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{limited}" WITH GRANT OPTION')
    # The limited admin may create the roles and grant CONNECT, but not USAGE on the admin's schema.
    names.execute(f'REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO "{limited}"', database)
    url = names.url(username=limited, driver=admin_driver)
    with pytest.raises(PermissionDeniedError, match="granted nothing"):
        provision(name, read_only_role=True, admin_url=url)
    assert names.existing() == ({limited}, {database})


def test_an_undo_the_server_refuses_is_logged_and_the_first_error_raised(
    names: Names, admin_driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = names.service()
    service = names.role("mp_service", "LOGIN")
    limited = names.role("mp_limited", "LOGIN CREATEROLE CREATEDB NOINHERIT")
    # A member of the service role may create a database it owns; without inheriting the
    # owner's rights it cannot grant CONNECT on it once it exists, nor drop it again.
    names.execute(f'GRANT "{service}" TO "{limited}"')
    url = names.url(username=limited, driver=admin_driver)
    with pytest.raises(PermissionDeniedError, match=f"Could not grant CONNECT on {name}_db to {name}_ro"):
        provision(name, username=service, read_only_role=True, admin_url=url)
    assert f"could not all be dropped: Could not drop database {name}_db" in caplog.text
    # Best effort: what it could not drop is named in the warning (the fixture drops it here).
    assert names.existing() == ({service, limited, f"{name}_ro"}, {f"{name}_db"})

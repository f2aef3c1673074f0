"""Provisioning at its edges: SASLprep corner cases, admin URLs, cloning, command-line refusals."""

from __future__ import annotations

import base64

import pytest

from microcosm_postgres.__main__ import main as command
from microcosm_postgres.errors import PersistenceError
from microcosm_postgres.provision import ADMIN_URL_VARIABLE, admin_url_for, clone_database, scram_sha_256_verifier
from tests.test_provision import Names, _stored, names  # noqa: F401  (`names` is a fixture)


@pytest.mark.parametrize(
    "password",
    [
        "\u00ad",  # SASLprep maps it to nothing, leaving nothing: the password is used as given
        "\u00ad\u200b",  # a zero-width space is a space (C.1.2) before it is "mapped to nothing" (B.1)
        "pass\u200eword\u00e9",  # a left-to-right mark is prohibited: used unnormalized
        "\u05d0abc",  # right-to-left and left-to-right characters mixed: used unnormalized
        "\u05d0\u05d11",  # right-to-left, but not ending with a right-to-left character: unnormalized
    ],
)
def test_the_verifier_matches_the_server_where_saslprep_gives_up(
    names: Names,  # noqa: F811
    password: str,
) -> None:
    role = names.role("mp_saslprep")
    quoted = password.replace("'", "''")
    names.execute(f"SET password_encryption = 'scram-sha-256'; ALTER ROLE \"{role}\" PASSWORD '{quoted}'")
    stored = _stored(names, role)
    iterations, salt = stored.removeprefix("SCRAM-SHA-256$").split("$")[0].split(":")
    assert scram_sha_256_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations)) == stored


def test_a_configured_admin_url_without_a_driver_gets_psycopg2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_URL_VARIABLE, raising=False)
    url = admin_url_for("ignored", 1, configured="postgresql://admin@db.example:6543/postgres")
    assert (url.drivername, url.username, url.host, url.port) == ("postgresql+psycopg2", "admin", "db.example", 6543)
    monkeypatch.setenv(ADMIN_URL_VARIABLE, "postgresql+psycopg://other@db2.example/postgres")
    assert admin_url_for(configured="postgresql://admin@db.example/postgres").host == "db2.example"


def test_clone_is_a_no_op_when_the_target_exists_and_refuses_a_missing_source(names: Names) -> None:  # noqa: F811
    name = names.service("mp_clone")
    admin_url = names.url()
    assert command(["provision", "--name", name, "--testing", "--admin-url", str(admin_url)]) == 0
    source, target = f"{name}_test_db", f"{name}_db"
    names.execute("CREATE TABLE marker (id int); INSERT INTO marker VALUES (7)", database=source)
    assert clone_database(admin_url, source, target, name) is True
    assert names.execute("SELECT id FROM marker", database=target) == [(7,)]
    names.execute("INSERT INTO marker VALUES (8)", database=target)
    assert clone_database(admin_url, source, target, name) is False  # kept as it was
    assert names.execute("SELECT id FROM marker ORDER BY id", database=target) == [(7,), (8,)]

    names.execute(f'DROP DATABASE "{target}"')
    with pytest.raises(PersistenceError, match=f"Could not create database {target} from {name}_nowhere_db"):
        clone_database(admin_url, f"{name}_nowhere_db", target, name)
    assert target not in names.existing()[1]


def test_the_command_refuses_an_admin_url_it_cannot_parse(
    names: Names,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = names.service()
    with pytest.raises(SystemExit) as exited:
        command(["provision", "--name", name, "--admin-url", "not a url"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"warning: no password for role {name}: production roles should have one" in err
    assert "the admin URL (--admin-url or $MICROCOSM_POSTGRES_ADMIN_URL) is not a valid database URL" in err
    assert names.existing() == (set(), set())


def test_an_empty_password_on_stdin_is_a_usage_error(
    names: Names,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    name = names.service()
    with pytest.raises(SystemExit) as exited:
        command(["provision", "--name", name, "--password-stdin", "--admin-url", str(names.url())])
    assert exited.value.code == 2
    assert "--password-stdin: standard input held no password" in capsys.readouterr().err
    assert names.existing() == (set(), set())

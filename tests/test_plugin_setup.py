"""The pytest plugin's set-up paths: no service name, and a service with its own migrations."""

from __future__ import annotations

import socket
import textwrap

import pytest

from microcosm_postgres.provision import ADMIN_URL_VARIABLE
from microcosm_postgres.testing.database import describe_test_server
from tests.conftest import DATABASE_VARIABLE, run_database
from tests.test_testing import project  # noqa: F401  (a fixture)

NEEDS_A_GRAPH = """
def test_uses_the_graph(postgres_graph):
    raise AssertionError("never reached")


def test_also_uses_the_graph(postgres_graph):
    raise AssertionError("never reached")
"""

REVISION = '''
"""the service's only table"""
import sqlalchemy as sa
from alembic import op

revision = "polish0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("polish_thing", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("polish_thing")
'''

SCHEMA_TEST = """
from sqlalchemy import inspect, text


def test_the_schema_is_built_by_the_migrations(postgres_graph):
    assert inspect(postgres_graph.postgres).has_table("polish_thing")
    with postgres_graph.postgres.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "polish0001"
"""


def test_no_service_name_stops_the_run_once_with_what_to_set(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(test_project=NEEDS_A_GRAPH)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count('set microcosm_postgres_service = "<name>" under [tool.pytest.ini_options]') == 1
    assert "microcosm-postgres:" not in output  # no header line without a service
    assert "never reached" not in output
    assert "Traceback" not in output


def test_a_service_with_migrations_gets_its_schema_from_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package named like the service, with a migrations/ directory next to it. The
    # inner run is a subprocess: importing a module named `example` here would give every
    # later graph of this session those migrations.
    pytester.makeini("[pytest]\nmicrocosm_postgres_service = example\nfilterwarnings = error\n")
    package = pytester.mkpydir("example")
    (package / "migrations").mkdir()
    (package / "migrations" / "polish0001_thing.py").write_text(textwrap.dedent(REVISION))
    pytester.makepyfile(test_schema=SCHEMA_TEST)
    monkeypatch.setenv(DATABASE_VARIABLE, run_database("plugmig"))
    result = pytester.runpytest_subprocess("--postgres-server", "configured", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_database_that_cannot_be_created_stops_the_run_with_how_to_create_it(
    project: pytest.Pytester,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = run_database("uncreatable")
    monkeypatch.setenv(DATABASE_VARIABLE, database)
    monkeypatch.setenv(ADMIN_URL_VARIABLE, f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    result = project.runpytest("--postgres-server", "configured")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count(f"Cannot connect to database {database!r} as 'example'") == 1
    assert f"`createdb -O example {database}`" in output
    assert "Traceback" not in output


def test_the_header_says_when_the_database_name_is_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_VARIABLE, "example_test_" + "x" * 60 + "_db")
    description = describe_test_server("example", "temporary")
    assert description.startswith("a throwaway server (--postgres-server=temporary), database <")
    assert "63" in description

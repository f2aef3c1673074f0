"""Schema drift: create_all never stamps over missing migrations, names stay as written,
migrations are found (or their absence is an error), and the command line reports like Alembic."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import CheckConstraint, Column, Integer, MetaData, String, Table, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from microcosm_postgres import createall, migrate
from microcosm_postgres.errors import MigrationsBehindError
from microcosm_postgres.graph import Graph
from microcosm_postgres.models import NAMING_CONVENTION
from microcosm_postgres.operations import create_all, drop_all, get_current_head, stamp_head
from microcosm_postgres.testing.database import PostgresServer
from tests.conftest import RUN_ID
from tests.test_migrate import DATABASES, columns, make_graph, models

pytestmark = pytest.mark.usefixtures("migration_databases")


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


def _check_model() -> SimpleNamespace:
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "mig_ck",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("size", Integer),
        Column("kind", String(16)),
        CheckConstraint("size > 0"),
        CheckConstraint("kind <> ''", name="mig_ck_kind_nonempty"),
    )
    return SimpleNamespace(metadata=metadata)


@pytest.fixture
def graph(directory: Path) -> Iterator[Graph]:
    graph = make_graph(directory, DATABASES[0])
    for model in (models(2), _check_model()):
        drop_all(graph, model)
    yield graph
    for model in (models(2), _check_model()):
        drop_all(graph, model)
    graph.postgres.dispose()


def test_create_all_creates_and_stamps_a_database_without_revision(graph: Graph) -> None:
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "all", model_cls=models(2))
    assert create_all(graph, models(2)) == ["mig_widget", "mig_gadget"]
    assert get_current_head(graph) == migrate.head_revision(graph) is not None
    assert create_all(graph, models(2)) == []


def test_create_all_refuses_a_database_at_another_revision(graph: Graph, capsys: pytest.CaptureFixture[str]) -> None:
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "v1", model_cls=models(1))
    migrate.upgrade(graph, model_cls=models(1))
    first = migrate.current_revision(graph)
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "v2", model_cls=models(2))
    assert migrate.head_revision(graph) != first

    attempts: list[Callable[[], object]] = [
        lambda: create_all(graph, models(2)),
        lambda: createall.main(graph, ["--raiseerr"], model_cls=models(2)),
    ]
    for attempt in attempts:
        with pytest.raises(MigrationsBehindError, match="Run `migrate upgrade head`") as raised:
            attempt()
        assert str(first) in str(raised.value)
    assert migrate.current_revision(graph) == first  # not stamped
    assert "size" not in columns(graph, "mig_widget")
    assert not inspect(graph.postgres).has_table("mig_gadget")  # nothing created

    migrate.upgrade(graph, model_cls=models(2))
    capsys.readouterr()
    createall.main(graph, [], model_cls=models(2))
    assert "Nothing to create" in capsys.readouterr().out


def test_stamp_head_compatibility_name(graph: Graph) -> None:
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "all", model_cls=models(1))
    assert get_current_head(graph) is None
    stamp_head(graph, models(1))
    assert get_current_head(graph) == migrate.head_revision(graph)
    assert migrate.get_migrations_dir(graph) == str(migrate.migrations_dir(graph))
    config = migrate.make_alembic_config(graph)
    assert config.get_main_option("version_locations") == migrate.get_migrations_dir(graph)


def test_check_constraints_unnamed_work_and_named_keep_their_names(graph: Graph) -> None:
    model = _check_model()  # 1.0.0: InvalidRequestError here, for the unnamed one
    create_all(graph, model)
    names = {constraint["name"] for constraint in inspect(graph.postgres).get_check_constraints("mig_ck")}
    assert "mig_ck_kind_nonempty" in names
    assert len(names) == 2
    with pytest.raises(IntegrityError), graph.postgres.begin() as connection:
        connection.execute(text("INSERT INTO mig_ck (id, size, kind) VALUES (1, 0, 'x')"))


REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down}


def upgrade():
{upgrade}


def downgrade():
    pass
"""


def test_check_constraint_names_in_replayed_migrations_are_kept(graph: Graph, directory: Path) -> None:
    create = "\n".join(
        [
            '    op.create_table("mig_ck", sa.Column("id", sa.Integer, primary_key=True), sa.Column("kind", sa.Text))',
            '    op.create_check_constraint("mig_ck_kind_nonempty", "mig_ck", "kind <> \'\'")',
        ]
    )
    drop = """    op.drop_constraint("mig_ck_kind_nonempty", "mig_ck", type_="check")"""
    (directory / "ck1_create.py").write_text(REVISION.format(revision="ck1", down=None, upgrade=create))
    (directory / "ck2_drop.py").write_text(REVISION.format(revision="ck2", down='"ck1"', upgrade=drop))
    model = _check_model()
    migrate.upgrade(graph, "ck1", model_cls=model)
    names = {constraint["name"] for constraint in inspect(graph.postgres).get_check_constraints("mig_ck")}
    assert names == {"mig_ck_kind_nonempty"}
    migrate.upgrade(graph, "head", model_cls=model)  # 1.0.0: the drop fails, the name was changed
    assert inspect(graph.postgres).get_check_constraints("mig_ck") == []


MIGRATE_SCRIPT = """
import sys
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.registry import Registry
from microcosm_postgres import migrate

registry = Registry()
registry.bind("migrations_dir", lambda graph: sys.argv[1])
loader = load_each(load_from_environ, load_from_dict(postgres={"database_name": sys.argv[2]}))
graph = create_object_graph(name="example", testing=True, registry=registry, loader=loader)
migrate.main(graph, *sys.argv[3:])
"""


def _migrate(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MIGRATE_SCRIPT, str(directory), DATABASES[0], *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_command_prints_alembic_progress_and_one_line_failures(graph: Graph, directory: Path) -> None:
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "v1", model_cls=models(1))
    head = migrate.head_revision(graph)
    upgraded = _migrate(directory, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"INFO  [alembic.runtime.migration] Running upgrade  -> {head}, v1" in upgraded.stderr.splitlines()
    downgraded = _migrate(directory, "downgrade", "base")
    assert downgraded.returncode == 0, downgraded.stderr
    assert f"INFO  [alembic.runtime.migration] Running downgrade {head} -> , v1" in downgraded.stderr.splitlines()

    missing = _migrate(directory / "nowhere", "upgrade", "head")
    assert missing.returncode == 1
    [line] = missing.stderr.splitlines()
    assert line.startswith("FAILED: Migrations directory ")
    assert "nowhere" in line


def _write_package(root: Path) -> None:
    package = root / "acme_svc"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        textwrap.dedent(
            """
            from sqlalchemy import String
            from sqlalchemy.orm import Mapped, mapped_column

            from microcosm_postgres.models import EntityMixin, Model


            class Widget(EntityMixin, Model):
                __tablename__ = "acme_widget"

                name: Mapped[str] = mapped_column(String(64))
            """
        )
    )
    (package / "migrations" / "acme0001_widgets.py").write_text(
        REVISION.format(revision="acme0001", down=None, upgrade="    pass")
    )


LOOKUP_SCRIPT = """
import acme_svc.models
from microcosm.api import create_object_graph
from microcosm_postgres import migrate
from microcosm_postgres.health import check_migrations
from microcosm_postgres.graph import Graph

graph = create_object_graph(name="acme", testing=True)
for check in (migrate.head_revision, check_migrations):
    try:
        check(graph)
    except migrate.UnresolvedMigrationsError as error:
        print("refused:", error)
    else:
        print("silent")
print("head:", migrate.head_revision(create_object_graph(name="acme", testing=True, import_name="acme_svc")))
"""


def test_package_named_unlike_its_service_finds_its_migrations_or_says_why(tmp_path: Path) -> None:
    _write_package(tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(tmp_path), "ACME__POSTGRES__PORT": "1"}
    result = subprocess.run(
        [sys.executable, "-c", LOOKUP_SCRIPT], capture_output=True, text=True, timeout=120, env=environment
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line in lines[:2]:
        assert line.startswith("refused: The models of 'acme' have migrations in ")
        assert str(tmp_path / "acme_svc" / "migrations") in line
        assert "import_name" in line
    assert lines[2] == "head: acme0001"


def test_the_plugin_does_not_build_tables_without_the_migrations_it_cannot_find(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer
) -> None:
    _write_package(pytester.path)
    pytester.makeini("[pytest]\nmicrocosm_postgres_service = acme\n")
    pytester.makeconftest("import acme_svc.models  # noqa: F401\n")
    pytester.makepyfile(test_inner="def test_one(postgres_graph):\n    pass\n")
    # A real server, and a database the inner run would create if it went ahead.
    database = f"acme_test_{RUN_ID}_db"
    monkeypatch.setenv("ACME__POSTGRES__HOST", postgres_server.host)
    monkeypatch.setenv("ACME__POSTGRES__PORT", str(postgres_server.port))
    monkeypatch.setenv("ACME__POSTGRES__DATABASE_NAME", database)
    result = pytester.runpytest_subprocess("--postgres-server", "configured")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret != 0
    assert "UnresolvedMigrationsError" in output
    assert "have migrations in" in output
    admin = create_engine(postgres_server.admin_url, poolclass=NullPool)
    try:
        with admin.connect() as connection:
            created = connection.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": database}
            ).scalar()
    finally:
        admin.dispose()
    assert created == 0  # the lookup failed before anything was provisioned

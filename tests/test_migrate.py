"""Migrations in a temporary directory against real databases."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic.util import CommandError
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.registry import Registry
from sqlalchemy import Column, FetchedValue, ForeignKey, Integer, MetaData, String, Table, Uuid, event, inspect

from microcosm_postgres import migrate
from microcosm_postgres.graph import Graph, as_graph
from microcosm_postgres.models import NAMING_CONVENTION, UTCDateTime
from microcosm_postgres.operations import create_all, drop_all
from microcosm_postgres.types import EnumType, Serial
from tests.conftest import MIGRATION_DATABASES

pytestmark = pytest.mark.usefixtures("migration_databases")

DATABASES = MIGRATION_DATABASES


class Kind(enum.Enum):
    small = "small"
    large = "large"


def models(version: int) -> SimpleNamespace:
    """The service's models at `version` (1: one table; 2: a new column and a new table)."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    columns = [
        Column("id", Uuid, primary_key=True),
        Column("name", String(64), unique=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("kind", EnumType(Kind)),
        Column("number", Serial(), server_default=FetchedValue(), nullable=False),
    ]
    if version >= 2:
        columns.append(Column("size", Integer))
    Table("mig_widget", metadata, *columns)
    if version >= 2:
        Table(
            "mig_gadget",
            metadata,
            Column("id", Uuid, primary_key=True),
            Column("widget_id", ForeignKey("mig_widget.id"), nullable=False),
        )
    return SimpleNamespace(metadata=metadata)


def make_graph(directory: Path, database: str = DATABASES[0], **config: Any) -> Graph:
    registry = Registry()
    registry.bind("migrations_dir", lambda graph: str(directory))
    loader = load_each(load_from_environ, load_from_dict(postgres={"database_name": database}, **config))
    return as_graph(create_object_graph(name="example", testing=True, registry=registry, loader=loader))


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


@pytest.fixture
def graph(directory: Path) -> Iterator[Graph]:
    graph = make_graph(directory)
    drop_all(graph, models(2))
    yield graph
    drop_all(graph, models(2))
    graph.postgres.dispose()


def revisions(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.py"), key=lambda path: path.stat().st_mtime_ns)


def columns(graph: Graph, table: str) -> set[str]:
    inspector = inspect(graph.postgres)
    return {column["name"] for column in inspector.get_columns(table)} if inspector.has_table(table) else set()


def test_autogenerate_upgrade_downgrade(graph: Graph, directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "widgets", model_cls=models(1))
    [first] = revisions(directory)
    source = first.read_text()
    assert "op.create_table('mig_widget'" in source
    assert "import microcosm_postgres.types" in source
    assert "microcosm_postgres.types.Serial(big=False)" in source
    assert "sa.DateTime()" in source
    assert "sa.String(length=255)" in source  # no service imports needed
    assert "tests" not in source
    assert "Kind" not in source
    migrate.main(graph, "--raiseerr", "upgrade", "head", model_cls=models(1))
    assert columns(graph, "mig_widget") == {"id", "name", "created_at", "kind", "number"}

    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "sizes", model_cls=models(2))
    second = revisions(directory)[-1]
    source = second.read_text()
    assert "op.add_column('mig_widget', sa.Column('size'" in source
    assert "op.create_table('mig_gadget'" in source
    migrate.main(graph, "--raiseerr", "upgrade", "head", model_cls=models(2))
    assert "size" in columns(graph, "mig_widget")
    assert columns(graph, "mig_gadget")

    head = migrate.head_revision(graph)
    assert migrate.current_revision(graph) == head
    assert head is not None
    assert head in second.name
    capsys.readouterr()
    migrate.main(graph, "--raiseerr", "current", model_cls=models(2))
    migrate.main(graph, "--raiseerr", "heads", model_cls=models(2))
    assert capsys.readouterr().out.count(head) == 2

    migrate.main(graph, "--raiseerr", "downgrade", "-1", model_cls=models(2))
    assert "size" not in columns(graph, "mig_widget")
    assert not columns(graph, "mig_gadget")
    current = migrate.current_revision(graph)
    assert current is not None
    assert current != head
    assert current in first.name

    migrate.main(graph, "--raiseerr", "upgrade", "head", model_cls=models(2))
    migrate.main(graph, "--raiseerr", "check", model_cls=models(2))  # models and database agree
    with pytest.raises(CommandError):
        migrate.main(graph, "--raiseerr", "check", model_cls=SimpleNamespace(metadata=MetaData()))


def _body(path: Path) -> str:
    lines = path.read_text().splitlines()
    kept = [line for line in lines if not re.match(r"^(Revision|Created|revision = )", line)]
    return "\n".join(kept)


def test_autogenerate_is_deterministic(tmp_path: Path) -> None:
    bodies = []
    for attempt in ("a", "b"):
        directory = tmp_path / attempt
        directory.mkdir()
        graph = make_graph(directory)
        drop_all(graph, models(2))
        migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "same", model_cls=models(2))
        [revision] = revisions(directory)
        bodies.append(_body(revision))
        graph.postgres.dispose()
    assert bodies[0] == bodies[1]
    assert "sa.UniqueConstraint('name', name=op.f('mig_widget_name_key'))" in bodies[0]
    assert "name=op.f('mig_gadget_widget_id_fkey')" in bodies[0]


def test_create_all_stamps_head_and_upgrade_is_then_a_no_op(graph: Graph, directory: Path) -> None:
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "all", model_cls=models(2))
    create_all(graph, models(2))
    assert migrate.current_revision(graph) == migrate.head_revision(graph) is not None
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(graph.postgres, "before_cursor_execute", record)
    try:
        migrate.upgrade(graph, model_cls=models(2))
    finally:
        event.remove(graph.postgres, "before_cursor_execute", record)
    assert not [statement for statement in statements if re.match(r"\s*(CREATE|ALTER|DROP)", statement)]
    drop_all(graph, models(2))
    assert not inspect(graph.postgres).has_table("alembic_version")


def test_two_graphs_migrate_one_after_the_other(directory: Path) -> None:
    first, second = make_graph(directory, DATABASES[0]), make_graph(directory, DATABASES[1])
    try:
        migrate.main(first, "--raiseerr", "revision", "--autogenerate", "-m", "all", model_cls=models(2))
        for graph in (first, second):
            drop_all(graph, models(2))
            migrate.upgrade(graph, model_cls=models(2))
        head = migrate.head_revision(first)
        assert migrate.current_revision(first) == migrate.current_revision(second) == head
        assert columns(second, "mig_gadget")
    finally:
        for graph in (first, second):
            drop_all(graph, models(2))
            graph.postgres.dispose()


def test_environment_options_from_config(directory: Path) -> None:
    graph = make_graph(directory, alembic={"environment_options": {"version_table": "custom_version"}})
    try:
        drop_all(graph, models(1))
        migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "one", model_cls=models(1))
        migrate.upgrade(graph, model_cls=models(1))
        inspector = inspect(graph.postgres)
        assert inspector.has_table("custom_version")
        assert not inspector.has_table("alembic_version")
    finally:
        drop_all(graph, models(1))
        with graph.postgres.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS custom_version")
        graph.postgres.dispose()


def test_missing_directory_and_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    graph = make_graph(missing)
    with pytest.raises(CommandError, match=re.escape(str(missing))):
        migrate.main(graph, "--raiseerr", "upgrade", "head")
    assert migrate.head_revision(graph) is None
    with pytest.raises(CommandError, match="`init` is not needed"):
        migrate.main(graph, "--raiseerr", "init", str(tmp_path / "x"))
    unresolvable = create_object_graph(name="no_such_package_xyz", testing=True)
    with pytest.raises(CommandError, match="migrations_dir"):
        migrate.migrations_dir(unresolvable)


@pytest.mark.parametrize("arguments", [("upgrade", "head"), ("init", "somewhere")])
def test_failures_are_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...]
) -> None:
    graph = make_graph(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as raised:
        migrate.main(graph, *arguments)
    assert raised.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_no_revisions_means_no_head(graph: Graph) -> None:
    assert migrate.head_revision(graph) is None

"""`upgrade head --sql`: Alembic's offline mode prints the migration and runs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from microcosm_postgres import migrate
from microcosm_postgres.graph import Graph
from tests.test_migrate import directory, graph, models  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("migration_databases")


def test_upgrade_sql_prints_the_migration_and_changes_nothing(
    graph: Graph,  # noqa: F811
    directory: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "v1", model_cls=models(1))
    head = migrate.head_revision(graph)
    capsys.readouterr()
    migrate.main(graph, "upgrade", "head", "--sql", model_cls=models(1))
    out = capsys.readouterr().out
    assert "CREATE TABLE mig_widget (" in out
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{head}')" in out
    assert not inspect(graph.postgres).has_table("mig_widget")
    assert migrate.current_revision(graph) is None

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from microcosm_postgres import migrate
from microcosm_postgres.context import SessionContext
from microcosm_postgres.errors import DatabaseUnavailableError, MigrationsBehindError
from microcosm_postgres.example import ExampleGraph
from microcosm_postgres.graph import Graph
from microcosm_postgres.health import (
    check_alembic,
    check_health,
    check_migrations,
    get_current_head_version,
    migration_status,
)
from microcosm_postgres.operations import drop_all
from tests.conftest import checked_out, make_graph
from tests.test_migrate import DATABASES, models
from tests.test_migrate import make_graph as make_migration_graph

SENTINEL = "h3alth-Pa55word"


def test_check_health_up(graph: ExampleGraph) -> None:
    assert "is answering" in check_health(graph)  # no session open: a short-lived one
    with SessionContext(graph):
        database = graph.postgres.url.database
        assert database is not None
        assert database in check_health(graph)
    assert checked_out(graph.postgres) == 0


def test_check_health_down_is_quick_typed_and_hides_the_password() -> None:
    graph = make_graph(port=1, connect_timeout=2, password=SENTINEL)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as raised:
        check_health(graph)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * 2 + 1  # bounded by connect_timeout, retries included
    message = str(raised.value)
    assert f"{graph.postgres.url.host}:1" in message
    assert f"'{graph.postgres.url.database}'" in message
    assert SENTINEL not in message
    assert SENTINEL not in str(raised.value.__cause__)
    assert raised.value.status_code == 503


@pytest.fixture
def migration_graph(tmp_path: Path, migration_databases: None) -> Iterator[Graph]:
    directory = tmp_path / "migrations"
    directory.mkdir()
    graph = make_migration_graph(directory, DATABASES[0])
    drop_all(graph, models(2))
    yield graph
    drop_all(graph, models(2))
    graph.postgres.dispose()


def test_migration_checks(migration_graph: Graph) -> None:
    graph = migration_graph
    assert check_migrations(graph) == "no migrations"
    migrate.main(graph, "--raiseerr", "revision", "--autogenerate", "-m", "v1", model_cls=models(1))
    head = get_current_head_version(graph)
    assert head is not None
    assert check_alembic(graph) is None
    with pytest.raises(MigrationsBehindError, match=head) as raised:
        check_migrations(graph)
    assert raised.value.status_code == 503
    assert migration_status(graph).behind
    migrate.upgrade(graph, model_cls=models(1))
    assert check_alembic(graph) == head
    assert head in check_migrations(graph)
    assert not migration_status(graph).behind

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text

from microcosm_postgres import createall
from microcosm_postgres.operations import recreate_all


def test_createall_creates_and_leaves_unknown_arguments(graph: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with graph.postgres.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS employee"))
    remaining = createall.main(graph, ["--service-flag", "x"])
    assert remaining == ["--service-flag", "x"]
    assert inspect(graph.postgres).has_table("employee")
    assert "Created tables in postgresql" in capsys.readouterr().out


def test_createall_drop_first(graph: Any, capsys: pytest.CaptureFixture[str]) -> None:
    recreate_all(graph)
    with graph.postgres.begin() as connection:
        connection.execute(
            text("INSERT INTO company (id, name, created_at, updated_at) VALUES (gen_random_uuid(), 'x', now(), now())")
        )
    assert createall.main(graph, ["-D"]) == []
    out = capsys.readouterr().out
    assert "Dropped tables" in out and "Created tables" in out and "company" in out
    with graph.postgres.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM company")).scalar() == 0
    recreate_all(graph)

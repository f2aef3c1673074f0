from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from microcosm_postgres import createall
from microcosm_postgres.example import ExampleGraph
from microcosm_postgres.operations import recreate_all


def test_createall_creates_only_what_is_missing_and_says_so(
    graph: ExampleGraph, capsys: pytest.CaptureFixture[str]
) -> None:
    recreate_all(graph)
    with graph.postgres.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS employee"))
    assert createall.main(graph, []) == []
    assert inspect(graph.postgres).has_table("employee")
    assert "Created 1 table in postgresql" in capsys.readouterr().out
    createall.main(graph, [])
    out = capsys.readouterr().out
    assert "Nothing to create in postgresql" in out
    assert "Created" not in out


def test_createall_refuses_unknown_options(graph: ExampleGraph, capsys: pytest.CaptureFixture[str]) -> None:
    recreate_all(graph)
    with graph.postgres.begin() as connection:
        connection.execute(
            text("INSERT INTO company (id, name, created_at, updated_at) VALUES (gen_random_uuid(), 'x', now(), now())")
        )
    with pytest.raises(SystemExit) as raised:
        createall.main(graph, ["--dorp"])
    assert raised.value.code == 2
    assert "unrecognized arguments: --dorp" in capsys.readouterr().err
    with graph.postgres.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM company")).scalar() == 1  # nothing done
    with pytest.raises(SystemExit):
        createall.parse_args(graph, ["--dorp"])
    assert createall.parse_args(graph, ["-D"]).drop is True
    recreate_all(graph)


def test_createall_hands_unknown_arguments_back_when_asked(graph: ExampleGraph) -> None:
    recreate_all(graph)
    assert createall.main(graph, ["--service-flag", "x"], known_only=False) == ["--service-flag", "x"]


def test_createall_drop_first(graph: ExampleGraph, capsys: pytest.CaptureFixture[str]) -> None:
    recreate_all(graph)
    with graph.postgres.begin() as connection:
        connection.execute(
            text("INSERT INTO company (id, name, created_at, updated_at) VALUES (gen_random_uuid(), 'x', now(), now())")
        )
    assert createall.main(graph, ["-D"]) == []
    out = capsys.readouterr().out
    assert "Dropped tables" in out
    assert "company" in out
    assert "Created " in out
    with graph.postgres.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM company")).scalar() == 0
    recreate_all(graph)

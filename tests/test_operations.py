from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company
from microcosm_postgres.operations import create_all, drop_all, new_session, recreate_all


def tables(graph: Any) -> set[str]:
    return set(inspect(graph.postgres).get_table_names())


def test_recreate_all_empties_and_returns_connections(graph: Any) -> None:
    recreate_all(graph)
    with SessionContext(graph), transaction():
        graph.company_store.create(Company(name="Acme"))
    statements: list[str] = []
    from sqlalchemy import event

    @event.listens_for(graph.postgres, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    recreate_all(graph)
    assert graph.postgres.pool.checkedout() == 0
    truncates = [statement for statement in statements if statement.startswith("TRUNCATE")]
    assert len(statements) == 1 and len(truncates) == 1  # one statement empties every table
    assert "RESTART IDENTITY CASCADE" in truncates[0]
    with graph.postgres.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM company")).scalar() == 0


def test_recreate_all_rebuilds_tables_dropped_behind_its_back(graph: Any) -> None:
    recreate_all(graph)
    with graph.postgres.begin() as connection:
        connection.execute(text("DROP TABLE employee"))
    recreate_all(graph)
    assert {"company", "employee"} <= tables(graph)
    assert graph.postgres.pool.checkedout() == 0


def test_create_and_drop_all(graph: Any) -> None:
    drop_all(graph)
    assert not {"company", "employee"} & tables(graph)
    create_all(graph)
    assert {"company", "employee"} <= tables(graph)
    assert graph.postgres.pool.checkedout() == 0


def test_new_session(graph: Any) -> None:
    session = new_session(graph)
    try:
        assert session.execute(text("SELECT current_database()")).scalar() == "example_test_db"
        assert session.get_bind() is graph.postgres
    finally:
        session.close()

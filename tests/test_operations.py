from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import translating
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.operations import create_all, drop_all, new_session, recreate_all
from tests.conftest import checked_out


def tables(graph: ExampleGraph) -> set[str]:
    return set(inspect(graph.postgres).get_table_names())


def test_recreate_all_empties_and_returns_connections(graph: ExampleGraph) -> None:
    recreate_all(graph)
    with SessionContext(graph), transaction():
        graph.company_store.create(Company(name="Acme"))
    statements: list[str] = []
    from sqlalchemy import event

    @event.listens_for(graph.postgres, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    recreate_all(graph)
    assert checked_out(graph.postgres) == 0
    assert len(statements) == 1
    assert statements[0].lstrip().startswith("DO")  # one statement empties all
    with graph.postgres.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM company")).scalar() == 0


def test_recreate_all_rebuilds_tables_dropped_behind_its_back(graph: ExampleGraph) -> None:
    recreate_all(graph)
    with graph.postgres.begin() as connection:
        connection.execute(text("DROP TABLE employee"))
    recreate_all(graph)
    assert {"company", "employee"} <= tables(graph)
    assert checked_out(graph.postgres) == 0


def test_create_and_drop_all(graph: ExampleGraph) -> None:
    drop_all(graph)
    assert not {"company", "employee"} & tables(graph)
    create_all(graph)
    assert {"company", "employee"} <= tables(graph)
    assert checked_out(graph.postgres) == 0


def test_new_session(graph: ExampleGraph) -> None:
    session = new_session(graph)
    try:
        assert session.execute(text("SELECT current_database()")).scalar() == graph.postgres.url.database
        assert session.get_bind() is graph.postgres
    finally:
        session.close()


@pytest.mark.postgres_commit
def test_reset_all_restarts_sequences_and_truncates_big_tables(graph: ExampleGraph, context: SessionContext) -> None:
    from microcosm_postgres.models import Model
    from microcosm_postgres.operations import reset_all
    from microcosm_postgres.store import Store
    from tests.models import Ticket

    tickets = Store(graph, Ticket)
    with transaction():
        assert [tickets.create(Ticket()).number for _ in range(3)] == [1, 2, 3]
    with graph.postgres.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO company (id, name, created_at, updated_at) "
                "SELECT gen_random_uuid(), 'c' || n, now(), now() FROM generate_series(1, 1500) n"
            )
        )
    assert context.session is not None
    context.session.expunge_all()
    reset_all(graph.postgres, Model.metadata)
    with graph.postgres.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM company")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM test_ticket")).scalar() == 0
    with transaction():
        assert tickets.create(Ticket()).number == 1


def test_reset_all_does_not_hang_on_a_locked_table(graph: ExampleGraph) -> None:
    from microcosm_postgres.errors import QueryTimeoutError
    from microcosm_postgres.models import Model
    from microcosm_postgres.operations import reset_all

    recreate_all(graph)
    with graph.postgres.connect() as holder:
        holder.execute(text("LOCK TABLE company IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(QueryTimeoutError), translating():
            reset_all(graph.postgres, Model.metadata, lock_timeout_ms=200)
        holder.rollback()

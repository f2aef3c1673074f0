"""Connections killed by the server, between and in the middle of transactions."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DatabaseUnavailableError
from microcosm_postgres.example import Company, ExampleGraph
from tests.conftest import make_graph


def terminate(graph: ExampleGraph, pid: int) -> None:
    """Kill backend `pid` from another connection and wait until it is gone."""
    admin = make_graph(pool_size=1, engine_retries=0)
    try:
        with admin.postgres.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
            deadline = time.monotonic() + 5
            while True:
                # pg_stat_activity is a snapshot per transaction: end it to see news.
                alive = connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar()
                connection.commit()
                if not alive:
                    break
                assert time.monotonic() < deadline, "backend did not exit"
                time.sleep(0.01)
    finally:
        admin.postgres.dispose()


def backend_pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


@pytest.mark.postgres_commit
def test_killed_between_transactions_is_survived(graph: ExampleGraph, context: SessionContext) -> None:
    with transaction() as session:
        pid = backend_pid(session)
    terminate(graph, pid)
    # The pooled connection is dead; the next transaction must not notice.
    with transaction() as session:
        graph.company_store.create(Company(name="after"))
        assert backend_pid(session) != pid
    assert graph.company_store.count() == 1


@pytest.mark.postgres_commit
def test_killed_mid_transaction_raises_and_recovers(graph: ExampleGraph, context: SessionContext) -> None:
    store = graph.company_store
    with pytest.raises(DatabaseUnavailableError) as raised, transaction() as session:
        store.create(Company(name="lost"))
        terminate(graph, backend_pid(session))
        # Not replayed on a new connection: "lost" would be silently gone.
        store.create(Company(name="never"))
    assert raised.value.retryable
    assert raised.value.status_code == 503
    # The session was reset; the next transaction works, and nothing of the failed one exists.
    with transaction():
        store.create(Company(name="next"))
    assert [company.name for company in store.search()] == ["next"]


@pytest.mark.postgres_commit
def test_killed_during_a_read_outside_transaction(graph: ExampleGraph, context: SessionContext) -> None:
    store = graph.company_store
    assert context.session is not None
    pid = backend_pid(context.session)  # autobegun: the connection is held
    terminate(graph, pid)
    with pytest.raises(DatabaseUnavailableError):
        store.count()
    assert store.count() == 0


def test_refused_connections_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    graph = make_graph(port=1, engine_retries=3, engine_retry_interval=50)
    with SessionContext(graph), pytest.raises(DatabaseUnavailableError), transaction() as session:
        session.execute(text("SELECT 1"))
    assert caplog.text.count("retrying in 50 ms") == 3

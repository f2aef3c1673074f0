"""A connection lost around COMMIT: before it (rolled back, retryable) or during it (unknown)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import (
    CONNECTION_FAILURE,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
)
from microcosm_postgres.example import Company
from tests.faults.conftest import company_names, terminate, wait_until
from tests.faults.proxy import FaultProxy


def test_reply_to_commit_lost_is_an_unknown_outcome(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    with SessionContext(graph):
        proxy.drop_next_commit_reply()
        with pytest.raises(CommitOutcomeUnknownError) as raised, transaction():
            graph.company_store.create(Company(name="maybe"))
    assert proxy.commit_replies_dropped == 1
    # It did commit: an error saying "rolled back, run it again" would have been a lie.
    assert company_names(admin) == ["maybe"]
    assert not raised.value.retryable
    assert not isinstance(raised.value, DatabaseUnavailableError)
    assert raised.value.status_code == 503
    assert "may or may not have committed" in str(raised.value)
    assert raised.value.sqlstate == CONNECTION_FAILURE


def test_commit_outcome_unknown_leaves_the_session_usable(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    with SessionContext(graph):
        proxy.drop_next_commit_reply()
        with pytest.raises(CommitOutcomeUnknownError), transaction():
            graph.company_store.create(Company(name="maybe"))
        with transaction():
            graph.company_store.create(Company(name="next"))
        assert graph.company_store.count() == 2
    assert graph.postgres.pool.checkedout() == 0


def test_lost_before_commit_was_sent_is_rolled_back_and_retryable(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    with SessionContext(graph):
        with pytest.raises(DatabaseUnavailableError) as raised, transaction() as session:
            graph.company_store.create(Company(name="lost"))
            terminate(admin, int(session.execute(text("SELECT pg_backend_pid()")).scalar_one()))
            wait_until(lambda: proxy.connections == 0, "the proxy relayed the server's farewell")
        # The server closed the connection before COMMIT: no COMMIT was sent.
        assert raised.value.retryable
        assert not isinstance(raised.value, CommitOutcomeUnknownError)
    assert company_names(admin) == []


def test_a_lost_connection_carries_the_same_sqlstate_on_both_drivers(
    proxied_graph: Callable[..., Any], admin: Any
) -> None:
    graph = proxied_graph()
    with SessionContext(graph):
        with pytest.raises(DatabaseUnavailableError) as raised, transaction() as session:
            terminate(admin, int(session.execute(text("SELECT pg_backend_pid()")).scalar_one()))
            session.execute(text("SELECT 1"))
    # psycopg 3 reports the server's 57P01, psycopg2 nothing: both carry connection_failure.
    assert raised.value.sqlstate == CONNECTION_FAILURE
    assert raised.value.fault == "connection lost"

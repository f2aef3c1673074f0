"""A frozen or partitioned link fails within a bound instead of blocking forever.

The proxy makes both faults: "freeze" stops relaying (bytes wait), "partition" reads and
drops them. Either way the client's kernel keeps getting ACKs from the proxy's, so TCP
keepalives cannot tell; what bounds the wait is the engine's reply deadline
(`response_timeout`, by default statement_timeout + 2 s). Each call runs in a thread joined
with a generous guard, so a regression fails the test instead of hanging it.

"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import (
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    QueryTimeoutError,
)
from microcosm_postgres.example import Company
from microcosm_postgres.factories.engine import response_bound
from tests.faults.conftest import company_names
from tests.faults.proxy import FaultProxy

# How long a test waits for a call that should fail within its bound before calling it hung.
GUARD = 15.0


def outcome(call: Callable[[], object], proxy: FaultProxy) -> BaseException | None:
    """Run `call` in a thread; its exception (None if it returned). A call still blocked after
    GUARD seconds fails the test (the proxy is then thawed and reset so the thread ends)."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            result.append(error)
        else:
            result.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD)
    hung = thread.is_alive()
    if hung:
        proxy.thaw()
        proxy.reset_all()
        thread.join(GUARD)
    assert not hung, f"the call was still blocked after {GUARD} s"
    return result[0]


def test_the_bound_follows_statement_timeout() -> None:
    assert response_bound({}) is None
    assert response_bound({"statement_timeout": 1000}) == 3.0
    assert response_bound({"statement_timeout": 1000, "response_timeout": 0.5}) == 0.5
    assert response_bound({"statement_timeout": 1000, "response_timeout": 0}) is None


@pytest.mark.parametrize("fault", ["freeze", "partition"])
def test_a_statement_on_a_dead_link_fails_within_the_bound(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, fault: str
) -> None:
    graph = proxied_graph(statement_timeout=500)

    def call() -> None:
        with SessionContext(graph), transaction() as session:
            session.execute(text("SELECT 1"))
            getattr(proxy, fault)()
            session.execute(text("SELECT 2"))

    error = outcome(call, proxy)
    assert isinstance(error, DatabaseUnavailableError)
    assert error.retryable
    assert graph.postgres.pool.checkedout() == 0


def test_commit_on_a_frozen_link_is_an_unknown_outcome(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph(response_timeout=1)

    def call() -> None:
        with SessionContext(graph), transaction():
            graph.company_store.create(Company(name="frozen"))
            proxy.freeze()

    error = outcome(call, proxy)
    assert isinstance(error, CommitOutcomeUnknownError)
    # The COMMIT never left the proxy: not committed, and the error did not claim it was.
    assert company_names(admin) == []


def test_a_new_connection_on_a_frozen_link_fails_within_connect_timeout(
    proxied_graph: Callable[..., Any], proxy: FaultProxy
) -> None:
    graph = proxied_graph(connect_timeout=1, engine_retries=0)
    proxy.freeze()

    def call() -> None:
        with SessionContext(graph), transaction() as session:
            session.execute(text("SELECT 1"))

    error = outcome(call, proxy)
    assert isinstance(error, DatabaseUnavailableError)


def test_the_server_cancels_a_slow_statement_before_the_client_gives_up(
    proxied_graph: Callable[..., Any], proxy: FaultProxy
) -> None:
    graph = proxied_graph(statement_timeout=200)

    def call() -> None:
        with SessionContext(graph), transaction() as session:
            session.execute(text("SELECT pg_sleep(5)"))

    assert isinstance(outcome(call, proxy), QueryTimeoutError)


def test_an_idle_connection_is_never_cut(proxied_graph: Callable[..., Any], proxy: FaultProxy) -> None:
    graph = proxied_graph(response_timeout=0.2)
    with graph.postgres.connect() as connection:
        connection.execute(text("SELECT 1"))
        connection.commit()  # COMMIT arms a deadline no reply event disarms
        time.sleep(0.5)  # idle well past it
        assert connection.execute(text("SELECT 2")).scalar() == 2


def test_keepalives_and_tcp_user_timeout_reach_libpq(proxied_graph: Callable[..., Any]) -> None:
    graph = proxied_graph()
    with graph.postgres.connect() as connection:
        dbapi_connection = connection.connection.dbapi_connection
        dsn = getattr(dbapi_connection, "dsn", None) or dbapi_connection.info.dsn  # psycopg2, psycopg 3
    for setting in ("keepalives=1", "keepalives_idle=10", "keepalives_interval=5", "keepalives_count=3"):
        assert setting in dsn
    assert "tcp_user_timeout=20000" in dsn

"""Fixtures of the fault suite: a throwaway cluster of its own (it gets crashed), and a
loopback fault proxy in front of it, through which the graphs under test connect."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from microcosm_postgres.context import SessionContext
from microcosm_postgres.provision import provision
from microcosm_postgres.testing.server import TemporaryServer
from tests.conftest import make_graph, run_database
from tests.faults.proxy import FaultProxy

DATABASE = run_database("faults")


@pytest.fixture(scope="session")
def fault_server() -> Iterator[TemporaryServer]:
    """A cluster for this session only: fault tests kill its backends and crash it."""
    server = TemporaryServer.start(prefer="binaries")
    try:
        provision("example", testing=True, database_name=DATABASE, admin_url=server.admin_url)
        graph = make_graph(host=server.host, port=server.port, database_name=DATABASE)
        try:
            with SessionContext(graph) as context:
                context.recreate_all()
        finally:
            graph.postgres.dispose()
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(fault_server: TemporaryServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(fault_server.host, fault_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def admin(fault_server: TemporaryServer) -> Iterator[Any]:
    """A direct (not proxied) superuser engine on the fault database."""
    engine = create_engine(
        fault_server.admin_url.set(database=DATABASE), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    yield engine
    engine.dispose()


@pytest.fixture
def proxied_graph(proxy: FaultProxy, admin: Any) -> Iterator[Callable[..., Any]]:
    """Make graphs that connect through the proxy (with `postgres` overrides); empty tables."""
    with admin.connect() as connection:
        connection.execute(text("TRUNCATE company, employee"))
    graphs: list[Any] = []

    def make(**postgres: Any) -> Any:
        postgres = {"host": "127.0.0.1", "port": proxy.port, "database_name": DATABASE, **postgres}
        graph = make_graph(**postgres)
        graphs.append(graph)
        return graph

    yield make
    for graph in graphs:
        graph.postgres.dispose()


def terminate(admin: Any, pid: int) -> None:
    """Terminate backend `pid` and wait (at most 5 s) until it is gone."""
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        deadline = time.monotonic() + 5
        while connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).scalar():
            assert time.monotonic() < deadline, "backend did not exit"
            time.sleep(0.01)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 5) -> None:
    """Wait (at most `seconds`, polling every 10 ms) until `condition()` holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def company_names(admin: Any) -> list[str]:
    with admin.connect() as connection:
        return sorted(connection.execute(text("SELECT name FROM company")).scalars())

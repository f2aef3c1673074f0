"""Store metrics through a real statsd client to a UDP listener on this machine."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import ModelNotFoundError
from microcosm_postgres.example import Company
from microcosm_postgres.metrics import PostgresStoreMetrics, SQLExecutionStatus, StoreMetrics
from microcosm_postgres.operations import recreate_all
from microcosm_postgres.store import Store
from tests.conftest import database_in_use, make_graph


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def received(sock: socket.socket, wait: float = 1.0) -> list[str]:
    """Every `store` metric line received within `wait` seconds."""
    lines: list[str] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            packet = sock.recv(65535).decode()
        except TimeoutError:
            continue
        lines += [line for line in packet.splitlines() if line.startswith("store:")]
    return lines


def close(graph: Any) -> None:
    """Release what the graph holds (the graph is garbage once the test drops it)."""
    graph.postgres.dispose()
    graph.metrics.close_socket()


def service_graph(port: int, **extra: Any) -> Any:
    config = {
        "postgres": {"database_name": database_in_use()},
        "metrics": {"host": "127.0.0.1", "port": port},
        **extra,
    }
    # testing=False: microcosm-metrics swaps in a mock client for testing graphs.
    return create_object_graph(
        name="example", testing=False, loader=load_each(load_from_environ, load_from_dict(config))
    )


def tags(line: str) -> set[str]:
    return set(line.split("|#", 1)[1].split(","))


def test_store_calls_are_timed_with_tags(listener: socket.socket) -> None:
    graph = service_graph(listener.getsockname()[1])
    recreate_all(graph)
    store = graph.company_store
    with SessionContext(graph):
        with transaction():
            company = store.create(Company(name="Acme"))
        with pytest.raises(ModelNotFoundError):
            store.retrieve(uuid4())
        with transaction():
            store.update_with_diff(company.id, Company(name="Acme 2"))  # retrieves inside: both reported
    lines = received(listener)
    close(graph)
    common = {"source:microcosm-postgres", "model_name:Company"}
    assert [line.split(":", 1)[1].split("|")[1] for line in lines] == ["h", "h", "h", "h"]
    assert tags(lines[0]) >= common | {"action:create", f"result:{SQLExecutionStatus.SUCCESS.value}"}
    assert tags(lines[1]) >= common | {"action:retrieve", "result:FAILURE"}
    assert tags(lines[2]) >= common | {"action:retrieve", "result:SUCCESS"}
    assert tags(lines[3]) >= common | {"action:update_with_diff", "result:SUCCESS"}
    assert all(float(line.split(":", 1)[1].split("|")[0]) > 0 for line in lines)


def test_nothing_is_recorded_when_disabled(listener: socket.socket) -> None:
    graph = service_graph(listener.getsockname()[1], postgres_store_metrics={"enabled": False})
    recreate_all(graph)
    with SessionContext(graph):
        assert graph.company_store.count() == 0
    assert received(listener, wait=0.5) == []
    assert not graph.company_store.postgres_store_metrics.enabled
    close(graph)


def test_localhost_or_testing_metrics_cost_nothing(graph: Any) -> None:
    metrics = graph.company_store.postgres_store_metrics
    assert isinstance(metrics, PostgresStoreMetrics)
    assert metrics is graph.postgres_store_metrics
    assert not metrics.enabled  # testing graph: metrics host is localhost


def test_a_store_made_after_the_graph_is_locked_runs_without_metrics(graph: Any) -> None:
    locked: Any = make_graph()
    locked.use("postgres", "sessionmaker")
    locked.lock()
    store = Store(locked, Company)
    # The component was never made, and a locked graph cannot make it now: no timing, no error.
    assert store.postgres_store_metrics is None
    with SessionContext(locked):
        assert store.count() == 0
        with pytest.raises(ModelNotFoundError):
            store.retrieve(uuid4())
    locked.postgres.dispose()


def test_store_metrics_client_sends_tagged_timings(listener: socket.socket) -> None:
    graph = service_graph(listener.getsockname()[1])
    try:
        assert not StoreMetrics().enabled
        metrics = StoreMetrics(graph.metrics)
        assert metrics.enabled
        metrics.record("search", "Company", SQLExecutionStatus.FAILURE, 1.5)
        (line,) = received(listener)
        assert "action:search" in line and "model_name:Company" in line and "result:FAILURE" in line
    finally:
        close(graph)


def test_disabled_metrics_take_a_report_and_send_nothing(listener: socket.socket) -> None:
    graph = service_graph(listener.getsockname()[1], postgres_store_metrics={"enabled": False})
    try:
        report = graph.postgres_store_metrics
        assert not report.enabled
        report(model_name="Company", action="create", elapsed_time=1.0, execution_result=SQLExecutionStatus.SUCCESS)
        assert received(listener) == []
    finally:
        close(graph)

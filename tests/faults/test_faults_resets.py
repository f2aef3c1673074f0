"""Connections reset by the network, and a server crash (immediate stop, then start)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DatabaseUnavailableError
from microcosm_postgres.example import Company
from microcosm_postgres.testing.server import TemporaryServer
from tests.faults.conftest import company_names, wait_until
from tests.faults.proxy import FaultProxy


def test_reset_inside_a_block_is_retryable_and_loses_nothing_committed(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    with SessionContext(graph):
        with transaction():
            graph.company_store.create(Company(name="kept"))
        with pytest.raises(DatabaseUnavailableError) as raised, transaction():
            graph.company_store.create(Company(name="lost"))
            proxy.reset_all()
            graph.company_store.create(Company(name="never"))
        assert raised.value.retryable
    assert company_names(admin) == ["kept"]
    assert graph.postgres.pool.checkedout() == 0


def test_reset_between_transactions_is_invisible(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    with SessionContext(graph):
        with transaction():
            graph.company_store.create(Company(name="before"))
        proxy.reset_all()
        wait_until(lambda: proxy.connections == 0, "the proxy cut every connection")
        with transaction():
            graph.company_store.create(Company(name="after"))
    assert company_names(admin) == ["after", "before"]


def test_a_server_crash_fails_the_open_transaction_and_not_the_next(
    proxied_graph: Callable[..., Any], fault_server: TemporaryServer, admin: Any
) -> None:
    graph = proxied_graph()
    with SessionContext(graph):
        with pytest.raises(DatabaseUnavailableError), transaction() as session:
            graph.company_store.create(Company(name="crashed"))
            fault_server.restart(mode="immediate")
            session.execute(text("SELECT 1"))
        with transaction():
            graph.company_store.create(Company(name="recovered"))
    assert company_names(admin) == ["recovered"]
    assert graph.postgres.pool.checkedout() == 0

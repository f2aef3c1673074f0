"""Failover with libpq multi-host: `postgres.host = "h1:p1,h2:p2"` follows a promoted standby."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import PersistenceError
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.operations import recreate_all
from microcosm_postgres.provision import provision
from microcosm_postgres.testing.topology import ReplicationTopology
from tests.conftest import run_database

DATABASE = run_database("scale_failover")


@pytest.fixture
def topology() -> Iterator[ReplicationTopology]:
    """A topology of this test's own: failing over destroys it."""
    topology = ReplicationTopology.start()
    try:
        yield topology
    finally:
        topology.stop()


def test_writes_follow_the_promoted_standby(topology: ReplicationTopology) -> None:
    provision("example", testing=True, database_name=DATABASE, admin_url=topology.primary.admin_url)
    hosts = ",".join(f"{server.host}:{server.port}" for server in (topology.primary, topology.standby))
    loader = load_each(load_from_environ, load_from_dict(postgres={"host": hosts, "database_name": DATABASE}))
    graph = cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))
    try:
        recreate_all(graph)
        with SessionContext(graph):
            for index in range(20):
                with transaction():
                    graph.company_store.create(Company(name=f"before-{index}"))
        # An orderly switchover: the standby has everything the primary committed (with
        # asynchronous replication, a crash can lose the last commits; see README).
        topology.wait_for_replay()
        topology.primary.stop()
        topology.promote()

        failures: list[str] = []
        deadline = time.monotonic() + 10
        written = False
        for _ in range(200):  # bounded in count and in time (10 s)
            try:
                with SessionContext(graph), transaction():
                    graph.company_store.create(Company(name="after"))
                written = True
                break
            except PersistenceError as error:  # typed errors only; anything else fails the test
                failures.append(type(error).__name__)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert written, f"no write succeeded within 10 s after the failover; errors: {failures}"
        with SessionContext(graph):
            names = {company.name for company in graph.company_store.search()}
        assert names == {f"before-{index}" for index in range(20)} | {"after"}
    finally:
        graph.postgres.dispose()

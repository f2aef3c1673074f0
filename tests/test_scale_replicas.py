"""Read replicas on a real primary + streaming standby (the `postgres_topology` fixture)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import String, create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.pool import NullPool

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DatabaseUnavailableError
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.health import check_replicas, replica_lag
from microcosm_postgres.models import EntityMixin, Model
from microcosm_postgres.operations import recreate_all
from microcosm_postgres.provision import provision
from microcosm_postgres.store import Store
from microcosm_postgres.testing.server import _free_port
from microcosm_postgres.testing.topology import ReplicationTopology
from tests.conftest import run_database

DATABASE = run_database("scale_replicas")
DRIVER, DEFAULT_DRIVER = "EXAMPLE__POSTGRES__DRIVER", "postgresql+psycopg2"


def topology_graph(topology: ReplicationTopology, **postgres: Any) -> ExampleGraph:
    config = {
        "host": topology.primary.host,
        "port": topology.primary.port,
        "database_name": DATABASE,
        "replicas": f"{topology.standby.host}:{topology.standby.port}",
        **postgres,
    }
    loader = load_each(load_from_environ, load_from_dict(postgres=config))
    return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))


@pytest.fixture(scope="module")
def topology(postgres_topology: ReplicationTopology) -> ReplicationTopology:
    provision("example", testing=True, database_name=DATABASE, admin_url=postgres_topology.primary.admin_url)
    return postgres_topology


def dispose(graph: ExampleGraph) -> None:
    for replicas in cast(Any, graph).default_engine_routing_strategy.replicas.values():
        replicas.dispose()
    graph.postgres.dispose()


@pytest.fixture
def graph(topology: ReplicationTopology) -> Iterator[ExampleGraph]:
    graph = topology_graph(topology)
    recreate_all(graph)
    topology.wait_for_replay()
    yield graph
    dispose(graph)


@pytest.fixture
def replay_paused(topology: ReplicationTopology) -> Iterator[Engine]:
    """The standby stops applying WAL (it keeps receiving it) until the test ends."""
    standby = create_engine(topology.standby.admin_url, poolclass=NullPool)
    with standby.connect() as connection:
        connection.execute(text("SELECT pg_wal_replay_pause()"))
    try:
        yield standby
    finally:
        with standby.connect() as connection:
            connection.execute(text("SELECT pg_wal_replay_resume()"))
        standby.dispose()


def server_port() -> int:
    """The port of the server that a SELECT in the current session reaches."""
    return int(SessionContext.session.execute(select(func.inet_server_port())).scalar_one())


def test_reads_go_to_the_replica_until_the_transaction_writes(
    graph: ExampleGraph, topology: ReplicationTopology, replay_paused: Engine
) -> None:
    with SessionContext(graph):
        assert server_port() == topology.standby.port
        with transaction():
            assert graph.company_store.count() == 0  # from the replica
            graph.company_store.create(Company(name="Acme"))
            # Read your writes: after a write, the transaction reads from the primary.
            assert server_port() == topology.primary.port
            assert graph.company_store.count() == 1
        # Committed, but the standby has not replayed it (paused): reads are back on the replica.
        assert server_port() == topology.standby.port
        assert graph.company_store.count() == 0
    with SessionContext(graph, read_only=True):
        assert graph.company_store.count() == 0
    with replay_paused.connect() as connection:
        connection.execute(text("SELECT pg_wal_replay_resume()"))
    topology.wait_for_replay()
    with SessionContext(graph, read_only=True):
        assert graph.company_store.count() == 1
        assert server_port() == topology.standby.port


def test_read_only_session_sends_everything_to_the_replica(graph: ExampleGraph, topology: ReplicationTopology) -> None:
    with SessionContext(graph, read_only=True) as context:
        assert context.session is not None
        assert context.session.execute(text("SELECT inet_server_port()")).scalar_one() == topology.standby.port


def test_a_replica_that_does_not_answer_is_skipped(
    topology: ReplicationTopology, caplog: pytest.LogCaptureFixture
) -> None:
    graph = topology_graph(topology, replicas=f"127.0.0.1:{_free_port()}")
    try:
        recreate_all(graph)
        with caplog.at_level(logging.WARNING), SessionContext(graph):
            assert server_port() == topology.primary.port
            assert graph.company_store.count() == 0
        assert any("did not answer" in record.getMessage() for record in caplog.records)
        with pytest.raises(DatabaseUnavailableError, match="did not answer"):
            check_replicas(graph)
    finally:
        dispose(graph)


def test_health_reports_each_replica_lag(
    graph: ExampleGraph, topology: ReplicationTopology, replay_paused: Engine
) -> None:
    with SessionContext(graph), transaction():
        graph.company_store.create(Company(name="Acme"))
    primary = create_engine(topology.primary.admin_url, poolclass=NullPool)
    with primary.connect() as connection:
        # The commit record reaches the standby (streamed, not replayed) once the WAL is flushed.
        connection.execute(text("CHECKPOINT"))
        target = connection.execute(text("SELECT pg_current_wal_insert_lsn()::text")).scalar_one()
    primary.dispose()
    query = text("SELECT pg_last_wal_receive_lsn() >= CAST(:target AS pg_lsn)")
    for _ in range(600):  # bounded: at most about 30 s
        with replay_paused.connect() as connection:
            if connection.execute(query, {"target": target}).scalar():
                break
        time.sleep(0.05)
    [lag] = replica_lag(graph)
    assert lag.replica == f"{topology.standby.host}:{topology.standby.port}"
    assert lag.bytes > 0
    assert lag.seconds is None or lag.seconds >= 0
    assert lag.replica in check_replicas(graph)


def test_replica_entries_are_host_port_or_urls(topology: ReplicationTopology) -> None:
    standby = topology.standby
    entries = f"{standby.host}:{standby.port}, postgresql://{standby.host}:{standby.port}/{DATABASE}"
    graph = topology_graph(topology, replicas=entries)
    try:
        [replicas] = cast(Any, graph).default_engine_routing_strategy.replicas.values()
        assert [(engine.url.host, engine.url.port) for engine in replicas.engines] == [(standby.host, standby.port)] * 2
        assert all(engine.url.database == DATABASE for engine in replicas.engines)
    finally:
        dispose(graph)


class ScaleReplicated(EntityMixin, Model):
    """A model on a routed engine (`__engine__`) that has a replica of its own."""

    __tablename__ = "scale_replicated"
    __engine__ = "secret"

    value: Mapped[str] = mapped_column(String(64), nullable=False)


def test_a_routed_engine_reads_from_its_own_replicas(topology: ReplicationTopology, replay_paused: Engine) -> None:
    standby = f"{topology.standby.host}:{topology.standby.port}"
    primary = {"host": topology.primary.host, "port": topology.primary.port, "database_name": DATABASE}
    loader = load_each(
        load_from_environ,
        load_from_dict(
            postgres=primary,
            secret={"postgres": {**primary, "replicas": standby, "driver": os.environ.get(DRIVER, DEFAULT_DRIVER)}},
            sessionmaker={"engine_routing_strategy": "model_engine_routing_strategy"},
        ),
    )
    graph = cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))
    router = cast(Any, graph).model_engine_routing_strategy
    store = Store(graph, ScaleReplicated)
    try:
        with replay_paused.connect() as connection:
            connection.execute(text("SELECT pg_wal_replay_resume()"))
        recreate_all(graph)
        topology.wait_for_replay()
        with replay_paused.connect() as connection:
            connection.execute(text("SELECT pg_wal_replay_pause()"))
        with SessionContext(graph):
            with transaction():
                store.create(ScaleReplicated(value="one"))
                assert store.count() == 1  # read your writes: the routed engine's primary
            assert store.count() == 0  # its replica, which has not replayed the commit
            assert server_port() == topology.primary.port  # `postgres` has no replicas here
    finally:
        for replicas in router.replicas.values():
            replicas.dispose()
        router.engine("secret").dispose()
        graph.postgres.dispose()

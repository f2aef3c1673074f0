"""The test toolkit's replication topology: a primary and a streaming standby."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from microcosm_postgres.testing.server import is_throwaway_server
from microcosm_postgres.testing.topology import ReplicationTopology


def test_standby_streams_and_replays_primary_writes(postgres_topology: ReplicationTopology) -> None:
    primary = create_engine(postgres_topology.primary.admin_url, poolclass=NullPool)
    standby = create_engine(postgres_topology.standby.admin_url, poolclass=NullPool)
    with primary.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS scale_topology_probe (value integer)"))
        connection.execute(text("INSERT INTO scale_topology_probe VALUES (42)"))
    postgres_topology.wait_for_replay()
    with standby.connect() as connection:
        assert connection.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
        assert connection.execute(text("SELECT count(*) FROM scale_topology_probe WHERE value = 42")).scalar_one() >= 1
        # A hot standby refuses writes: 25006 read_only_sql_transaction.
        with pytest.raises(DBAPIError) as raised:
            connection.execute(text("INSERT INTO scale_topology_probe VALUES (1)"))
        orig = raised.value.orig
        assert (getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)) == "25006"
    with primary.begin() as connection:
        connection.execute(text("DROP TABLE scale_topology_probe"))
    primary.dispose()
    standby.dispose()


def test_both_servers_are_throwaway_servers(postgres_topology: ReplicationTopology) -> None:
    for server in (postgres_topology.primary, postgres_topology.standby):
        assert is_throwaway_server(server.host, server.port)


def test_stop_removes_both_clusters() -> None:
    topology = ReplicationTopology.start()
    directories = [topology.primary.directory, topology.standby.directory]
    addresses = [(server.host, server.port) for server in (topology.primary, topology.standby)]
    topology.stop()
    topology.stop()  # idempotent
    assert not any(directory.exists() for directory in directories)
    assert not any(is_throwaway_server(host, port) for host, port in addresses)

"""Throwaway topologies for tests: a primary and a streaming standby; N independent servers.

`ReplicationTopology.start()` starts a primary (`TemporaryServer`, from the machine's
binaries), clones it with `pg_basebackup -R` into a standby on another free loopback port,
starts the standby and waits until the primary reports it as streaming. `stop()` stops
both clusters and deletes their directories (also registered with `atexit`).

Both servers are throwaway servers (`is_throwaway_server` answers True for them), so the
destructive operations accept any database on them. Roles and databases are created on
the primary; the standby receives them by replication (`wait_for_replay()` waits until
it has replayed everything the primary wrote so far).

The pytest plugin exposes one topology per test session as the `postgres_topology`
fixture (started on first use only):

    def test_reads_from_the_standby(postgres_topology):
        primary, standby = postgres_topology.primary, postgres_topology.standby
        ...

`ServerGroup.start(3)` starts three independent throwaway servers (for shards, or a
routed engine on a server of its own); `stop()` stops and deletes them all. Use it as a
context manager, or from a module-scoped fixture so the servers start once per module:

    @pytest.fixture(scope="module")
    def servers() -> Iterator[ServerGroup]:
        with ServerGroup.start(3) as group:
            yield group

Needs the PostgreSQL server binaries (`initdb`, `pg_ctl`, `pg_basebackup`), on PATH or
under `/usr/lib/postgresql/*/bin`; the `pgserver` wheel cannot run a standby.

"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from microcosm_postgres.testing.server import (
    ServerNotAvailableError,
    TemporaryServer,
    _free_port,
    _pg_ctl_start,
    _record,
    _run_as,
    find_binaries,
)

__all__ = [
    "ReplicationTopology",
    "ServerGroup",
    "TopologyError",
]

# Upper bound, in seconds, of every wait below (standby streaming, replay, promotion).
_WAIT_SECONDS = 30.0
_POLL_SECONDS = 0.05


class TopologyError(RuntimeError):
    """The standby could not be created, or did not catch up in time."""


def _scalar(server: TemporaryServer, sql: str) -> object:
    engine = create_engine(server.admin_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def _wait(what: str, check: Callable[[], bool], *, timeout: float = _WAIT_SECONDS) -> None:
    """Poll `check()` until it returns True, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    attempts = int(timeout / _POLL_SECONDS) + 1
    for _ in range(attempts):
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a server still starting refuses connections; keep polling
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(_POLL_SECONDS)
    raise TopologyError(f"Timed out after {timeout:.0f} s waiting for {what}.")


@dataclass
class ReplicationTopology:
    """A running primary and a streaming standby of it (hot standby: it answers reads)."""

    primary: TemporaryServer
    standby: TemporaryServer
    binaries: Path

    @classmethod
    def start(cls) -> ReplicationTopology:
        """Start a primary and a `pg_basebackup -R` standby; return once the standby streams.

        Raises:
            ServerNotAvailableError: when the server binaries are not installed.
            TopologyError: when the standby does not stream within 30 s (both are stopped).

        """
        binaries = find_binaries()
        if binaries is not None and not (binaries / "pg_basebackup").exists():
            # `initdb` on PATH may be a symbolic link into the installation that has the rest.
            binaries = (binaries / "initdb").resolve().parent
        if binaries is None or not (binaries / "pg_basebackup").exists():
            raise ServerNotAvailableError(
                "A replication topology needs the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup): "
                "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql)."
            )
        primary = TemporaryServer.start(prefer="binaries")
        try:
            standby = _start_standby(binaries, primary)
        except BaseException:
            primary.stop()
            raise
        topology = cls(primary=primary, standby=standby, binaries=binaries)
        atexit.register(topology.stop)
        try:
            _wait(
                "the standby to stream from the primary",
                lambda: _scalar(primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1,
            )
        except BaseException:
            topology.stop()
            raise
        return topology

    def wait_for_replay(self, *, timeout: float = _WAIT_SECONDS) -> None:
        """Return once the standby has replayed everything written on the primary so far.

        Raises:
            TopologyError: when it has not within `timeout` seconds.

        """
        target = _scalar(self.primary, "SELECT pg_current_wal_insert_lsn()::text")
        _wait(
            "the standby to replay the primary's writes",
            lambda: _scalar(self.standby, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") is True,
            timeout=timeout,
        )

    def promote(self, *, timeout: float = _WAIT_SECONDS) -> None:
        """Promote the standby to a primary (`pg_ctl promote`) and wait until it accepts writes.

        Raises:
            TopologyError: when it still is in recovery after `timeout` seconds.

        """
        subprocess.run(
            [str(self.binaries / "pg_ctl"), "-D", str(self.standby.directory / "data"), "promote"],
            check=True,
            capture_output=True,
            **_run_as(),
        )
        _wait(
            "the standby to leave recovery",
            lambda: _scalar(self.standby, "SELECT pg_is_in_recovery()") is False,
            timeout=timeout,
        )

    def stop(self) -> None:
        """Stop both servers and delete their files (idempotent)."""
        self.standby.stop()
        self.primary.stop()


def _start_standby(binaries: Path, primary: TemporaryServer) -> TemporaryServer:
    directory = Path(tempfile.mkdtemp(prefix="microcosm-postgres-standby-"))
    data, sockets, log = directory / "data", directory / "sockets", directory / "server.log"
    sockets.mkdir()
    run_as = _run_as(directory, sockets)
    try:
        subprocess.run(
            [
                str(binaries / "pg_basebackup"),
                "--host",
                primary.host,
                "--port",
                str(primary.port),
                "--username",
                "postgres",
                "--pgdata",
                str(data),
                "--wal-method",
                "stream",
                "--write-recovery-conf",
                "--checkpoint",
                "fast",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=_WAIT_SECONDS,
            **run_as,
        )
        port = _free_port()
        _pg_ctl_start(binaries, data, log, port, sockets, run_as)
    except (subprocess.SubprocessError, OSError) as error:
        shutil.rmtree(directory, ignore_errors=True)
        detail = getattr(error, "stderr", b"") or b""
        raise TopologyError(
            f"Could not start a standby of {primary.host}:{primary.port}: "
            f"{detail.decode(errors='replace').strip() or error}"
        ) from error

    def stop() -> None:
        subprocess.run(
            [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            **run_as,
        )
        shutil.rmtree(directory, ignore_errors=True)

    standby = TemporaryServer(
        host="127.0.0.1", port=port, source=f"standby from binaries in {binaries}", directory=directory, _stop=stop
    )
    _record(standby.host, standby.port)
    atexit.register(standby.stop)
    return standby


@dataclass
class ServerGroup:
    """Independent throwaway servers (no replication between them), each on its own free
    loopback port and temporary directory; all are throwaway servers (`is_throwaway_server`)."""

    servers: list[TemporaryServer]

    @classmethod
    def start(cls, count: int) -> ServerGroup:
        """Start `count` servers from the machine's binaries; if one fails, those started are stopped.

        Raises:
            ServerNotAvailableError: when the server binaries are not installed.
            ValueError: when `count` is less than 1.

        """
        if count < 1:
            raise ValueError(f"A server group needs at least one server (got {count}).")
        if find_binaries() is None:
            raise ServerNotAvailableError(
                "A server group needs the PostgreSQL server binaries (initdb, pg_ctl): install PostgreSQL "
                "(Debian/Ubuntu: apt-get install postgresql)."
            )
        group = cls(servers=[])
        atexit.register(group.stop)
        try:
            for _ in range(count):
                group.servers.append(TemporaryServer.start(prefer="binaries"))
        except BaseException:
            group.stop()
            raise
        return group

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __getitem__(self, index: int) -> TemporaryServer:
        return self.servers[index]

    def __len__(self) -> int:
        return len(self.servers)

    def stop(self) -> None:
        """Stop every server and delete its files (idempotent)."""
        for server in self.servers:
            server.stop()

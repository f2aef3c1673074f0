"""A disposable PostgreSQL server for a test session (or the example) when none is running.

`TemporaryServer.start()` looks for the server binaries (`initdb`/`pg_ctl` on PATH, else
the newest `/usr/lib/postgresql/*/bin`), else uses the `pgserver` package (a wheel that
carries PostgreSQL). The cluster lives in a temporary directory, listens on a free
port of 127.0.0.1 and on a private socket directory, runs with durability off
(fsync, synchronous_commit, full_page_writes: it is thrown away), trusts local
connections, and is stopped and deleted by `stop()` (also registered with `atexit`).

Every server started here is recorded while it runs, in this process and in the
environment variable `MICROCOSM_POSTGRES_THROWAWAY_SERVERS` (`host:port` entries separated
by spaces), which subprocesses of a test session (pytest-xdist workers, pytester) inherit.
`is_throwaway_server(host, port)` answers from both: any database on such a server is a
test database, so destructive operations accept it (see `microcosm_postgres.operations`).

As root, the server runs as the `postgres` system user (or `nobody`): PostgreSQL
refuses to run as root.

"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

__all__ = [
    "THROWAWAY_SERVERS_VARIABLE",
    "ServerNotAvailableError",
    "TemporaryServer",
    "find_binaries",
    "is_listening",
    "is_throwaway_server",
]

THROWAWAY_SERVERS_VARIABLE = "MICROCOSM_POSTGRES_THROWAWAY_SERVERS"

# The servers this process started and has not stopped yet: a fact about the process,
# not about any graph.
_running: set[tuple[str, int]] = set()


def _exported() -> set[tuple[str, int]]:
    servers = set()
    for entry in os.environ.get(THROWAWAY_SERVERS_VARIABLE, "").split():
        host, _, port = entry.rpartition(":")
        if host and port.isdigit():
            servers.add((host, int(port)))
    return servers


def _export(servers: set[tuple[str, int]]) -> None:
    if servers:
        os.environ[THROWAWAY_SERVERS_VARIABLE] = " ".join(f"{host}:{port}" for host, port in sorted(servers))
    else:
        os.environ.pop(THROWAWAY_SERVERS_VARIABLE, None)


def _record(host: str, port: int) -> None:
    _running.add((host, port))
    _export(_exported() | {(host, port)})


def _forget(host: str, port: int) -> None:
    _running.discard((host, port))
    _export(_exported() - {(host, port)})


def is_throwaway_server(host: str | None, port: int | None) -> bool:
    """Whether `host:port` is a throwaway server started by this library and still running.

    Started by this process, or by a parent process that exported it in
    `$MICROCOSM_POSTGRES_THROWAWAY_SERVERS`. Hosts compare as written (`localhost` is not
    `127.0.0.1`), which errs on the side of refusing.

    """
    if host is None or port is None:
        return False
    return (host, int(port)) in _running | _exported()


_FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
}


class ServerNotAvailableError(RuntimeError):
    """No PostgreSQL server answers, and none can be started here."""


def is_listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at host:port (a socket directory as host works too)."""
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(os.path.join(host, f".s.PGSQL.{port}"))
        else:
            with socket.create_connection((host, port), timeout=timeout):
                pass
    except OSError:
        return False
    return True


def find_binaries() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`, or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob("/usr/local/pgsql/bin/initdb"),
        key=lambda path: [int(part) if part.isdigit() else part for part in Path(path).parts],
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as(*paths: Path) -> dict[str, Any]:
    """`subprocess.run` arguments that run the server binaries as `postgres` (or `nobody`)
    when we are root (PostgreSQL refuses root), after giving that account `paths`."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        account = pwd.getpwnam("nobody")
    for path in paths:
        os.chown(path, account.pw_uid, account.pw_gid)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _pg_ctl_start(binaries: Path, data: Path, log: Path, port: int, sockets: Path, run_as: dict[str, Any]) -> None:
    """Start the cluster in `data` on 127.0.0.1:`port` with the throwaway settings; wait until it answers."""
    options = " ".join(f"-c {key}={value}" for key, value in _FAST_SETTINGS.items())
    subprocess.run(
        [
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {sockets} {options}",
            "start",
        ],
        check=True,
        capture_output=True,
        **run_as,
    )


@dataclass
class TemporaryServer:
    """A running throwaway server; `admin_url` connects as its superuser `postgres`."""

    host: str
    port: int
    source: str
    directory: Path
    _stop: Callable[[], None] | None = None
    _restart: Callable[[str], None] | None = None

    @property
    def admin_url(self) -> URL:
        return URL.create(
            "postgresql+psycopg2", username="postgres", host=self.host, port=self.port, database="postgres"
        )

    @classmethod
    def start(cls, prefer: str = "auto") -> TemporaryServer:
        """Start a server from the machine's binaries, else from `pgserver`.

        Args:
            prefer: "binaries" or "pgserver" to force one way; "auto" tries both.

        Raises:
            ServerNotAvailableError: with what to install, when neither is available.

        """
        binaries = find_binaries() if prefer in ("auto", "binaries") else None
        if binaries is not None:
            return cls._start_from_binaries(binaries)
        if prefer in ("auto", "pgserver"):
            try:
                return cls._start_from_pgserver()
            except ImportError:
                pass
        raise ServerNotAvailableError(
            "No PostgreSQL server is reachable and none can be started: install PostgreSQL "
            "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or the "
            "pgserver package (pip install 'microcosm-postgres[test]'), or point "
            "{NAME}__POSTGRES__HOST/PORT at a running server."
        )

    @classmethod
    def _start_from_binaries(cls, binaries: Path) -> TemporaryServer:
        directory = Path(tempfile.mkdtemp(prefix="microcosm-postgres-"))
        data, sockets, log = directory / "data", directory / "sockets", directory / "server.log"
        sockets.mkdir()
        run_as = _run_as(directory, sockets)
        port = _free_port()
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **run_as,
        )
        _pg_ctl_start(binaries, data, log, port, sockets, run_as)

        def stop() -> None:
            subprocess.run(
                [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                **run_as,
            )
            shutil.rmtree(directory, ignore_errors=True)

        def restart(mode: str) -> None:
            subprocess.run(
                [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-m", mode, "-w", "-t", "60", "restart"],
                check=True,
                capture_output=True,
                **run_as,
            )

        server = cls(
            host="127.0.0.1",
            port=port,
            source=f"binaries in {binaries}",
            directory=directory,
            _stop=stop,
            _restart=restart,
        )
        _record(server.host, server.port)
        atexit.register(server.stop)
        return server

    @classmethod
    def _start_from_pgserver(cls) -> TemporaryServer:
        from sqlalchemy.engine import make_url

        with warnings.catch_warnings():
            # platformdirs (used by pgserver) warns when XDG_RUNTIME_DIR is unset, at import and after.
            warnings.simplefilter("ignore")
            import pgserver

            directory = Path(tempfile.mkdtemp(prefix="microcosm-pgserver-"))
            server = pgserver.get_server(directory, cleanup_mode="delete")
        url = make_url(server.get_uri())
        host = str(url.query.get("host") or url.host or "127.0.0.1")
        port = int(url.port or 5432)
        settings = "; ".join(
            f"ALTER SYSTEM SET {key} = '{value}'" for key, value in _FAST_SETTINGS.items() if key != "listen_addresses"
        )
        server.psql(f"{settings}; SELECT pg_reload_conf();")

        def stop() -> None:
            server.cleanup()
            shutil.rmtree(directory, ignore_errors=True)

        started = cls(host=host, port=port, source="the pgserver package", directory=directory, _stop=stop)
        _record(started.host, started.port)
        atexit.register(started.stop)
        return started

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server and start it again on the same port, keeping its data.

        Args:
            mode: pg_ctl's shutdown mode; "immediate" is a crash (no checkpoint; every
                connection is cut, and the server recovers from its WAL on start).

        Raises:
            ServerNotAvailableError: for a server started from `pgserver`, or already stopped.

        """
        if self._restart is None or self._stop is None:
            raise ServerNotAvailableError(
                f"Cannot restart the server on {self.host}:{self.port} (from {self.source}): only a "
                "running server started from PostgreSQL's binaries can be restarted."
            )
        self._restart(mode)

    def stop(self) -> None:
        """Stop the server and delete its files (idempotent)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            _forget(self.host, self.port)
            stop()

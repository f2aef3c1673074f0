"""A throwaway PostgreSQL cluster that asks for passwords (scram-sha-256), for login tests.

The suite's own servers trust every local connection, so a wrong password cannot fail
there. This one is made with `initdb --auth=scram-sha-256` in a temporary directory,
listens on a free port of 127.0.0.1, and is stopped and deleted by `stop()`.

"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from microcosm_postgres.testing.server import find_binaries

__all__ = ["ScramServer", "scram_server_running"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ScramServer:
    """A running password-checking cluster, with a login role and a role that may not log in."""

    directory: Path
    port: int
    closed_port: int
    admin_password: str
    password: str
    run_as: dict[str, Any]
    binaries: Path
    host: str = "127.0.0.1"
    username: str = "errors_login"
    nologin_username: str = "errors_nologin"

    @classmethod
    def start(cls) -> ScramServer:
        binaries = find_binaries()
        if binaries is None:
            raise RuntimeError("initdb and pg_ctl are needed for the login tests")
        directory = Path(tempfile.mkdtemp(prefix="microcosm-postgres-scram-"))
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            account = pwd.getpwnam("postgres")
            os.chown(directory, account.pw_uid, account.pw_gid)
            run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        admin_password = uuid.uuid4().hex
        password_file = directory / "admin-password"
        password_file.write_text(admin_password + "\n")
        if run_as:
            os.chown(password_file, run_as["user"], run_as["group"])
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(directory / "data"),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **run_as,
        )
        server = cls(
            directory=directory,
            port=_free_port(),
            closed_port=_free_port(),
            admin_password=admin_password,
            password=uuid.uuid4().hex,
            run_as=run_as,
            binaries=binaries,
        )
        subprocess.run(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(directory / "data"),
                "-l",
                str(directory / "server.log"),
                "-w",
                "-o",
                f"-p {server.port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            **run_as,
        )
        admin = create_engine(
            URL.create(
                "postgresql+psycopg2",
                username="postgres",
                password=admin_password,
                host=server.host,
                port=server.port,
                database="postgres",
            )
        )
        try:
            with admin.begin() as connection:
                connection.execute(text(f"CREATE ROLE {server.username} LOGIN PASSWORD '{server.password}'"))
                connection.execute(text(f"CREATE ROLE {server.nologin_username} NOLOGIN PASSWORD '{server.password}'"))
        finally:
            admin.dispose()
        return server

    def config(self, **overrides: Any) -> dict[str, Any]:
        """`postgres` config keys that log in to this server as the login role."""
        config = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "database_name": "postgres",
        }
        config.update(overrides)
        return config

    def stop(self) -> None:
        subprocess.run(
            [str(self.binaries / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            **self.run_as,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def scram_server_running() -> Iterator[ScramServer]:
    """A started `ScramServer`, stopped and deleted on exit."""
    server = ScramServer.start()
    try:
        yield server
    finally:
        server.stop()

"""Make a service's test database reachable: the one place that decides which server to use.

Used by the pytest plugin and by `python -m microcosm_postgres.example`:

    with test_server("example") as server:       # configured server, or a throwaway one
        ensure_test_database("example", server)  # role and database, created when missing
        graph = create_object_graph(name="example", testing=True)

Inside `test_server`, `{NAME}__POSTGRES__HOST/PORT` and `MICROCOSM_POSTGRES_ADMIN_URL`
point at a throwaway server when one was started, so every graph made there uses it.

"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import text
from sqlalchemy.engine import URL

from microcosm_postgres.errors import PersistenceError
from microcosm_postgres.factories.engine import database_name_for, make_engine, username_for
from microcosm_postgres.provision import ADMIN_URL_VARIABLE, admin_url_for, provision
from microcosm_postgres.testing.server import ServerNotAvailableError, TemporaryServer, is_listening

__all__ = [
    "MODES",
    "PostgresServer",
    "SERVER_MODE_VARIABLE",
    "TestDatabaseError",
    "ensure_test_database",
    "env_prefix",
    "test_server",
]

SERVER_MODE_VARIABLE = "MICROCOSM_POSTGRES_TEST_SERVER"
MODES = ("auto", "configured", "temporary")


class TestDatabaseError(RuntimeError):
    """The test database cannot be reached or created; the message says what to do."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class PostgresServer:
    """The server in use: where it is, how to administer it, and where it came from."""

    host: str
    port: int
    admin_url: URL
    source: str


def env_prefix(name: str) -> str:
    """The environment variable prefix microcosm uses for service `name`."""
    return name.upper().replace("-", "_")


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def test_server(name: str, mode: str | None = None) -> Iterator[PostgresServer]:
    """Yield the server to use for `name`'s tests, starting a throwaway one when needed.

    Args:
        mode: "auto" (the configured server when it answers, else a throwaway one),
            "configured" or "temporary"; default `$MICROCOSM_POSTGRES_TEST_SERVER`, else auto.

    Raises:
        TestDatabaseError: for an unknown mode, or when no server can be started.

    """
    mode = mode or os.environ.get(SERVER_MODE_VARIABLE) or "auto"
    if mode not in MODES:
        raise TestDatabaseError(f"${SERVER_MODE_VARIABLE} must be one of {', '.join(MODES)} (got {mode!r}).")
    config = create_object_graph(name=name, testing=True).config.postgres
    host, port = str(config.host), int(config.port)
    if mode == "configured" or (mode == "auto" and is_listening(host, port)):
        yield PostgresServer(host, port, admin_url_for(host, port, config.get("admin_url")), "configured")
        return
    try:
        server = TemporaryServer.start()
    except ServerNotAvailableError as error:
        raise TestDatabaseError(f"Nothing answers on {host}:{port}. {error}") from error
    prefix = env_prefix(name)
    try:
        with _environment(
            **{
                f"{prefix}__POSTGRES__HOST": server.host,
                f"{prefix}__POSTGRES__PORT": str(server.port),
                ADMIN_URL_VARIABLE: server.admin_url.render_as_string(hide_password=False),
            }
        ):
            yield PostgresServer(server.host, server.port, server.admin_url, f"throwaway server from {server.source}")
    finally:
        server.stop()


def _can_connect(graph: Any) -> bool:
    engine = make_engine(graph.metadata, {**graph.config.postgres, "engine_retries": 0, "connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def ensure_test_database(name: str, server: PostgresServer, *, database_name: str | None = None) -> None:
    """Create `name`'s test role and database when the service cannot connect yet.

    Args:
        database_name: another database of the same service (default: the configured one).

    Raises:
        TestDatabaseError: when they are missing and the admin connection cannot create them.

    """
    overrides = {"postgres": {"database_name": database_name}} if database_name else {}
    probe = create_object_graph(name=name, testing=True, loader=load_each(load_from_environ, load_from_dict(overrides)))
    if _can_connect(probe):
        return
    database = database_name_for(probe.metadata, probe.config.postgres)
    username = username_for(probe.metadata, probe.config.postgres)
    try:
        provision(name, testing=True, database_name=database, username=username, admin_url=server.admin_url)
    except PersistenceError as error:
        raise TestDatabaseError(
            f"Cannot connect to database {database!r} as {username!r} on {server.host}:{server.port}, and "
            f"cannot create them through the admin connection ({error}). Create them with "
            f"`createuser {username}` and `createdb -O {username} {database}`, or set ${ADMIN_URL_VARIABLE}."
        ) from error

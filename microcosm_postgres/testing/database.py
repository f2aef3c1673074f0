"""Make a service's test database reachable: the one place that decides which server to use.

Used by the pytest plugin and by `python -m microcosm_postgres.example`:

    with use_test_server("example") as server:   # configured server, or a throwaway one
        ensure_test_database("example", server)  # role and database, created when missing
        graph = create_object_graph(name="example", testing=True)

Inside `use_test_server`, `{NAME}__POSTGRES__HOST/PORT` and `MICROCOSM_POSTGRES_ADMIN_URL`
point at a throwaway server when one was started, so every graph made there uses it.
(`test_server` is the 1.0 name of `use_test_server`, kept as an alias that pytest does
not collect when a test module imports it.)

"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import text
from sqlalchemy.engine import URL

from microcosm_postgres.errors import PersistenceError
from microcosm_postgres.factories.engine import database_name_for, make_engine, username_for
from microcosm_postgres.graph import GraphLike, as_graph
from microcosm_postgres.provision import ADMIN_URL_VARIABLE, admin_url_for, provision
from microcosm_postgres.testing.server import ServerNotAvailableError, TemporaryServer, is_listening

__all__ = [
    "MODES",
    "PostgresServer",
    "SERVER_MODE_VARIABLE",
    "TestDatabaseError",
    "describe_test_server",
    "ensure_test_database",
    "env_prefix",
    "test_server",
    "use_test_server",
]

SERVER_MODE_VARIABLE = "MICROCOSM_POSTGRES_TEST_SERVER"
MODES = ("auto", "configured", "temporary")


class TestDatabaseError(RuntimeError):
    """The test database cannot be reached or created; the message says what to do."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class PostgresServer:
    """The server in use: where it is, how to administer it, and where it came from.

    `directory` is the throwaway server's temporary directory (None for a configured server).

    """

    host: str
    port: int
    admin_url: URL
    source: str
    directory: Path | None = None


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


def _resolve_mode(mode: str | None) -> str:
    mode = mode or os.environ.get(SERVER_MODE_VARIABLE) or "auto"
    if mode not in MODES:
        raise TestDatabaseError(f"${SERVER_MODE_VARIABLE} must be one of {', '.join(MODES)} (got {mode!r}).")
    return mode


def describe_test_server(name: str, mode: str | None = None) -> str:
    """Say, without starting anything, which server and database `name`'s tests will use.

    Used for the pytest header, so that a mistyped host or port shows before the run.

    Raises:
        TestDatabaseError: for an unknown mode.

    """
    mode = _resolve_mode(mode)
    probe = create_object_graph(name=name, testing=True)
    host, port = str(probe.config.postgres.host), int(probe.config.postgres.port)
    try:
        database = database_name_for(probe.metadata, probe.config.postgres)
    except PersistenceError as error:  # a name PostgreSQL would truncate: say so, the run will refuse it
        database = f"<{error}>"
    if mode == "temporary":
        return f"a throwaway server (--postgres-server=temporary), database {database}"
    if is_listening(host, port):
        return f"the configured server at {host}:{port}, database {database}"
    if mode == "configured":
        return f"the configured server at {host}:{port}, database {database}: NOTHING ANSWERS there"
    return f"nothing answers at {host}:{port}: a throwaway server will be started, database {database}"


@contextmanager
def use_test_server(name: str, mode: str | None = None) -> Iterator[PostgresServer]:
    """Yield the server to use for `name`'s tests, starting a throwaway one when needed.

    Args:
        mode: "auto" (the configured server when it answers, else a throwaway one),
            "configured" or "temporary"; default `$MICROCOSM_POSTGRES_TEST_SERVER`, else auto.

    Raises:
        TestDatabaseError: for an unknown mode, when mode "configured" finds nothing
            answering at the configured host and port, or when no server can be started.

    """
    mode = _resolve_mode(mode)
    config = create_object_graph(name=name, testing=True).config.postgres
    host, port = str(config.host), int(config.port)
    if mode == "configured" or (mode == "auto" and is_listening(host, port)):
        if not is_listening(host, port):
            prefix = env_prefix(name)
            raise TestDatabaseError(
                f"No PostgreSQL server answered at {host}:{port} (the configured server; mode 'configured' "
                f"never starts one). Start it, fix {prefix}__POSTGRES__HOST / {prefix}__POSTGRES__PORT, or use "
                f"mode 'auto' or 'temporary' (--postgres-server, ${SERVER_MODE_VARIABLE}) for a throwaway server."
            )
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
            yield PostgresServer(
                server.host,
                server.port,
                server.admin_url,
                f"throwaway server from {server.source}",
                directory=server.directory,
            )
    finally:
        server.stop()


# The 1.0 name. A module-level function named test_* is collected by pytest when a test
# module imports it; `__test__ = False` tells pytest it is not a test.
test_server = use_test_server
test_server.__test__ = False  # type: ignore[attr-defined]


def _can_connect(graph: GraphLike) -> bool:
    graph = as_graph(graph)
    engine = make_engine(graph.metadata, {**graph.config["postgres"], "engine_retries": 0, "connect_timeout": 3})
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

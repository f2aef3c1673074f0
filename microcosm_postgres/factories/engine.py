"""The `postgres` component: `graph.config.postgres` -> a SQLAlchemy `Engine`.

Naming convention (nothing configured):
    database  `{name}_db`, or `{name}_test_db` when `graph.metadata.testing`
    user      `{name}`, or `{name}_ro` when `read_only` is set
    host      `localhost:5432`

Disconnects: a pooled connection whose server side has gone away (restart,
`pg_terminate_backend`, idle timeout) is noticed when it is checked out, without a
round trip, and replaced; a refused connection is retried `engine_retries` times,
`engine_retry_interval` ms apart. A statement is never replayed on a new connection
inside a transaction: the transaction's earlier statements died with the old one, so
the caller gets `DatabaseUnavailableError` and runs the transaction again.

"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Mapping
from typing import Any

from microcosm.api import defaults, typed
from microcosm.errors import ValidationError
from microcosm.metadata import Metadata
from microcosm.registry import get_defaults
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DisconnectionError, StatementError

from microcosm_postgres import naming
from microcosm_postgres.naming import check_identifier

__all__ = [
    "configure_engine",
    "database_name_for",
    "make_engine",
    "make_url",
    "username_for",
]

logger = logging.getLogger(__name__)


@defaults(
    # Server host name, address, or directory of a Unix socket.
    host=typed(str, default_value="localhost"),
    # Server port.
    port=typed(int, default_value=5432),
    # Database name; None means `{name}_test_db` when testing, else `{name}_db`.
    database_name=typed(str, default_value=None),
    # Role to connect as; None means `{name}`, or `{name}_ro` when read_only.
    username=typed(str, default_value=None),
    # Password of that role; never logged, never shown in reprs or errors.
    password=typed(str, default_value=""),
    # Connect as the read-only role `{name}_ro` (when username is not set).
    read_only=typed(bool, default_value=False),
    # SQLAlchemy dialect+driver: `postgresql+psycopg2`, or `postgresql+psycopg` for psycopg 3.
    driver=typed(str, default_value="postgresql+psycopg2"),
    # Log every statement (SQLAlchemy's echo).
    echo=typed(bool, default_value=False),
    # Connections kept open in the pool.
    pool_size=typed(int, default_value=5),
    # Connections opened beyond pool_size under load, closed when returned.
    max_overflow=typed(int, default_value=10),
    # Seconds to wait for a free connection before DatabaseUnavailableError.
    pool_timeout=typed(float, default_value=2),
    # Seconds after which a pooled connection is replaced; -1 never.
    pool_recycle=typed(int, default_value=-1),
    # Send a round-trip ping on every checkout (the free socket probe runs regardless).
    pool_pre_ping=typed(bool, default_value=False),
    # Refuse to connect without SSL (sslmode=require).
    require_ssl=typed(bool, default_value=False),
    # Verify the server certificate and host name (sslmode=verify-full); needs ssl_cert_path.
    verify_ssl=typed(bool, default_value=False),
    # Root certificate file used by verify_ssl (libpq's sslrootcert).
    ssl_cert_path=typed(str, default_value=None),
    # Seconds libpq waits to establish a connection; also bounds all retries of one connect.
    connect_timeout=typed(int, default_value=5),
    # Milliseconds after which the server cancels a statement (QueryTimeoutError); None no limit.
    statement_timeout=typed(int, default_value=None),
    # Name shown in pg_stat_activity; None means the service name.
    application_name=typed(str, default_value=None),
    # Extra attempts when opening a connection fails (server restarting, refused).
    engine_retries=typed(int, default_value=10),
    # Milliseconds between those attempts.
    engine_retry_interval=typed(int, default_value=100),
    # Admin connection URL for provisioning only (MICROCOSM_POSTGRES_ADMIN_URL wins); None: postgres@host:port.
    admin_url=typed(str, default_value=None),
    # Let drop/recreate/reset/truncate act on a database that is not a test database (see operations).
    allow_destructive=typed(bool, default_value=False),
)
def configure_engine(graph: Any) -> Engine:
    """Build the service's engine from `graph.config.postgres`.

    Raises:
        microcosm.errors.ValidationError: when the configuration is inconsistent
            (e.g. `verify_ssl` without `ssl_cert_path`).

    """
    return make_engine(graph.metadata, graph.config.postgres)


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The declared defaults overlaid with `config`, so a partial mapping is enough."""
    declared = get_defaults(configure_engine)
    settings = {key: requirement.default_value for key, requirement in declared.items()}
    settings.update({key: value for key, value in config.items() if key in settings})
    return settings


def database_name_for(metadata: Metadata, config: Mapping[str, Any]) -> str:
    """The database to connect to: configured, or `{name}_test_db` / `{name}_db` by convention."""
    if config.get("database_name"):
        return check_identifier(str(config["database_name"]), what="postgres.database_name")
    return naming.database_name(metadata.name, testing=bool(metadata.testing))


def username_for(metadata: Metadata, config: Mapping[str, Any]) -> str:
    """The role to connect as: configured, or `{name}` / `{name}_ro` by convention."""
    if config.get("username"):
        return check_identifier(str(config["username"]), what="postgres.username")
    return naming.username(metadata.name, read_only=bool(config.get("read_only")))


def make_url(metadata: Metadata, config: Mapping[str, Any]) -> URL:
    """The connection URL for `config` (its repr and str hide the password)."""
    settings = _settings(config)
    driver = settings["driver"]
    if not str(driver).startswith("postgresql+"):
        raise ValidationError(
            f"postgres.driver must name a PostgreSQL driver, e.g. 'postgresql+psycopg2' or "
            f"'postgresql+psycopg' (got {driver!r})."
        )
    return URL.create(
        drivername=driver,
        username=username_for(metadata, settings),
        password=settings["password"] or None,
        host=settings["host"],
        port=settings["port"],
        database=database_name_for(metadata, settings),
    )


def _connect_args(metadata: Metadata, settings: Mapping[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connect_timeout": settings["connect_timeout"],
        "application_name": settings["application_name"] or metadata.name,
    }
    if settings["verify_ssl"]:
        if not settings["ssl_cert_path"]:
            raise ValidationError(
                "postgres.verify_ssl is set but postgres.ssl_cert_path is not: set ssl_cert_path "
                "to the root certificate that signed the server's certificate."
            )
        args.update(sslmode="verify-full", sslrootcert=settings["ssl_cert_path"])
    elif settings["require_ssl"]:
        args["sslmode"] = "require"
    else:
        args["sslmode"] = "prefer"
    if settings["statement_timeout"] is not None:
        args["options"] = f"-c statement_timeout={int(settings['statement_timeout'])}"
    return args


def make_engine(metadata: Metadata, config: Mapping[str, Any]) -> Engine:
    """Build an engine for `metadata` (service name, testing) and `config` (the `postgres` keys).

    Missing keys take their declared defaults, so this is usable without a graph.

    Raises:
        microcosm.errors.ValidationError: for an unknown driver, or `verify_ssl` without
            `ssl_cert_path`.

    """
    settings = _settings(config)
    engine = create_engine(
        make_url(metadata, settings),
        connect_args=_connect_args(metadata, settings),
        echo=settings["echo"],
        pool_size=settings["pool_size"],
        max_overflow=settings["max_overflow"],
        pool_timeout=settings["pool_timeout"],
        pool_recycle=settings["pool_recycle"],
        pool_pre_ping=settings["pool_pre_ping"],
    )
    _retry_connects(
        engine,
        retries=settings["engine_retries"],
        interval=settings["engine_retry_interval"],
        budget=settings["connect_timeout"],
    )
    event.listen(engine, "checkout", _discard_if_server_closed)
    event.listen(engine, "handle_error", _wrap_driver_value_errors)
    return engine


def _wrap_driver_value_errors(context: Any) -> Exception | None:
    """Wrap a ValueError the driver raised while executing (psycopg2 refuses NUL bytes this
    way, before the server sees them) in SQLAlchemy's StatementError, as SQLAlchemy already
    does for values refused while building a statement, so `errors.translate` sees both alike."""
    original = context.original_exception
    if context.sqlalchemy_exception is None and isinstance(original, ValueError):
        return StatementError(
            "the database driver refused a parameter value",
            context.statement,
            context.parameters,
            original,
        )
    return None


def _retry_connects(engine: Engine, *, retries: int, interval: int, budget: float) -> None:
    """Open new DBAPI connections with `retries` extra attempts, `interval` ms apart.

    No new attempt starts once `budget` seconds (connect_timeout) have passed since
    the first, so a health check against a host that drops packets fails in about
    twice connect_timeout, not `retries` times it. Connection failures carry no
    SQLSTATE on either driver, so every OperationalError at connect time is retried
    (a wrong database name therefore fails after the retries rather than at once).

    """

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, connection_record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + budget
        for attempt in range(retries + 1):
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError:
                if attempt >= retries or time.monotonic() + interval / 1000 > deadline:
                    raise
                logger.warning(
                    "Connecting to %s failed (attempt %d of %d); retrying in %d ms",
                    engine.url,
                    attempt + 1,
                    retries + 1,
                    interval,
                )
                time.sleep(interval / 1000)
        raise AssertionError("unreachable")  # pragma: no cover


def _discard_if_server_closed(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
    """Pool checkout hook: replace a connection the server has already closed.

    An idle connection has nothing to read. If its socket is readable, the server has
    sent its last words (a FATAL notice, then EOF): the connection is dead, and raising
    DisconnectionError makes the pool open a fresh one. No round trip is spent.

    """
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        raise DisconnectionError("connection was closed")
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        if poller.poll(0):
            raise DisconnectionError("the server closed this pooled connection")
    except (OSError, ValueError) as error:
        raise DisconnectionError("pooled connection has no usable socket") from error

"""The `postgres` component: `graph.config.postgres` -> a SQLAlchemy `Engine`.

Naming convention (nothing configured):
    database  `{name}_db`, or `{name}_test_db` when `graph.metadata.testing`
    user      `{name}`, or `{name}_ro` when `read_only` is set
    host      `localhost:5432`

`make_engine(metadata, config)` accepts the `postgres` section (`graph.config.postgres`)
or, as 3.x services call it, the whole configuration (`graph.config`); keys it does not
know are reported with a warning naming them. The 3.x helper names `choose_database_name`,
`choose_username`, `choose_uri`, `choose_connect_args` and `choose_args` are kept as thin
wrappers, with the same `(metadata, config)` arguments.

Disconnects: a pooled connection whose server side has gone away (restart,
`pg_terminate_backend`, idle timeout) is noticed when it is checked out, without a
round trip, and replaced; a connection that is already closed when it is first checked
out means the server is dropping us, and gives `DatabaseUnavailableError`. A refused
connection is retried `engine_retries` times, `engine_retry_interval` ms apart, except
a refused login (`AuthenticationFailedError`) or a missing database (`DatabaseMissingError`):
retrying cannot fix a password or create a database. A
statement is never replayed on a new connection inside a transaction: the
transaction's earlier statements died with the old one, so the caller gets
`DatabaseUnavailableError` and runs the transaction again.

"""

from __future__ import annotations

import heapq
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from microcosm.api import defaults, typed
from microcosm.config.types import boolean
from microcosm.errors import ValidationError
from microcosm.metadata import Metadata
from microcosm.registry import get_defaults
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Dialect, Engine, ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError, StatementError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from microcosm_postgres import naming
from microcosm_postgres.errors import CONNECTION_FAILURE, InvalidConfigurationError, connect_error, make_error
from microcosm_postgres.naming import check_identifier

if TYPE_CHECKING:
    from microcosm_postgres.graph import Graph

__all__ = [
    "choose_args",
    "choose_connect_args",
    "choose_database_name",
    "choose_uri",
    "choose_username",
    "configure_engine",
    "database_name_for",
    "make_engine",
    "make_url",
    "postgres_section",
    "response_bound",
    "server_closed",
    "username_for",
]

logger = logging.getLogger(__name__)

# 3.x's default driver name; SQLAlchemy 2.1 would read it as psycopg 3, 3.x meant psycopg2.
_DRIVER_ALIASES = {"postgresql": "postgresql+psycopg2"}

# Marks, in a pool record's `info` (cleared when the connection is replaced), a connection
# opened for the checkout in progress.
_FRESH = "microcosm_postgres.fresh"

# libpq's PQTRANS_ACTIVE: a command was sent and its reply is not complete (both drivers).
_PQTRANS_ACTIVE = 1


def _address_list(value: object) -> tuple[str, ...]:
    """`postgres.replicas` as given: a list, or one string of comma- or space-separated entries (env)."""
    entries = value.replace(",", " ").split() if isinstance(value, str) else value
    return tuple(str(entry).strip() for entry in entries or () if str(entry).strip())  # type: ignore[attr-defined]


class _Number:
    """The converter of a numeric setting: text or number -> `kind`, within `low`..`high`.

    microcosm calls it for `postgres.*` (a `ValueError` there would become its misleading
    "Missing required configuration"); `_settings` calls `convert` with the full key for
    the sections microcosm does not type (`shards.<name>.postgres.*`, `<engine>.postgres.*`).

    """

    def __init__(
        self, kind: type[int] | type[float], name: str, *, low: float | None = None, high: float | None = None
    ):
        self.kind = kind
        self.name = name
        self.low = low
        self.high = high
        self.__name__ = kind.__name__

    def __call__(self, value: object) -> int | float | None:
        return self.convert(value, key=f"postgres.{self.name}")

    def expected(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{what} from {self.low:g} to {self.high:g}"
        return f"{what} of at least {self.low:g}" if self.low is not None else what

    def convert(self, value: object, *, key: str) -> int | float | None:
        """`value` as a `kind`; None stays None.

        Raises:
            InvalidConfigurationError: naming `key`, the value and what is expected.

        """
        if value is None:
            return None
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(value)
            number = self.kind(value.strip()) if isinstance(value, str) else self.kind(value)
            if self.kind is int and isinstance(value, float) and value != number:
                raise ValueError(value)
        except ValueError:
            number = None
        if (
            number is None
            or (self.low is not None and number < self.low)
            or (self.high is not None and number > self.high)
        ):
            raise InvalidConfigurationError(
                f"{key} is {value!r}, which is not {self.expected()}: fix the setting "
                f"(e.g. the environment variable ending in __{key.upper().replace('.', '__')}).",
                key=key,
                value=value,
            )
        return number


class _Boolean:
    """The converter of a boolean setting: true/false (and microcosm's other spellings).

    Like `_Number`: microcosm calls it for `postgres.*` (its own `bool` would turn a bad
    value into "Missing required configuration"); `_settings` calls `convert` with the
    full key for the sections microcosm does not type.

    """

    def __init__(self, name: str):
        self.name = name
        self.__name__ = "bool"

    def __call__(self, value: object) -> bool:
        return self.convert(value, key=f"postgres.{self.name}")

    def convert(self, value: object, *, key: str) -> bool:
        """`value` as a bool.

        Raises:
            InvalidConfigurationError: naming `key` and the value.

        """
        if isinstance(value, bool):
            return value
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return boolean(value.strip())
        except ValueError as error:
            raise InvalidConfigurationError(
                f"{key} is {value!r}, which is not a boolean: use true or false "
                f"(e.g. the environment variable ending in __{key.upper().replace('.', '__')}).",
                key=key,
                value=value,
            ) from error


@defaults(  # type: ignore[untyped-decorator]  # microcosm leaves it unannotated; it returns the function as is
    # Server host name, address, or directory of a Unix socket; "h1:p1,h2:p2" for failover.
    host=typed(str, default_value="localhost"),
    # Server port.
    port=typed(_Number(int, "port", low=1, high=65535), default_value=5432),
    # Database name; None means `{name}_test_db` when testing, else `{name}_db`.
    database_name=typed(str, default_value=None),
    # Role to connect as; None means `{name}`, or `{name}_ro` when read_only.
    username=typed(str, default_value=None),
    # Password of that role; never logged, never shown in reprs or errors.
    password=typed(str, default_value=""),
    # Connect as the read-only role `{name}_ro` (when username is not set).
    read_only=typed(_Boolean("read_only"), default_value=False),
    # SQLAlchemy dialect+driver: `postgresql+psycopg2`, or `postgresql+psycopg` for psycopg 3;
    # 3.x's bare `postgresql` means `postgresql+psycopg2`.
    driver=typed(str, default_value="postgresql+psycopg2"),
    # Log every statement (SQLAlchemy's echo).
    echo=typed(_Boolean("echo"), default_value=False),
    # Connections kept open in the pool.
    pool_size=typed(_Number(int, "pool_size", low=0), default_value=5),
    # Connections opened beyond pool_size under load, closed when returned.
    max_overflow=typed(_Number(int, "max_overflow", low=-1), default_value=10),
    # Seconds to wait for a free connection before DatabaseUnavailableError.
    pool_timeout=typed(_Number(float, "pool_timeout", low=0), default_value=2),
    # Seconds after which a pooled connection is replaced; -1 never.
    pool_recycle=typed(_Number(int, "pool_recycle", low=-1), default_value=-1),
    # Send a round-trip ping on every checkout (the free socket probe runs regardless).
    pool_pre_ping=typed(_Boolean("pool_pre_ping"), default_value=False),
    # Refuse to connect without SSL (sslmode=require).
    require_ssl=typed(_Boolean("require_ssl"), default_value=False),
    # Verify the server certificate and host name (sslmode=verify-full); needs ssl_cert_path.
    verify_ssl=typed(_Boolean("verify_ssl"), default_value=False),
    # Root certificate file used by verify_ssl (libpq's sslrootcert).
    ssl_cert_path=typed(str, default_value=None),
    # Seconds libpq waits to establish a connection; also bounds all retries of one connect.
    connect_timeout=typed(_Number(int, "connect_timeout", low=0), default_value=5),
    # Milliseconds after which the server cancels a statement (QueryTimeoutError); None no limit.
    statement_timeout=typed(_Number(int, "statement_timeout", low=0), default_value=None),
    # Seconds a statement or COMMIT may wait for the server's reply before the client drops the
    # connection (DatabaseUnavailableError); None: statement_timeout + 2 s when that is set, else no bound.
    response_timeout=typed(_Number(float, "response_timeout"), default_value=None),
    # Seconds a connection may sit idle before TCP keepalive probes start (libpq keepalives_idle).
    keepalives_idle=typed(_Number(int, "keepalives_idle", low=0), default_value=10),
    # Seconds between unanswered keepalive probes (libpq keepalives_interval).
    keepalives_interval=typed(_Number(int, "keepalives_interval", low=0), default_value=5),
    # Unanswered keepalive probes after which the kernel drops the connection (libpq keepalives_count).
    keepalives_count=typed(_Number(int, "keepalives_count", low=0), default_value=3),
    # Milliseconds sent data may stay unacknowledged before the kernel drops the connection
    # (libpq tcp_user_timeout, Linux); 0 the system default.
    tcp_user_timeout=typed(_Number(int, "tcp_user_timeout", low=0), default_value=20000),
    # Name shown in pg_stat_activity; None means the service name.
    application_name=typed(str, default_value=None),
    # Extra attempts when opening a connection fails (server restarting, refused).
    engine_retries=typed(_Number(int, "engine_retries", low=0), default_value=10),
    # Milliseconds between those attempts.
    engine_retry_interval=typed(_Number(int, "engine_retry_interval", low=0), default_value=100),
    # Admin connection URL for provisioning only (MICROCOSM_POSTGRES_ADMIN_URL wins); None: postgres@host:port.
    admin_url=typed(str, default_value=None),
    # Let drop/recreate/reset/truncate act on a database that is not a test database (see operations).
    allow_destructive=typed(_Boolean("allow_destructive"), default_value=False),
    # Read replicas: "host[:port]" entries or URLs (a list, or one comma-separated string); see routing.
    replicas=typed(_address_list, default_value=()),
    # Connect through PgBouncer in transaction pooling mode (no session state; see make_engine).
    pgbouncer=typed(_Boolean("pgbouncer"), default_value=False),
)
def configure_engine(graph: Graph) -> Engine:
    """Build the service's engine from `graph.config.postgres`.

    Raises:
        microcosm.errors.ValidationError: when the configuration is inconsistent
            (e.g. `verify_ssl` without `ssl_cert_path`).

    """
    return make_engine(graph.metadata, graph.config["postgres"])


def postgres_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The `postgres` keys of `config`: its `postgres` section when given a whole
    configuration (`graph.config`, the 3.x convention), else `config` itself."""
    section = config.get("postgres")
    return section if isinstance(section, Mapping) else config


def _settings(config: Mapping[str, Any], *, key: str = "postgres") -> dict[str, Any]:
    """The declared defaults overlaid with `config`, so a partial mapping is enough.

    `key` is the section's full key (`postgres`, `shards.east.postgres`, `secret.postgres`),
    named in messages. Keys `configure_engine` does not declare are reported (one warning
    naming them in full, never their values): a misspelt key would otherwise be silently
    ignored. A value that cannot be converted to its declared type, or is out of range
    (a port above 65535), raises `InvalidConfigurationError`.

    """
    section = postgres_section(config)
    declared = get_defaults(configure_engine)
    settings = {name: requirement.default_value for name, requirement in declared.items()}
    unknown = sorted(str(name) for name in section if name not in settings)
    if unknown:
        logger.warning(
            "Ignoring unknown configuration keys: %s. Known keys of %s are: %s.",
            ", ".join(f"{key}.{name}" for name in unknown),
            key,
            ", ".join(sorted(settings)),
        )
    settings.update(
        {
            name: _coerce(declared[name].type, value, f"{key}.{name}")
            for name, value in section.items()
            if name in settings
        }
    )
    return settings


def _coerce(kind: Any, value: Any, key: str) -> Any:
    """A value converted to its declared type (text from the environment under a section
    microcosm did not type: `shards.<name>.postgres.*`, `<engine>.postgres.*`), range checked.

    Raises:
        InvalidConfigurationError: naming `key`, the value and what is expected.

    """
    if isinstance(kind, (_Number, _Boolean)):
        return kind.convert(value, key=key)
    if not isinstance(value, str) or kind is str:
        return value
    return kind(value)


def _driver(settings: Mapping[str, Any]) -> str:
    driver = str(settings["driver"])
    driver = _DRIVER_ALIASES.get(driver, driver)
    if not driver.startswith("postgresql+"):
        raise ValidationError(
            f"postgres.driver must name a PostgreSQL driver, e.g. 'postgresql+psycopg2' or "
            f"'postgresql+psycopg' (got {driver!r})."
        )
    return driver


def database_name_for(metadata: Metadata, config: Mapping[str, Any]) -> str:
    """The database to connect to: configured, or `{name}_test_db` / `{name}_db` by convention.

    Raises:
        InvalidNameError: when the name is longer than PostgreSQL's 63-byte limit.

    """
    section = postgres_section(config)
    if section.get("database_name"):
        return check_identifier(str(section["database_name"]), what="postgres.database_name")
    return naming.database_name(metadata.name, testing=bool(metadata.testing))


def username_for(metadata: Metadata, config: Mapping[str, Any]) -> str:
    """The role to connect as: configured, or `{name}` / `{name}_ro` by convention.

    Raises:
        InvalidNameError: when the name is longer than PostgreSQL's 63-byte limit.

    """
    section = postgres_section(config)
    if section.get("username"):
        return check_identifier(str(section["username"]), what="postgres.username")
    return naming.username(metadata.name, read_only=bool(section.get("read_only")))


def make_url(metadata: Metadata, config: Mapping[str, Any], *, key: str = "postgres") -> URL:
    """The connection URL for `config` (its repr and str hide the password); `key` is the
    section's full key, for messages.

    Raises:
        microcosm.errors.ValidationError: for a driver that is not PostgreSQL's.
        InvalidConfigurationError: for a value of the wrong type or out of range.

    """
    settings = _settings(config, key=key)
    hosts = _hosts(settings)
    return URL.create(
        drivername=_driver(settings),
        username=username_for(metadata, settings),
        password=settings["password"] or None,
        host=None if hosts else settings["host"],
        port=None if hosts else settings["port"],
        database=database_name_for(metadata, settings),
        # Several hosts (libpq multi-host failover): SQLAlchemy's `?host=h1:p1&host=h2:p2` form.
        query={"host": hosts} if hosts else {},
    )


def _hosts(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """`host` listing several comma-separated `host[:port]` entries (port default: `port`),
    or () for a single host."""
    host = str(settings["host"])
    if "," not in host:
        return ()
    entries = [entry.strip() for entry in host.split(",") if entry.strip()]
    return tuple(entry if ":" in entry else f"{entry}:{settings['port']}" for entry in entries)


def _connect_args(metadata: Metadata, settings: Mapping[str, Any]) -> dict[str, str | int]:
    args: dict[str, str | int] = {
        "connect_timeout": settings["connect_timeout"],
        "application_name": settings["application_name"] or metadata.name,
        # A peer that vanishes (host down, link cut) is noticed by the kernel, not never.
        "keepalives": 1,
        "keepalives_idle": settings["keepalives_idle"],
        "keepalives_interval": settings["keepalives_interval"],
        "keepalives_count": settings["keepalives_count"],
        "tcp_user_timeout": settings["tcp_user_timeout"],
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
    if settings["pgbouncer"]:
        # Transaction pooling: no startup options (statement_timeout is SET LOCAL per
        # transaction, see make_engine), and no server-side prepared statements (psycopg 3).
        if _driver(settings) == "postgresql+psycopg":
            args["prepare_threshold"] = None  # type: ignore[assignment]  # psycopg's "never prepare"
    elif settings["statement_timeout"] is not None:
        args["options"] = f"-c statement_timeout={int(settings['statement_timeout'])}"
    if _hosts(settings):
        # Failover: libpq tries the hosts in order and keeps the one that accepts writes.
        args["target_session_attrs"] = "read-write"
    return args


def choose_database_name(metadata: Metadata, config: Mapping[str, Any]) -> str:
    """3.x compatibility name of `database_name_for`."""
    return database_name_for(metadata, config)


def choose_username(metadata: Metadata, config: Mapping[str, Any]) -> str:
    """3.x compatibility name of `username_for`."""
    return username_for(metadata, config)


def choose_uri(metadata: Metadata, config: Mapping[str, Any]) -> str:
    """3.x compatibility: the connection URL as a string, password included (as 3.x did).

    Prefer `make_url`, whose `URL` hides the password when printed; never log this string.

    """
    return make_url(metadata, config).render_as_string(hide_password=False)


def choose_connect_args(metadata: Metadata, config: Mapping[str, Any]) -> dict[str, str | int]:
    """3.x compatibility: the driver's `connect()` arguments (timeouts, SSL, application name).

    Raises:
        microcosm.errors.ValidationError: for `verify_ssl` without `ssl_cert_path`.

    """
    return _connect_args(metadata, _settings(config))


def choose_args(metadata: Metadata, config: Mapping[str, Any]) -> tuple[tuple[URL], dict[str, Any]]:
    """3.x compatibility: `(args, kwargs)` such that `create_engine(*args, **kwargs)` makes the
    engine `make_engine` makes, without its connect retries and disconnect handling.

    Raises:
        microcosm.errors.ValidationError: for an unknown driver, or `verify_ssl` without
            `ssl_cert_path`.

    """
    settings = _settings(config)
    kwargs: dict[str, Any] = {
        "connect_args": _connect_args(metadata, settings),
        "echo": settings["echo"],
        "pool_size": settings["pool_size"],
        "max_overflow": settings["max_overflow"],
        "pool_timeout": settings["pool_timeout"],
        "pool_recycle": settings["pool_recycle"],
        "pool_pre_ping": settings["pool_pre_ping"],
    }
    return (make_url(metadata, settings),), kwargs


def make_engine(metadata: Metadata, config: Mapping[str, Any], *, key: str = "postgres") -> Engine:
    """Build an engine for `metadata` (service name, testing) and `config`.

    `config` is the `postgres` section or the whole configuration (3.x services pass
    `graph.config`). Missing keys take their declared defaults, so this is usable
    without a graph; unknown keys are reported with a warning. `key` is the section's
    full key (`shards.east.postgres`), named by warnings, by configuration errors and by
    the errors of connections that fail (which keys to check).

    Raises:
        microcosm.errors.ValidationError: for an unknown driver, or `verify_ssl` without
            `ssl_cert_path`.
        InvalidConfigurationError: for a value of the wrong type or out of range (a port
            outside 1..65535), naming the full key.
        InvalidNameError: for a database or role name longer than 63 bytes.

    """
    settings = _settings(config, key=key)
    args, kwargs = choose_args(metadata, settings)
    engine = create_engine(*args, **kwargs)
    _retry_connects(
        engine,
        retries=settings["engine_retries"],
        interval=settings["engine_retry_interval"],
        budget=settings["connect_timeout"],
        key=key,
    )
    event.listen(engine, "connect", _mark_fresh)
    event.listen(engine, "checkout", _discard_if_server_closed)
    event.listen(engine, "handle_error", _wrap_driver_value_errors)
    event.listen(engine, "commit", _refuse_commit_if_server_closed)
    bound = response_bound(settings)
    if bound is not None:
        _bound_responses(engine, bound)
    if settings["pgbouncer"] and settings["statement_timeout"] is not None:
        _set_local_statement_timeout(engine, int(settings["statement_timeout"]))
    return engine


def response_bound(config: Mapping[str, Any]) -> float | None:
    """Seconds a statement may wait for its reply before the client gives the connection up.

    `response_timeout` when set (0 or less: no bound); else `statement_timeout` + 2 s when
    that is set (the server cancels a slow statement itself by then: silence after that
    means the link or the server is frozen); else None, no bound (TCP keepalives and
    `tcp_user_timeout` still notice a peer the network lost).

    """
    settings = _settings(config)
    if settings["response_timeout"] is not None:
        seconds = float(settings["response_timeout"])
        return seconds if seconds > 0 else None
    if settings["statement_timeout"] is not None and int(settings["statement_timeout"]) > 0:
        return int(settings["statement_timeout"]) / 1000 + 2
    return None


def _bound_responses(engine: Engine, seconds: float) -> None:
    """Arm the watchdog when a statement, COMMIT or ROLLBACK is sent; disarm on its reply."""

    def arm(connection: Any, *args: Any) -> None:
        dbapi_connection = _dbapi_connection_of(connection)
        if dbapi_connection is not None:
            _WATCHDOG.arm(dbapi_connection, seconds)

    def disarm(connection: Any, *args: Any) -> None:
        dbapi_connection = _dbapi_connection_of(connection)
        if dbapi_connection is not None:
            _WATCHDOG.disarm(dbapi_connection)

    def disarm_on_error(context: ExceptionContext) -> None:
        if context.connection is not None:
            disarm(context.connection)

    event.listen(engine, "before_cursor_execute", arm)
    event.listen(engine, "after_cursor_execute", disarm)
    event.listen(engine, "handle_error", disarm_on_error)
    # No event follows COMMIT / ROLLBACK: their deadline stays armed, and the watchdog only
    # acts on a connection that is still waiting for a reply (libpq's PQTRANS_ACTIVE).
    event.listen(engine, "commit", arm)
    event.listen(engine, "rollback", arm)


def _dbapi_connection_of(connection: Any) -> Any:
    """The driver connection of a SQLAlchemy `Connection`, or None when it has none (closed,
    invalidated): never reconnects, as `Connection.connection` would."""
    if connection.closed or connection.invalidated:
        return None
    return connection.connection.dbapi_connection


class _Watchdog:
    """One thread for the process: cuts the socket of a connection whose reply is overdue.

    Shutting the socket down makes the driver call that waits on it return at once with
    "server closed the connection", on both drivers; SQLAlchemy then invalidates the
    connection and the caller gets `DatabaseUnavailableError` (or, during COMMIT,
    `CommitOutcomeUnknownError`). A deadline acts only if it is still the connection's
    latest and the connection is still waiting for a reply.

    Each armed connection has one due time (`_due`, replaced by every `arm`, dropped by
    `disarm`) and at most one entry in the heap (`_queued`): a statement costs two dict
    updates, and the heap never holds more entries than there are connections.

    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._queued: dict[int, float] = {}
        self._due: dict[int, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None

    def arm(self, dbapi_connection: Any, seconds: float) -> None:
        key = id(dbapi_connection)
        deadline = time.monotonic() + seconds
        with self._condition:
            self._due[key] = (deadline, dbapi_connection)
            queued = self._queued.get(key)
            if queued is not None and queued <= deadline:
                return  # its heap entry comes first, and finds this later due time then
            self._queued[key] = deadline
            heapq.heappush(self._heap, (deadline, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="microcosm-postgres-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0] == (deadline, key):
                self._condition.notify()

    def disarm(self, dbapi_connection: Any) -> None:
        with self._condition:
            self._due.pop(id(dbapi_connection), None)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                deadline, key = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._condition.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                if self._queued.get(key) == deadline:
                    del self._queued[key]
                due = self._due.get(key)
                if due is None:
                    continue
                if due[0] > now:
                    if key not in self._queued:
                        self._queued[key] = due[0]
                        heapq.heappush(self._heap, (due[0], key))
                    continue
                del self._due[key]
            dbapi_connection = due[1]
            if _waiting_for_reply(dbapi_connection):
                logger.warning("No reply from the database server in time: dropping the connection")
                _shut_down(dbapi_connection)


_WATCHDOG = _Watchdog()


def _waiting_for_reply(dbapi_connection: Any) -> bool:
    """Whether a command was sent on the connection and its reply has not come (PQTRANS_ACTIVE)."""
    try:
        if getattr(dbapi_connection, "closed", False):
            return False
        return int(dbapi_connection.info.transaction_status) == _PQTRANS_ACTIVE
    except Exception:
        return False


def _shut_down(dbapi_connection: Any) -> None:
    """Shut the connection's socket down (both ways) without closing the driver's descriptor."""
    try:
        with socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        logger.debug("could not shut down an overdue connection", exc_info=True)


def _refuse_commit_if_server_closed(connection: Any) -> None:
    """Connection `commit` hook: before COMMIT is sent, refuse to send it on a connection the
    server has already closed (its farewell, e.g. after pg_terminate_backend, is waiting on
    the socket). The server never saw the COMMIT: `DatabaseUnavailableError`, safe to retry,
    rather than an unknown outcome. No round trip is spent.

    Raises:
        DatabaseUnavailableError: the server closed the connection before COMMIT.

    """
    dbapi_connection = _dbapi_connection_of(connection)
    if dbapi_connection is not None and server_closed(dbapi_connection):
        connection.invalidate()
        raise make_error("connection lost", sqlstate=CONNECTION_FAILURE)


def server_closed(dbapi_connection: DBAPIConnection) -> bool:
    """Whether the server has closed (or said it is closing) this idle connection; no round trip."""
    return _closed_reason(dbapi_connection) is not None


def _set_local_statement_timeout(engine: Engine, milliseconds: int) -> None:
    """Start every transaction with `SET LOCAL statement_timeout`: behind PgBouncer in
    transaction pooling a session setting would stay on a server connection that other
    clients then use, and a startup option is refused."""

    @event.listens_for(engine, "begin")
    def begin(connection: Connection) -> None:
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")


def _wrap_driver_value_errors(context: ExceptionContext) -> Exception | None:
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


def _retry_connects(engine: Engine, *, retries: int, interval: int, budget: float, key: str = "postgres") -> None:
    """Open new DBAPI connections with `retries` extra attempts, `interval` ms apart.

    No new attempt starts once `budget` seconds (connect_timeout) have passed since
    the first, so a health check against a host that drops packets fails in about
    twice connect_timeout, not `retries` times it. A refused login is not retried: it
    raises `AuthenticationFailedError` at once (see `errors.connect_error`), and neither
    is a missing database (`DatabaseMissingError`, naming `key.database_name`). Other
    connection failures carry no SQLSTATE on either driver, so they are all retried. The
    last failure is raised as its typed error, naming host, port, database and the
    configuration keys `key.*` to check.

    """
    url = engine.url

    @event.listens_for(engine, "do_connect")
    def connect(
        dialect: Dialect, connection_record: ConnectionPoolEntry, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> DBAPIConnection:
        deadline = time.monotonic() + budget
        for attempt in range(retries + 1):
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as error:
                typed_error = connect_error(
                    error, user=url.username, host=url.host, port=url.port, database=url.database, key=key
                )
                if typed_error is not None and not typed_error.retryable:
                    raise typed_error from error
                if attempt >= retries or time.monotonic() + interval / 1000 > deadline:
                    if typed_error is not None:
                        raise typed_error from error
                    raise
                logger.warning(
                    "Connecting to %s failed (attempt %d of %d); retrying in %d ms",
                    url,
                    attempt + 1,
                    retries + 1,
                    interval,
                )
                time.sleep(interval / 1000)
        raise AssertionError("unreachable")  # pragma: no cover


def _mark_fresh(dbapi_connection: DBAPIConnection, connection_record: ConnectionPoolEntry) -> None:
    """Pool connect hook: mark a connection just opened, for `_discard_if_server_closed`."""
    connection_record.info[_FRESH] = True


def _discard_if_server_closed(
    dbapi_connection: DBAPIConnection, connection_record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    """Pool checkout hook: replace a connection the server has already closed.

    An idle connection has nothing to read. If its socket is readable, the server has
    sent its last words (a FATAL notice, then EOF): the connection is dead, and raising
    DisconnectionError makes the pool open a fresh one. No round trip is spent.

    A connection opened for this very checkout (a fresh one, or the pool's replacement
    for a dead one) that is already closed means the server drops what it accepts:
    `DatabaseUnavailableError` at once, rather than SQLAlchemy's untyped
    `InvalidRequestError("This connection is closed")` after its second attempt.

    """
    fresh = bool(connection_record.info.pop(_FRESH, False))
    reason = _closed_reason(dbapi_connection)
    if reason is None:
        return
    if fresh:
        raise make_error("checkout rejected") from DisconnectionError(reason)
    raise DisconnectionError(reason)


def _closed_reason(dbapi_connection: DBAPIConnection) -> str | None:
    """Why the pooled connection is unusable, or None when it looks alive."""
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return "connection was closed"
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        if poller.poll(0):
            return "the server closed this pooled connection"
    except (OSError, ValueError):
        return "pooled connection has no usable socket"
    return None

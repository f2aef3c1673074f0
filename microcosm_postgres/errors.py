"""The error hierarchy, and the one place that turns a database exception into it.

Every error this library raises for a database fault derives from `PersistenceError`
and carries an HTTP-ish `status_code` (microcosm-flask turns it into the response),
`include_stack_trace` (False for faults that are the caller's, not the server's) and
`retryable` (True when running the whole transaction again may succeed).

The translation is data: `TRANSLATIONS` maps a fault to its error class and message
template. A fault is a SQLSTATE (`pgcode` on psycopg2, `sqlstate` on psycopg 3), a
SQLSTATE class (`"08"`), or one of the few faults that reach us without a SQLSTATE
("pool timeout", "connection lost", ...). `fault_of()` names the fault of an exception,
`translate()` looks it up. Classification never searches the server's message text,
with one documented exception: a refused login, for which neither driver exposes a
SQLSTATE (see `_refused_login`). Messages never repeat the server's detail (a
`Key (email)=(...)` detail can hold personal data): that stays on the chained exception
(`error.__cause__`).

Services raise these classes themselves too, as with 3.x: `ModelNotFoundError()`,
`ModelNotFoundError("message")` and `ModelNotFoundError("message", cause)` all work.

"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

from microcosm.errors import ValidationError
from sqlalchemy import exc as sa_exc

__all__ = [
    "CONNECTION_FAILURE",
    "TRANSLATIONS",
    "AuthenticationFailedError",
    "CommitOutcomeUnknownError",
    "CrossEngineTransactionError",
    "DatabaseMissingError",
    "DatabaseUnavailableError",
    "DuplicateModelError",
    "InvalidConfigurationError",
    "InvalidInputError",
    "InvalidNameError",
    "IsolationError",
    "MigrationsBehindError",
    "MissingDependencyError",
    "MissingRelationError",
    "ModelConflictError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "PersistenceError",
    "QueryTimeoutError",
    "ReferencedModelError",
    "SessionNotOpenError",
    "ShardChangeError",
    "ShardConfigurationError",
    "ShardError",
    "ShardNotAllowedError",
    "TransactionAbortedError",
    "TransactionConflictError",
    "Translation",
    "UnknownShardError",
    "UnsafeOperationError",
    "connect_error",
    "fault_of",
    "make_error",
    "sqlstate_of",
    "translate",
    "translating",
]


class PersistenceError(Exception):
    """Base class of every typed error microcosm-postgres raises.

    Constructible as services do: `PersistenceError()`, `PersistenceError("message")`,
    `PersistenceError("message", cause)`; a positional `cause` is kept as `cause` and
    as `__cause__` (a later `raise ... from other` replaces the latter).

    Attributes:
        status_code: the HTTP status a service should answer with.
        fault: the key of `TRANSLATIONS` the error was made from (None when raised directly).
        include_stack_trace: False when the fault is the caller's (a 4xx), so error
            handlers need not log a stack trace.
        retryable: True when running the whole transaction again may succeed.
        sqlstate: the five-character SQLSTATE the server reported, when there was one.
        constraint: the name of the violated constraint, when the server gave one.
        table: the table the server named, when it gave one.
        cause: the exception given as second positional argument, else `__cause__`.

    """

    status_code: int = 500
    include_stack_trace: bool = True
    retryable: bool = False
    default_message: str = "A database operation failed."
    #: The key of `TRANSLATIONS` this error was made from, or None when raised directly.
    fault: str | None = None

    def __init__(
        self,
        message: str | None = None,
        cause: BaseException | None = None,
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(self.default_message if message is None else message)
        self._cause = cause
        if cause is not None:
            self.__cause__ = cause
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.table = table

    @property
    def cause(self) -> BaseException | None:
        """The exception given as `cause`, else the one chained with `raise ... from`."""
        return self._cause if self._cause is not None else self.__cause__

    @cause.setter
    def cause(self, value: BaseException | None) -> None:
        self._cause = value

    @property
    def message(self) -> str:
        """The message (3.x services read `error.message`)."""
        return str(self)


class ModelNotFoundError(PersistenceError):
    """No row matched the identifier or criteria (404)."""

    status_code = 404
    include_stack_trace = False
    default_message = "The model was not found."


class ModelIntegrityError(PersistenceError):
    """The database refused a write that breaks a constraint (not null, check, ...) (500)."""

    status_code = 500
    default_message = "The write breaks a database constraint."


class DuplicateModelError(ModelIntegrityError):
    """A unique constraint refused the write: the row already exists (409)."""

    status_code = 409
    include_stack_trace = False
    default_message = "The model already exists."


class MissingDependencyError(ModelIntegrityError):
    """A foreign key refused an insert or update: the referenced row does not exist (404)."""

    status_code = 404
    include_stack_trace = False
    default_message = "The model refers to a row that does not exist."


class ReferencedModelError(ModelIntegrityError):
    """A foreign key refused a delete: other rows still reference this one (403)."""

    status_code = 403
    include_stack_trace = False
    default_message = "The model is still referenced by other rows."


class InvalidInputError(PersistenceError):
    """A value the database (or driver) cannot accept: bad syntax, too long, out of range (400)."""

    status_code = 400
    include_stack_trace = False
    default_message = "A value is not valid input."


class QueryTimeoutError(PersistenceError):
    """The server cancelled a statement that ran past `statement_timeout` (503)."""

    status_code = 503
    default_message = "The statement timed out."


class TransactionConflictError(PersistenceError):
    """A serialization failure or deadlock rolled the transaction back (409, retryable)."""

    status_code = 409
    include_stack_trace = False
    retryable = True
    default_message = "The transaction conflicted with a concurrent one; run it again."


class DatabaseUnavailableError(PersistenceError):
    """The server could not be reached, or the connection was lost (503, retryable).

    A connection lost in the middle of a transaction loses that transaction's earlier
    statements, so the whole transaction (not the last statement) is what to retry.

    """

    status_code = 503
    retryable = True
    default_message = "The database is unavailable."


class CommitOutcomeUnknownError(PersistenceError):
    """The connection was lost while COMMIT was in flight: it may or may not have committed (503).

    Not retryable by default, and deliberately not a `DatabaseUnavailableError`: running
    the transaction again may write it twice. Find out whether it committed (read back a
    row it wrote, by a client-generated id), or re-run only a block that is idempotent
    (see `transactional(retries=..., idempotent=True)`).

    """

    status_code = 503
    default_message = "The connection was lost during COMMIT: the transaction may or may not have committed."


class AuthenticationFailedError(DatabaseUnavailableError):
    """The server refused the role's credentials (28P01, 28000) (503, not retryable).

    Retrying cannot help: fix postgres.username / postgres.password, or the server's
    pg_hba.conf. The message names user, host and database, never the password.

    """

    retryable = False
    default_message = "The database server refused the credentials."


class DatabaseMissingError(DatabaseUnavailableError):
    """The server is reachable but has no database of the configured name (3D000) (503, not retryable).

    Retrying cannot create it: create the database (`python -m microcosm_postgres provision
    ...`), or fix `postgres.database_name`. The message names host:port, the database and
    the engine's own configuration keys.

    """

    retryable = False
    default_message = "The database does not exist on the server."


class PermissionDeniedError(PersistenceError):
    """The role lacks a privilege the statement needs (42501) (500).

    A deployment fault, not the caller's: e.g. the read-only role writing, or a role
    without CREATE on the schema. Grant the privilege, or use the right role.

    """

    status_code = 500
    default_message = "The database role lacks a privilege this statement needs."


class TransactionAbortedError(PersistenceError):
    """A statement ran in a transaction that an earlier failure already aborted (25P02) (500).

    PostgreSQL refuses everything after a failed statement until the transaction ends.
    To go on after a statement that may fail, run that statement in a nested
    `transaction()` (a SAVEPOINT): its failure then rolls back only the nested block.

    """

    status_code = 500
    default_message = "The transaction was already aborted by an earlier failed statement."

    #: What failed first in the block, when it was recorded (`context.note_failure`).
    first_failure: str | None = None


class InvalidNameError(PersistenceError, ValueError):
    """A database or role name PostgreSQL cannot store unchanged (too long, empty) (500)."""

    status_code = 500
    default_message = "The name cannot be used as a PostgreSQL identifier."


class UnsafeOperationError(PersistenceError):
    """A destructive operation (drop, truncate, recreate) was refused on a database that is
    not provably a test database (500). The message names the database and the opt-in."""

    status_code = 500
    default_message = "The destructive operation was refused: the database is not a test database."


class MigrationsBehindError(PersistenceError):
    """The database's revision is not the code's head revision (503): run `upgrade head`."""

    status_code = 503
    default_message = "The database is not at the head revision: run `upgrade head`."


class MissingRelationError(PersistenceError):
    """A statement named a table (or other relation) the database does not have (42P01) (500).

    Usually the schema was never built in that database: run the migrations (`migrate
    upgrade head`) or `create_all`; or the statement went to another database than meant
    (a model's `__engine__`, the session's shard).

    """

    status_code = 500
    default_message = "The statement names a table that does not exist in this database."


class InvalidConfigurationError(PersistenceError, ValidationError):
    """A configuration value that cannot be used (500), refused when the graph or the
    component is made: `key` is its full key (`shards.east.postgres.port`), `value` what was
    given (never shown for a password). The message says what is expected."""

    status_code = 500
    default_message = "A configuration value cannot be used."

    def __init__(
        self,
        message: str | None = None,
        cause: BaseException | None = None,
        *,
        key: str | None = None,
        value: object = None,
        sqlstate: str | None = None,
        constraint: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(message, cause, sqlstate=sqlstate, constraint=constraint, table=table)
        self.key = key
        self.value = value


class IsolationError(PersistenceError):
    """A session inside a test's rollback isolation (`testing.isolation`) could not be
    isolated, so it was refused rather than let commit for real (500): its session factory
    does not route through the graph's engines. Mark the test `postgres_commit`."""

    default_message = "This session cannot join the test's rollback isolation."


class SessionNotOpenError(PersistenceError, RuntimeError):
    """Code used the database outside `SessionContext(graph)` (a programming error, 500)."""

    default_message = "No session is open: use the database inside `SessionContext(graph)`."


class ModelConflictError(PersistenceError):
    """Another transaction got there first (409): the row changed since it was read (a stale
    optimistic-locking version; nothing was written), or it is locked and the read asked
    not to wait (`for_update="nowait"`). Read the row again and decide."""

    status_code = 409
    include_stack_trace = False
    default_message = "The row changed or is locked by another transaction: read it again and decide."


class CrossEngineTransactionError(PersistenceError):
    """One transaction tried to write through two engines (500): its commit could not be
    atomic. Nothing was sent to the second engine. Write to each engine in its own
    transaction, or opt in with `routing.allow_cross_engine_writes(session)`."""

    default_message = (
        "This transaction already wrote through another engine; writing through a second one "
        "would commit non-atomically. Use one transaction per engine, or opt in explicitly."
    )


class ShardError(PersistenceError):
    """Base class of the errors about choosing a shard (`SessionContext(graph, shard=...)`,
    `client_shard`). Attributes: `shard`, the shard asked for (None when none was named)."""

    default_message = "The shard could not be used."

    def __init__(
        self,
        message: str | None = None,
        cause: BaseException | None = None,
        *,
        shard: str | None = None,
        sqlstate: str | None = None,
        constraint: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(message, cause, sqlstate=sqlstate, constraint=constraint, table=table)
        self.shard = shard


class UnknownShardError(ShardError):
    """A shard name that is neither `global` nor configured under `shards.<name>.postgres`
    (400): the caller named it, so the caller must name a configured one."""

    status_code = 400
    include_stack_trace = False
    default_message = "No such shard: name `global` or a shard configured under `shards`."


class ShardNotAllowedError(ShardError):
    """A request may not choose this shard (403): its client id is not in
    `client_shard.mapping`, it sent no client id, or it named a shard itself
    (`X-Request-Shard`) other than the one its client maps to."""

    status_code = 403
    include_stack_trace = False
    default_message = "This request may not use that shard: the shard comes from the client's mapping only."


class ShardChangeError(ShardError):
    """A session for another shard was opened while a transaction on this graph's current
    shard is open (500, a programming error): one transaction belongs to one shard. End the
    transaction first, or open the other shard's session outside it."""

    status_code = 500
    default_message = "The shard cannot change inside a transaction: finish the transaction first."


class ShardConfigurationError(ShardError, ValidationError):
    """The `shards` configuration is unusable (500), found when the `shards` or
    `sessionmakers` component is created: two shards (or a shard and `postgres`) resolve to
    the same server and database, so their rows would silently land together; a shard
    named `global`; or a `SHARD` environment variable naming no shard. Messages never show
    a password."""

    status_code = 500
    default_message = "The shards configuration is unusable."


@dataclass(frozen=True)
class Translation:
    """One row of `TRANSLATIONS`: the error class for a fault, and its message template.

    The template is filled with `str.format` from: `subject` ("Company" or "The row"),
    `of` (" for Company" or ""), `where` (the constraint and table, or ""), `column`
    (", column 'x'" or ""), `sqlstate`, `target` (" of user 'u' to database 'd' on
    host:port" when known, else ""), `at` (" at host:port (database 'd')" or ""),
    `server` (": relation \"x\" already exists", the server's primary message, for the
    rows where it names an object; "" when unknown) and
    `key` (the engine's configuration section: `postgres`, `shards.east.postgres`,
    `secret.postgres`), `on` (" at host:port" or "") and `named` (" 'd'", the database,
    or ""). Row values never reach a template.

    """

    error_class: type[PersistenceError]
    template: str


_UNAVAILABLE = (
    "; any open transaction was rolled back. Run the transaction again; if this persists, "
    "check that the server is up and {key}.host/port are right."
)
_INVALID_INPUT = Translation(
    InvalidInputError,
    "The database refused a value{of} as invalid input (SQLSTATE {sqlstate}). "
    "Check the value's type, format and length.",
)
_INTEGRITY = Translation(
    ModelIntegrityError,
    "{subject} breaks a database constraint{where}{column} (SQLSTATE {sqlstate}). Supply the missing or valid value.",
)
_CONFLICT = Translation(
    TransactionConflictError,
    "The transaction conflicted with a concurrent one (SQLSTATE {sqlstate}) and was rolled back. "
    "Run the whole transaction again.",
)
_SERVER_GONE = Translation(
    DatabaseUnavailableError,
    "The database server is shutting down, restarting or full (SQLSTATE {sqlstate})" + _UNAVAILABLE,
)
_CREDENTIALS = Translation(
    AuthenticationFailedError,
    "The server refused the credentials{target} (SQLSTATE {sqlstate}). Check {key}.username "
    "and {key}.password (and the server's pg_hba.conf); retrying will not help.",
)
_DATABASE_MISSING = Translation(
    DatabaseMissingError,
    "The server{on} has no database{named} (SQLSTATE 3D000). Create it "
    "(`python -m microcosm_postgres provision ...`), or fix {key}.database_name; retrying will not help.",
)

#: Fault -> error class and message. Keys are SQLSTATEs (PostgreSQL's "Appendix A. Error
#: Codes"), SQLSTATE classes (two characters), and named faults that carry no SQLSTATE.
TRANSLATIONS: Mapping[str, Translation] = MappingProxyType(
    {
        "23505": Translation(
            DuplicateModelError,
            "{subject} already exists: a unique constraint refused it{where}. "
            "Use a different value, or update the existing row.",
        ),
        "23503": Translation(
            MissingDependencyError,
            "{subject} refers to a row that does not exist{where}. "
            "Create the referenced row first, or correct the reference.",
        ),
        "23503 on delete": Translation(
            ReferencedModelError,
            "{subject} is still referenced by other rows{where}. Delete or re-point the referencing rows first.",
        ),
        "23000": _INTEGRITY,  # integrity_constraint_violation
        "23001": _INTEGRITY,  # restrict_violation
        "23502": _INTEGRITY,  # not_null_violation
        "23514": _INTEGRITY,  # check_violation
        "23P01": _INTEGRITY,  # exclusion_violation
        "22P02": _INVALID_INPUT,  # invalid_text_representation
        "22001": _INVALID_INPUT,  # string_data_right_truncation
        "22003": _INVALID_INPUT,  # numeric_value_out_of_range
        "22007": _INVALID_INPUT,  # invalid_datetime_format
        "22008": _INVALID_INPUT,  # datetime_field_overflow
        "22021": _INVALID_INPUT,  # character_not_in_repertoire
        "22023": _INVALID_INPUT,  # invalid_parameter_value
        "22P05": _INVALID_INPUT,  # untranslatable_character
        "55P03": Translation(
            QueryTimeoutError,
            "A lock could not be taken before lock_timeout (SQLSTATE 55P03): another transaction "
            "holds it. Finish or roll back that transaction, then try again.",
        ),
        "55P03 nowait": Translation(
            ModelConflictError,
            "{subject} is locked by another transaction, and this read asked not to wait "
            "(FOR UPDATE NOWAIT, SQLSTATE 55P03). Try again later, or use for_update=True to wait "
            "or 'skip_locked' to pass it by.",
        ),
        "42P07": Translation(
            InvalidNameError,
            "A table or other relation of that name already exists{where}{server} (SQLSTATE 42P07). "
            "Choose another name, or drop the existing one first.",
        ),
        "42P01": Translation(
            MissingRelationError,
            "The statement names a table or other relation that does not exist in this database{server} "
            "(SQLSTATE 42P01). Build the schema there (`migrate upgrade head`, or `create_all` in tests), "
            "or check that the model's engine (`__engine__`) or the session's shard is the one meant.",
        ),
        "57014": Translation(
            QueryTimeoutError,
            "The server cancelled the statement (SQLSTATE 57014), usually because it ran past "
            "postgres.statement_timeout. Make the query cheaper or raise the timeout.",
        ),
        "40001": _CONFLICT,  # serialization_failure
        "40P01": _CONFLICT,  # deadlock_detected
        "42501": Translation(
            PermissionDeniedError,
            "The database role lacks a privilege this statement needs{where}{server} (SQLSTATE 42501). "
            "Grant it, or connect with the role meant for writes (not the read-only one).",
        ),
        "25P02": Translation(
            TransactionAbortedError,
            "This transaction was already aborted by an earlier failed statement (SQLSTATE 25P02): "
            "PostgreSQL ignores everything until it ends. To go on after a statement that may fail, "
            "run that statement in a nested `transaction()` block.",
        ),
        "28P01": _CREDENTIALS,  # invalid_password
        "28000": _CREDENTIALS,  # invalid_authorization_specification
        "login refused": Translation(
            AuthenticationFailedError,
            "The server refused the login{target} (wrong password, unknown role, role without LOGIN, "
            "or no pg_hba.conf entry). Check {key}.username and "
            "{key}.password (and the server's pg_hba.conf); retrying will not help.",
        ),
        "3D000": _DATABASE_MISSING,  # invalid_catalog_name
        "database missing": _DATABASE_MISSING,
        "08": Translation(  # the whole connection_exception class
            DatabaseUnavailableError,
            "The connection to the database{at} failed (SQLSTATE {sqlstate})" + _UNAVAILABLE,
        ),
        "57P01": _SERVER_GONE,  # admin_shutdown
        "57P02": _SERVER_GONE,  # crash_shutdown
        "57P03": _SERVER_GONE,  # cannot_connect_now
        "53300": _SERVER_GONE,  # too_many_connections
        "connection lost": Translation(
            DatabaseUnavailableError,
            "The connection to the database was lost" + _UNAVAILABLE,
        ),
        "commit outcome unknown": Translation(
            CommitOutcomeUnknownError,
            "The connection to the database was lost while COMMIT was in flight: "
            "the transaction may or may not have committed. Do not simply run it again: read back "
            "what it wrote (by a client-generated id) to find out, or retry it only if it is idempotent.",
        ),
        "connection failed": Translation(
            DatabaseUnavailableError,
            "The database{at} is unreachable (the driver reported no SQLSTATE)" + _UNAVAILABLE,
        ),
        "checkout rejected": Translation(
            DatabaseUnavailableError,
            "A connection the server had just opened was already closed when it was checked out of "
            "the pool" + _UNAVAILABLE,
        ),
        "pool timeout": Translation(
            DatabaseUnavailableError,
            "No database connection became free within postgres.pool_timeout. "
            "Raise postgres.pool_size / max_overflow, or release sessions sooner.",
        ),
        "driver refused value": Translation(
            InvalidInputError,
            "The database driver refused a value{of} (for example a NUL byte in a string). Check the value.",
        ),
    }
)

_UNKNOWN = "?"

# connection_failure: the SQLSTATE a lost connection carries on both drivers. psycopg 3
# reports the server's last word (57P01 after pg_terminate_backend), psycopg2 none at all;
# the server's code, when there was one, stays on the chained exception.
CONNECTION_FAILURE = "08006"
_LOST = frozenset({"connection lost", "commit outcome unknown"})


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error (or of the driver error a SQLAlchemy error wraps)."""
    orig = getattr(error, "orig", error)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _diag(error: BaseException, name: str) -> str | None:
    diag = getattr(getattr(error, "orig", error), "diag", None)
    return getattr(diag, name, None) if diag is not None else None


def _is_delete(error: BaseException) -> bool:
    # The statement is the SQL we sent (SQLAlchemy's rendering), not the server's message.
    statement = getattr(error, "statement", None) or ""
    return statement.lstrip().upper().startswith("DELETE")


def _is_nowait(error: BaseException) -> bool:
    # The statement we sent asked not to wait for row locks (`SELECT ... FOR UPDATE NOWAIT`).
    statement = getattr(error, "statement", None) or ""
    return re.search(r"\bNOWAIT\b", statement, flags=re.IGNORECASE) is not None


def _class_names(orig: BaseException) -> set[str]:
    """Names of the DBAPI exception classes of `orig`, alike for psycopg2 and psycopg 3."""
    return {cls.__name__ for cls in type(orig).__mro__}


# What the server (auth.c, postinit.c) and libpq say when they refuse a login, in English.
_LOGIN_REFUSED = re.compile(
    r'authentication failed for user "'
    r"|no pg_hba\.conf entry for "
    r"|pg_hba\.conf rejects connection"
    r"|is not permitted to log in"
    r'|role ".*" does not exist'
    r"|no password supplied"
)


# What the server (postinit.c) says when the database asked for is not there.
_DATABASE_MISSING_TEXT = re.compile(r'database ".*" does not exist')


def _missing_database(orig: BaseException) -> bool:
    """Whether a connect failure is the server saying the database does not exist (3D000).

    Like `_refused_login`, text is the only signal at connect time on psycopg2 (and the
    English phrase the only one read); a SQLSTATE, when the driver gives one, wins.

    """
    sqlstate = sqlstate_of(orig)
    if sqlstate is not None:
        return sqlstate == "3D000"
    return _DATABASE_MISSING_TEXT.search(str(orig)) is not None


def _refused_login(orig: BaseException) -> bool:
    """Whether a connect failure is the server (or libpq) refusing the login.

    The one place that reads message text, because there is no other signal: neither
    psycopg2 (2.9) nor psycopg 3 (3.3) exposes the SQLSTATE (28P01 / 28000) of an error
    received while connecting; libpq keeps only the text. A SQLSTATE, when a driver does
    give one, wins; psycopg 3's `needs_password` flag is used next. The phrases are
    PostgreSQL's English ones: with a server whose `lc_messages` is another language,
    a refused login is classified as "connection failed" (retried, and still a
    `DatabaseUnavailableError`), never as something else.

    """
    sqlstate = sqlstate_of(orig)
    if sqlstate is not None:
        return sqlstate.startswith("28")
    if getattr(getattr(orig, "pgconn", None), "needs_password", False):
        return True
    return _LOGIN_REFUSED.search(str(orig)) is not None


def fault_of(error: BaseException) -> str | None:
    """The key of `TRANSLATIONS` that describes `error`, or None when it is not a database fault.

    Accepts SQLAlchemy's wrappers (`DBAPIError`, `StatementError`, pool `TimeoutError`)
    and raw psycopg2 / psycopg 3 errors.

    """
    if isinstance(error, sa_exc.TimeoutError):
        return "pool timeout"
    orig = error.orig if isinstance(error, sa_exc.StatementError) else error
    if orig is None:
        return None
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        # Whatever the server said last (57P01 from pg_terminate_backend reaches psycopg 3,
        # not psycopg2), the connection is gone: the same fault on both drivers.
        return "connection lost"
    sqlstate = sqlstate_of(orig)
    if sqlstate == "23503" and _is_delete(error):
        return "23503 on delete"
    if sqlstate == "55P03" and _is_nowait(error):
        return "55P03 nowait"
    if sqlstate is not None:
        for key in (sqlstate, sqlstate[:2]):
            if key in TRANSLATIONS:
                return key
    names = _class_names(orig)
    if sqlstate is None and names & {"OperationalError", "InterfaceError"}:
        if _missing_database(orig):
            return "database missing"
        return "login refused" if _refused_login(orig) else "connection failed"
    if (sqlstate is None and "DataError" in names) or (
        isinstance(error, sa_exc.StatementError) and isinstance(orig, (ValueError, TypeError))
    ):
        # Refused by the driver or a column type before the server saw it (a NUL byte, ...).
        return "driver refused value"
    return None


def make_error(fault: str, **fields: object) -> PersistenceError:
    """The typed error for `fault` (a key of `TRANSLATIONS`), its message filled from `fields`.

    `sqlstate`, `constraint` and `table` among `fields` also become the error's attributes;
    `user`, `database`, `host` and `port` make up `target`; `key` (default `postgres`) is the
    configuration section the message points at. A SQLSTATE a template uses but
    `fields` lacks reads "?".

    Raises:
        KeyError: when `fault` is not a key of `TRANSLATIONS`.

    """
    row = TRANSLATIONS[fault]
    values: dict[str, object] = {
        "subject": "The row",
        "of": "",
        "where": "",
        "column": "",
        "server": "",
        "sqlstate": _UNKNOWN,
        "key": "postgres",
    }
    values.update({key: value for key, value in fields.items() if value is not None})
    values["target"] = _target(fields)
    values["at"] = _at(fields)
    values["on"] = _on(fields)
    values["named"] = f" {str(fields['database'])!r}" if fields.get("database") else ""
    attribute = {key: fields.get(key) for key in ("sqlstate", "constraint", "table")}
    error = row.error_class(
        row.template.format_map(values),
        sqlstate=_str_or_none(attribute["sqlstate"]),
        constraint=_str_or_none(attribute["constraint"]),
        table=_str_or_none(attribute["table"]),
    )
    error.fault = fault
    return error


def _target(fields: Mapping[str, object]) -> str:
    """The login target (`of user 'u' to database 'd' on host:port`), from what `fields` knows."""
    user, database, host, port = (fields.get(key) for key in ("user", "database", "host", "port"))
    target = f" of user {str(user)!r}" if user else ""
    target += f" to database {str(database)!r}" if database else ""
    if host:
        target += f" on {host}:{port}" if port else f" on {host}"
    return target


def _on(fields: Mapping[str, object]) -> str:
    """The server (` at host:port`), from what `fields` knows."""
    host, port = fields.get("host"), fields.get("port")
    if not host:
        return ""
    return f" at {host}:{port}" if port else f" at {host}"


def _at(fields: Mapping[str, object]) -> str:
    """Where a connection went (` at host:port (database 'd')`), from what `fields` knows."""
    host, port, database = (fields.get(key) for key in ("host", "port", "database"))
    if not host:
        return ""
    at = f" at {host}:{port}" if port else f" at {host}"
    return at + (f" (database {str(database)!r})" if database else "")


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _connection_target(orig: BaseException) -> dict[str, object]:
    """User, host, port and database of a failed psycopg 3 connection (psycopg2 gives none)."""
    pgconn = getattr(orig, "pgconn", None)
    target: dict[str, object] = {}
    for key, attribute in (("user", "user"), ("host", "host"), ("port", "port"), ("database", "db")):
        value = getattr(pgconn, attribute, None)
        if isinstance(value, bytes) and value:
            target[key] = value.decode("utf-8", "replace")
    return target


def translate(error: BaseException, *, model_name: str | None = None) -> PersistenceError | None:
    """Map a database exception to the typed error for the same fault, or None if it is not one.

    Accepts SQLAlchemy's wrappers (`DBAPIError`, `StatementError`, pool `TimeoutError`)
    and raw psycopg2 / psycopg 3 errors; both drivers give the same class for the same
    fault (see `TRANSLATIONS`). The caller raises the result `from error` (see
    `translating()`).

    Args:
        error: the exception to classify.
        model_name: names the subject in the message ("Company already exists ...").

    """
    if isinstance(error, PersistenceError):
        return error
    fault = fault_of(error)
    if fault is None:
        return None
    orig = error.orig if isinstance(error, sa_exc.StatementError) else error
    constraint = _diag(orig, "constraint_name") if orig is not None else None
    table = _diag(orig, "table_name") if orig is not None else None
    column = _diag(orig, "column_name") if orig is not None else None
    primary = _diag(orig, "message_primary") if orig is not None else None
    if constraint is not None:
        where = f" (constraint {constraint!r} on table {table!r})"
    else:
        where = f" (table {table!r})" if table else ""
    return make_error(
        fault,
        subject=model_name or "The row",
        of=f" for {model_name}" if model_name else "",
        where=where,
        column=f", column {column!r}" if column else "",
        # The server's own words name the object (`relation "x" already exists`): only the
        # rows whose template has {server} show them, never the detail (which holds values).
        server=f": {primary}" if primary else "",
        sqlstate=CONNECTION_FAILURE if fault in _LOST else sqlstate_of(orig) if orig is not None else None,
        constraint=constraint,
        table=table,
        **(_connection_target(orig) if orig is not None else {}),
    )


def connect_error(
    error: BaseException,
    *,
    user: str | None,
    host: str | None,
    port: int | None,
    database: str | None,
    key: str = "postgres",
) -> PersistenceError | None:
    """`translate()` for a failure to open a connection, naming where it tried to connect.

    The engine calls this with the parameters it connected with (never the password) and
    its configuration section `key` (`postgres`, `shards.east.postgres`, ...), so a refused
    login or an unreachable server names user, host, port, database and the keys to check,
    on both drivers.

    """
    fault = fault_of(error)
    if fault is None:
        return None
    if fault in ("28P01", "28000", "login refused", "connection failed", "3D000", "database missing") or (
        fault.startswith("08")
    ):
        return make_error(
            fault, user=user, host=host, port=port, database=database, key=key, sqlstate=sqlstate_of(error)
        )
    return translate(error)


@contextmanager
def translating(*, model_name: str | None = None) -> Iterator[None]:
    """Run a block, raising `translate()`'s typed error (chained with `from`) for database faults.

    Exceptions that are not database faults pass through unchanged.

    """
    try:
        yield
    except PersistenceError:
        raise
    except Exception as error:
        typed = translate(error, model_name=model_name)
        if typed is None:
            raise
        raise typed from error

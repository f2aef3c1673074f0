"""The error hierarchy, and the one place that turns a database exception into it.

Every error this library raises for a database fault derives from `PersistenceError`
and carries an HTTP-ish `status_code` (microcosm-flask turns it into the response),
`include_stack_trace` (False for faults that are the caller's, not the server's) and
`retryable` (True when running the whole transaction again may succeed).

`translate()` classifies by SQLSTATE (`pgcode` on psycopg2, `sqlstate` on psycopg 3)
and, for faults the driver raises before the server answers, by DBAPI exception class.
It never searches message text, and its messages never repeat the server's detail
(a `Key (email)=(...)` detail can hold personal data): that stays on the chained
exception (`error.__cause__`).

"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc as sa_exc

__all__ = [
    "AuthenticationFailedError",
    "DatabaseUnavailableError",
    "DuplicateModelError",
    "InvalidInputError",
    "InvalidNameError",
    "MigrationsBehindError",
    "MissingDependencyError",
    "ModelConflictError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "PersistenceError",
    "QueryTimeoutError",
    "ReferencedModelError",
    "SessionNotOpenError",
    "TransactionAbortedError",
    "TransactionConflictError",
    "UnsafeOperationError",
    "sqlstate_of",
    "translate",
    "translating",
]


class PersistenceError(Exception):
    """Base class of every typed error microcosm-postgres raises.

    Attributes:
        status_code: the HTTP status a service should answer with.
        include_stack_trace: False when the fault is the caller's (a 4xx), so error
            handlers need not log a stack trace.
        retryable: True when running the whole transaction again may succeed.
        sqlstate: the five-character SQLSTATE the server reported, when there was one.
        constraint: the name of the violated constraint, when the server gave one.
        table: the table the server named, when it gave one.

    """

    status_code: int = 500
    include_stack_trace: bool = True
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.table = table


class ModelNotFoundError(PersistenceError):
    """No row matched the identifier or criteria (404)."""

    status_code = 404
    include_stack_trace = False


class ModelIntegrityError(PersistenceError):
    """The database refused a write that breaks a constraint (not null, check, ...) (500)."""

    status_code = 500


class DuplicateModelError(ModelIntegrityError):
    """A unique constraint refused the write: the row already exists (409)."""

    status_code = 409
    include_stack_trace = False


class MissingDependencyError(ModelIntegrityError):
    """A foreign key refused an insert or update: the referenced row does not exist (404)."""

    status_code = 404
    include_stack_trace = False


class ReferencedModelError(ModelIntegrityError):
    """A foreign key refused a delete: other rows still reference this one (403)."""

    status_code = 403
    include_stack_trace = False


class InvalidInputError(PersistenceError):
    """A value the database (or driver) cannot accept: bad syntax, too long, out of range (400)."""

    status_code = 400
    include_stack_trace = False


class QueryTimeoutError(PersistenceError):
    """The server cancelled a statement that ran past `statement_timeout` (503)."""

    status_code = 503


class TransactionConflictError(PersistenceError):
    """A serialization failure or deadlock rolled the transaction back (409, retryable)."""

    status_code = 409
    include_stack_trace = False
    retryable = True


class DatabaseUnavailableError(PersistenceError):
    """The server could not be reached, or the connection was lost (503, retryable).

    A connection lost in the middle of a transaction loses that transaction's earlier
    statements, so the whole transaction (not the last statement) is what to retry.

    """

    status_code = 503
    retryable = True


class AuthenticationFailedError(DatabaseUnavailableError):
    """The server refused the role's credentials (28P01, 28000) (503, not retryable).

    Retrying cannot help: fix postgres.username / postgres.password, or the server's
    pg_hba.conf. The message names user, host and database, never the password.

    """

    retryable = False


class PermissionDeniedError(PersistenceError):
    """The role lacks a privilege the statement needs (42501) (500).

    A deployment fault, not the caller's: e.g. the read-only role writing, or a role
    without CREATE on the schema. Grant the privilege, or use the right role.

    """

    status_code = 500


class TransactionAbortedError(PersistenceError):
    """A statement ran in a transaction that an earlier failure already aborted (25P02) (500).

    PostgreSQL refuses everything after a failed statement until the transaction ends.
    To go on after a statement that may fail, run that statement in a nested
    `transaction()` (a SAVEPOINT): its failure then rolls back only the nested block.

    """

    status_code = 500


class InvalidNameError(PersistenceError, ValueError):
    """A database or role name PostgreSQL cannot store unchanged (too long, empty) (500)."""

    status_code = 500


class UnsafeOperationError(PersistenceError):
    """A destructive operation (drop, truncate, recreate) was refused on a database that is
    not provably a test database (500). The message names the database and the opt-in."""

    status_code = 500


class MigrationsBehindError(PersistenceError):
    """The database's revision is not the code's head revision (503): run `upgrade head`."""

    status_code = 503


class SessionNotOpenError(PersistenceError, RuntimeError):
    """Code used the database outside `SessionContext(graph)` (a programming error, 500)."""


class ModelConflictError(PersistenceError):
    """Another transaction got there first (409): the row changed since it was read (a stale
    optimistic-locking version; nothing was written), or it is locked and the read asked
    not to wait (`for_update="nowait"`). Read the row again and decide."""

    status_code = 409
    include_stack_trace = False


# SQLSTATE classes and codes, from PostgreSQL's "Appendix A. Error Codes".
_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"
_INTEGRITY_CODES = {"23502", "23514", "23P01", "23000", "23001"}
_INVALID_INPUT_CODES = {
    "22P02",  # invalid_text_representation
    "22001",  # string_data_right_truncation
    "22003",  # numeric_value_out_of_range
    "22007",  # invalid_datetime_format
    "22008",  # datetime_field_overflow
    "22021",  # character_not_in_repertoire
    "22023",  # invalid_parameter_value
    "22P05",  # untranslatable_character
}
_QUERY_CANCELED = "57014"
_LOCK_NOT_AVAILABLE = "55P03"
_CONFLICT_CODES = {"40001", "40P01"}
_INSUFFICIENT_PRIVILEGE = "42501"
_IN_FAILED_TRANSACTION = "25P02"
_AUTHENTICATION_CODES = {"28P01", "28000"}
_UNAVAILABLE_CODES = {
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
}


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


def _driver_errors(orig: BaseException) -> tuple[bool, bool]:
    """(is a DBAPI OperationalError/InterfaceError, is a DBAPI DataError), for either driver."""
    names = {cls.__name__ for cls in type(orig).__mro__}
    return bool(names & {"OperationalError", "InterfaceError"}), "DataError" in names


def translate(error: BaseException, *, model_name: str | None = None) -> PersistenceError | None:
    """Map a database exception to the typed error for the same fault, or None if it is not one.

    Accepts SQLAlchemy's wrappers (`DBAPIError`, `StatementError`, pool `TimeoutError`)
    and raw psycopg2 / psycopg 3 errors; both drivers give the same class for the same
    fault. The caller raises the result `from error` (see `translating()`).

    Args:
        error: the exception to classify.
        model_name: names the subject in the message ("Company already exists ...").

    """
    if isinstance(error, PersistenceError):
        return error
    subject = model_name or "The row"
    of = f" for {model_name}" if model_name else ""
    if isinstance(error, sa_exc.TimeoutError):
        return DatabaseUnavailableError(
            "No database connection became free within postgres.pool_timeout. "
            "Raise postgres.pool_size / max_overflow, or release sessions sooner."
        )
    orig = getattr(error, "orig", None) if isinstance(error, sa_exc.StatementError) else error
    if orig is None:
        return None
    sqlstate = sqlstate_of(orig)
    details: dict[str, Any] = dict(
        sqlstate=sqlstate,
        constraint=_diag(orig, "constraint_name"),
        table=_diag(orig, "table_name"),
    )
    where = f" (constraint {details['constraint']!r} on table {details['table']!r})"
    if details["constraint"] is None:
        where = f" (table {details['table']!r})" if details["table"] else ""

    if sqlstate == _UNIQUE_VIOLATION:
        return DuplicateModelError(
            f"{subject} already exists: a unique constraint refused it{where}. "
            "Use a different value, or update the existing row.",
            **details,
        )
    if sqlstate == _FOREIGN_KEY_VIOLATION:
        if _is_delete(error):
            return ReferencedModelError(
                f"{subject} is still referenced by other rows{where}. Delete or re-point the referencing rows first.",
                **details,
            )
        return MissingDependencyError(
            f"{subject} refers to a row that does not exist{where}. "
            "Create the referenced row first, or correct the reference.",
            **details,
        )
    if sqlstate in _INTEGRITY_CODES:
        column = _diag(orig, "column_name")
        column_text = f", column {column!r}" if column else ""
        return ModelIntegrityError(
            f"{subject} breaks a database constraint{where}{column_text} (SQLSTATE {sqlstate}). "
            "Supply the missing or valid value.",
            **details,
        )
    if sqlstate in _INVALID_INPUT_CODES:
        return InvalidInputError(
            f"The database refused a value{of} as invalid input (SQLSTATE {sqlstate}). "
            "Check the value's type, format and length.",
            **details,
        )
    if sqlstate == _LOCK_NOT_AVAILABLE:
        return QueryTimeoutError(
            "A lock could not be taken before lock_timeout (SQLSTATE 55P03): another transaction "
            "holds it. Finish or roll back that transaction, then try again.",
            **details,
        )
    if sqlstate == _QUERY_CANCELED:
        return QueryTimeoutError(
            "The server cancelled the statement (SQLSTATE 57014), usually because it ran past "
            "postgres.statement_timeout. Make the query cheaper or raise the timeout.",
            **details,
        )
    if sqlstate in _CONFLICT_CODES:
        return TransactionConflictError(
            f"The transaction conflicted with a concurrent one (SQLSTATE {sqlstate}) and was "
            "rolled back. Run the whole transaction again.",
            **details,
        )
    if sqlstate == _INSUFFICIENT_PRIVILEGE:
        return PermissionDeniedError(
            f"The database role lacks a privilege this statement needs{where} (SQLSTATE 42501). "
            "Grant it, or connect with the role meant for writes (not the read-only one).",
            **details,
        )
    if sqlstate == _IN_FAILED_TRANSACTION:
        return TransactionAbortedError(
            "This transaction was already aborted by an earlier failed statement (SQLSTATE 25P02): "
            "PostgreSQL ignores everything until it ends. To go on after a statement that may fail, "
            "run that statement in a nested `transaction()` block.",
            **details,
        )
    if sqlstate in _AUTHENTICATION_CODES:
        return AuthenticationFailedError(
            f"The server refused the credentials (SQLSTATE {sqlstate}). Check postgres.username and "
            "postgres.password (and the server's pg_hba.conf); retrying will not help.",
            **details,
        )
    lost = isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
    operational, data_error = _driver_errors(orig)
    if (
        lost
        or (sqlstate or "").startswith("08")
        or sqlstate in _UNAVAILABLE_CODES
        or (operational and sqlstate is None)
    ):
        return DatabaseUnavailableError(
            "The database is unreachable or the connection was lost"
            + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
            + "; any open transaction was rolled back. Run the transaction again; if this "
            "persists, check that the server is up and postgres.host/port are right.",
            **details,
        )
    refused_in_statement = isinstance(error, sa_exc.StatementError) and isinstance(orig, (ValueError, TypeError))
    if (data_error and sqlstate is None) or refused_in_statement:
        # Refused by the driver or a column type before the server saw it (a NUL byte, ...).
        return InvalidInputError(
            f"The database driver refused a value{of} (for example a NUL byte in a string). Check the value.",
            **details,
        )
    return None


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

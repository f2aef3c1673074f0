"""How the command-line entry points (provision, createall, migrate) report a failure.

One line on standard error, never a traceback: a typed error (`PersistenceError`) is
shown as `<prefix>: <ClassName>: <message>`, anything else as `<prefix>: <message>`,
with the message folded onto one line. The caller then exits with status 1.

"""

from __future__ import annotations

import sys

from sqlalchemy.engine import URL

from microcosm_postgres.errors import DatabaseUnavailableError, PersistenceError

__all__: list[str] = []


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(orig).__name__


def failure_line(error: BaseException, *, prefix: str, url: URL | None = None) -> str:
    """The one line describing `error` (its class named when it is a typed error).

    For an unreachable database, `url` names where the command tried (never the
    password), followed by the first line of what the driver said ("database ... does
    not exist", "connection refused"), which no SQLSTATE carries.
    """
    message = " ".join(str(error).split())
    if isinstance(error, PersistenceError):
        message = f"{type(error).__name__}: {message}"
    if isinstance(error, DatabaseUnavailableError) and url is not None:
        said = f": {_first_line(error.__cause__)}" if error.__cause__ is not None else ""
        message = f"{message} (PostgreSQL at {url.host}:{url.port}, database {url.database!r}{said})"
    return f"{prefix}: {message}"


def report_failure(error: BaseException, *, prefix: str = "error", url: URL | None = None) -> int:
    """Print `failure_line(error)` on standard error; return 1, the exit status of a failed command."""
    print(failure_line(error, prefix=prefix, url=url), file=sys.stderr)
    return 1

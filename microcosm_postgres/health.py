"""Health checks, shaped for microcosm-flask style named checks (`check(graph)`).

Each check returns a short message on success and raises a typed error on failure,
so a health endpoint can register them as they are:

    graph.health_convention.checks["postgres"] = check_health
    graph.health_convention.checks["migrations"] = check_migrations

"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from microcosm_postgres.context import SessionContext
from microcosm_postgres.errors import (
    MigrationsBehindError,
    PersistenceError,
    SessionNotOpenError,
    translating,
)
from microcosm_postgres.graph import Graph, GraphLike, as_graph
from microcosm_postgres.migrate import current_revision, head_revision

__all__ = [
    "MigrationStatus",
    "check_alembic",
    "check_health",
    "check_migrations",
    "get_current_head_version",
    "migration_status",
]


def _where(graph: Graph) -> str:
    url = graph.postgres.url
    return f"PostgreSQL at {url.host}:{url.port}, database {url.database!r}"


def check_health(graph: GraphLike) -> str:
    """`SELECT 1` in the graph's current session (or a short-lived one when none is open).

    Raises:
        PersistenceError: the typed error of the failure, of the same class as
            `errors.translate` gives (so `AuthenticationFailedError` for a refused login,
            which is not `retryable`; `DatabaseUnavailableError` when the server cannot be
            reached), its message naming host and database (never the password).

    """
    graph = as_graph(graph)
    try:
        session, owned = SessionContext.session_for(graph), None
    except SessionNotOpenError:
        session = owned = graph.sessionmaker()
    try:
        with translating():
            session.execute(text("SELECT 1"))
    except PersistenceError as error:
        # The same class (and so `retryable`: a refused login is not retried), saying where.
        located = type(error)(
            f"{_where(graph)} did not answer: {error}",
            sqlstate=error.sqlstate,
            constraint=error.constraint,
            table=error.table,
        )
        located.fault = error.fault
        raise located from error
    finally:
        if owned is not None:
            owned.close()
    return f"{_where(graph)} is answering"


def check_alembic(graph: GraphLike) -> str | None:
    """The database's current Alembic revision (None when it was never migrated or stamped)."""
    return current_revision(graph)


def get_current_head_version(graph: GraphLike) -> str | None:
    """The code's head revision (None when the service has no migrations)."""
    return head_revision(graph)


@dataclass(frozen=True)
class MigrationStatus:
    """The database's revision against the code's head."""

    current: str | None
    head: str | None

    @property
    def behind(self) -> bool:
        return self.head is not None and self.current != self.head

    def __str__(self) -> str:
        if self.head is None:
            return "no migrations"
        return f"database at {self.current or 'no revision'}, code at {self.head}"


def migration_status(graph: GraphLike) -> MigrationStatus:
    """Where the database stands against the code."""
    head = head_revision(graph)  # first: a broken migrations lookup is reported without connecting
    return MigrationStatus(current=current_revision(graph), head=head)


def check_migrations(graph: GraphLike) -> str:
    """Check that the database is at the code's head revision.

    Raises:
        MigrationsBehindError: when it is not (the message names both revisions).
        DatabaseUnavailableError: when the database cannot be reached.

    """
    status = migration_status(graph)
    if status.behind:
        raise MigrationsBehindError(f"Migrations are pending: {status}. Run `upgrade head`.")
    return str(status)

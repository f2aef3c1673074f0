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
    AuthenticationFailedError,
    MigrationsBehindError,
    PersistenceError,
    SessionNotOpenError,
    translating,
)
from microcosm_postgres.graph import Graph, GraphLike, as_graph
from microcosm_postgres.migrate import current_revision, engine_names, head_revision

__all__ = [
    "MigrationStatus",
    "ReplicaLag",
    "check_alembic",
    "check_engines",
    "check_health",
    "check_migrations",
    "check_replicas",
    "get_current_head_version",
    "located",
    "migration_status",
    "replica_lag",
]


def _where(graph: Graph) -> str:
    url = graph.postgres.url
    return f"PostgreSQL at {url.host}:{url.port}, database {url.database!r}"


def located(error: PersistenceError, where: str) -> PersistenceError:
    """`error` again, its message saying `where` ("PostgreSQL at host:port, database 'd'"):
    the same class (and so `retryable`: a
    refused login is not retried), the same SQLSTATE, constraint, table and fault."""
    # A refused login is an answer: say what happened.
    what = "refused the login" if isinstance(error, AuthenticationFailedError) else "did not answer"
    again = type(error)(
        f"{where} {what}: {error}",
        sqlstate=error.sqlstate,
        constraint=error.constraint,
        table=error.table,
    )
    again.fault = error.fault
    return again


def check_health(graph: GraphLike) -> str:
    """`SELECT 1` in the graph's current session (or a short-lived one when none is open).

    Raises:
        PersistenceError: the typed error of the failure, of the same class as
            `errors.translate` gives (so `AuthenticationFailedError` for a refused login,
            which is not `retryable`; `DatabaseUnavailableError` when the server cannot be
            reached), its message naming host and database (never the password).

    """
    from microcosm_postgres.constants import GLOBAL_SHARD_NAME
    from microcosm_postgres.factories.sessionmaker import SHARD
    from microcosm_postgres.sharded_subgraph import shard_of

    graph = as_graph(graph)
    try:
        session, owned = SessionContext.session_for(graph), None
        if session.info.get(SHARD, GLOBAL_SHARD_NAME) != shard_of(graph):
            session = owned = graph.sessionmaker()  # the open session is on another shard
    except SessionNotOpenError:
        session = owned = graph.sessionmaker()
    try:
        with translating():
            session.execute(text("SELECT 1"))
    except PersistenceError as error:
        raise located(error, _where(graph)) from error
    finally:
        if owned is not None:
            owned.close()
    return f"{_where(graph)} is answering"


def check_alembic(graph: GraphLike, *, engine: str | None = None) -> str | None:
    """The database's current Alembic revision (None when it was never migrated or stamped);
    `engine` names a routed engine (`__engine__`), whose own database and history are read."""
    return current_revision(graph, engine=engine)


def get_current_head_version(graph: GraphLike, *, engine: str | None = None) -> str | None:
    """The code's head revision (None when the service has no migrations); `engine`: a routed engine's."""
    return head_revision(graph, engine=engine)


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


def migration_status(graph: GraphLike, *, engine: str | None = None) -> MigrationStatus:
    """Where the database (of the routed `engine`, when named) stands against the code."""
    head = head_revision(graph, engine=engine)  # first: a broken migrations lookup is reported without connecting
    return MigrationStatus(current=current_revision(graph, engine=engine), head=head)


def check_migrations(graph: GraphLike) -> str:
    """Check that the database, and every routed engine's, is at its history's head revision.

    Raises:
        MigrationsBehindError: when one is not (the message names the engine and both revisions).
        MissingEngineMigrationsError: when a routed engine has models but no history.
        DatabaseUnavailableError: when a database cannot be reached.

    """
    names = engine_names(graph)
    reports = []
    for name in names:
        status = migration_status(graph, engine=name)
        where = f"engine {name!r}: " if len(names) > 1 else ""
        if status.behind:
            raise MigrationsBehindError(f"Migrations are pending: {where}{status}. Run `upgrade head`.")
        reports.append(f"{where}{status}")
    return "; ".join(reports)


@dataclass(frozen=True)
class ReplicaLag:
    """How far one read replica is behind its primary.

    Attributes:
        replica: its `host:port`.
        seconds: since the last replayed transaction's commit on the primary; 0 when it
            has replayed all it received (None before it replayed any).
        bytes: WAL received but not replayed yet.

    """

    replica: str
    seconds: float | None
    bytes: int

    def __str__(self) -> str:
        seconds = "unknown" if self.seconds is None else f"{self.seconds:.3f} s"
        return f"replica {self.replica} lags {seconds} ({self.bytes} bytes to replay)"


_LAG = text(
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END, "
    "coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)"
)


def replica_lag(graph: GraphLike) -> list[ReplicaLag]:
    """The lag of each read replica of the graph's engines (`postgres.replicas`), in order.

    Raises:
        DatabaseUnavailableError: naming the replica that did not answer.

    """
    from microcosm_postgres.factories.routing import router_for

    lags = []
    replica_sets = getattr(router_for(as_graph(graph)), "replicas", {})
    for replicas in replica_sets.values():
        for engine in replicas.engines:
            where = f"{engine.url.host}:{engine.url.port}"
            try:
                with translating(), engine.connect() as connection:
                    seconds, behind = connection.execute(_LAG).one()
            except PersistenceError as error:
                raise located(error, f"Read replica {where}") from error
            lags.append(ReplicaLag(where, None if seconds is None else float(seconds), int(behind)))
    return lags


def check_replicas(graph: GraphLike) -> str:
    """Report each read replica's lag ("no read replicas" when none is configured).

    Raises:
        DatabaseUnavailableError: naming the replica that did not answer.

    """
    lags = replica_lag(graph)
    return "; ".join(str(lag) for lag in lags) if lags else "no read replicas"


def check_engines(graph: GraphLike) -> str:
    """`SELECT 1` on every engine the graph's models route to (`postgres`, and each
    `__engine__` of `model_engine_routing_strategy`), each on a short-lived connection.

    Raises:
        DatabaseUnavailableError: naming the engine, host and database that did not answer.

    """
    from microcosm_postgres.factories.routing import router_for

    graph = as_graph(graph)
    engines = {"postgres": graph.postgres, **getattr(router_for(graph), "engines", {})}
    answered = []
    for name, engine in engines.items():
        where = f"engine {name!r} (PostgreSQL at {engine.url.host}:{engine.url.port}, database {engine.url.database!r})"
        try:
            with translating(), engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except PersistenceError as error:
            raise located(error, where) from error
        answered.append(where)
    return "; ".join(f"{where} is answering" for where in answered)

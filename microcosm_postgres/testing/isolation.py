"""Per-test isolation: each test in outer transactions that are rolled back.

    with isolated(graph):
        ...  # code under test: SessionContext.session, transaction(), stores

The session routes as the graph's own sessions do, but every engine it reaches (the
`postgres` engine, each routed engine of `__engine__` models, a shard's engine) is
replaced by one connection per engine holding an outer transaction, opened on first use,
with `join_transaction_mode="create_savepoint"`: the code's own `transaction()` blocks
commit to SAVEPOINTs, so commit and rollback behave as usual inside the test, and nothing
survives it. A `SessionContext(graph, shard="east")` opened inside it (same thread or
task) joins it: the shard's engine gets its connection and outer transaction too. Cost:
a BEGIN and a ROLLBACK per engine used, whatever the number of tables or rows.

Code that opens other connections (threads, or a second `SessionContext(graph)` on the
same shard, which is a session of its own) cannot see these rows and really commits:
such tests use `committed(graph)` instead, which empties the tables of every engine the
test wrote through (each on its own engine) when it ends. Sequences are not
transactional: values a test took from a SERIAL column stay taken after the rollback,
so an isolated test should not expect such numbers to start at 1.

"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RootTransaction
from sqlalchemy.orm import Session

from microcosm_postgres._sessions import ISOLATION
from microcosm_postgres.context import SessionContext
from microcosm_postgres.errors import IsolationError
from microcosm_postgres.factories.routing import router_for
from microcosm_postgres.factories.sessionmaker import RoutingSession
from microcosm_postgres.graph import Graph, GraphLike, HasMetadata, as_graph
from microcosm_postgres.models import Model
from microcosm_postgres.operations import engine_tables, reset_all

__all__ = [
    "Isolation",
    "committed",
    "isolated",
]


class Isolation:
    """The connections of one isolated test: per engine, one connection holding an outer
    transaction (opened on first use), rolled back by `close()`.

    Attributes:
        shard: the shard of the session `isolated()` opened; sessions opened on other
            shards inside it join it (`SessionContext`).

    """

    def __init__(self, shard: str) -> None:
        self.shard = shard
        self._held: dict[Engine, tuple[Connection, RootTransaction]] = {}

    def connection(self, engine: Engine) -> Connection:
        """The test's connection to `engine`, in its outer transaction."""
        held = self._held.get(engine)
        if held is None:
            connection = engine.connect()
            try:
                outer = connection.begin()
            except BaseException:
                connection.close()
                raise
            held = self._held[engine] = (connection, outer)
        return held[0]

    def adopt(self, session: Session, shard: str) -> None:
        """Route `session`'s statements through this isolation's connections.

        Raises:
            IsolationError: when the session does not route through the graph's engines
                (a session factory of the service's own): it is closed, not let commit.

        """
        if not isinstance(session, RoutingSession) or session.router is None or session.bind is not None:
            session.close()
            raise IsolationError(
                f"A session on shard {shard!r} was opened inside a test's rollback isolation, but its session "
                f"factory ({type(session).__name__}) does not route through the graph's engines, so it would "
                "commit for real. Mark the test @pytest.mark.postgres_commit (tables are emptied after it)."
            )
        session.info[ISOLATION] = self

    @property
    def engines(self) -> list[Engine]:
        """The engines the test has reached so far."""
        return list(self._held)

    def close(self) -> None:
        """Roll back every outer transaction and close the connections."""
        for connection, outer in reversed(list(self._held.values())):
            try:
                if outer.is_active:
                    outer.rollback()
            finally:
                connection.close()
        self._held.clear()


@contextmanager
def isolated(graph: GraphLike) -> Iterator[SessionContext]:
    """Open a SessionContext whose every change, on every engine and shard, is rolled back on exit.

    Raises:
        IsolationError: (inside) when a session opened on another shard cannot be isolated.

    """
    from microcosm_postgres.sharded_subgraph import shard_of

    graph = as_graph(graph)
    isolation = Isolation(shard_of(graph))
    session = graph.sessionmaker(join_transaction_mode="create_savepoint")
    if isinstance(session, RoutingSession) and session.router is not None and session.bind is None:
        isolation.adopt(session, isolation.shard)
    else:
        # A session factory of the service's own: bind it to the `postgres` engine's connection.
        session.close()
        session = graph.sessionmaker(
            bind=isolation.connection(graph.postgres), join_transaction_mode="create_savepoint"
        )
    try:
        with SessionContext(graph, session=session) as context:
            yield context
    finally:
        session.close()
        isolation.close()


def _engines_of(graph: Graph) -> list[Graph]:
    """The graph and, when shards are configured, each shard's graph."""
    from microcosm_postgres.factories.shards import shard_names
    from microcosm_postgres.sharded_subgraph import parent_of, subgraph

    parent = parent_of(graph)
    if not parent.config.get("shards"):
        return [graph]
    return [subgraph(parent, name) for name in shard_names(parent)]


@contextmanager
def committed(graph: GraphLike, model_cls: HasMetadata = Model) -> Iterator[SessionContext]:
    """Open a plain SessionContext (changes really commit); on exit, empty the tables of every
    engine the test connected to: the `postgres` engine, routed engines and shards, each
    table on its own engine.

    Raises:
        UnsafeOperationError: (on exit) when one of those databases is not a test database.

    """
    graph = as_graph(graph)
    shards = _engines_of(graph)
    groups = []
    seen: set[Engine] = set()
    for shard in shards:
        for group in engine_tables(shard, model_cls.metadata):
            if group.engine not in seen:
                seen.add(group.engine)
                groups.append((shard, group))
    used: set[Engine] = {graph.postgres}

    def note(connection: Connection) -> None:
        used.add(connection.engine)

    for _, group in groups:
        event.listen(group.engine, "engine_connect", note)
    try:
        with SessionContext(graph) as context:
            yield context
    finally:
        for _, group in groups:
            event.remove(group.engine, "engine_connect", note)
        for shard, group in groups:
            if group.engine in used:
                reset_all(
                    group.engine,
                    model_cls.metadata,
                    allow_destructive=_allows_destruction(shard, group.name),
                    tables=group.tables,
                )


def _allows_destruction(graph: Graph, engine: str) -> bool:
    """`postgres.allow_destructive` of the graph (a shard's own), or `<engine>.postgres`'s."""
    if bool(graph.config["postgres"].get("allow_destructive")):
        return True
    if engine == "postgres" or engine not in getattr(router_for(graph), "engines", {}):
        return False
    return bool((graph.config.get(engine) or {}).get("postgres", {}).get("allow_destructive"))

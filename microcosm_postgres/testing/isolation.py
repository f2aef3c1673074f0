"""Per-test isolation: each test in an outer transaction that is rolled back.

    with isolated(graph):
        ...  # code under test: SessionContext.session, transaction(), stores

The session is bound to one connection holding an outer transaction, with
`join_transaction_mode="create_savepoint"`: the code's own `transaction()` blocks
commit to SAVEPOINTs, so commit and rollback behave as usual inside the test, and
nothing survives it. Cost: a BEGIN and a ROLLBACK, whatever the number of tables or
rows. Code that opens other connections (threads, a second SessionContext) cannot
see these rows: such tests use `committed(graph)` instead.

"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from microcosm_postgres.context import SessionContext
from microcosm_postgres.graph import GraphLike, HasMetadata, as_graph
from microcosm_postgres.models import Model
from microcosm_postgres.operations import reset_all

__all__ = [
    "committed",
    "isolated",
]


@contextmanager
def isolated(graph: GraphLike) -> Iterator[SessionContext]:
    """Open a SessionContext whose every change is rolled back on exit."""
    graph = as_graph(graph)
    connection = graph.postgres.connect()
    outer = connection.begin()
    session = graph.sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    try:
        with SessionContext(graph, session=session) as context:
            yield context
    finally:
        session.close()
        if outer.is_active:
            outer.rollback()
        connection.close()


@contextmanager
def committed(graph: GraphLike, model_cls: HasMetadata = Model) -> Iterator[SessionContext]:
    """Open a plain SessionContext (changes really commit); empty all tables on exit."""
    graph = as_graph(graph)
    try:
        with SessionContext(graph) as context:
            yield context
    finally:
        reset_all(
            graph.postgres,
            model_cls.metadata,
            allow_destructive=bool(graph.config["postgres"].get("allow_destructive")),
        )

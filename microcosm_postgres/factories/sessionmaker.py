"""The `sessionmaker` component: SQLAlchemy 2 sessions bound through an engine router."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from microcosm.api import defaults, typed
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, SessionTransaction, UOWTransaction, sessionmaker
from sqlalchemy.sql.elements import ClauseElement

from microcosm_postgres._sessions import ISOLATION
from microcosm_postgres.encryption.factories import encryption_at_start_up
from microcosm_postgres.factories.routing import (
    ALLOW_CROSS_ENGINE_WRITES,
    READ_ONLY,
    EngineRouter,
    Replicas,
    forget_replicas,
    forget_writes,
    note_write,
    replica_bind,
    router_for,
)

if TYPE_CHECKING:
    from microcosm_postgres.graph import Graph

__all__ = [
    "SHARD",
    "RoutingSession",
    "configure_sessionmaker",
    "make_sessionmaker",
]


#: `session.info` key: the name of the shard the session works on (absent: `global`).
SHARD = "microcosm_postgres.shard"


class RoutingSession(Session):
    """A Session that asks its `router` for a bind, unless it was given an explicit `bind`.

    Its transactions write through one engine only (`CrossEngineTransactionError`
    otherwise), unless `allow_cross_engine_writes` is true; `read_only` sends all its
    statements to a replica of their engine, when it has one (see `factories.routing`).
    `shard` names the shard its router serves (`factories.shards`); it is fixed for the
    session's life. Under test isolation (`testing.isolation`, `session.info` key
    `_sessions.ISOLATION`) each engine the router chooses is replaced by the test's
    connection to it, which holds the outer transaction that is rolled back (replicas are
    not used then: they could not see the test's rows).

    """

    def __init__(
        self,
        bind: Engine | Connection | None = None,
        *,
        router: EngineRouter | None = None,
        allow_cross_engine_writes: bool = False,
        read_only: bool = False,
        shard: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(bind, **kwargs)
        self.router = router
        if shard is not None:
            self.info[SHARD] = shard
        if allow_cross_engine_writes:
            self.info[ALLOW_CROSS_ENGINE_WRITES] = True
        if read_only:
            self.info[READ_ONLY] = True

    def get_bind(
        self,
        mapper: Mapper[Any] | type[Any] | None = None,
        *,
        clause: ClauseElement | None = None,
        **kwargs: Any,
    ) -> Engine | Connection:
        if self.router is None or self.bind is not None:
            return super().get_bind(mapper, clause=clause, **kwargs)
        bind = self.router.get_bind(mapper=mapper, clause=clause)
        isolation = self.info.get(ISOLATION)
        if isolation is not None:
            connection: Connection = isolation.connection(bind.engine if isinstance(bind, Connection) else bind)
            return connection
        replicas: dict[Engine, Replicas] = getattr(self.router, "replicas", {})
        if isinstance(bind, Engine) and bind in replicas:
            return replica_bind(self, bind, replicas[bind], clause)
        return bind


@event.listens_for(RoutingSession, "before_flush")
def _note_flushed_writes(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    """The flush about to run writes each new, changed or deleted instance through its engine."""
    for instance in (*session.new, *session.deleted, *session.dirty):
        if instance in session.dirty and not session.is_modified(instance):
            continue
        note_write(session, session.get_bind(type(instance)))


@event.listens_for(RoutingSession, "do_orm_execute")
def _note_executed_writes(state: ORMExecuteState) -> None:
    """An INSERT / UPDATE / DELETE statement writes through the engine of its model."""
    if state.is_insert or state.is_update or state.is_delete:
        note_write(state.session, state.session.get_bind(state.bind_mapper))


@event.listens_for(RoutingSession, "after_transaction_end")
def _end_of_transaction(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        forget_writes(session)
        forget_replicas(session)


def make_sessionmaker(
    router: EngineRouter,
    *,
    expire_on_commit: bool = False,
    allow_cross_engine_writes: bool = False,
    shard: str | None = None,
) -> sessionmaker[RoutingSession]:
    """A session factory whose sessions route through `router` (for shard `shard`, when given).

    `expire_on_commit` defaults to False: instances keep their loaded values after a
    commit, so a service can serialize what it just wrote without another query.

    """
    options: dict[str, Any] = {"shard": shard} if shard is not None else {}
    return sessionmaker(
        class_=RoutingSession,
        router=router,
        expire_on_commit=expire_on_commit,
        allow_cross_engine_writes=allow_cross_engine_writes,
        **options,
    )


@defaults(  # type: ignore[untyped-decorator]  # microcosm leaves it unannotated; it returns the function as is
    # Component that routes statements to engines: `default_engine_routing_strategy` (all to
    # `postgres`) or `model_engine_routing_strategy` (models with `__engine__` to `<name>.postgres`).
    engine_routing_strategy=typed(str, default_value="default_engine_routing_strategy"),
    # Let one transaction write through several engines (its commits are then not atomic).
    allow_cross_engine_writes=typed(bool, default_value=False),
)
def configure_sessionmaker(graph: Graph) -> sessionmaker[RoutingSession]:
    """Sessions routed by the strategy `sessionmaker.engine_routing_strategy` names.

    When the configuration names encryption tenants, it also builds `multi_tenant_encryptor`
    first (`encryption.factories.encryption_at_start_up`): bad encryption config fails here,
    at graph creation, not on the first write.

    Raises:
        microcosm.errors.ValidationError: when that name is not a bound routing strategy, or
            a model names an engine with no configuration.
        EncryptionConfigError: the encryption configuration is not valid.

    """
    encryption_at_start_up(graph)
    return make_sessionmaker(
        router_for(graph),
        allow_cross_engine_writes=bool(graph.config["sessionmaker"]["allow_cross_engine_writes"]),
    )

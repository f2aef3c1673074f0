"""The `sessionmaker` component: SQLAlchemy 2 sessions bound through an engine router."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper, Session, sessionmaker
from sqlalchemy.sql.elements import ClauseElement

from microcosm_postgres.factories.routing import DefaultRouter, EngineRouter

if TYPE_CHECKING:
    from microcosm_postgres.graph import Graph

__all__ = [
    "RoutingSession",
    "configure_sessionmaker",
    "make_sessionmaker",
]


class RoutingSession(Session):
    """A Session that asks its `router` for a bind, unless it was given an explicit `bind`."""

    def __init__(
        self, bind: Engine | Connection | None = None, *, router: EngineRouter | None = None, **kwargs: Any
    ) -> None:
        super().__init__(bind, **kwargs)
        self.router = router

    def get_bind(
        self,
        mapper: Mapper[Any] | type[Any] | None = None,
        *,
        clause: ClauseElement | None = None,
        **kwargs: Any,
    ) -> Engine | Connection:
        if self.router is None or self.bind is not None:
            return super().get_bind(mapper, clause=clause, **kwargs)
        return self.router.get_bind(mapper=mapper, clause=clause)


def make_sessionmaker(router: EngineRouter, *, expire_on_commit: bool = False) -> sessionmaker[RoutingSession]:
    """A session factory whose sessions route through `router`.

    `expire_on_commit` defaults to False: instances keep their loaded values after a
    commit, so a service can serialize what it just wrote without another query.

    """
    return sessionmaker(class_=RoutingSession, router=router, expire_on_commit=expire_on_commit)


def configure_sessionmaker(graph: Graph) -> sessionmaker[RoutingSession]:
    """Sessions for the service's `postgres` engine."""
    return make_sessionmaker(DefaultRouter(graph.postgres))

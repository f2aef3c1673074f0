"""Engine routing: which engine (or connection) a session statement goes to.

Sessions made by the `sessionmaker` component ask a router for their bind instead of
holding one engine. Today there is one strategy, `DefaultRouter` (always the
`postgres` engine); replicas and per-model engines plug in here as further routers
without any change to stores or callers.

"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.elements import ClauseElement

__all__ = [
    "DefaultRouter",
    "EngineRouter",
]


class EngineRouter(Protocol):
    """Chooses the bind for one statement of a session."""

    def get_bind(
        self, mapper: Mapper[Any] | type[Any] | None = None, clause: ClauseElement | None = None
    ) -> Engine | Connection:
        """Return the engine or connection for a statement about `mapper` / `clause`."""
        ...


class DefaultRouter:
    """Routes every statement to one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_bind(
        self, mapper: Mapper[Any] | type[Any] | None = None, clause: ClauseElement | None = None
    ) -> Engine | Connection:
        return self.engine

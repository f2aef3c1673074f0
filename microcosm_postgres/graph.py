"""`Graph`: the parts of a microcosm object graph this library uses, as a typing Protocol.

microcosm's `ObjectGraph` resolves components dynamically, so it cannot say that
`graph.postgres` is an `Engine`. Annotating with `Graph` gives mypy (and readers) that
knowledge; any microcosm graph with the `postgres` and `sessionmaker` components bound
satisfies it.

"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from microcosm.config.model import Configuration
    from microcosm.metadata import Metadata
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker

    from microcosm_postgres.factories.sessionmaker import RoutingSession

__all__ = [
    "Graph",
]


class Graph(Protocol):
    """A microcosm object graph with this library's components bound."""

    @property
    def metadata(self) -> Metadata:
        """The service's name, `testing` flag and import name."""
        ...

    @property
    def config(self) -> Configuration:
        """The loaded configuration; `config.postgres` holds the engine's keys."""
        ...

    @property
    def postgres(self) -> Engine:
        """The service's engine (the `postgres` component)."""
        ...

    @property
    def sessionmaker(self) -> sessionmaker[RoutingSession]:
        """The session factory (the `sessionmaker` component)."""
        ...

    def factory_for(self, key: str) -> Callable[..., object]:
        """The factory bound to component `key`."""
        ...

    def use(self, *keys: str) -> list[object]:
        """Create components `keys` (and their dependencies)."""
        ...

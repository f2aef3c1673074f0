"""`Graph`: the parts of a microcosm object graph this library uses, as a typing Protocol.

microcosm's `ObjectGraph` resolves components dynamically, so mypy sees `graph.postgres`
as `object | Any`, not as an `Engine`. Annotating with `Graph` gives mypy (and readers)
that knowledge. Because mypy cannot prove it, an `ObjectGraph` is not a `Graph` to mypy:
the public functions of this library therefore take a `GraphLike` (either), so a typed
service can pass what `create_object_graph` returned, and see it as a `Graph` inside
with `as_graph`. A service that wants its own components typed too extends the protocol:

    class AcmeGraph(Graph, Protocol):
        @property
        def order_store(self) -> OrderStore: ...

    graph = cast(AcmeGraph, create_object_graph(name="acme"))

"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, cast

from microcosm.object_graph import ObjectGraph

if TYPE_CHECKING:
    from microcosm.config.model import Configuration
    from microcosm.metadata import Metadata
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker

    from microcosm_postgres.factories.sessionmaker import RoutingSession

__all__ = [
    "Graph",
    "GraphLike",
    "HasMetadata",
    "as_graph",
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


GraphLike: TypeAlias = Graph | ObjectGraph
"""What the public functions take: a `Graph`, or the `ObjectGraph` that `create_object_graph` returns."""


def as_graph(graph: GraphLike) -> Graph:
    """`graph`, typed as a `Graph` (nothing is checked at run time).

    microcosm binds components at run time, so mypy cannot know that an `ObjectGraph`
    has `postgres` and `sessionmaker`; this is the one place that says so.

    """
    return cast(Graph, graph)


class HasMetadata(Protocol):
    """What `model_cls` arguments need: the `MetaData` of the tables to act on.

    A declarative base (`microcosm_postgres.models.Model`, the default) has it, and so
    has any object with a `metadata` attribute (a namespace holding a `MetaData`).

    """

    @property
    def metadata(self) -> MetaData:
        """The tables."""
        ...

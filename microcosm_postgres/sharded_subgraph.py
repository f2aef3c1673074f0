"""One graph-like per shard, so single-database code runs on each shard unchanged.

    for shard in sharded_subgraph.subgraphs(graph):
        create_all(shard)                # operations, migrate, health, createall: as they are
        print(shard.shard, check_health(shard))

A `ShardGraph` answers like its parent graph, except that `postgres` is the shard's engine,
`sessionmaker` the shard's session factory, `config.postgres` the shard's settings (see
`factories.shards` for what a shard inherits) and the routing strategy component routes
to the shard. `SessionContext(shard_graph)` is `SessionContext(parent, shard=name)`: the
parent's stores then work on that shard.

`subgraphs(graph)` lists `global` (the parent's own database) first, then the configured
shards; the `SHARD` environment variable limits it to one.

"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from microcosm.config.model import Configuration

from microcosm_postgres.constants import GLOBAL_SHARD_NAME
from microcosm_postgres.factories.shards import check_shard_name, selected_shard_names, shard_section
from microcosm_postgres.graph import Graph, GraphLike, as_graph

if TYPE_CHECKING:
    from microcosm.metadata import Metadata
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker

    from microcosm_postgres.factories.sessionmaker import RoutingSession

__all__ = [
    "ShardGraph",
    "parent_of",
    "shard_of",
    "subgraph",
    "subgraphs",
]


class ShardGraph:
    """The parent graph as seen from one shard (a `Graph`)."""

    def __init__(self, parent: Graph, shard: str) -> None:
        self.parent = parent
        #: The shard's name (`global` for the parent's own database).
        self.shard = check_shard_name(parent, shard)
        self._config = Configuration(dict(parent.config))
        self._config["postgres"] = Configuration(shard_section(parent, shard))

    @property
    def metadata(self) -> Metadata:
        return self.parent.metadata

    @property
    def config(self) -> Configuration:
        return self._config

    @property
    def postgres(self) -> Engine:
        engines: dict[str, Engine] = self.parent.shards  # type: ignore[attr-defined]
        return engines[self.shard]

    @property
    def sessionmaker(self) -> sessionmaker[RoutingSession]:
        makers: dict[str, sessionmaker[RoutingSession]] = self.parent.sessionmakers  # type: ignore[attr-defined]
        return makers[self.shard]

    def factory_for(self, key: str) -> Callable[..., object]:
        return self.parent.factory_for(key)

    def use(self, *keys: str) -> list[object]:
        return self.parent.use(*keys)

    def __getattr__(self, name: str) -> Any:
        # The routing strategy the sessionmaker uses: the shard's router (its sessions' own).
        if name == str(self.parent.config["sessionmaker"]["engine_routing_strategy"]):
            return self.sessionmaker.kw["router"]
        return getattr(self.parent, name)

    def __repr__(self) -> str:
        return f"ShardGraph({self.parent.metadata.name!r}, shard={self.shard!r})"


def parent_of(graph: GraphLike) -> Graph:
    """The graph a shard graph belongs to (a plain graph is its own)."""
    return graph.parent if isinstance(graph, ShardGraph) else as_graph(graph)


def shard_of(graph: GraphLike) -> str:
    """The shard a graph stands for: its shard for a `ShardGraph`, else `global`."""
    return graph.shard if isinstance(graph, ShardGraph) else GLOBAL_SHARD_NAME


def subgraph(graph: GraphLike, shard: str) -> Graph:
    """The graph-like of one shard of `graph` (`global`: the graph itself).

    Raises:
        UnknownShardError: when `shard` names no shard of the graph.

    """
    parent = parent_of(graph)
    if check_shard_name(parent, shard) == GLOBAL_SHARD_NAME:
        return parent
    return ShardGraph(parent, shard)


def subgraphs(graph: GraphLike) -> list[Graph]:
    """One graph-like per shard: `global` (the graph itself) first, then each configured shard.

    A shard graph given is its own only shard. The `SHARD` environment variable limits the
    list to the shard it names.

    Raises:
        UnknownShardError: when `SHARD` names no shard of the graph.
        ShardConfigurationError: when the shards configuration is unusable (see `factories.shards`).

    """
    if isinstance(graph, ShardGraph):
        return [graph]
    parent = as_graph(graph)
    return [subgraph(parent, name) for name in selected_shard_names(parent)]

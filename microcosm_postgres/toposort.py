"""Topological sort of a graph of nodes: `toposorted(nodes, edges)`.

Kahn's algorithm, with the ready nodes kept in a heap keyed by their position in the
input, so that among nodes no edge orders, the input order wins (an input that already
satisfies every edge comes back unchanged). Cost: O(e + n log n) for n nodes and e edges.

"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "CycleError",
    "Edge",
    "toposorted",
]

# The ids: any hashable type (a TypeVar, as `Mapping` is invariant in its key type).
KeyT = TypeVar("KeyT", bound=Hashable)
NodeT = TypeVar("NodeT")

# How many node ids a CycleError message lists before "...".
_MESSAGE_IDS = 10


@dataclass(frozen=True)
class Edge:
    """A directed edge: the node `from_id` must come before the node `to_id`.

    For cloning, `from_id` is the row that is referenced (a company) and `to_id` the row
    that references it (an employee).

    """

    from_id: Any
    to_id: Any


class CycleError(ValueError):
    """The edges form a cycle, so no order satisfies them all.

    Attributes:
        cycle: the ids of one cycle, in edge order (the last one has an edge to the first).

    """

    def __init__(self, cycle: list[Any]) -> None:
        shown = ", ".join(repr(node_id) for node_id in cycle[:_MESSAGE_IDS])
        more = f", ... ({len(cycle)} nodes)" if len(cycle) > _MESSAGE_IDS else ""
        super().__init__(
            f"The edges form a cycle through {shown}{more}, so the nodes have no topological order. "
            "Remove one of the edges of this cycle."
        )
        self.cycle = cycle


def _ends(edge: Any) -> tuple[Any, Any]:
    if isinstance(edge, Edge):
        return edge.from_id, edge.to_id
    from_id, to_id = edge
    return from_id, to_id


def toposorted(nodes: Mapping[KeyT, NodeT], edges: Iterable[Edge | tuple[Any, Any]]) -> list[NodeT]:
    """The values of `nodes` (id -> node) ordered so that every edge's source precedes its target.

    Nodes that no edge orders keep their input order. Edges with an end that is not a
    key of `nodes` are ignored; an edge given twice counts once.

    Args:
        nodes: the nodes by id, in input order.
        edges: `Edge`s, or `(from_id, to_id)` pairs.

    Raises:
        CycleError: when the edges between nodes of the mapping form a cycle (a
            `ValueError`; `error.cycle` holds the ids of one cycle).

    """
    ids = list(nodes)
    position = {node_id: index for index, node_id in enumerate(ids)}
    successors: list[set[int]] = [set() for _ in ids]
    indegree = [0] * len(ids)
    for edge in edges:
        from_id, to_id = _ends(edge)
        source, target = position.get(from_id), position.get(to_id)
        if source is None or target is None or target in successors[source]:
            continue
        successors[source].add(target)
        indegree[target] += 1

    ready = [index for index, degree in enumerate(indegree) if degree == 0]  # sorted: already a heap
    ordered: list[NodeT] = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(nodes[ids[index]])
        for target in successors[index]:
            indegree[target] -= 1
            if indegree[target] == 0:
                heapq.heappush(ready, target)

    if len(ordered) < len(ids):
        raise CycleError([ids[index] for index in _find_cycle(successors, indegree)])
    return ordered


def _find_cycle(successors: list[set[int]], indegree: list[int]) -> list[int]:
    """One cycle among the nodes Kahn's algorithm could not place (those with indegree > 0).

    Each such node has a predecessor that was not placed either, so walking back through
    unplaced predecessors must revisit a node: the walk from that node on is a cycle.

    """
    predecessor: dict[int, int] = {}
    for source, targets in enumerate(successors):
        if indegree[source] > 0:
            for target in targets:
                if indegree[target] > 0:
                    predecessor.setdefault(target, source)
    node = next(index for index, degree in enumerate(indegree) if degree > 0)
    seen: dict[int, int] = {}
    walk: list[int] = []
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = predecessor[node]
    cycle = walk[seen[node] :]
    cycle.reverse()  # the walk went against the edges
    return cycle

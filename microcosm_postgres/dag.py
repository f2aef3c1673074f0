"""DAGs of model instances, and cloning them: `DAG`, `DAGCloner`, `Edge`.

A node is a persisted model instance with an `id`; an `Edge(from_id, to_id)` says the
node `to_id` refers to the node `from_id` (so `from_id` is cloned first). Models can
declare their own edges with an `edges` attribute (a property returning `Edge`s), which
`DAG.from_nodes` and `DAG.build_edges` collect.

"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from microcosm_postgres.cloning import clone
from microcosm_postgres.context import transaction
from microcosm_postgres.toposort import Edge, toposorted

__all__ = [
    "DAG",
    "DAGCloner",
    "Edge",
    "underscore",
]


def underscore(name: str) -> str:
    """`CompanyType` -> `company_type`, `HTTPServer` -> `http_server`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name)
    return name.replace("-", "_").lower()


def _alias(node: Any) -> str:
    cls = type(node)
    alias = getattr(cls, "__alias__", None)
    return alias if isinstance(alias, str) else underscore(cls.__name__)


class DAG:
    """Nodes (by id), the edges between them, and the substitutions made by cloning them.

    Attributes:
        nodes: id -> node, in the order given.
        edges: the edges; `ordered_nodes` ignores those with an end outside `nodes`.
        substitutions: value -> value applied to copied columns by `clone` (old ids map
            to new ids as nodes are cloned).

    """

    def __init__(
        self,
        nodes: Mapping[Any, Any] | Iterable[Any],
        edges: Iterable[Edge] | None = None,
        substitutions: dict[Any, Any] | None = None,
    ) -> None:
        """
        Args:
            nodes: id -> node, or nodes (keyed by their `id`).
            edges: the edges (default none; see `build_edges`).
            substitutions: initial substitutions (e.g. `{old_name: new_name}`); the dict
                given is the one `clone` updates.

        """
        self.nodes: dict[Any, Any] = dict(nodes) if isinstance(nodes, Mapping) else {node.id: node for node in nodes}
        self.edges: list[Edge] = list(edges or ())
        self.substitutions: dict[Any, Any] = substitutions if substitutions is not None else {}

    @classmethod
    def from_nodes(cls, *nodes: Any) -> DAG:
        """A DAG of `nodes` with the edges their `edges` attributes declare (see `build_edges`)."""
        return cls(nodes).build_edges()

    def build_edges(self) -> DAG:
        """Add the edges declared by each node's `edges` attribute, keeping only those with both
        ends in this DAG and not already present; returns self."""
        present = set(self.edges)
        for node in self.nodes.values():
            for edge in getattr(node, "edges", None) or ():
                if edge.from_id in self.nodes and edge.to_id in self.nodes and edge not in present:
                    present.add(edge)
                    self.edges.append(edge)
        return self

    @property
    def ordered_nodes(self) -> list[Any]:
        """The nodes in topological order (ties in the order given).

        Raises:
            CycleError: the edges form a cycle.

        """
        return toposorted(self.nodes, self.edges)

    @property
    def nodes_map(self) -> dict[str, list[Any]]:
        """The nodes grouped by their class's `__alias__`, or its underscored name
        (`Employee` -> `employee`), in the order given."""
        groups: dict[str, list[Any]] = {}
        for node in self.nodes.values():
            groups.setdefault(_alias(node), []).append(node)
        return groups

    def clone(self, ignore: Collection[str] = ()) -> DAG:
        """Clone every node (see `cloning.clone`) in topological order, in one `transaction()`.

        Each node is cloned after the nodes it refers to, so its references are substituted
        with their clones' ids. Returns the DAG of the clones, with the edges mapped to the
        new ids and the same `substitutions`. When a clone fails, the block is rolled back
        (no clone stays) and `substitutions` is left as it was.

        Raises:
            CycleError: the edges form a cycle (before anything is written).
            SessionNotOpenError, LookupError, DuplicateModelError, ...: see `cloning.clone`.

        """
        order = toposorted({key: key for key in self.nodes}, self.edges)
        before = dict(self.substitutions)
        try:
            with transaction():
                clones = {key: clone(self.nodes[key], self.substitutions, ignore) for key in order}
        except BaseException:
            self.substitutions.clear()
            self.substitutions.update(before)
            raise
        new_id = self.substitutions.get
        edges = [Edge(new_id(edge.from_id, edge.from_id), new_id(edge.to_id, edge.to_id)) for edge in self.edges]
        # The clones keyed by their ids, in the order the nodes were given.
        return DAG({clones[key].id: clones[key] for key in self.nodes}, edges, self.substitutions)


class DAGCloner(ABC):
    """Clone a root instance and the instances that hang off it, for one graph.

    Subclasses say how to find the root (`retrieve_root`) and its descendants
    (`iter_children`); the edges come from the nodes' `edges` attributes unless
    `add_edges` says otherwise. `explain(...)` returns the DAG that `clone(...)` would
    clone, without writing anything.

    `explain(**kwargs)` and `clone(**kwargs)` pass their keyword arguments on to
    `retrieve_root` and `iter_children`, whose base signatures are left open
    (`*args: Any, **kwargs: Any`, which type checkers accept any override of) so that a
    subclass declares the keywords it takes and the type of its root::

        class CompanyCloner(DAGCloner):
            def retrieve_root(self, company_id: UUID, **kwargs: Any) -> Company: ...

            def iter_children(self, root: Company, **kwargs: Any) -> Iterable[Employee]: ...

    """

    #: Attributes not copied (left to the model's defaults).
    ignore: Collection[str] = ("created_at", "updated_at")

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    @abstractmethod
    def retrieve_root(self, *args: Any, **kwargs: Any) -> Any:
        """The root instance to clone, found from the keyword arguments of `explain` / `clone`
        (they are passed as keywords only; a subclass names those it takes)."""

    def iter_children(self, root: Any, *args: Any, **kwargs: Any) -> Iterable[Any]:
        """The instances to clone with `root` (all descendants, not only direct children),
        given the keyword arguments of `explain` / `clone` too."""
        return ()

    def add_edges(self, dag: DAG) -> DAG:
        """Add the DAG's edges; by default those the nodes' `edges` attributes declare."""
        return dag.build_edges()

    def update_nodes(self, dag: DAG) -> DAG:
        """Adjust the DAG before cloning (drop or change nodes); by default unchanged."""
        return dag

    def explain(self, **kwargs: Any) -> DAG:
        """The DAG `clone(**kwargs)` would clone (a dry run: nothing is written)."""
        root = self.retrieve_root(**kwargs)
        dag = DAG([root, *self.iter_children(root, **kwargs)])
        return self.update_nodes(self.add_edges(dag))

    def clone(self, substitutions: dict[Any, Any] | None = None, **kwargs: Any) -> DAG:
        """Clone the DAG `explain(**kwargs)` builds, with these initial `substitutions`.

        Returns the DAG of the clones (`dag.substitutions` maps each old id to its clone's).

        Raises:
            CycleError, DuplicateModelError, ...: see `DAG.clone` (nothing stays written).

        """
        dag = self.explain(**kwargs)
        dag.substitutions.update(substitutions or {})
        return dag.clone(ignore=self.ignore)

"""`SmartMixin` (store shortcuts on a model) and the per-graph model -> store registry.

Each graph has its own registry. A store is in it when it is a component of the graph
(bound with `@binding`: it registers when the graph resolves it, the first one per
model winning) or when it called `assign_model_class_store()`; a `Store(...)` made ad
hoc, in a test say, is not "the" store of its model. Lookups use the graph of the current `SessionContext`, so two
graphs never see each other's stores.

"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from microcosm_postgres import _sessions

if TYPE_CHECKING:
    from microcosm_postgres.diff import Delta

__all__ = [
    "SmartMixin",
    "SmartStore",
    "register_store",
    "store_for",
]


@runtime_checkable
class SmartStore(Protocol):
    """What SmartMixin needs of a store (`microcosm_postgres.store.Store` is one)."""

    graph: Any
    model_class: type[Any]

    def create(self, instance: Any) -> Any: ...

    def retrieve(self, identifier: Any, *criteria: Any) -> Any: ...

    def search(self, *criteria: Any, **kwargs: Any) -> list[Any]: ...

    def count(self, *criteria: Any, **filters: Any) -> int: ...


# graph -> model class -> the store SmartMixin uses for it in that graph. Weak both ways:
# the registry keeps neither a graph nor a store alive (the graph holds its stores).
_registries: weakref.WeakKeyDictionary[Any, dict[type, weakref.ref[SmartStore]]] = weakref.WeakKeyDictionary()


def register_store(store: SmartStore, *, replace: bool = True) -> None:
    """Make `store` the one its model's SmartMixin shortcuts use in `store.graph`.

    Replaces an earlier registration for that model in that graph only (unless
    `replace` is False: then the first store registered stays).

    """
    registry = _registries.setdefault(store.graph, {})
    current = registry.get(store.model_class)
    if replace or current is None or current() is None:
        registry[store.model_class] = weakref.ref(store)


def _registered(graph: Any, model_class: type) -> SmartStore | None:
    registry = _registries.get(graph, {})
    for cls in model_class.__mro__:
        ref = registry.get(cls)
        store = ref() if ref is not None else None
        if store is not None:
            return store
    return None


def _bound(graph: Any, model_class: type) -> SmartStore | None:
    """The first store among the graph's resolved components that persists `model_class`."""
    for cls in model_class.__mro__:
        for _, component in graph.items():
            if isinstance(component, SmartStore) and component.model_class is cls and component.graph is graph:
                return component
    return None


def store_for(model_class: type, graph: Any = None) -> Any:
    """The store of `model_class` in `graph` (default: the graph of the current SessionContext).

    Raises:
        SessionNotOpenError: when `graph` is not given and no SessionContext is open.
        LookupError: when that graph has no store for this model.

    """
    if graph is None:
        graph = _sessions.innermost().graph
    store = _registered(graph, model_class)
    if store is None:
        store = _bound(graph, model_class)
        if store is not None:
            register_store(store)
    if store is None:
        raise LookupError(
            f"Graph {graph.metadata.name!r} has no store for {model_class.__name__}. "
            f"Use the store component (e.g. graph.use('{model_class.__name__.lower()}_store')) before "
            "calling its SmartMixin shortcuts, or call assign_model_class_store() on the store."
        )
    return store


class _StoreAttribute:
    """`Model.store`: the model's store in the current SessionContext's graph.

    Outside any SessionContext, the one store registered for the model (the common
    single-graph service); when several graphs registered one, that is ambiguous and
    a LookupError.

    """

    def __get__(self, instance: object, owner: type) -> Any:
        graph = _sessions.current_graph()
        if graph is not None:
            return store_for(owner, graph)
        candidates = [store for graph in list(_registries) if (store := _registered(graph, owner)) is not None]
        if len(candidates) == 1:
            return candidates[0]
        reason = "several graphs have one" if candidates else "no graph has registered one yet"
        raise LookupError(
            f"{owner.__name__}.store is ambiguous outside a SessionContext: {reason}. "
            "Open `SessionContext(graph)` first, or use the graph's store component."
        )


class SmartMixin:
    """Store shortcuts on the model: `company.create()`, `Company.search(...)`, ...

    Each call goes to the store registered for this model in the graph of the current
    `SessionContext` (see the module docstring), so two graphs never use each other's
    store. `Model.store` is that store (outside any SessionContext: the one store
    registered for the model, when only one graph has one).

    Raises:
        SessionNotOpenError: when no SessionContext is open.
        LookupError: when that graph has no store for this model.

    """

    store = _StoreAttribute()

    @classmethod
    def _store(cls) -> Any:
        return store_for(cls)

    def create(self) -> Any:
        return self._store().create(self)

    def update(self) -> Any:
        return self._store().update(self.id, self)  # type: ignore[attr-defined]

    def update_with_diff(self) -> tuple[Any, Delta]:
        result: tuple[Any, Delta] = self._store().update_with_diff(self.id, self)  # type: ignore[attr-defined]
        return result

    def replace(self) -> Any:
        return self._store().replace(getattr(self, "id", None), self)

    def delete(self) -> bool:
        return bool(self._store().delete(self.id))  # type: ignore[attr-defined]

    @classmethod
    def retrieve(cls, identifier: Any, *criteria: Any) -> Any:
        return cls._store().retrieve(identifier, *criteria)

    @classmethod
    def search(cls, *criteria: Any, **kwargs: Any) -> list[Any]:
        return list(cls._store().search(*criteria, **kwargs))

    @classmethod
    def search_first(cls, *criteria: Any, **kwargs: Any) -> Any:
        return cls._store().search_first(*criteria, **kwargs)

    @classmethod
    def count(cls, *criteria: Any, **filters: Any) -> int:
        return int(cls._store().count(*criteria, **filters))

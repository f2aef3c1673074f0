"""Clone one persisted instance: `clone(instance, substitutions, ignore=())`."""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from typing import Any, TypeVar

from sqlalchemy import Uuid, inspect

from microcosm_postgres.store import store_for

__all__ = [
    "clone",
]

ModelT = TypeVar("ModelT")

_MISSING = object()


def _substituted(value: Any, substitutions: MutableMapping[Any, Any]) -> Any:
    try:
        return substitutions.get(value, value)
    except TypeError:  # unhashable (a list, a dict): never substituted
        return value


def clone(instance: ModelT, substitutions: MutableMapping[Any, Any], ignore: Collection[str] = ()) -> ModelT:
    """Create a copy of `instance` through its store, with a new primary key, and return it.

    Every column attribute is copied (expired and deferred ones are loaded first), except
    the primary key and the attributes named in `ignore`, which are left for the model's
    defaults (pass `("created_at", "updated_at")` for fresh timestamps). A copied value
    that is a key of `substitutions` is replaced by its mapped value: map the ids of rows
    already cloned to their clones' ids (which `clone` records for you) and references
    follow the clones. The old primary key -> new primary key is added to `substitutions`.

    Call it in the `SessionContext` of the graph that holds the model's store, inside a
    `transaction()` when several clones must succeed or fail together.

    Raises:
        SessionNotOpenError: no SessionContext is open.
        LookupError: that graph made no store for this model.
        DuplicateModelError, MissingDependencyError, ...: the database refused the copy
            (e.g. a unique column that was neither ignored nor substituted).

    """
    model_class = type(instance)
    store = store_for(model_class)
    mapper = inspect(model_class)
    primary_keys = {mapper.get_property_by_column(column).key for column in mapper.primary_key}
    skipped = set(ignore)
    copy = model_class()
    replaced: dict[Any, Any] = {}  # old key -> what substitutions held for it, to restore on failure
    for column in mapper.primary_key:
        key = mapper.get_property_by_column(column).key
        if isinstance(column.type, Uuid):  # the new id now, so a row that references itself follows
            old_key = getattr(instance, key)
            replaced[old_key] = substitutions.get(old_key, _MISSING)
            setattr(copy, key, store.new_object_id())
            substitutions[old_key] = getattr(copy, key)
    for attr in mapper.column_attrs:
        if attr.key in primary_keys or attr.key in skipped:
            continue
        # getattr, not __dict__: loads expired and deferred columns instead of dropping them.
        setattr(copy, attr.key, _substituted(getattr(instance, attr.key), substitutions))
    try:
        store.create(copy)
    except BaseException:
        for old_key, previous in replaced.items():
            if previous is _MISSING:
                del substitutions[old_key]
            else:
                substitutions[old_key] = previous
        raise
    for key in primary_keys:  # keys the database assigned (serial) are known only now
        substitutions[getattr(instance, key)] = getattr(copy, key)
    return copy

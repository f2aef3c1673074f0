"""`Store`: create, retrieve, update, delete, search and count one model.

A service subclasses Store once per model and binds it in the graph:

    @binding("company_store")
    class CompanyStore(Store[Company]):
        def __init__(self, graph):
            super().__init__(graph, Company, auto_filter_fields=[Company.name])

Every method works in the session the current `SessionContext` opened for the store's
graph, and raises the typed errors of `microcosm_postgres.errors`. A write that the
database refuses is rolled back to a savepoint taken just before it, so the caller's
transaction stays usable and nothing half-written is committed.

"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import Select, Uuid, bindparam, func, inspect, select
from sqlalchemy.orm import InstrumentedAttribute, Query, Session

from microcosm_postgres.context import (
    SessionContext,
    in_transaction_block,
    rerun_after_unknown_commit,
    rollback_quietly,
)
from microcosm_postgres.diff import Delta, Version
from microcosm_postgres.errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    ModelNotFoundError,
    translating,
)
from microcosm_postgres.identifiers import new_object_id
from microcosm_postgres.metrics import postgres_metric_timing, store_metrics_for

__all__ = [
    "Store",
    "store_for",
]

ModelT = TypeVar("ModelT")

# graph -> model class -> the first Store made for that model in that graph (SmartMixin's lookup).
_stores: weakref.WeakKeyDictionary[Any, dict[type, Store[Any]]] = weakref.WeakKeyDictionary()

# Attributes `update` never copies from the new instance.
_NEVER_MERGED = frozenset({"id", "created_at"})

# Columns the library fills in at insert: a re-run's values differ from the first run's.
_SET_BY_LIBRARY = frozenset({"created_at", "updated_at"})


def _column_values(instance: Any) -> dict[str, Any]:
    """The column attributes set on `instance` (loaded or assigned), by attribute key."""
    state = inspect(instance)
    return {attr.key: state.dict[attr.key] for attr in state.mapper.column_attrs if attr.key in state.dict}


def store_for(model_class: type[ModelT]) -> Store[ModelT]:
    """The store for `model_class` in the graph of the current SessionContext.

    Raises:
        SessionNotOpenError: when no SessionContext is open.
        LookupError: when that graph made no store for this model.

    """
    graph = SessionContext.graph
    stores = _stores.get(graph, {})
    for cls in model_class.__mro__:
        if cls in stores:
            return stores[cls]
    raise LookupError(
        f"Graph {graph.metadata.name!r} has no store for {model_class.__name__}. "
        f"Use the store component (e.g. graph.use('{model_class.__name__.lower()}_store')) before "
        "calling its SmartMixin shortcuts."
    )


class Store(Generic[ModelT]):
    """Persistence operations for one model class.

    Subclasses customise queries through the underscore hooks: `_query`, `_filter`,
    `_auto_filter`, `_order_by`, `_paginate`, `_retrieve`, `_delete`.

    Reads that no overridden hook can affect (retrieve by id; search and count with
    auto filters only) run a statement built once per store, with bound parameters,
    instead of building a Query per call; the result is the same.

    """

    def __init__(
        self,
        graph: Any,
        model_class: type[ModelT],
        auto_filter_fields: Sequence[InstrumentedAttribute[Any] | str] = (),
    ) -> None:
        """
        Args:
            graph: the object graph (its SessionContext supplies the session).
            model_class: the mapped class this store persists.
            auto_filter_fields: columns that `search`/`count` keywords filter by
                equality (`search(name="Acme")`).

        The first store made for a model in a graph is the one its SmartMixin
        shortcuts use in that graph; later ones do not replace it.

        """
        self.graph = graph
        self.model_class = model_class
        mapper = inspect(model_class)
        self.auto_filter_fields: dict[str, Any] = {}
        for field in auto_filter_fields:
            key = field if isinstance(field, str) else field.key
            self.auto_filter_fields[key] = getattr(model_class, key)
        self._primary_key = mapper.primary_key[0]
        self._id_is_uuid = isinstance(self._primary_key.type, Uuid)
        self._plain_retrieve = not _overrides(self, "_query", "_retrieve")
        self._plain_search = not _overrides(self, "_query", "_filter", "_auto_filter", "_order_by", "_paginate")
        self._statements: dict[Any, Select[Any]] = {}
        self._metrics = store_metrics_for(graph)
        _stores.setdefault(graph, {}).setdefault(model_class, self)

    @property
    def session(self) -> Session:
        """The session the current SessionContext opened for this store's graph."""
        return SessionContext.session_for(self.graph)

    @property
    def model_name(self) -> str:
        return self.model_class.__name__

    def new_object_id(self) -> UUID:
        return new_object_id()

    # --- writes -----------------------------------------------------------------

    @contextmanager
    def flushing(self) -> Iterator[Session]:
        """Run a block of writes and flush them inside a savepoint, translating errors.

        On failure the savepoint is rolled back (the caller's transaction goes on),
        and the typed error is raised.

        """
        session = self.session
        with self._translating():
            savepoint = session.begin_nested()
            try:
                yield session
                session.flush()
            except BaseException:
                rollback_quietly(savepoint)
                raise
            savepoint.commit()

    @contextmanager
    def _translating(self) -> Iterator[None]:
        """`errors.translating`, and reset the session when its connection was lost outside
        any `transaction()` block (inside one, leaving the block resets it)."""
        try:
            with translating(model_name=self.model_name):
                yield
        except DatabaseUnavailableError:
            session = self.session
            if not in_transaction_block(session):
                session.rollback()
            raise

    @postgres_metric_timing()
    def create(self, instance: ModelT) -> ModelT:
        """Insert `instance` (assigning an `id` when it has none) and return it.

        Safe to run again after an unknown commit outcome: inside
        `transactional(idempotent=True)`, when the block runs again after
        `CommitOutcomeUnknownError` and `instance` had its id before this call (set by the
        caller, or by the first run on the same instance), a stored row with that id and the
        same column values (the timestamps aside) means the first run committed: that row is
        returned, rather than `DuplicateModelError`.

        Raises:
            DuplicateModelError: a unique constraint refused it.
            MissingDependencyError: it references a row that does not exist.
            ModelIntegrityError, InvalidInputError: other refused values.

        """
        # A re-run after an unknown commit outcome (transactional(idempotent=True)) of a create
        # whose id was set beforehand: the first run may have inserted this very row.
        if getattr(instance, "id", None) is not None and rerun_after_unknown_commit(self.session):
            stored = self._created_before(instance)
            if stored is not None:
                return stored
        with self.flushing() as session:
            if getattr(instance, "id", None) is None and self._id_is_uuid:
                instance.id = self.new_object_id()  # type: ignore[attr-defined]
            session.add(instance)
        return instance

    def _created_before(self, instance: ModelT) -> ModelT | None:
        """The stored row with `instance`'s id when it holds `instance`'s values (bar the
        timestamps the library sets), else None (the insert then goes ahead, and a row with
        this id but other values is a `DuplicateModelError`, as always)."""
        given = _column_values(instance)
        session = self.session
        with self._translating():
            stored = session.get(self.model_class, given["id"])
        if stored is None or stored is instance:
            return stored
        if all(getattr(stored, key) == value for key, value in given.items() if key not in _SET_BY_LIBRARY):
            return stored
        session.expunge(stored)  # so that the insert meets the database's refusal, not the session's
        return None

    @postgres_metric_timing()
    def update(self, identifier: Any, new_instance: ModelT) -> ModelT:
        """Copy the attributes set on `new_instance` onto the stored row, and return the row.

        Raises:
            ModelNotFoundError: no row has this identifier.
            DuplicateModelError, MissingDependencyError, ...: the database refused it.

        """
        instance, _ = self._update(identifier, new_instance, diff=False)
        return instance

    @postgres_metric_timing()
    def update_with_diff(self, identifier: Any, new_instance: ModelT) -> tuple[ModelT, Delta]:
        """`update`, also returning the `Delta` of the columns that changed."""
        instance, delta = self._update(identifier, new_instance, diff=True)
        return instance, delta or Delta()

    def _update(self, identifier: Any, new_instance: ModelT, *, diff: bool) -> tuple[ModelT, Delta | None]:
        # Retrieve before the savepoint: a missing or invalid id costs no SAVEPOINT round trips.
        instance = self.retrieve(identifier)
        before = Version(instance) if diff else None
        with self.flushing():
            self.merge(instance, new_instance)
            if hasattr(instance, "updated_at") and hasattr(instance, "new_timestamp"):
                instance.updated_at = instance.new_timestamp()
        return instance, (Version(instance) - before if before is not None else None)

    @postgres_metric_timing()
    def replace(self, identifier: Any, new_instance: ModelT) -> ModelT:
        """Update the row with this identifier, or create it (with this id) when missing."""
        try:
            return self.update(identifier, new_instance)
        except ModelNotFoundError:
            new_instance.id = self._identifier(identifier)  # type: ignore[attr-defined]
            return self.create(new_instance)

    def merge(self, instance: ModelT, new_instance: ModelT) -> ModelT:
        """Copy the column attributes explicitly set on `new_instance` onto `instance`.

        Attributes never set on `new_instance` are left alone; `id` and `created_at`
        are never copied. An attribute set to None clears the stored value.

        """
        state = inspect(new_instance)
        for attr in inspect(type(instance)).column_attrs:
            if attr.key in _NEVER_MERGED or attr.key not in state.dict:
                continue
            setattr(instance, attr.key, state.dict[attr.key])
        return instance

    @postgres_metric_timing()
    def delete(self, identifier: Any) -> bool:
        """Delete the row with this identifier with one DELETE; return True.

        Raises:
            ModelNotFoundError: no row has this identifier.
            ReferencedModelError: other rows still reference it.

        """
        return self._delete(self.model_class.id == self._identifier(identifier))  # type: ignore[attr-defined]

    def _delete(self, *criteria: Any, synchronize_session: Any = "evaluate") -> bool:
        with self.flushing():
            count = self._query(*criteria).delete(synchronize_session=synchronize_session)
        if not count:
            raise ModelNotFoundError(f"{self.model_name} not found")
        return True

    def expunge(self, instance: ModelT) -> None:
        """Detach `instance` from the session (later changes to it are not saved)."""
        self.session.expunge(instance)

    # --- reads ------------------------------------------------------------------

    @postgres_metric_timing()
    def retrieve(self, identifier: Any, *criteria: Any) -> ModelT:
        """The row with this identifier (and matching `criteria`).

        Raises:
            ModelNotFoundError: no such row, or `identifier` is not a valid id (no SQL is sent).

        """
        identifier = self._identifier(identifier)
        if criteria or not self._plain_retrieve:
            return self._retrieve(self.model_class.id == identifier, *criteria)  # type: ignore[attr-defined]
        statement = self._statement(
            "retrieve",
            lambda: select(self.model_class).where(self._primary_key == bindparam("identifier")).limit(1),
        )
        with self._translating():
            instance = self.session.execute(statement, {"identifier": identifier}).scalars().first()
        if instance is None:
            raise ModelNotFoundError(f"{self.model_name} not found")
        return instance

    def _statement(self, key: Any, build: Any) -> Select[Any]:
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = build()
        return statement

    def _plain_filters(self, filters: dict[str, Any]) -> dict[str, Any] | None:
        """The auto-filter values to bind, when no hook could change the query; else None."""
        if not self._plain_search:
            return None
        return {key: value for key, value in filters.items() if value is not None and key in self.auto_filter_fields}

    @staticmethod
    def _paged(statement: Select[Any], shape: tuple[Any, ...]) -> Select[Any]:
        if shape[2]:
            statement = statement.offset(bindparam("offset"))
        if shape[3]:
            statement = statement.limit(bindparam("limit"))
        return statement

    def _filtered(self, base: Select[Any], keys: tuple[str, ...]) -> Select[Any]:
        return base.where(*(self.auto_filter_fields[key] == bindparam(f"filter_{key}") for key in keys))

    def _retrieve(self, *criteria: Any) -> ModelT:
        with self._translating():
            instance = self._query(*criteria).first()
        if instance is None:
            raise ModelNotFoundError(f"{self.model_name} not found")
        return instance

    @postgres_metric_timing()
    def count(self, *criteria: Any, **filters: Any) -> int:
        """How many rows match `criteria` and `filters` (see `search`)."""
        plain = None if criteria else self._plain_filters(filters)
        if plain is not None:
            keys = tuple(sorted(plain))
            statement = self._statement(
                ("count", keys),
                lambda: self._filtered(select(func.count(self._primary_key)).select_from(self.model_class), keys),
            )
            with self._translating():
                return int(self.session.execute(statement, {f"filter_{k}": plain[k] for k in keys}).scalar() or 0)
        query = self._filter(self._query(*criteria), **filters)
        with self._translating():
            if query._group_by_clauses or query._distinct:
                return query.count()
            # count(pk) over the same FROM/JOIN/WHERE: what Query.count() counts, minus its subquery.
            return int(query.with_entities(func.count(self._primary_key)).order_by(None).scalar() or 0)

    @postgres_metric_timing()
    def search(
        self,
        *criteria: Any,
        offset: int | None = None,
        limit: int | None = None,
        **filters: Any,
    ) -> list[ModelT]:
        """The rows matching `criteria` and `filters`, ordered, then paginated.

        Keywords naming an auto-filter field filter by equality (None is skipped);
        keywords the store does not know are ignored, so request arguments can be passed
        straight through.

        Raises:
            InvalidInputError: negative or non-integer `offset` / `limit` (before any SQL).

        """
        plain = None if criteria else self._plain_filters(filters)
        if plain is not None:
            offset, limit = _non_negative("offset", offset), _non_negative("limit", limit)
            keys = tuple(sorted(plain))
            shape = ("search", keys, offset is not None, limit is not None)
            statement = self._statement(
                shape, lambda: self._paged(self._filtered(select(self.model_class), keys), shape)
            )
            params = {f"filter_{k}": plain[k] for k in keys} | {"offset": offset, "limit": limit}
            with self._translating():
                return list(self.session.execute(statement, params).scalars().all())
        query = self._order_by(self._filter(self._query(*criteria), **filters), **filters)
        query = self._paginate(query, offset=offset, limit=limit)
        with self._translating():
            return query.all()

    @postgres_metric_timing()
    def search_first(self, *criteria: Any, **filters: Any) -> ModelT | None:
        """The first row `search` would return, or None."""
        results = self.search(*criteria, offset=0, limit=1, **filters)
        return results[0] if results else None

    # --- hooks ------------------------------------------------------------------

    def _query(self, *criteria: Any) -> Query[ModelT]:
        """The base query: this model, filtered by `criteria`."""
        return self.session.query(self.model_class).filter(*criteria)

    def _filter(self, query: Query[ModelT], **filters: Any) -> Query[ModelT]:
        """Apply keyword filters; the base applies the auto filters."""
        return self._auto_filter(query, **filters)

    def _auto_filter(self, query: Query[ModelT], **filters: Any) -> Query[ModelT]:
        for key, value in filters.items():
            column = self.auto_filter_fields.get(key)
            if column is not None and value is not None:
                query = query.filter(column == value)
        return query

    def _order_by(self, query: Query[ModelT], **filters: Any) -> Query[ModelT]:
        """Order search results; the base orders by nothing."""
        return query

    def _paginate(self, query: Query[ModelT], *, offset: int | None = None, limit: int | None = None) -> Query[ModelT]:
        return query.offset(_non_negative("offset", offset)).limit(_non_negative("limit", limit))

    def _identifier(self, identifier: Any) -> Any:
        """`identifier` as the key type; an invalid UUID is ModelNotFoundError (no SQL sent)."""
        if not self._id_is_uuid or isinstance(identifier, UUID):
            return identifier
        try:
            return UUID(str(identifier))
        except ValueError:
            raise ModelNotFoundError(f"{self.model_name} not found") from None


def _overrides(store: Store[Any], *names: str) -> bool:
    return any(getattr(type(store), name) is not getattr(Store, name) for name in names)


def _non_negative(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative integer (got {value!r}).")
    return value

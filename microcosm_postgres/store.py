"""`Store`: create, retrieve, update, delete, search and count one model.

A service subclasses Store once per model and binds it in the graph:

    @binding("company_store")
    class CompanyStore(Store[Company]):
        def __init__(self, graph):
            super().__init__(graph, Company, auto_filter_fields=[Company.name])

Every method works in the session the current `SessionContext` opened for the store's
graph, and raises the typed errors of `microcosm_postgres.errors`. No savepoint is
taken for you (Django's `atomic()` model): a statement the database refuses aborts the
`transaction()` block it ran in, whose later statements (and end) then raise
`TransactionAbortedError` naming what failed first, and nothing of it is committed.
Put a statement that may fail in a nested `transaction()` (a SAVEPOINT) to go on after
it. Outside any block, a refused statement rolls the session back, so the next call
works.

Filter values (`search(name=...)`, `count(...)`) and enum values written are checked
against the column's Python type before any SQL is sent: a value that cannot be one is
`InvalidInputError`, the same on every driver.

"""

from __future__ import annotations

import base64
import enum
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, Generic, NamedTuple, TypeVar, cast
from uuid import UUID

from microcosm.hooks import on_resolve
from sqlalchemy import Select, bindparam, delete, func, insert, inspect, select, tuple_, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import (
    ColumnProperty,
    InstrumentedAttribute,
    Query,
    QueryableAttribute,
    Session,
    make_transient_to_detached,
)
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.exc import StaleDataError

from microcosm_postgres.context import (
    SessionContext,
    aborted_error,
    in_transaction_block,
    note_failure,
    rerun_after_unknown_commit,
)
from microcosm_postgres.diff import Delta, Version
from microcosm_postgres.errors import (
    InvalidInputError,
    ModelConflictError,
    ModelNotFoundError,
    TransactionAbortedError,
    sqlstate_of,
    translating,
)
from microcosm_postgres.identifiers import new_object_id
from microcosm_postgres.metrics import postgres_metric_timing, store_metrics_for
from microcosm_postgres.smart import register_store, store_for

__all__ = [
    "Page",
    "Store",
    "store_for",
]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")

# Attributes `update` never copies from the new instance.
_NEVER_MERGED = frozenset({"id", "created_at"})

# Columns the library fills in at insert: a re-run's values differ from the first run's.
_SET_BY_LIBRARY = frozenset({"created_at", "updated_at"})


def _column_values(instance: Any) -> dict[str, Any]:
    """The column attributes set on `instance` (loaded or assigned), by attribute key."""
    state = inspect(instance)
    return {attr.key: state.dict[attr.key] for attr in state.mapper.column_attrs if attr.key in state.dict}


@dataclass(frozen=True)
class Page(Generic[ModelT]):
    """One page of `Store.search_page`: its rows, and the cursor of the next page (None
    on the last page)."""

    items: list[ModelT]
    next_cursor: str | None


class Store(Generic[ModelT]):
    """Persistence operations for one model class.

    Subclasses customise queries through the underscore hooks: `_query`, `_filter`,
    `_auto_filter`, `_order_by`, `_paginate`, `_retrieve`, `_delete`.

    The hooks take and return SQLAlchemy 2 `Select` statements; every read executes in
    one place (`_rows`). When no hook is overridden, the statement they would build for
    a read's shape (retrieve by id; search and count with auto filters) is built once
    per store with bound parameters and reused: that reuse is where reads get their
    speed. Writes take no savepoint (see the module docstring).

    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # microcosm runs the hook when a graph resolves a component of this class.
        on_resolve(cls, _register_bound)

    def __init__(
        self,
        graph: Any,
        model_class: type[ModelT],
        auto_filter_fields: Sequence[QueryableAttribute[Any] | str] = (),
    ) -> None:
        """
        Args:
            graph: the object graph (its SessionContext supplies the session).
            model_class: the mapped class this store persists.
            auto_filter_fields: columns that `search`/`count` keywords filter by
                equality (`search(name="Acme")`).

        A store bound in the graph (`@binding`) is the one its model's SmartMixin
        shortcuts use in that graph; a store made ad hoc is not, unless it calls
        `assign_model_class_store()`.

        """
        self.graph = graph
        self.model_class = model_class
        mapper = self._mapper = inspect(model_class)
        # For Core statements (no mapper of their own): route them as this model's reads.
        self._bind: dict[str, Any] = {"mapper": mapper}
        self.auto_filter_fields: dict[str, Any] = {}
        for field in auto_filter_fields:
            key = field if isinstance(field, str) else field.key
            self.auto_filter_fields[key] = getattr(model_class, key)
        # microcosm-postgres 3.x's name for the same mapping (one dict: changing one changes both).
        self.auto_filters = self.auto_filter_fields
        self._checkers: dict[str, Callable[[Any], Any]] = {}
        self._enum_columns = {
            attr.key: enum_class
            for attr in mapper.column_attrs
            if (enum_class := _enum_class_of(attr.columns[0].type)) is not None
        }
        self._insert_plan = _insert_plan(mapper)
        self._relationship_keys = frozenset(relationship.key for relationship in mapper.relationships)
        version_column = mapper.version_id_col
        self._version_key = mapper.get_property_by_column(version_column).key if version_column is not None else None
        self._primary_key = mapper.primary_key[0]
        self._primary_keys = frozenset(mapper.primary_key)
        self._id_is_uuid = _python_type(self._primary_key.type) is UUID
        self._plain_retrieve = not _overrides(self, "_query", "_retrieve")
        # update() is one UPDATE ... RETURNING when no hook or version column is involved.
        self._plain_update = (
            self._plain_retrieve and self._version_key is None and not _overrides(self, "retrieve", "merge", "_update")
        )
        self._refreshes_on_update = any(column.onupdate is not None for column in mapper.columns)
        self._plain_search = not _overrides(self, "_query", "_filter", "_auto_filter", "_order_by", "_paginate")
        # Auto filters that are not mapped columns (hybrids, encrypted attributes) build their
        # comparison from the value itself (a beacon is computed from it): never a cached
        # statement with a bound parameter.
        self._computed_filters = frozenset(
            key for key, field in self.auto_filter_fields.items() if not _is_mapped_column(field)
        )
        self._statements: dict[Any, Select[Any]] = {}
        # Every timed call reports through this callable (see microcosm_postgres.metrics).
        self.postgres_store_metrics = store_metrics_for(graph)

    def assign_model_class_store(self) -> None:
        """Make this store the one its model's SmartMixin shortcuts (and `Model.store`)
        use in this store's graph. Stores bound in the graph need not call it."""
        register_store(self)

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
    def flushing(self, action: str = "flush") -> Iterator[Session]:
        """Run a block of writes and flush them, translating errors.

        No savepoint is taken: a refused write aborts the enclosing `transaction()`
        block (put a write that may fail in a nested block to go on after it); outside
        any block the session is rolled back.

        """
        session = self.session
        if not _active(session):
            # A write of this block failed already: refuse before touching the session.
            raise aborted_error(session, None)
        with self._translating(action):
            yield session
            session.flush()

    @contextmanager
    def _translating(self, action: str = "statement") -> Iterator[None]:
        """`errors.translating`, and keep the session usable after a refused statement.

        Outside any `transaction()` block the session is rolled back, so the next call
        works. Inside one, the failure is recorded for the "transaction aborted" error
        that PostgreSQL's refusal of the block's later statements becomes.

        """
        try:
            with translating(model_name=self.model_name):
                yield
        except TransactionAbortedError as error:
            session = self.session
            if not in_transaction_block(session):
                _rollback(session)
            raise aborted_error(session, error) from error.__cause__
        except sa_exc.PendingRollbackError as error:
            # SQLAlchemy refusing after a failed flush in this block: the same fault.
            raise aborted_error(self.session, None) from error
        except StaleDataError as error:
            # An optimistic-locking UPDATE/DELETE matched no row: someone changed it first.
            session = self.session
            if not in_transaction_block(session):
                _rollback(session)
            else:
                note_failure(session, f"{self.model_name}.{action} raised ModelConflictError (stale version)")
            raise ModelConflictError(
                f"{self.model_name} changed in another transaction since this one read it; nothing was "
                "written. Read it again and reapply the change."
            ) from error
        except Exception as error:
            session = self.session
            cause = error if isinstance(error, sa_exc.DBAPIError) else error.__cause__
            if isinstance(cause, sa_exc.DBAPIError) or not _active(session):
                if not in_transaction_block(session):
                    _rollback(session)
                else:
                    sqlstate = sqlstate_of(cause) if cause is not None else None
                    code = f", SQLSTATE {sqlstate}" if sqlstate else ""
                    note_failure(session, f"{self.model_name}.{action} raised {type(error).__name__}{code}")
            raise

    @postgres_metric_timing()
    def create(self, instance: ModelT) -> ModelT:
        """Insert `instance` and return it.

        When `id` is None and the id column holds UUIDs (`Uuid`, or any type whose
        `python_type` is `uuid.UUID`), `new_object_id()` assigns one.

        Safe to run again after an unknown commit outcome: inside
        `transactional(idempotent=True)`, when the block runs again after
        `CommitOutcomeUnknownError` and `instance` had its id before this call (set by the
        caller, or by the first run on the same instance), a stored row with that id and the
        same column values (the timestamps aside) means the first run committed: that row is
        returned, rather than `DuplicateModelError`.

        Raises:
            DuplicateModelError: a unique constraint refused it.
            MissingDependencyError: it references a row that does not exist.
            InvalidInputError: an enum column holds a value that is not one of its names
                (before any SQL), or the database refused a value.
            ModelIntegrityError: other refused values.

        """
        # A re-run after an unknown commit outcome (transactional(idempotent=True)) of a create
        # whose id was set beforehand: the first run may have inserted this very row.
        if getattr(instance, "id", None) is not None and rerun_after_unknown_commit(self.session):
            stored = self._created_before(instance)
            if stored is not None:
                return stored
        self._check_enums(instance)
        with self.flushing("create") as session:
            self._insert(session, [instance])
        return instance

    def _insert(self, session: Session, instances: list[Any], *, attach: bool = True) -> None:
        """INSERT `instances`; with `attach`, make them persistent in `session`.

        For a plain model (one table, Python-side defaults only, no version column) and
        transient instances without relationship values, one Core INSERT of fully
        spelled-out rows, batched by insertmanyvalues (the defaults applied here, so the
        instances hold what was stored), then the instances join the session as loaded:
        no unit-of-work flush. Anything else goes through `session.add_all` and the flush
        (and, without `attach`, leaves the session again after it).

        """
        states = [instance_state(instance) for instance in instances]
        if self._id_is_uuid:
            for instance, state in zip(instances, states, strict=True):
                if state.dict.get("id") is None:
                    instance.id = self.new_object_id()
        plan = self._insert_plan
        if plan is None or not all(self._plain_state(state) for state in states):
            new = [instance for instance, state in zip(instances, states, strict=True) if state.transient]
            session.add_all(instances)
            if not attach:
                session.flush()
                for instance in new:  # instances already in the session stay there
                    session.expunge(instance)
            return
        rows = []
        for state in states:
            values = state.dict
            row = {}
            for key, column, default in plan:
                value = values.get(key)
                if value is None:
                    # Every column set: the instance holds what is stored, nothing is left
                    # expired. Written as the flush would apply a default: no attribute events.
                    value = values[key] = default() if default is not None else None
                row[column] = value
            rows.append(row)
        mapper = self._mapper
        session.execute(insert(mapper.local_table), rows, bind_arguments=self._bind)
        if attach:
            for instance in instances:
                make_transient_to_detached(instance)
            session.add_all(instances)

    def _plain_state(self, state: Any) -> bool:
        return bool(state.transient) and not any(key in state.dict for key in self._relationship_keys)

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
        self._check_enums(new_instance)
        if not diff and self._plain_update:
            values = self._new_values(new_instance)
            if values or self._refreshes_on_update:
                return self._update_returning(self._identifier(identifier), values), None
        instance = self.retrieve(identifier)
        self._check_version(instance, new_instance)
        before = Version(instance) if diff else None
        with self.flushing("update"):
            self.merge(instance, new_instance)
            if hasattr(instance, "updated_at") and hasattr(instance, "new_timestamp"):
                instance.updated_at = instance.new_timestamp()
        return instance, (before - Version(instance) if before is not None else None)

    def _new_values(self, new_instance: Any) -> dict[str, Any]:
        """The column values `merge` would copy from `new_instance`."""
        values = inspect(new_instance).dict
        return {key: values[key] for key in self._columns if key in values and key not in _NEVER_MERGED}

    def _update_returning(self, identifier: Any, values: dict[str, Any]) -> ModelT:
        """One `UPDATE ... RETURNING` of the row (no read first); the session's instance
        for the row, if it has one, is refreshed with what was stored."""
        statement = (
            update(self.model_class).where(self._primary_key == identifier).values(**values).returning(self.model_class)
        )
        with self.flushing("update") as session:
            rows = session.scalars(
                statement, execution_options={"populate_existing": True, "synchronize_session": False}
            ).all()
        if not rows:
            raise ModelNotFoundError(f"{self.model_name} not found")
        return rows[0]

    @postgres_metric_timing()
    def replace(self, identifier: Any, new_instance: ModelT) -> ModelT:
        """Update the row with this identifier, or create it (with this id) when missing.

        With `identifier` None (and no `id` on `new_instance`), create the row with a new id.

        """
        if identifier is None and getattr(new_instance, "id", None) is None:
            return self.create(new_instance)
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
            if attr.key in _NEVER_MERGED or attr.key == self._version_key or attr.key not in state.dict:
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
        """One DELETE of the rows `_query(*criteria)` selects; ModelNotFoundError when none."""
        selected = _as_select(self._query(*criteria))
        if selected.get_final_froms() == [inspect(self.model_class).local_table]:
            statement = delete(self.model_class).where(*_where(selected))
        else:  # the hook joined other tables: delete the rows it selects
            statement = delete(self.model_class).where(
                self._primary_key.in_(selected.with_only_columns(self._primary_key))
            )
            synchronize_session = "fetch"
        with self.flushing("delete") as session:
            result = session.execute(statement, execution_options={"synchronize_session": synchronize_session})
        if not result.rowcount:  # type: ignore[attr-defined]
            raise ModelNotFoundError(f"{self.model_name} not found")
        return True

    # --- bulk writes --------------------------------------------------------------

    @postgres_metric_timing()
    def create_many(self, instances: Sequence[ModelT], *, attach: bool = True) -> list[ModelT]:
        """Insert `instances` in as few statements as the driver allows, and return them.

        One batched INSERT (SQLAlchemy's insertmanyvalues), not one round trip per row.
        Ids are assigned as by `create`, and defaults (`created_at`, ...) are set on the
        instances. A refused batch writes nothing.

        Args:
            attach: make each instance persistent in the session (the default), as
                `create` does. With False the rows are written the same way, and the
                instances hold the stored values (ids and defaults included), but they
                are not in the session: changing one changes nothing, adding one again
                inserts it again (`DuplicateModelError`); `retrieve` a row to work with
                it. Adding a thousand instances to the session costs about as much again
                as inserting their rows: for bulk loads whose rows are not used afterwards
                in the same session, pass False.

        Raises:
            DuplicateModelError, MissingDependencyError, InvalidInputError,
            ModelIntegrityError: as for `create`; the whole batch is refused.

        """
        instances = list(instances)
        for instance in instances:
            self._check_enums(instance)
        with self.flushing("create_many") as session:
            self._insert(session, instances, attach=attach)
        return instances

    @postgres_metric_timing()
    def update_many(self, *criteria: Any, **values: Any) -> int:
        """Set `values` (column name -> value) on every row matching `criteria`, with one
        UPDATE; return how many rows changed. Columns with an `onupdate` (`updated_at`)
        are refreshed. Instances already loaded in the session see the new values.

        Raises:
            InvalidInputError: no criteria (pass `sqlalchemy.true()` to update every row),
                an unknown column, or an enum value that is not one of its names.
            DuplicateModelError, ...: the database refused it.

        """
        if not criteria:
            raise InvalidInputError(
                f"update_many on {self.model_name} needs criteria; pass sqlalchemy.true() to update every row."
            )
        columns = {attr.key for attr in inspect(self.model_class).column_attrs}
        unknown = sorted(set(values) - columns)
        if unknown:
            raise InvalidInputError(f"{self.model_name} has no column(s) {', '.join(unknown)} to update.")
        for key, enum_class in self._enum_columns.items():
            if values.get(key) is not None:
                values[key] = _enum_member(enum_class, values[key], f"{self.model_name}.{key}")
        statement = update(self.model_class).where(*criteria).values(**values)
        with self.flushing("update_many") as session:
            result = session.execute(statement, execution_options={"synchronize_session": "fetch"})
        return int(result.rowcount)  # type: ignore[attr-defined]

    @postgres_metric_timing()
    def delete_many(self, *criteria: Any) -> int:
        """Delete every row matching `criteria` with one DELETE; return how many went.

        Raises:
            InvalidInputError: no criteria (pass `sqlalchemy.true()` to delete every row).
            ReferencedModelError: other rows still reference one of them (nothing is deleted).

        """
        if not criteria:
            raise InvalidInputError(
                f"delete_many on {self.model_name} needs criteria; pass sqlalchemy.true() to delete every row."
            )
        statement = delete(self.model_class).where(*criteria)
        with self.flushing("delete_many") as session:
            result = session.execute(statement, execution_options={"synchronize_session": "fetch"})
        return int(result.rowcount)  # type: ignore[attr-defined]

    @postgres_metric_timing()
    def upsert(
        self,
        instance: ModelT,
        *,
        on: Sequence[InstrumentedAttribute[Any] | str],
        update: Sequence[InstrumentedAttribute[Any] | str] | None = None,
    ) -> ModelT:
        """Insert `instance`'s row, or, when a row with the same `on` columns exists, update
        that row's `update` columns (None: leave it as it is); return the stored row.

        One `INSERT ... ON CONFLICT (on) DO UPDATE / DO NOTHING`: concurrent upserts of
        the same key neither fail nor duplicate. The returned row is the session's
        instance for it (not `instance`, whose values were copied).

        Raises:
            InvalidInputError: `on` or `update` names no column of the model.
            DuplicateModelError, ...: another constraint refused it.

        """
        return self.upsert_many([instance], on=on, update=update)[0]

    @postgres_metric_timing()
    def upsert_many(
        self,
        instances: Sequence[ModelT],
        *,
        on: Sequence[InstrumentedAttribute[Any] | str],
        update: Sequence[InstrumentedAttribute[Any] | str] | None = None,
    ) -> list[ModelT]:
        """`upsert` for many instances in one statement; returns the stored rows in the
        order of `instances`.

        Raises:
            InvalidInputError: as `upsert`, or two instances with the same `on` values.
            DuplicateModelError, ...: another constraint refused it (nothing is written).

        """
        instances = list(instances)
        if not instances:
            return []
        keys = self._column_keys(on, "on")
        updated = self._column_keys(update or (), "update")
        rows = []
        for instance in instances:
            self._check_enums(instance)
            rows.append(self._row_values(instance))
        identities = [tuple(row.get(key) for key in keys) for row in rows]
        if len(set(identities)) != len(identities):
            raise InvalidInputError(
                f"upsert_many on {self.model_name} got two rows with the same ({', '.join(keys)}); pass each key once."
            )
        columns = [getattr(self.model_class, key) for key in keys]
        with self.flushing("upsert") as session:
            # One INSERT per set of given columns (usually one): the others get their defaults.
            groups: dict[frozenset[str], list[dict[str, Any]]] = {}
            for row in rows:
                groups.setdefault(frozenset(row), []).append(row)
            for group in groups.values():
                session.execute(self._upsert_statement(group, keys, updated, do_update=bool(update)))
            stored = session.scalars(
                select(self.model_class).where(tuple_(*columns).in_(identities)),
                execution_options={"populate_existing": True},
            ).all()
        by_key = {tuple(getattr(row, key) for key in keys): row for row in stored}
        return [by_key[identity] for identity in identities]

    def _upsert_statement(
        self, rows: list[dict[str, Any]], keys: tuple[str, ...], updated: tuple[str, ...], *, do_update: bool
    ) -> Any:
        statement = pg_insert(self.model_class).values(rows)
        if not do_update:
            return statement.on_conflict_do_nothing(index_elements=list(keys))
        assignments = {key: statement.excluded[key] for key in updated}
        if "updated_at" in self._columns and "updated_at" not in assignments:
            assignments["updated_at"] = statement.excluded["updated_at"]
        return statement.on_conflict_do_update(index_elements=list(keys), set_=assignments)

    @property
    def _columns(self) -> dict[str, Any]:
        return {attr.key: attr for attr in inspect(self.model_class).column_attrs}

    def _column_keys(self, columns: Sequence[InstrumentedAttribute[Any] | str], what: str) -> tuple[str, ...]:
        keys = tuple(column if isinstance(column, str) else column.key for column in columns)
        unknown = sorted(set(keys) - set(self._columns))
        if unknown or (what == "on" and not keys):
            raise InvalidInputError(
                f"{what}= must name columns of {self.model_name} (got {', '.join(unknown) or 'none'})."
            )
        return keys

    def _row_values(self, instance: Any) -> dict[str, Any]:
        """The column values set on `instance`, with an id assigned as `create` does."""
        values = inspect(instance).dict
        row = {key: values[key] for key in self._columns if key in values}
        if self._id_is_uuid and row.get("id") is None:
            row["id"] = self.new_object_id()
        return row

    def expunge(self, instance: ModelT) -> None:
        """Detach `instance` from the session (later changes to it are not saved)."""
        self.session.expunge(instance)

    # --- reads ------------------------------------------------------------------

    @postgres_metric_timing()
    def retrieve(self, identifier: Any, *criteria: Any, for_update: bool | str = False) -> ModelT:
        """The row with this identifier (and matching `criteria`).

        Args:
            for_update: lock the row until the transaction ends (`SELECT ... FOR UPDATE`):
                True waits for another transaction's lock, "nowait" raises instead,
                "skip_locked" finds no row when it is locked. A locking read skips an
                overridden `_retrieve` hook (it builds on `_query`).

        Raises:
            ModelNotFoundError: no such row, or `identifier` is not a valid id (no SQL is sent).
            ModelConflictError: `for_update="nowait"` and another transaction holds the lock.
            InvalidInputError: an unknown `for_update` value (before any SQL).

        """
        lock = _lock_options(for_update)
        identifier = self._identifier(identifier)
        if lock is None and _overrides(self, "_retrieve"):
            return self._retrieve(self._primary_key == identifier, *criteria)
        if criteria or not self._plain_retrieve:
            statement, params = _as_select(self._query(self._primary_key == identifier, *criteria)).limit(1), None
        else:
            statement = self._statement(
                ("retrieve", lock),
                lambda: self._locked(
                    select(self.model_class).where(self._primary_key == bindparam("identifier")).limit(1), lock
                ),
            )
            params = {"identifier": identifier}
        if params is None and lock is not None:
            statement = self._locked(statement, lock)
        rows = self._rows(statement, params, action="retrieve", unique=params is None)
        if not rows:
            raise ModelNotFoundError(f"{self.model_name} not found")
        return rows[0]

    def _rows(
        self,
        statement: Select[Any],
        params: dict[str, Any] | None,
        *,
        action: str,
        unique: bool = False,
    ) -> list[ModelT]:
        """Run a read: the one place every read executes (`unique` as `Query.all()` did,
        for statements hooks built: joined eager loads and joins yield each row once)."""
        with self._translating(action):
            result = self.session.execute(statement, params).scalars()
            return list((result.unique() if unique else result).all())

    def _statement(self, key: Any, build: Any) -> Select[Any]:
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = build()
        return statement

    def _plain_filters(self, filters: dict[str, Any]) -> dict[str, Any] | None:
        """The auto-filter values to bind, when no hook could change the query; else None."""
        if not self._plain_search or any(key in self._computed_filters for key in filters):
            return None
        return {
            key: self._check_filter(key, value)
            for key, value in filters.items()
            if value is not None and key in self.auto_filter_fields
        }

    @staticmethod
    def _paged(statement: Select[Any], shape: tuple[Any, ...]) -> Select[Any]:
        if shape[2]:
            statement = statement.offset(bindparam("offset"))
        if shape[3]:
            statement = statement.limit(bindparam("limit"))
        return statement

    def _filtered(self, base: Select[Any], keys: tuple[str, ...]) -> Select[Any]:
        return base.where(*(self.auto_filter_fields[key] == bindparam(f"filter_{key}") for key in keys))

    def _counted(self, keys: tuple[str, ...]) -> Select[Any]:
        """count(pk) filtered by the auto filters `keys`, on the table's own columns: a Core
        statement, which runs without the ORM's per-execution setup (no entity to load)."""
        table = inspect(self.model_class).local_table
        columns = [_table_column(self.auto_filter_fields[key]) for key in keys]
        return (
            select(func.count(self._primary_key))
            .select_from(table)
            .where(*(column == bindparam(f"filter_{key}") for column, key in zip(columns, keys, strict=True)))
        )

    def _retrieve(self, *criteria: Any) -> ModelT:
        """The one row `_query(*criteria)` selects (a 3.x hook; `retrieve` calls an override)."""
        rows = self._rows(_as_select(self._query(*criteria)).limit(1), None, action="retrieve", unique=True)
        if not rows:
            raise ModelNotFoundError(f"{self.model_name} not found")
        return rows[0]

    @postgres_metric_timing()
    def count(self, *criteria: Any, **filters: Any) -> int:
        """How many rows match `criteria` and `filters` (see `search`)."""
        plain = None if criteria else self._plain_filters(filters)
        if plain is not None:
            keys = tuple(sorted(plain))
            statement = self._statement(
                ("count", keys),
                lambda: self._counted(keys),
            )
            # Core statements carry no mapper: name it, so that a routing session picks this
            # model's engine (`__engine__`), as it does for the ORM reads.
            with self._translating("count"):
                params = {f"filter_{k}": plain[k] for k in keys}
                return int(self.session.execute(statement, params, bind_arguments=self._bind).scalar() or 0)
        selected = _as_select(self._filter(self._query(*criteria), **filters)).order_by(None)
        # Count what the hooks select, as Query.count() did (joins, DISTINCT, GROUP BY included).
        statement = select(func.count()).select_from(selected.subquery())
        with self._translating("count"):
            return int(self.session.execute(statement, bind_arguments=self._bind).scalar() or 0)

    @postgres_metric_timing()
    def search(
        self,
        *criteria: Any,
        offset: int | None = None,
        limit: int | None = None,
        for_update: bool | str = False,
        **filters: Any,
    ) -> list[ModelT]:
        """The rows matching `criteria` and `filters`, ordered, then paginated.

        Keywords naming an auto-filter field filter by equality (None is skipped);
        keywords the store does not know are ignored, so request arguments can be passed
        straight through.

        Args:
            for_update: lock the rows returned until the transaction ends: True waits
                for other transactions' locks, "nowait" raises instead, "skip_locked"
                leaves locked rows out (a job queue: each worker takes rows no other
                worker holds).

        Raises:
            InvalidInputError: negative or non-integer `offset` / `limit`, a filter value
                the column cannot hold, an unknown `for_update` (all before any SQL).
            ModelConflictError: `for_update="nowait"` and another transaction holds a lock.

        """
        lock = _lock_options(for_update)
        plain = None if criteria else self._plain_filters(filters)
        if plain is not None:
            offset, limit = _non_negative("offset", offset), _non_negative("limit", limit)
            keys = tuple(sorted(plain))
            shape = ("search", keys, offset is not None, limit is not None, for_update)
            statement = self._statement(
                shape, lambda: self._locked(self._paged(self._filtered(select(self.model_class), keys), shape), lock)
            )
            params = {f"filter_{k}": plain[k] for k in keys} | {"offset": offset, "limit": limit}
            return self._rows(statement, params, action="search")
        selected = self._order_by(self._filter(self._query(*criteria), **filters), **filters)
        selected = self._locked(_as_select(self._paginate(selected, offset=offset, limit=limit)), lock)
        return self._rows(selected, None, action="search", unique=True)

    @staticmethod
    def _locked(statement: Select[Any], lock: _Lock | None) -> Select[Any]:
        return (
            statement if lock is None else statement.with_for_update(nowait=lock.nowait, skip_locked=lock.skip_locked)
        )

    @postgres_metric_timing()
    def search_page(
        self,
        *criteria: Any,
        after: str | None = None,
        limit: int = 100,
        **filters: Any,
    ) -> Page[ModelT]:
        """One page of the rows matching `criteria` and `filters`, by keyset pagination.

        Rows come ordered by a stable key, `created_at, id` (the primary key for models
        without `created_at`); `after` is the `next_cursor` of the previous page (None:
        the first page). Each page costs the same at any depth (an index on the key makes
        it one index range scan; OFFSET reads and discards every earlier row), and no
        COUNT is run. Rows inserted behind the cursor are not seen by later pages.

        Raises:
            InvalidInputError: a cursor this store did not make, or a `limit` that is not
                a positive integer (before any SQL).

        """
        limit = _non_negative("limit", limit) or 0
        if limit < 1:
            raise InvalidInputError("limit must be a positive integer for search_page.")
        keys = self._keyset
        selected = _as_select(self._filter(self._query(*criteria), **filters))
        if after is not None:
            selected = selected.where(tuple_(*keys) > tuple_(*self._decode_cursor(after)))
        selected = selected.order_by(None).order_by(*keys).limit(limit + 1)
        rows = self._rows(selected, None, action="search_page", unique=True)
        if len(rows) <= limit:
            return Page(rows, None)
        items = rows[:limit]
        return Page(items, self._encode_cursor(items[-1]))

    @property
    def _keyset(self) -> list[Any]:
        columns = {attr.key: attr for attr in inspect(self.model_class).column_attrs}
        keys = [key for key in ("created_at",) if key in columns]
        keys += [attr.key for attr in columns.values() if attr.columns[0] in self._primary_keys]
        return [getattr(self.model_class, key) for key in keys]

    def _encode_cursor(self, row: Any) -> str:
        values = [_json_value(getattr(row, column.key)) for column in self._keyset]
        return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")

    def _decode_cursor(self, cursor: str) -> list[Any]:
        keyset = self._keyset
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            values = json.loads(text)
            if not isinstance(values, list) or len(values) != len(keyset):
                raise ValueError("wrong shape")
            return [
                _checker(column.type, f"cursor of {self.model_name}")(value)
                for column, value in zip(keyset, values, strict=True)
            ]
        except (ValueError, TypeError, UnicodeDecodeError, InvalidInputError):
            raise InvalidInputError(
                f"This is not a page cursor of {self.model_name}: pass the next_cursor search_page returned."
            ) from None

    @postgres_metric_timing()
    def search_first(self, *criteria: Any, offset: int | None = None, **filters: Any) -> ModelT | None:
        """The first row `search` would return (after skipping `offset` rows), or None."""
        filters.pop("limit", None)
        results = self.search(*criteria, offset=offset if offset is not None else 0, limit=1, **filters)
        return results[0] if results else None

    # --- hooks ------------------------------------------------------------------
    #
    # Each hook takes and returns a SQLAlchemy 2 `Select` (typed Any: a 3.x override may
    # still build and return a `Query`, which the store turns into its statement). A 3.x
    # override calling `.filter(...)`, `.join(...)`, `.order_by(...)`, `.offset(...)` or
    # `.limit(...)` on what it gets keeps working: `Select` has them all.

    def _query(self, *criteria: Any) -> Any:
        """The base statement: this model, filtered by `criteria`."""
        return select(self.model_class).where(*criteria)

    def _filter(self, query: Any, **filters: Any) -> Any:
        """Apply keyword filters; the base applies the auto filters."""
        return self._auto_filter(query, **filters)

    def _auto_filter(self, query: Any, **filters: Any) -> Any:
        """Filter by equality on the auto-filter fields named in `filters` (None skipped)."""
        for key, value in filters.items():
            column = self.auto_filter_fields.get(key)
            if column is not None and value is not None:
                query = query.filter(column == self._check_filter(key, value))
        return query

    def _order_by(self, query: Any, **filters: Any) -> Any:
        """Order search results; the base orders by nothing."""
        return query

    def _paginate(self, query: Any, *, offset: int | None = None, limit: int | None = None) -> Any:
        """Apply `offset` and `limit` (InvalidInputError for negative or non-integer ones)."""
        return query.offset(_non_negative("offset", offset)).limit(_non_negative("limit", limit))

    def _check_filter(self, key: str, value: Any) -> Any:
        """`value` as the auto-filter column `key` holds it; InvalidInputError if it cannot be one."""
        checker = self._checkers.get(key)
        if checker is None:
            column = self.auto_filter_fields[key]
            checker = self._checkers[key] = _checker(
                getattr(column, "type", None), f"filter {key!r} of {self.model_name}"
            )
        return checker(value)

    def _check_version(self, instance: Any, new_instance: Any) -> None:
        """ModelConflictError (before any write) when `new_instance` carries a version
        (optimistic locking) other than the stored row's."""
        if self._version_key is None:
            return
        given = inspect(new_instance).dict.get(self._version_key)
        stored = getattr(instance, self._version_key)
        if given is not None and given != stored:
            raise ModelConflictError(
                f"{self.model_name} changed since it was read (version {given}, now {stored}); "
                "nothing was written. Read it again and reapply the change."
            )

    def _check_enums(self, instance: Any) -> None:
        """InvalidInputError (before any SQL) when an enum column of `instance` holds a value
        that is neither a member nor a member's name: such a value must never be stored."""
        if not self._enum_columns:
            return
        values = instance_state(instance).dict
        for key, enum_class in self._enum_columns.items():
            value = values.get(key)
            if value is not None:
                _enum_member(enum_class, value, f"{self.model_name}.{key}")

    def _identifier(self, identifier: Any) -> Any:
        """`identifier` as the key type; an invalid UUID is ModelNotFoundError (no SQL sent)."""
        if not self._id_is_uuid or isinstance(identifier, UUID):
            return identifier
        try:
            return UUID(str(identifier))
        except ValueError:
            raise ModelNotFoundError(f"{self.model_name} not found") from None


def _register_bound(store: Store[Any]) -> None:
    """A store the graph resolved (a bound component) registers for SmartMixin, the first per model winning."""
    register_store(store, replace=False)


on_resolve(Store, _register_bound)


class _Lock(NamedTuple):
    nowait: bool = False
    skip_locked: bool = False


_LOCK_MODES: dict[Any, _Lock] = {True: _Lock(), "nowait": _Lock(nowait=True), "skip_locked": _Lock(skip_locked=True)}


def _lock_options(for_update: Any) -> _Lock | None:
    """`with_for_update` keywords for a `for_update` argument (None: no lock)."""
    if for_update is False or for_update is None:
        return None
    if isinstance(for_update, (bool, str)) and for_update in _LOCK_MODES:
        return _LOCK_MODES[for_update]
    raise InvalidInputError(f"for_update must be True, 'nowait' or 'skip_locked' (got {for_update!r}).")


def _active(session: Session) -> bool:
    """False when SQLAlchemy deactivated the session's transaction (a failed flush)."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    return transaction is None or transaction.is_active


def _rollback(session: Session) -> None:
    """Roll the session back after a refused statement; a failing rollback (the
    connection is gone) must not hide the error that caused it."""
    try:
        session.rollback()
    except Exception:
        logger.warning("rollback after a failed statement failed", exc_info=True)


def _python_type(column_type: Any) -> type | None:
    try:
        python_type = column_type.python_type
    except (AttributeError, NotImplementedError):
        return None
    return python_type if isinstance(python_type, type) else None


def _enum_class_of(column_type: Any) -> type[enum.Enum] | None:
    enum_class = getattr(column_type, "enum_class", None)
    return enum_class if isinstance(enum_class, type) and issubclass(enum_class, enum.Enum) else None


def _insert_plan(mapper: Any) -> list[tuple[str, str, Callable[[], Any] | None]] | None:
    """(attribute, column key, default maker) for every column of a model `Store._insert`
    can write with one bulk INSERT; None when it cannot (inheritance, a version column, a
    server default or a SQL-expression / sequence / context-dependent default)."""
    if mapper.inherits is not None or mapper.version_id_col is not None or len(mapper.tables) != 1:
        return None
    plan: list[tuple[str, str, Callable[[], Any] | None]] = []
    for attr in mapper.column_attrs:
        if len(attr.columns) != 1:
            return None
        column = attr.columns[0]
        if column.server_default is not None or column.table is not mapper.local_table:
            return None
        default = column.default
        if default is None:
            plan.append((attr.key, column.key, None))
        elif default.is_scalar:
            plan.append((attr.key, column.key, partial(_same, default.arg)))
        elif default.is_callable and not _takes_context(default):
            plan.append((attr.key, column.key, partial(default.arg, None)))
        else:
            return None
    return plan


def _same(value: Any) -> Any:
    return value


def _takes_context(default: Any) -> bool:
    """Whether a callable column default wants SQLAlchemy's execution context (we have none).

    SQLAlchemy wraps a zero-argument default (keeping it as `__wrapped__`) so that it
    accepts the context; a default that takes the context itself is left unwrapped.

    """
    return not hasattr(default.arg, "__wrapped__")


def _json_value(value: Any) -> Any:
    """A key value as JSON can hold it (read back through the column's checker)."""
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _enum_member(enum_class: type[enum.Enum], value: Any, subject: str) -> enum.Enum:
    if isinstance(value, enum_class):
        return value
    if isinstance(value, str) and value in enum_class.__members__:
        return enum_class[value]
    raise InvalidInputError(
        f"{_shown(value)} is not a {enum_class.__name__} name for {subject}; "
        f"allowed names: {', '.join(enum_class.__members__)}."
    )


def _from_text(python_type: type) -> Callable[[str], Any] | None:
    """How to read a string as `python_type`, for the scalar types a filter may hold."""
    if python_type is UUID:
        return UUID
    if python_type is int:
        return lambda text: int(text.strip())
    if python_type in (float, Decimal):
        return python_type
    if python_type in (datetime, date, time):
        return python_type.fromisoformat
    return None


# Column Python types whose filter values are checked; other types (JSON, arrays, custom)
# go to the database as given.
_CHECKED_TYPES = (str, int, float, Decimal, bool, UUID, datetime, date, time, bytes)


def _a(name: str) -> str:
    """`name` with its indefinite article, for messages: "an int", "a str", "a UUID", "an Enum"."""
    return f"{'an' if name[:1] in 'aeioAEIO' else 'a'} {name}"


def _checker(column_type: Any, subject: str) -> Callable[[Any], Any]:
    """A function returning a filter value as the column holds it, or raising InvalidInputError."""
    enum_class = _enum_class_of(column_type)
    if enum_class is not None:
        return lambda value: _enum_member(enum_class, value, subject)
    python_type = _python_type(column_type)
    if python_type is None or python_type not in _CHECKED_TYPES:
        return lambda value: value
    from_text = _from_text(python_type)
    numbers = (int, float, Decimal) if python_type in (float, Decimal) else ()

    def check(value: Any) -> Any:
        if isinstance(value, python_type) and (python_type is bool or not isinstance(value, bool)):
            return value
        if numbers and isinstance(value, numbers) and not isinstance(value, bool):
            return value
        if from_text is not None and isinstance(value, str):
            try:
                return from_text(value)
            except (ValueError, InvalidOperation):
                pass
        raise InvalidInputError(
            f"{subject} must be {_a(python_type.__name__)} (got {_a(type(value).__name__)} that is not one). "
            "Pass a value of the column's type."
        )

    return check


def _is_mapped_column(attribute: Any) -> bool:
    """Whether `attribute` is a mapped column attribute (not a hybrid or other descriptor)."""
    try:
        prop = attribute.property
    except (AttributeError, NotImplementedError):  # a hybrid's comparator has no property
        return False
    return isinstance(prop, ColumnProperty)


def _table_column(attribute: Any) -> Any:
    """The table column behind a mapped column attribute (the attribute itself otherwise)."""
    columns = getattr(getattr(attribute, "property", None), "columns", None)
    return columns[0] if columns and len(columns) == 1 else attribute


def _as_select(statement: Any) -> Select[Any]:
    """A hook's result as a `Select` (a 3.x override may return a `Query`)."""
    selected = statement.statement if isinstance(statement, Query) else statement
    return cast(Select[Any], selected)


def _where(statement: Select[Any]) -> tuple[Any, ...]:
    return () if statement.whereclause is None else (statement.whereclause,)


def _overrides(store: Store[Any], *names: str) -> bool:
    return any(getattr(type(store), name) is not getattr(Store, name) for name in names)


def _non_negative(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative integer (got {value!r}).")
    return value

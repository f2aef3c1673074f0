"""`TemporaryTable`: a PostgreSQL temporary table shaped like a real one, for bulk loads and upserts.

    table = create_transient_table(Company)     # not in the database yet
    table.create()                              # CREATE TEMPORARY TABLE ... ON COMMIT DROP
    table.insert_many(companies)                # COPY on both drivers
    table.upsert_into_on_conflict_do_nothing(Company)

Each temporary table has a `MetaData` of its own: it never appears in `Model.metadata`
(so `create_all` and autogenerate never see it), and two of them never share an object.
It lives on the connection of the session it was created in (see `create`), and every
statement runs there, in that session's transaction.

"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from operator import itemgetter
from typing import Any, cast
from uuid import UUID

from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, insert, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.schema import ColumnDefault, CreateTable, DropTable
from sqlalchemy.sql import FromClause

from microcosm_postgres.context import SessionContext
from microcosm_postgres.errors import translating
from microcosm_postgres.naming import check_identifier
from microcosm_postgres.types import Serial

__all__ = [
    "TemporaryTable",
    "create_temporary_table",
    "create_transient_table",
]


# ON COMMIT actions PostgreSQL accepts (None: the default, keep the rows until the session ends).
_ON_COMMIT = {None, "preserve_rows", "delete_rows", "drop"}


class _NotCopyable(Exception):
    """A value the COPY text format writer does not know how to render."""


def _source_table(source: Any) -> Table:
    if isinstance(source, Table):
        return source
    if isinstance(source, TemporaryTable):
        return source.table
    mapper = inspect(source, raiseerr=False)
    local_table = getattr(mapper, "local_table", None)
    if isinstance(local_table, Table):
        return local_table
    raise TypeError(f"Expected a mapped model class or a Table, got {source!r}.")


def _column_like(column: Column[Any]) -> Column[Any]:
    """A bare copy of `column`: same name and type, nullable, no constraints or server defaults.

    A SERIAL type becomes a plain integer (a temporary table must not make sequences);
    a Python-side default is kept, and `insert_many` applies it to rows that lack the value.

    """
    column_type = column.type
    if isinstance(column_type, Serial):
        column_type = BigInteger() if column_type.big else Integer()
    default = column.default
    kept_default = (
        default.arg if isinstance(default, ColumnDefault) and (default.is_scalar or default.is_callable) else None
    )
    return Column(column.name, column_type, key=column.key, nullable=True, default=kept_default)


def create_temporary_table(from_table: Any, name: str | None = None, on_commit: str | None = None) -> TemporaryTable:
    """A `TemporaryTable` with the columns of `from_table` (a model class or a Table).

    Nothing is sent to the database: call `.create()` in a SessionContext.

    Args:
        from_table: the model class or Table whose columns to copy.
        name: the table's name (default: `temporary_<source table name>`).
        on_commit: what PostgreSQL does with the table at commit: None (keep it for the
            session's connection), "preserve_rows", "delete_rows" or "drop".

    Raises:
        TypeError: `from_table` is neither a mapped class nor a Table.
        ValueError: `on_commit` is not one of the above.
        InvalidNameError: the name is longer than PostgreSQL's 63-byte limit.

    """
    source = _source_table(from_table)
    if on_commit not in _ON_COMMIT:
        raise ValueError(f"on_commit must be one of {sorted(str(value) for value in _ON_COMMIT)}, got {on_commit!r}.")
    table_name = check_identifier(name or f"temporary_{source.name}", what="temporary table name")
    options: dict[str, Any] = {"postgresql_on_commit": on_commit} if on_commit else {}
    table = Table(
        table_name,
        MetaData(),
        *(_column_like(column) for column in source.columns),
        prefixes=["TEMPORARY"],
        **options,
    )
    return TemporaryTable(table, source)


def create_transient_table(from_table: Any, name: str | None = None) -> TemporaryTable:
    """`create_temporary_table(from_table, name, on_commit="drop")`: the table goes at commit.

    Raises:
        TypeError, InvalidNameError: see `create_temporary_table`.

    """
    return create_temporary_table(from_table, name=name, on_commit="drop")


class TemporaryTable:
    """A temporary table: bulk insert into it, copy rows into it, upsert its rows elsewhere.

    Usable wherever SQLAlchemy takes a table (`select(temporary_table)`); `.table` is the
    `sqlalchemy.Table`, `.c` its columns. Every method returns the number of rows it
    wrote, and runs in the session the table was created in.

    """

    def __init__(self, table: Table, source: Table) -> None:
        self.table = table
        self.source = source
        self._session: Session | None = None
        self._attributes_by_class: dict[type, tuple[Callable[[Any], Sequence[Any]], list[tuple[str, str]]]] = {}
        self._getter = _getter([column.key for column in table.columns])
        # column key -> a function giving the value of a row that lacks it (default or None)
        self._defaults: dict[str, Callable[[], Any]] = {column.key: _default_for(column) for column in table.columns}

    def __repr__(self) -> str:
        return f"<TemporaryTable {self.name!r} like {self.source.name!r}>"

    def __clause_element__(self) -> Table:
        return self.table

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def c(self) -> Any:
        return self.table.c

    columns = c

    @property
    def session(self) -> Session:
        """The session the table was created in.

        Raises:
            RuntimeError: `create()` was not called.

        """
        if self._session is None:
            raise RuntimeError(f"Temporary table {self.name!r} does not exist yet: call .create() first.")
        return self._session

    # --- lifetime ---------------------------------------------------------------

    def create(self, session: Session | None = None) -> TemporaryTable:
        """CREATE TEMPORARY TABLE on `session` (default: the current SessionContext's); returns self.

        Raises:
            SessionNotOpenError: no session given and no SessionContext open.
            RuntimeError: this table was already created.
            InvalidNameError: a table of this name already exists on the connection (e.g.
                an enclosing `transient()` of the same model): pass another `name`.
            PersistenceError: another database fault.

        """
        if self._session is not None:
            raise RuntimeError(f"Temporary table {self.name!r} was already created; make a new one.")
        session = session if session is not None else SessionContext.session
        with translating():
            # 42P07 (a table of this name exists on the connection) is InvalidNameError.
            session.execute(CreateTable(self.table))
        self._session = session
        return self

    def drop(self) -> None:
        """DROP the table now, if it still exists (a transient one has gone at commit)."""
        with translating():
            self.session.execute(DropTable(self.table, if_exists=True))

    # --- writes -----------------------------------------------------------------

    def insert_many(self, items: Iterable[Any]) -> int:
        """Insert `items` (model instances or mappings of column key -> value); return how many.

        Values are read by column: model attributes (loaded when expired), or mapping keys
        (column keys; other keys are ignored). A value never given takes the column's
        Python-side default (a callable is called without an execution context), else
        NULL. Rows go in with COPY on both drivers; values COPY's text form cannot carry
        (JSON on psycopg 3, binary, intervals) go in with one multi-row INSERT instead.
        An empty `items` sends nothing and returns 0.

        Raises:
            InvalidInputError: the database refused a value.
            PersistenceError: another database fault.

        """
        keys = [column.key for column in self.table.columns]
        rows = [self._row(item, keys) for item in items]
        if not rows:
            return 0
        session = self.session
        with translating():
            connection = session.connection()
            try:
                data = self._copy_text(rows, connection.dialect)
            except _NotCopyable:
                session.execute(insert(self.table), [dict(zip(keys, row, strict=True)) for row in rows])
                return len(rows)
            self._copy(connection, data)
        return len(rows)  # COPY writes every row or fails

    def select_from(self, source: Any, *criteria: Any, columns: Sequence[str] | None = None) -> int:
        """INSERT INTO this table the rows of `source` (a model class, Table, or `select()`)
        that match `criteria`; return how many.

        Args:
            columns: the column names to copy (default: every column both have, by name;
                no key column is assumed).

        Raises:
            ValueError: the two have no column in common, or `columns` names one they do not share.
            PersistenceError: the database refused.

        """
        from_clause = _from_clause(source)
        pairs = _shared(self.table, from_clause, columns)
        query = select(*(theirs for _, theirs in pairs)).where(*criteria)
        statement = insert(self.table).from_select([mine for mine, _ in pairs], query)
        return self._execute(statement)

    def upsert_into_on_conflict_do_nothing(self, table: Any, *, columns: Sequence[str] | None = None) -> int:
        """INSERT this table's rows into `table` (a model class or Table), skipping rows that
        conflict with a unique constraint; return how many were inserted.

        Args:
            columns: the column names to insert (default: every column both tables have).
                Leave out those the database should fill (SERIAL, server defaults): the
                temporary table has no such defaults, and would insert its NULLs.

        Raises:
            ValueError: `columns` names a column the tables do not share.
            MissingDependencyError, ModelIntegrityError, ...: the database refused a row
                (nothing is inserted then).

        """
        return self._execute(self._upsert(table, columns).on_conflict_do_nothing())

    def upsert_into_on_conflict_do_update(
        self, table: Any, *, columns: Sequence[str] | None = None, **on_conflict_kwargs: Any
    ) -> int:
        """INSERT this table's rows into `table`, updating the rows they conflict with;
        return how many were inserted or updated.

        Args:
            table: a model class or Table.
            columns: the column names to insert (see `upsert_into_on_conflict_do_nothing`).
            **on_conflict_kwargs: PostgreSQL's `ON CONFLICT ... DO UPDATE` (SQLAlchemy's
                `on_conflict_do_update`): `index_elements` or `constraint`, `index_where`,
                `set_`, `where`. `set_` may also be a sequence of column names, each set
                from the incoming row (`EXCLUDED`); it defaults to every column the two
                tables share except the primary key, `created_at` and the conflict's
                `index_elements` (as `Store.update` never changes `id` and `created_at`).

        Raises:
            ValueError: neither `index_elements` nor `constraint` is given, or `columns`
                names a column the tables do not share.
            MissingDependencyError, ModelIntegrityError, ...: the database refused a row.

        """
        if "index_elements" not in on_conflict_kwargs and "constraint" not in on_conflict_kwargs:
            raise ValueError("ON CONFLICT DO UPDATE needs a conflict target: pass index_elements=[...] or constraint=.")
        statement = self._upsert(table, columns)
        set_ = on_conflict_kwargs.pop("set_", None)
        if set_ is None:
            target = _source_table(table)
            skip = {column.name for column in target.primary_key.columns} | {"created_at"}
            skip |= {getattr(element, "name", element) for element in on_conflict_kwargs.get("index_elements") or ()}
            set_ = [column.name for column in statement.excluded if column.name not in skip]
        if not isinstance(set_, Mapping):
            set_ = {name: statement.excluded[name] for name in set_}
        return self._execute(statement.on_conflict_do_update(set_=set_, **on_conflict_kwargs))

    def upsert_into(self, table: Any) -> int:
        """Deprecated: use `upsert_into_on_conflict_do_nothing` (which this calls)."""
        warnings.warn(
            "TemporaryTable.upsert_into() is deprecated; call upsert_into_on_conflict_do_nothing() "
            "(or upsert_into_on_conflict_do_update()) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.upsert_into_on_conflict_do_nothing(table)

    # --- internals --------------------------------------------------------------

    def _upsert(self, table: Any, columns: Sequence[str] | None) -> Any:
        target = _source_table(table)
        pairs = _shared(self.table, target, columns)
        query = select(*(mine for mine, _ in pairs))
        return pg_insert(target).from_select([theirs for _, theirs in pairs], query)

    def _execute(self, statement: Any) -> int:
        with translating():
            # preserve_rowcount: SQLAlchemy keeps cursor.rowcount of INSERTs only when asked.
            result = self.session.execute(statement, execution_options={"preserve_rowcount": True})
            return int(cast("CursorResult[Any]", result).rowcount)

    def _row(self, item: Any, keys: list[str]) -> Sequence[Any]:
        """The item's values in column order; a value never given takes the column's default."""
        if isinstance(item, Mapping):
            try:
                return self._getter(item)  # every key present: one C-level lookup
            except KeyError:
                defaults = self._defaults
                return [item[key] if key in item else defaults[key]() for key in keys]
        loaded = item.__dict__  # values set or loaded; others are read through getattr below
        attributes = self._attributes(type(item))
        try:
            return attributes[0](loaded)  # every attribute set or loaded
        except KeyError:
            pass
        defaults = self._defaults
        row = []
        for key, attribute in attributes[1]:
            value = loaded.get(attribute, _ABSENT)
            if value is _ABSENT:
                value = getattr(item, attribute)  # loads an expired or deferred column
                if value is None and attribute not in loaded:  # never set on a new instance
                    value = defaults[key]()
            row.append(value)
        return row

    def _attributes(self, model_class: type) -> tuple[Callable[[Any], Sequence[Any]], list[tuple[str, str]]]:
        """For instances of `model_class`: a getter of all column values from `__dict__`, and
        (column key, attribute name) for each column."""
        attributes = self._attributes_by_class.get(model_class)
        if attributes is None:
            mapper: Mapper[Any] = inspect(model_class)
            pairs = [
                (column.key, mapper.get_property_by_column(self.source.c[column.key]).key)
                for column in self.table.columns
            ]
            attributes = self._attributes_by_class[model_class] = (_getter([name for _, name in pairs]), pairs)
        return attributes

    def _copy_text(self, rows: list[Sequence[Any]], dialect: Any) -> str:
        """The rows in COPY's text format, after each column type's bind processing.

        Raises:
            _NotCopyable: a value of a type this writer does not render.

        """
        columns = []
        for column, column_values in zip(self.table.columns, zip(*rows, strict=True), strict=True):
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            values: Sequence[Any] = column_values
            if process is not None:
                values = [None if value is None else process(value) for value in values]
            columns.append(_column_text(values))
        lines = list(map("\t".join, zip(*columns, strict=True)))
        lines.append("")
        return "\n".join(lines)

    def _copy(self, connection: Any, data: str) -> None:
        preparer = connection.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(column.name) for column in self.table.columns)
        sql = f"COPY {preparer.format_table(self.table)} ({columns}) FROM STDIN"
        cursor = connection.connection.cursor()
        try:
            if connection.dialect.driver == "psycopg2":
                cursor.copy_expert(sql, io.StringIO(data))
            else:
                with cursor.copy(sql) as copy:
                    copy.write(data)
        finally:
            cursor.close()


def _from_clause(source: Any) -> FromClause:
    if isinstance(source, TemporaryTable):
        return source.table
    if isinstance(source, FromClause):
        return source
    if hasattr(source, "subquery") and not isinstance(source, type):
        subquery: FromClause = source.subquery()
        return subquery
    return _source_table(source)


def _shared(table: Table, other: FromClause, columns: Sequence[str] | None) -> list[tuple[Any, Any]]:
    """(column of `table`, column of `other`) for each name in `columns` (default: every
    column name the two share), matched by column name."""
    mine = {column.name: column for column in table.columns}
    theirs = {column.name: column for column in other.columns}
    if columns is None:
        names = [name for name in mine if name in theirs]
        if not names:
            raise ValueError(f"{table.name!r} and {other.description!r} have no column in common.")
    else:
        names = list(columns)
        missing = [name for name in names if name not in mine or name not in theirs]
        if missing or not names:
            raise ValueError(f"Columns {missing or names} are not in both {table.name!r} and {other.description!r}.")
    return [(mine[name], theirs[name]) for name in names]


def _getter(keys: list[str]) -> Callable[[Any], Sequence[Any]]:
    """A function returning the values of `keys` of a mapping, as a tuple (KeyError if one is missing)."""
    if len(keys) == 1:
        single = itemgetter(keys[0])
        return lambda mapping: (single(mapping),)
    return itemgetter(*keys)


def _none() -> None:
    return None


def _default_for(column: Column[Any]) -> Callable[[], Any]:
    """A function giving the column's Python-side default (scalar or callable), else None."""
    default = column.default
    if not isinstance(default, ColumnDefault):
        return _none
    arg = default.arg
    if default.is_callable:
        return lambda: arg(None)  # SQLAlchemy wraps callables to take an execution context
    return lambda: arg


_ABSENT = object()
_SPECIAL = re.compile(r"[\\\t\n\r]").search
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _text(value: str) -> str:
    return value.translate(_ESCAPES) if _SPECIAL(value) else value


def _isoformat(value: Any) -> str:
    return str(value.isoformat())


# type -> its COPY text form; exact types first (fast), subclasses through _format_subclass.
_FORMATS: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: int.__repr__,
    float: float.__repr__,
    bool: lambda value: "t" if value else "f",
    Decimal: str,
    UUID: lambda value: f"{value.int:032x}",  # PostgreSQL reads 32 hex digits; quicker than str()
    datetime: _isoformat,
    date: _isoformat,
    time: _isoformat,
}


def _format_subclass(value: Any) -> str:
    # By the base type's own methods: a str or int Enum member is written as its value.
    for kind in (str, int, float, Decimal, UUID, datetime, date, time):
        if isinstance(value, kind):
            return _FORMATS[kind](value)
    raise _NotCopyable(type(value).__name__)


def _column_text(values: Sequence[Any]) -> list[str]:
    """One column's values in COPY's text format.

    Raises:
        _NotCopyable: a value of a type this writer does not render.

    """
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if kinds == {str} and not _SPECIAL("".join([value for value in values if value is not None])):
        return [_NULL if value is None else value for value in values]  # nothing to escape
    if len(kinds) == 1:  # the usual case: one type, one formatter, no per-value lookup
        render = _FORMATS.get(kinds.pop(), _format_subclass)
        return [_NULL if value is None else render(value) for value in values]
    return [_NULL if value is None else _FORMATS.get(type(value), _format_subclass)(value) for value in values]


_NULL = "\\N"

"""Column types: `EnumType` and `Serial`."""

from __future__ import annotations

from enum import Enum
from typing import Any

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeDecorator

__all__ = [
    "EnumType",
    "Serial",
    "enum_name",
]


def enum_name(enum_class: type[Enum], value: object) -> str | None:
    """The member name `value` stands for in `enum_class` (a member, or one of its names);
    None when it is neither."""
    if isinstance(value, enum_class):
        return value.name
    if isinstance(value, str) and value in enum_class.__members__:
        return value
    return None


class EnumType(TypeDecorator[Enum]):
    """A Python `Enum` stored by member *name* in a `VARCHAR(255)`.

    Writes accept a member or a member name; reads return the member.

    Raises (at flush, translated by the store):
        ValueError -> `InvalidInputError`: for a name the enum does not have, or a
            member of another enum.

    """

    impl = String(255)
    cache_ok = True

    def __init__(self, enum_class: type[Enum], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        name = enum_name(self.enum_class, value)
        if name is not None:
            return name
        raise ValueError(
            f"{value!r} is not a member of {self.enum_class.__name__}; "
            f"expected one of {sorted(self.enum_class.__members__)}."
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> Enum | None:
        if value is None:
            return None
        return self.enum_class[value]

    @property
    def python_type(self) -> type[Enum]:
        return self.enum_class


class Serial(TypeDecorator[int]):
    """An auto-incrementing integer for a column that is not the primary key.

    Renders as `SERIAL` (or `BIGSERIAL` with `big=True`) in CREATE TABLE. Declare the
    column with `server_default=FetchedValue()` so SQLAlchemy reads the generated value
    back after the INSERT.

    """

    impl = Integer
    cache_ok = True

    def __init__(self, big: bool = False) -> None:
        super().__init__()
        self.big = big

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        # Not dialect.type_descriptor(): psycopg 3's dialect would adapt it to its own
        # Integer (for bind casts), and CREATE TABLE would lose SERIAL.
        return _BigSerialType() if self.big else _SerialType()


class _SerialType(Integer):
    pass


class _BigSerialType(BigInteger):
    pass


@compiles(_SerialType, "postgresql")
def _compile_serial(element: Any, compiler: Any, **kw: Any) -> str:
    return "SERIAL"


@compiles(_BigSerialType, "postgresql")
def _compile_bigserial(element: Any, compiler: Any, **kw: Any) -> str:
    return "BIGSERIAL"

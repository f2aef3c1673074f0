"""Encoders: how a column's value becomes the text that is encrypted, and back.

An `encryption(...)` column encrypts text (UTF-8). Its encoder turns the Python value
into that text (`encode`), turns decrypted text back into the value (`decode`), names
the SQL type of the plaintext column (`column_type`), and gives the value a reader sees
when the current tenant cannot decrypt the row (`redacted_value`).

Encodings are canonical (one text per value: JSON with sorted keys, UTC timestamps,
normalised decimals), so that equal values get equal beacons.

Every `encode` checks its input and raises `InvalidInputError` (400) for a value of the
wrong type, before anything is encrypted or written.

"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Generic, TypeVar

from sqlalchemy import Integer, Numeric, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import TypeEngine

from microcosm_postgres.errors import InvalidInputError
from microcosm_postgres.models import EPOCH, UTCDateTime
from microcosm_postgres.types import EnumType, enum_name

__all__ = [
    "REDACTED",
    "ArrayEncoder",
    "DatetimeEncoder",
    "DecimalEncoder",
    "Encoder",
    "EnumEncoder",
    "IntEncoder",
    "JSONEncoder",
    "Nullable",
    "StringEncoder",
    "TextEncoder",
]

T = TypeVar("T")
E = TypeVar("E", bound=Enum)

#: What a string column reads when the current tenant cannot decrypt it.
REDACTED = "[REDACTED]"


def _refuse(value: Any, expected: str) -> InvalidInputError:
    name = type(value).__name__
    article = "an" if name[:1] in "aeioAEIO" else "a"
    return InvalidInputError(f"This encrypted column takes {expected} (got {article} {name}): pass {expected}.")


class Encoder(ABC, Generic[T]):
    """Value <-> text for one kind of encrypted column.

    Attributes:
        redacted_value: what the attribute reads when the current tenant cannot decrypt
            the stored value (another tenant's row, or no keys in this context).
        nullable: whether None may be written (only `Nullable(...)` says yes).

    """

    redacted_value: T
    nullable: bool = False

    @abstractmethod
    def encode(self, value: T) -> str:
        """The text to encrypt for `value`.

        Raises:
            InvalidInputError: `value` is not of this encoder's type.

        """

    @abstractmethod
    def decode(self, text: str) -> T:
        """The value that `encode` turned into `text`."""

    @abstractmethod
    def column_type(self) -> TypeEngine[Any]:
        """The SQL type of the plaintext column (`<key>`)."""

    def normalize(self, value: T) -> T:
        """`value` as it reads back (`decode(encode(value))`): what the plaintext column gets."""
        return self.decode(self.encode(value))

    def elements(self, value: T) -> list[str] | None:
        """The texts of an array value's elements (for a beacon per element), or None
        for a scalar encoder."""
        return None


class StringEncoder(Encoder[str]):
    """A `str`, kept in a `VARCHAR` plaintext column; reads `"[REDACTED]"` when redacted."""

    def __init__(self, *, redacted_value: str = REDACTED) -> None:
        self.redacted_value = redacted_value

    def encode(self, value: str) -> str:
        if not isinstance(value, str):
            raise _refuse(value, "a str")
        return value

    def decode(self, text: str) -> str:
        return text

    def column_type(self) -> TypeEngine[Any]:
        return String()


class TextEncoder(StringEncoder):
    """A `str` kept in a `TEXT` plaintext column (long values)."""

    def column_type(self) -> TypeEngine[Any]:
        return Text()


class IntEncoder(Encoder[int]):
    """An `int` (not a bool), as its decimal text; reads 0 when redacted."""

    def __init__(self, *, redacted_value: int = 0) -> None:
        self.redacted_value = redacted_value

    def encode(self, value: int) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _refuse(value, "an int")
        return str(value)

    def decode(self, text: str) -> int:
        return int(text)

    def column_type(self) -> TypeEngine[Any]:
        return Integer()


class DecimalEncoder(Encoder[Decimal]):
    """A finite `Decimal` (an int is taken as one; a float is refused: it is not exact);
    reads `Decimal(0)` when redacted. Stored without trailing zeros (equal numbers have
    one text, hence one beacon): `Decimal("1.50")` reads back as `Decimal("1.5")`."""

    def __init__(self, *, redacted_value: Decimal = Decimal(0)) -> None:
        self.redacted_value = redacted_value

    def encode(self, value: Decimal | int) -> str:
        given: object = value
        if isinstance(given, int) and not isinstance(given, bool):
            given = Decimal(given)
        if not isinstance(given, Decimal) or not given.is_finite():
            raise _refuse(given, "a finite Decimal")
        # Equal numbers, one text (1.50 and 1.5; -0 and 0), in plain notation (100, not 1E+2).
        return "0" if given.is_zero() else format(given.normalize(), "f")

    def decode(self, text: str) -> Decimal:
        try:
            return Decimal(text)
        except InvalidOperation:  # not produced by encode: a corrupt or foreign value
            raise InvalidInputError(f"The stored text is not a Decimal ({len(text)} characters).") from None

    def column_type(self) -> TypeEngine[Any]:
        return Numeric()


class DatetimeEncoder(Encoder[datetime]):
    """A timezone-aware `datetime`, stored in UTC as ISO 8601 text; reads the Unix epoch
    when redacted. A naive datetime is refused (its zone would be a guess)."""

    def __init__(self, *, redacted_value: datetime = EPOCH) -> None:
        self.redacted_value = redacted_value

    def encode(self, value: datetime) -> str:
        if not isinstance(value, datetime):
            raise _refuse(value, "a datetime")
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInputError(
                "An encrypted datetime column was given a naive datetime; pass a timezone-aware one "
                "(datetime.now(timezone.utc))."
            )
        return value.astimezone(timezone.utc).isoformat()

    def decode(self, text: str) -> datetime:
        return datetime.fromisoformat(text)

    def column_type(self) -> TypeEngine[Any]:
        return UTCDateTime()


class EnumEncoder(Encoder[E]):
    """A member of `enum_class`, stored by name (a member's name is accepted too).

    An enum has no neutral member, so pass `redacted_value` (a member) for what a tenant
    that cannot decrypt reads; without it such a reader gets None.

    """

    def __init__(self, enum_class: type[E], *, redacted_value: E | None = None) -> None:
        self.enum_class = enum_class
        self.redacted_value = redacted_value  # type: ignore[assignment]  # None: documented above

    def encode(self, value: E | str) -> str:
        name = enum_name(self.enum_class, value)
        if name is not None:
            return name
        raise InvalidInputError(
            f"An encrypted {self.enum_class.__name__} column was given a value that is not one of its names; "
            f"allowed names: {', '.join(self.enum_class.__members__)}."
        )

    def decode(self, text: str) -> E:
        return self.enum_class[text]

    def column_type(self) -> TypeEngine[Any]:
        return EnumType(self.enum_class)


class JSONEncoder(Encoder[Any]):
    """A JSON value (dict, list, str, number, bool), as canonical JSON text (sorted keys,
    no spaces), kept in a `JSONB` plaintext column; reads `{}` when redacted. NaN and
    infinities are refused (JSON has none)."""

    def __init__(self, *, redacted_value: Any = None) -> None:
        self.redacted_value = {} if redacted_value is None else redacted_value

    def encode(self, value: Any) -> str:
        if value is None:
            raise _refuse(value, "a JSON value (wrap the encoder in Nullable to store None)")
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"An encrypted JSON column was given a {type(value).__name__} that JSON cannot hold; "
                "pass dicts, lists, strings, finite numbers and booleans."
            ) from None

    def decode(self, text: str) -> Any:
        return json.loads(text)

    def column_type(self) -> TypeEngine[Any]:
        return JSONB()


class ArrayEncoder(Encoder[list[T]]):
    """A list of values of `element` (another encoder), as a JSON array of their texts;
    reads `[]` when redacted.

    With `encryption(..., use_beacon_array=True)` each element gets a beacon of its own,
    so that `Model.tags == "x"` finds the rows whose list holds "x".

    """

    def __init__(self, element: Encoder[T], *, redacted_value: list[T] | None = None) -> None:
        if isinstance(element, (ArrayEncoder, Nullable)):
            raise TypeError("ArrayEncoder takes a scalar element encoder (not an array, not Nullable).")
        self.element = element
        self.redacted_value = [] if redacted_value is None else redacted_value

    def encode(self, value: list[T]) -> str:
        return json.dumps(self.elements(value), separators=(",", ":"))

    def elements(self, value: list[T]) -> list[str]:
        given: object = value
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
            raise _refuse(given, "a list")
        return [self.element.encode(item) for item in given]

    def decode(self, text: str) -> list[T]:
        return [self.element.decode(item) for item in json.loads(text)]

    def column_type(self) -> TypeEngine[Any]:
        return ARRAY(self.element.column_type())


class Nullable(Encoder[T | None]):
    """`inner`, also accepting None: writing None clears the value (no ciphertext is
    made for it: every column of the value is NULL), and reading such a row gives None."""

    nullable = True

    def __init__(self, inner: Encoder[T]) -> None:
        if isinstance(inner, Nullable):
            raise TypeError("Nullable(Nullable(...)): wrap the encoder once.")
        self.inner = inner
        self.redacted_value = inner.redacted_value

    def encode(self, value: T | None) -> str:
        if value is None:  # the column writes NULLs for None: nothing is encoded
            raise InvalidInputError("None is stored as NULL, not encoded.")
        try:
            return self.inner.encode(value)
        except InvalidInputError as error:
            message = str(error).rstrip(".")
            raise InvalidInputError(f"{message}, or None (the column is Nullable).") from error

    def decode(self, text: str) -> T | None:
        return self.inner.decode(text)

    def elements(self, value: T | None) -> list[str] | None:
        return None if value is None else self.inner.elements(value)

    def column_type(self) -> TypeEngine[Any]:
        return self.inner.column_type()

"""Equality search on encrypted columns, through beacons.

A beacon is a keyed hash (HMAC-SHA256 by default, with the tenant's beacon key) of a
value's encoded text, stored next to the ciphertext in `<key>_beacon`. Equal values of
one tenant have equal beacons; without the key a beacon tells nothing (an unkeyed hash
of a name or a birth date is reversed by hashing every candidate).

`Model.name == "Alice"` builds `name_beacon = '<beacon of Alice>'`: the probe's beacon is
computed once, when the comparison is built, from the key the registry holds (no KMS
call, nothing is encrypted). For a tenant without keys (whose rows keep their values in
plaintext) it builds `name = 'Alice'` instead. The statement is therefore built for the
tenant of the encryption context current when it is built; build it inside that context.

"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, inspect, or_
from sqlalchemy.ext.hybrid import Comparator
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from microcosm_postgres.errors import InvalidInputError

if TYPE_CHECKING:
    from microcosm_postgres.encryption.v2.column import encryption

__all__ = [
    "BeaconAlgorithm",
    "EncryptedComparator",
    "hmac_sha256",
]

#: A keyed beacon function: (tenant's beacon key, encoded value) -> beacon text.
BeaconAlgorithm = Callable[[bytes, str], str]


def hmac_sha256(key: bytes, value: str) -> str:
    """The default beacon: HMAC-SHA256 of `value` (UTF-8) under `key`, as 64 hex digits."""
    from microcosm_postgres.encryption.beacons import beacon

    return beacon(key, value)


_SUPPORTED = "==, in_(), is_(None) / == None, is_not(None) / != None"


class EncryptedComparator(Comparator[Any]):
    """What `Model.<encrypted attribute>` is in a query: equality through the beacon.

    Supported: `==` (a value, or None), `.in_([...])`, `.is_(None)`, `.is_not(None)`,
    `!= None`. With `use_beacon_array`, `== element` matches rows whose list holds the
    element (`<key>_beacon @> ARRAY[beacon]`) and `.in_([...])` rows holding any of them
    (`&&`). Anything else (ordering, LIKE, `!=` a value) cannot be answered from
    ciphertexts and raises `InvalidInputError` when the expression is built.

    """

    def __init__(self, column: encryption[Any], owner: type[Any]) -> None:
        self._column = column
        self._owner = owner  # the model, or an aliased() class of it
        self._name = f"{inspect(owner).mapper.class_.__name__}.{column.key}"

    @property
    def expression(self) -> Any:  # type: ignore[override]  # the base class keeps a SQL expression here
        """An encrypted value has no SQL expression: selecting or ordering by it would read
        the plaintext column, NULL for every encrypted row. Select the model (or its
        `<key>_encrypted` column) instead."""
        raise self._unsupported("selecting it, ordering or grouping by it")

    def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[bool]:
        if op is operator.eq or op is operators.is_:
            return self._equals(other[0])
        if op is operator.ne or op is operators.is_not:
            if other[0] is not None:
                break_ = "!= a value" if op is operator.ne else "is_not(a value)"
                raise self._unsupported(break_)
            return or_(self._attribute("encrypted").is_not(None), self._attribute("unencrypted").is_not(None))
        if op is operators.in_op:
            return self._in(other[0])
        raise self._unsupported(getattr(op, "__name__", str(op)))

    def reverse_operate(self, op: Any, other: Any, **kwargs: Any) -> ColumnElement[bool]:
        if op is operator.eq:
            return self._equals(other)
        raise self._unsupported(getattr(op, "__name__", str(op)))

    def _attribute(self, part: str) -> Any:
        return self._column._attribute(self._owner, part)

    def _unsupported(self, what: str) -> InvalidInputError:
        return InvalidInputError(
            f"{self._name} is encrypted: {what} cannot be computed on the database. "
            f"Encrypted columns support {_SUPPORTED}."
        )

    def _equals(self, value: Any) -> ColumnElement[bool]:
        value = _value_of(value, self._column.key)
        if value is None:
            return and_(self._attribute("encrypted").is_(None), self._attribute("unencrypted").is_(None))
        column = self._column
        key = column.encryptor.beacon_key()
        if key is None:
            if column.use_beacon_array:
                return self._attribute("unencrypted").contains([column.normalize_element(value)])  # type: ignore[no-any-return]
            return self._attribute("unencrypted") == column.encoder.normalize(value)  # type: ignore[no-any-return]
        beacon = self._attribute("beacon")
        if column.use_beacon_array:
            return beacon.contains([column.element_beacon(key, value)])  # type: ignore[no-any-return]
        return beacon == column.beacon_of(key, value)  # type: ignore[no-any-return]

    def _in(self, values: Any) -> ColumnElement[bool]:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise InvalidInputError(f"{self._name}.in_() takes a list of values.")
        values = [_value_of(value, self._column.key) for value in values]
        column = self._column
        key = column.encryptor.beacon_key()
        if key is None:
            plain = self._attribute("unencrypted")
            if column.use_beacon_array:
                return plain.overlap([column.normalize_element(value) for value in values])  # type: ignore[no-any-return]
            return plain.in_([column.encoder.normalize(value) for value in values])  # type: ignore[no-any-return]
        beacon = self._attribute("beacon")
        if column.use_beacon_array:
            return beacon.overlap([column.element_beacon(key, value) for value in values])  # type: ignore[no-any-return]
        return beacon.in_([column.beacon_of(key, value) for value in values])  # type: ignore[no-any-return]


def _value_of(value: Any, key: str) -> Any:
    """The Python value of a comparison's right side (a literal, or a bound parameter with a value)."""
    if isinstance(value, BindParameter):
        if value.callable is not None or value.value is None:
            raise InvalidInputError(
                f"The encrypted column {key} is compared with a parameter whose value is given only at execution; "
                "its beacon is computed from the value when the comparison is built: compare with the value itself."
            )
        return value.value
    if isinstance(value, ColumnElement):
        raise InvalidInputError(
            f"The encrypted column {key} can be compared with values only, not with SQL expressions or other columns."
        )
    return value

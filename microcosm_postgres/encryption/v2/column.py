"""`encryption(...)`: a model attribute whose value is stored encrypted, per tenant.

One attribute, three columns:

    class Employee(EntityMixin, Model):
        __tablename__ = "employee"

        client_id: Mapped[str] = mapped_column(String(64))
        name = encryption("name", AwsKmsEncryptor(), StringEncoder())
        name_encrypted: Mapped[bytes | None] = name.encrypted()      # column name_encrypted
        name_unencrypted: Mapped[str | None] = name.unencrypted()    # column name
        name_beacon: Mapped[str | None] = name.beacon(index=True)    # column name_beacon

`employee.name = "Alice"` encrypts in the current encryption context (see
`encryptors.set_encryptor_context`): a tenant with keys gets `name_encrypted` (an AWS
Encryption SDK message) and `name_beacon` (a keyed hash, for equality search) and a NULL
`name`; a tenant without keys gets the plaintext in `name` and NULLs in the other two.
Reading `employee.name` decrypts (once per stored value and context: the result is kept
on the instance), or gives the encoder's redacted value when the current context cannot
decrypt it (another tenant's row, or no context at all). `Employee.name == "Alice"` is
an equality search through the beacon (see `beacons.EncryptedComparator`).

The three columns are plain mapped columns, so the Store (create, create_many, update,
retrieve, search, count, delete) and Alembic see ordinary columns; the attribute names
are free (the columns are found by their names, `<key>_encrypted`, `<key>`,
`<key>_beacon`). The beacon column is optional: without it the value cannot be searched.

"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any, Protocol, TypeVar, runtime_checkable

from sqlalchemy import LargeBinary, String, inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import MappedColumn, mapped_column
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.types import TypeEngine

from microcosm_postgres.encryption.v2.beacons import BeaconAlgorithm, EncryptedComparator, hmac_sha256
from microcosm_postgres.encryption.v2.encoders import ArrayEncoder, Encoder, Nullable
from microcosm_postgres.errors import InvalidInputError

__all__ = [
    "ContextEncryptor",
    "encryption",
]

T = TypeVar("T")

_PARTS = ("encrypted", "unencrypted", "beacon")


@runtime_checkable
class ContextEncryptor(Protocol):
    """The encryptor of an `encryption(...)` column: it encrypts for the *current*
    encryption context (the tenant of the request or job being served), which it
    finds itself (`AwsKmsEncryptor` holds it in a ContextVar)."""

    def context(self) -> Hashable | None:
        """The current encryption context (None: none is set). A decrypted value is
        reused only while the same context is current."""

    def encrypt(self, plaintext: str) -> bytes | None:
        """A ciphertext of `plaintext` for the current context; None when the current
        context has no keys (its values are stored in plaintext).

        Raises:
            EncryptionError: no context is set, or the keys could not be used.

        """

    def decrypt(self, ciphertext: bytes) -> str | None:
        """The plaintext of `ciphertext`; None when the current context cannot decrypt
        it (no context, no keys, or another tenant's message): the reader sees the
        redacted value.

        Raises:
            EncryptionError: the keys could not be used (e.g. KMS unreachable).

        """

    def beacon_key(self) -> bytes | None:
        """The current context's beacon key; None when it has no keys.

        Raises:
            EncryptionError: no context is set.
            EncryptionConfigError: the context has keys but no beacon key.

        """


class encryption(hybrid_property[T]):  # noqa: N801  (the 3.x name)
    """An encrypted model attribute over `<key>_encrypted`, `<key>` and `<key>_beacon`.

    Args:
        key: the value's name: the columns are `<key>_encrypted` (the ciphertext),
            `<key>` (the plaintext, for tenants without keys) and `<key>_beacon`.
        encryptor: encrypts in the current context (`AwsKmsEncryptor()`).
        encoder: value <-> text (`StringEncoder()`, `Nullable(IntEncoder())`, ...).
        column_type: the plaintext column's SQL type (default: the encoder's).
        default: what the attribute reads when the row holds no value at all (all
            three columns NULL; e.g. rows older than the column). Nothing is written.
        use_beacon_array: for an `ArrayEncoder`: store one beacon per element, so that
            `Model.<attr> == element` finds the rows whose list holds the element.
        beacon_algorithm: the keyed beacon function, (key, text) -> beacon; default
            HMAC-SHA256. An unkeyed hash cannot be given: the signature takes the key.

    Raises:
        TypeError: `use_beacon_array` without an ArrayEncoder, or a `beacon_algorithm`
            that is not callable (at class definition).

    """

    def __init__(
        self,
        key: str,
        encryptor: ContextEncryptor,
        encoder: Encoder[T],
        *,
        column_type: TypeEngine[Any] | type[TypeEngine[Any]] | None = None,
        default: T | None = None,
        use_beacon_array: bool = False,
        beacon_algorithm: BeaconAlgorithm = hmac_sha256,
    ) -> None:
        array = encoder.inner if isinstance(encoder, Nullable) else encoder
        if use_beacon_array and not isinstance(array, ArrayEncoder):
            raise TypeError(f"encryption({key!r}): use_beacon_array needs an ArrayEncoder (got {encoder!r}).")
        if not callable(beacon_algorithm):
            raise TypeError(f"encryption({key!r}): beacon_algorithm must be a function (key: bytes, text: str) -> str.")
        self.key = key
        self.encryptor = encryptor
        self.encoder = encoder
        self.column_type = column_type
        self.default = default
        self.use_beacon_array = use_beacon_array
        self.beacon_algorithm = beacon_algorithm
        self._element = array.element if isinstance(array, ArrayEncoder) else None
        # Per mapped class: the attribute names of the three columns (None: not defined).
        self._attributes: dict[type[Any], dict[str, str | None]] = {}
        super().__init__(self._read, self._write, custom_comparator=self._comparator)  # type: ignore[arg-type]
        self.__name__ = key
        self.__doc__ = f"The encrypted value {key!r} (see microcosm_postgres.encryption.v2.column)."

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.__name__ = name

    def __repr__(self) -> str:
        return f"encryption({self.key!r}, {type(self.encoder).__name__})"

    def _copy(self, **kw: Any) -> hybrid_property[T]:
        raise TypeError(
            f"encryption({self.key!r}) is a complete attribute: it takes no .setter/.expression/.comparator."
        )

    # --- the three columns --------------------------------------------------------

    def encrypted(self) -> MappedColumn[bytes | None]:
        """The ciphertext column, `<key>_encrypted` (BYTEA, nullable)."""
        return mapped_column(f"{self.key}_encrypted", LargeBinary, nullable=True)

    def unencrypted(self, **column_kwargs: Any) -> MappedColumn[Any]:
        """The plaintext column, `<key>` (the encoder's type or `column_type`, nullable),
        written only for tenants without keys. `column_kwargs` go to `mapped_column`."""
        column_kwargs.setdefault("nullable", True)
        column_type = self.column_type if self.column_type is not None else self.encoder.column_type()
        return mapped_column(self.key, column_type, **column_kwargs)

    def beacon(self, **column_kwargs: Any) -> MappedColumn[Any]:
        """The beacon column, `<key>_beacon` (VARCHAR, or VARCHAR[] with
        `use_beacon_array`; nullable). `column_kwargs` go to `mapped_column`
        (`index=True`; for an array, a GIN index in `__table_args__` serves `==`)."""
        column_kwargs.setdefault("nullable", True)
        column_type: TypeEngine[Any] = ARRAY(String) if self.use_beacon_array else String()
        return mapped_column(f"{self.key}_beacon", column_type, **column_kwargs)

    def _names(self, owner: type[Any]) -> dict[str, str | None]:
        """The attribute names of `owner`'s three columns (found by column name, once per
        class; `owner` may be an `aliased()` class)."""
        mapper = inspect(owner).mapper
        names = self._attributes.get(mapper.class_)
        if names is None:
            by_column = {attr.columns[0].name: attr.key for attr in mapper.column_attrs}
            column_names = {
                "encrypted": f"{self.key}_encrypted",
                "unencrypted": self.key,
                "beacon": f"{self.key}_beacon",
            }
            names = {part: by_column.get(column) for part, column in column_names.items()}
            for part in ("encrypted", "unencrypted"):
                if names[part] is None:
                    raise TypeError(
                        f"{mapper.class_.__name__}.{self.__name__} needs the column {column_names[part]}: "
                        f"declare `{self.key}_{part} = {self.__name__}.{part}()` on the model."
                    )
            self._attributes[mapper.class_] = names
        return names

    def _attribute(self, owner: type[Any], part: str) -> Any:
        """`owner`'s mapped attribute for one of the three columns."""
        name = self._names(owner)[part]
        if name is None:
            model = inspect(owner).mapper.class_.__name__
            raise InvalidInputError(
                f"{model}.{self.__name__} has no beacon column, so it cannot be searched: "
                f"declare `{self.key}_beacon = {self.__name__}.beacon()` on the model."
            )
        return getattr(owner, name)

    # --- beacons ------------------------------------------------------------------

    def beacon_of(self, key: bytes, value: Any) -> str:
        """The beacon of a whole value."""
        return self.beacon_algorithm(key, self.encoder.encode(value))

    def element_beacon(self, key: bytes, element: Any) -> str:
        """The beacon of one element of an array value (`use_beacon_array`)."""
        assert self._element is not None  # checked in __init__
        return self.beacon_algorithm(key, self._element.encode(element))

    def normalize_element(self, element: Any) -> Any:
        """One element of an array value as the plaintext column holds it (`use_beacon_array`)."""
        assert self._element is not None  # checked in __init__
        return self._element.normalize(element)

    def _beacons(self, key: bytes, value: Any, text: str) -> Any:
        if self.use_beacon_array:
            return [self.beacon_algorithm(key, element) for element in self.encoder.elements(value) or ()]
        return self.beacon_algorithm(key, text)

    # --- the attribute on an instance --------------------------------------------

    def _read(self, instance: Any) -> T:
        names = self._names(type(instance))
        ciphertext = getattr(instance, names["encrypted"])  # type: ignore[arg-type]
        if ciphertext is None:
            plaintext = getattr(instance, names["unencrypted"])  # type: ignore[arg-type]
            return _fresh(self.default) if plaintext is None else plaintext  # type: ignore[no-any-return]
        context = self.encryptor.context()
        info = instance_state(instance).info
        cached = info.get(self)
        if cached is not None and cached[0] == ciphertext and cached[1] == context:
            return cached[2]  # type: ignore[no-any-return]
        text = self.encryptor.decrypt(bytes(ciphertext))
        value = _fresh(self.encoder.redacted_value) if text is None else self.encoder.decode(text)
        info[self] = (ciphertext, context, value)
        return value

    def _write(self, instance: Any, value: T) -> None:
        names = self._names(type(instance))
        if value is None:
            if not self.encoder.nullable:
                raise InvalidInputError(
                    f"{type(instance).__name__}.{self.__name__} cannot be None; wrap its encoder in Nullable(...) "
                    "to allow it."
                )
            self._set(instance, names, None, None, None)
            return
        text = self.encoder.encode(value)  # InvalidInputError before anything is encrypted
        value = self.encoder.decode(text)  # as it reads back (UTC datetimes, enum members, ...)
        ciphertext = self.encryptor.encrypt(text)
        if ciphertext is None:  # this tenant has no keys: plaintext
            self._set(instance, names, None, value, None)
            return
        beacon = None
        if names["beacon"] is not None:
            key = self.encryptor.beacon_key()
            beacon = None if key is None else self._beacons(key, value, text)
        self._set(instance, names, ciphertext, None, beacon)
        instance_state(instance).info[self] = (ciphertext, self.encryptor.context(), value)

    def _set(self, instance: Any, names: dict[str, str | None], ciphertext: Any, plaintext: Any, beacon: Any) -> None:
        instance_state(instance).info.pop(self, None)
        for part, value in zip(_PARTS, (ciphertext, plaintext, beacon), strict=True):
            name = names[part]
            if name is not None:
                setattr(instance, name, value)

    def _comparator(self, owner: type[Any]) -> EncryptedComparator:
        return EncryptedComparator(self, owner)


def _fresh(value: Any) -> Any:
    """A copy of a mutable shared value (a redacted `[]` or `{}`, a default), so that
    changing what one instance read changes nothing else."""
    return copy.deepcopy(value) if isinstance(value, (list, dict, set)) else value

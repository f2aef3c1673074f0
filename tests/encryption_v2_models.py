"""Models with v2 encrypted columns, for the encryption tests (a MetaData of their own:
they are created and dropped by the tests that use them, never by `recreate_all`)."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Hashable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Index, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from microcosm_postgres.encryption.v2.column import encryption
from microcosm_postgres.encryption.v2.encoders import (
    ArrayEncoder,
    DatetimeEncoder,
    DecimalEncoder,
    EnumEncoder,
    IntEncoder,
    JSONEncoder,
    Nullable,
    StringEncoder,
    TextEncoder,
)
from microcosm_postgres.encryption.v2.encryptors import AwsKmsEncryptor
from microcosm_postgres.models import NAMING_CONVENTION, EntityMixin


class CountingEncryptor(AwsKmsEncryptor):
    """`AwsKmsEncryptor`, counting the calls the columns make to it (encrypt, decrypt,
    beacon_key): the tests prove which operations need no encryption."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def encrypt(self, plaintext: str) -> bytes | None:
        self.calls["encrypt"] += 1
        return super().encrypt(plaintext)

    def decrypt(self, ciphertext: bytes) -> str | None:
        self.calls["decrypt"] += 1
        return super().decrypt(ciphertext)

    def beacon_key(self) -> bytes | None:
        self.calls["beacon_key"] += 1
        return super().beacon_key()

    def context(self) -> Hashable | None:
        return super().context()


ENCRYPTOR = CountingEncryptor()


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


class EncryptedBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Person(EntityMixin, EncryptedBase):
    __tablename__ = "test_encrypted_person"

    client_id: Mapped[str] = mapped_column(String(64))

    name = encryption("name", ENCRYPTOR, StringEncoder())
    name_encrypted: Mapped[bytes | None] = name.encrypted()
    name_unencrypted: Mapped[str | None] = name.unencrypted()
    name_beacon: Mapped[str | None] = name.beacon(index=True)

    tags = encryption("tags", ENCRYPTOR, Nullable(ArrayEncoder(StringEncoder())), use_beacon_array=True)
    tags_encrypted: Mapped[bytes | None] = tags.encrypted()
    tags_unencrypted: Mapped[list[str] | None] = tags.unencrypted()
    tags_beacon: Mapped[list[str] | None] = tags.beacon()

    # No beacon column: stored encrypted, not searchable.
    born = encryption("born", ENCRYPTOR, Nullable(DatetimeEncoder()))
    born_encrypted: Mapped[bytes | None] = born.encrypted()
    born_unencrypted: Mapped[datetime | None] = born.unencrypted()

    __table_args__ = (Index("ix_test_encrypted_person_tags_beacon", "tags_beacon", postgresql_using="gin"),)


class Record(EntityMixin, EncryptedBase):
    """One column per encoder; attribute names other than the conventional ones."""

    __tablename__ = "test_encrypted_record"

    client_id: Mapped[str] = mapped_column(String(64))

    quantity = encryption("quantity", ENCRYPTOR, Nullable(IntEncoder()), default=-1)
    quantity_cipher: Mapped[bytes | None] = quantity.encrypted()
    quantity_plain: Mapped[int | None] = quantity.unencrypted()
    quantity_search: Mapped[str | None] = quantity.beacon()

    amount = encryption("amount", ENCRYPTOR, Nullable(DecimalEncoder()))
    amount_encrypted: Mapped[bytes | None] = amount.encrypted()
    amount_unencrypted: Mapped[Decimal | None] = amount.unencrypted()
    amount_beacon: Mapped[str | None] = amount.beacon()

    level = encryption("level", ENCRYPTOR, Nullable(EnumEncoder(Level)))
    level_encrypted: Mapped[bytes | None] = level.encrypted()
    level_unencrypted: Mapped[Level | None] = level.unencrypted()
    level_beacon: Mapped[str | None] = level.beacon()

    extra = encryption("extra", ENCRYPTOR, Nullable(JSONEncoder()))
    extra_encrypted: Mapped[bytes | None] = extra.encrypted()
    extra_unencrypted: Mapped[Any] = extra.unencrypted()
    extra_beacon: Mapped[str | None] = extra.beacon()

    note = encryption("note", ENCRYPTOR, Nullable(TextEncoder()), column_type=String(2000))
    note_encrypted: Mapped[bytes | None] = note.encrypted()
    note_unencrypted: Mapped[str | None] = note.unencrypted()

"""The declarative base `Model`, the `UTCDateTime` type, and the entity mixins."""

from __future__ import annotations

import enum
import time
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from sqlalchemy import DateTime, Double, Enum, Integer, MetaData, Uuid, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator

from microcosm_postgres.identifiers import new_object_id
from microcosm_postgres.smart import SmartMixin

__all__ = [
    "EPOCH",
    "EntityMixin",
    "IdentityMixin",
    "Model",
    "NAMING_CONVENTION",
    "PrimaryKeyMixin",
    "SmartMixin",
    "UTCDateTime",
    "UnixTimestampEntityMixin",
    "UnixTimestampPrimaryKeyMixin",
    "VersionedMixin",
    "utcnow",
]

# The Unix epoch, timezone-aware (3.x services compare timestamps with it).
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Constraint names that PostgreSQL itself would choose for unnamed constraints, made
# explicit: generated migrations are deterministic, and a service whose tables were
# created without a convention keeps the names it already has. No "ck" entry: the name
# PostgreSQL gives an unnamed CHECK depends on its expression, and a convention would
# rename the named ones (also inside existing migrations), so CHECK names are left alone.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


class Model(DeclarativeBase):
    """Declarative base for a service's persistent models.

    `Mapped[SomeEnum]` annotations are stored by member name in a VARCHAR, not as a
    PostgreSQL ENUM type, so adding a member needs no migration. Only a member or the
    name of one is accepted (a Store raises InvalidInputError before any SQL for any
    other value), so an unknown name is never stored.

    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        enum.Enum: Enum(enum.Enum, native_enum=False, length=255, validate_strings=True),
    }


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC in `timestamp without time zone`, read back timezone-aware.

    Naive input is taken to be UTC; aware input in another zone is converted to UTC.

    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ValueError(f"UTCDateTime expects a datetime, got {type(value).__name__}.")
        moment: datetime = value
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
        return moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value.replace(tzinfo=timezone.utc)
        return moment

    @property
    def python_type(self) -> type[datetime]:
        return datetime


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class PrimaryKeyMixin:
    """A UUID primary key `id` and UTC `created_at` / `updated_at` timestamps."""

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True, default=new_object_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)

    def new_timestamp(self) -> datetime:
        """The current time, in the form this mixin stores."""
        return utcnow()

    @property
    def created_timestamp(self) -> float:
        """`created_at` as seconds since the epoch."""
        return self.created_at.timestamp()

    @property
    def updated_timestamp(self) -> float:
        """`updated_at` as seconds since the epoch."""
        return self.updated_at.timestamp()


class UnixTimestampPrimaryKeyMixin:
    """A UUID primary key `id`, with `created_at` / `updated_at` as float seconds since the epoch."""

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True, default=new_object_id)
    created_at: Mapped[float] = mapped_column(Double, default=time.time, nullable=False)
    updated_at: Mapped[float] = mapped_column(Double, default=time.time, onupdate=time.time, nullable=False)

    def new_timestamp(self) -> float:
        """The current time, in the form this mixin stores."""
        return time.time()

    @property
    def created_timestamp(self) -> float:
        return self.created_at

    @property
    def updated_timestamp(self) -> float:
        return self.updated_at


class VersionedMixin:
    """Optimistic locking: a `version` column that SQLAlchemy checks and increments on
    every UPDATE (its `version_id_col`).

    An update of a row that another transaction changed since this one read it matches
    no row and writes nothing; the store raises `ModelConflictError` (409). So does
    `Store.update` when the new instance carries a `version` other than the stored one
    (a client echoing the version it read). Add it before the other mixins:

        class Document(VersionedMixin, EntityMixin, Model): ...

    """

    version: Mapped[int] = mapped_column(Integer, nullable=False)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


class IdentityMixin:
    """Equality by column values (not relationships or private state); hash by `id`."""

    def _members(self) -> dict[str, Any]:
        return {attr.key: getattr(self, attr.key) for attr in inspect(type(self)).column_attrs}

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return self._members() == other._members()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(getattr(self, "id", None))


class EntityMixin(PrimaryKeyMixin, IdentityMixin, SmartMixin):
    """UUID key, UTC timestamps, value equality and store shortcuts."""


class UnixTimestampEntityMixin(UnixTimestampPrimaryKeyMixin, IdentityMixin, SmartMixin):
    """UUID key, float-second timestamps, value equality and store shortcuts."""

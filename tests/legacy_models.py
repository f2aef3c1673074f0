"""Models written the way microcosm-postgres 3.x services write them, on their own metadata.

Their own `DeclarativeBase` (with `Model`'s type map, so `Mapped[SomeEnum]` behaves as on
`Model`) keeps these tables out of `Model.metadata`, whose tables other tests compare
with migrations. `legacy_tables(graph)` creates them for one test and drops them after.

"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import CHAR, Column, ForeignKey, MetaData, String
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from microcosm_postgres.models import EntityMixin, Model, VersionedMixin


class UUIDType(TypeDecorator[uuid.UUID]):
    """Like sqlalchemy-utils' UUIDType without native storage: 32 hex characters in a CHAR."""

    impl = CHAR(32)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return (value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).hex

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        return None if value is None else uuid.UUID(value)

    @property
    def python_type(self) -> type[uuid.UUID]:
        return uuid.UUID


class LegacyBase(DeclarativeBase):
    metadata = MetaData()
    type_annotation_map = Model.type_annotation_map


class ShopKind(enum.Enum):
    bakery = "bakery"
    butcher = "butcher"


class Shop(EntityMixin, LegacyBase):
    __tablename__ = "legacy_shop"

    id: Mapped[uuid.UUID] = mapped_column(UUIDType(), primary_key=True)
    name = Column(String(64), unique=True, nullable=False)
    kind: Mapped[ShopKind | None] = mapped_column(nullable=True)


class Clerk(EntityMixin, LegacyBase):
    __tablename__ = "legacy_clerk"

    id: Mapped[uuid.UUID] = mapped_column(UUIDType(), primary_key=True)
    name = Column(String(64), nullable=False)
    shop_id: Mapped[uuid.UUID] = mapped_column(UUIDType(), ForeignKey("legacy_shop.id"), nullable=False)


class Document(VersionedMixin, EntityMixin, LegacyBase):
    __tablename__ = "legacy_document"

    title = Column(String(64), nullable=False)


@contextmanager
def legacy_tables(graph: Any, session: Session | None = None) -> Iterator[None]:
    """Create the legacy tables in the graph's database for a block, and drop them after
    (ending `session`'s transaction first, so its locks cannot block the DROP).

    When `session` is isolated (`testing.isolation.isolated`: its bind is the test's
    connection, holding the outer transaction), the tables are created in that outer
    transaction, before the session begins, and its rollback removes them: no other
    connection sees them, and no DROP has to wait for the test's locks.

    """
    bind = None if session is None else session.get_bind()
    if isinstance(bind, Connection) and bind.in_transaction():
        LegacyBase.metadata.create_all(bind)
        yield
        return
    LegacyBase.metadata.drop_all(graph.postgres)
    LegacyBase.metadata.create_all(graph.postgres)
    try:
        yield
    finally:
        if session is not None:
            session.rollback()
        LegacyBase.metadata.drop_all(graph.postgres)

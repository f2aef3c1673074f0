"""Throwaway models for the tests (they live on Model.metadata next to the example's)."""

from __future__ import annotations

from sqlalchemy import FetchedValue, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from microcosm_postgres.models import EntityMixin, Model, UnixTimestampEntityMixin
from microcosm_postgres.types import Serial


class Gadget(EntityMixin, Model):
    __tablename__ = "test_gadget"

    name: Mapped[str | None] = mapped_column(String(64), unique=True)
    size: Mapped[int | None] = mapped_column(Integer)


class UnixGadget(UnixTimestampEntityMixin, Model):
    __tablename__ = "test_unix_gadget"

    name: Mapped[str | None] = mapped_column(String(64), unique=True)
    size: Mapped[int | None] = mapped_column(Integer)


class Ticket(EntityMixin, Model):
    __tablename__ = "test_ticket"

    number: Mapped[int] = mapped_column(Serial(), server_default=FetchedValue(), nullable=False)
    big_number: Mapped[int] = mapped_column(Serial(big=True), server_default=FetchedValue(), nullable=False)

"""The example service's models: companies and their employees."""

from __future__ import annotations

from enum import Enum, unique
from uuid import UUID

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from microcosm_postgres.models import EntityMixin, Model
from microcosm_postgres.types import EnumType

__all__ = [
    "Company",
    "CompanyType",
    "Employee",
]


@unique
class CompanyType(Enum):
    private = "private"
    public = "public"


class Company(EntityMixin, Model):
    __tablename__ = "company"

    name: Mapped[str | None] = mapped_column(String(255), unique=True)
    type: Mapped[CompanyType | None] = mapped_column(EnumType(CompanyType))


class Employee(EntityMixin, Model):
    __tablename__ = "employee"

    first: Mapped[str] = mapped_column(String(255), nullable=False)
    last: Mapped[str] = mapped_column(String(255), nullable=False)
    other: Mapped[str | None] = mapped_column(String(255), nullable=True)
    company_id: Mapped[UUID] = mapped_column(ForeignKey("company.id"), nullable=False)

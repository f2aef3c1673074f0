"""Temporary tables: private metadata, COPY loads with true row counts, upserts, select_from."""

from __future__ import annotations

from datetime import date, time, timedelta
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    FetchedValue,
    Float,
    Integer,
    Interval,
    Numeric,
    String,
    Time,
    Uuid,
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import InvalidInputError, InvalidNameError
from microcosm_postgres.example import Company, CompanyType
from microcosm_postgres.models import Model, PrimaryKeyMixin
from microcosm_postgres.temporary import TemporaryTable, create_temporary_table, create_transient_table, transient
from microcosm_postgres.types import Serial


class TemporaryTag(Model):
    """No `id` column: a composite key."""

    __tablename__ = "test_temporary_tag"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    weight: Mapped[int | None] = mapped_column(Integer)


class TemporarySetting(PrimaryKeyMixin, Model):
    """Values COPY's text writer leaves to an INSERT (JSON on psycopg 3, an interval), and a SERIAL."""

    __tablename__ = "test_temporary_setting"

    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    duration: Mapped[timedelta | None] = mapped_column(Interval, nullable=True)
    position: Mapped[int] = mapped_column(Serial(), server_default=FetchedValue())


class TemporaryKinds(Model):
    """One column per type the COPY writer renders itself (binary goes by INSERT: the drivers wrap it)."""

    __tablename__ = "test_temporary_kinds"

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    flag: Mapped[bool | None] = mapped_column(Boolean)
    count: Mapped[int | None] = mapped_column(BigInteger)
    ratio: Mapped[float | None] = mapped_column(Float)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    day: Mapped[date | None] = mapped_column(Date)
    at: Mapped[time | None] = mapped_column(Time)
    label: Mapped[str | None] = mapped_column(String(64))


class Size(IntEnum):
    large = 3


class Colour(str, Enum):
    red = "r"


def _count(table: Any) -> int:
    return int(SessionContext.session.execute(select(func.count()).select_from(table)).scalar_one())


def _exists(name: str) -> bool:
    return (
        SessionContext.session.execute(text("SELECT to_regclass(:name)"), {"name": f"pg_temp.{name}"}).scalar()
        is not None
    )


@pytest.fixture
def session(context: SessionContext) -> Session:
    """The session `context` opened (the tests' `transaction()` blocks run in it)."""
    assert context.session is not None
    return context.session


def test_the_table_is_a_temporary_table_kept_out_of_shared_metadata(session: Session) -> None:
    with transaction(), transient(Company) as companies, transient(Company, name="other") as other:
        assert isinstance(companies, TemporaryTable)
        assert companies.name == "temporary_company"
        assert companies.table.metadata is not Model.metadata
        assert companies.table.metadata is not other.table.metadata
        assert "temporary_company" not in Model.metadata.tables
        persistence = session.execute(
            text("SELECT relpersistence FROM pg_class WHERE oid = to_regclass('pg_temp.temporary_company')")
        ).scalar()
        assert persistence == "t"
        assert [column.name for column in companies.c] == [column.name for column in Company.__table__.c]
        assert companies.upsert_into_on_conflict_do_nothing(Company) == 0

    assert not _exists("temporary_company")


@pytest.mark.postgres_commit
def test_a_transient_table_goes_at_commit_and_a_temporary_one_stays(session: Session) -> None:
    with transaction():
        create_transient_table(Company).create()
        create_temporary_table(Company, name="kept_company").create()
        assert _exists("temporary_company")
        assert _exists("kept_company")

    assert not _exists("temporary_company")
    assert _exists("kept_company")
    session.execute(text("DROP TABLE pg_temp.kept_company"))


def test_the_name_can_be_used_again_after_the_block(context: SessionContext) -> None:
    with transaction():
        for name in ("first", "second"):
            with transient(Company) as companies:
                assert companies.insert_many([Company(name=name)]) == 1
                assert _count(companies) == 1


def test_a_name_taken_on_the_connection_is_a_typed_error(context: SessionContext) -> None:
    with transaction(), transient(Company) as companies:
        with pytest.raises(InvalidNameError, match="Choose another name"):
            with transaction(), transient(Company):
                pass
        # The nested block's savepoint rolled back: the outer table is still usable.
        assert companies.insert_many([Company(name="a")]) == 1
        with transient(Company, name="temporary_company_2") as second:
            assert second.select_from(companies) == 1
        with pytest.raises(RuntimeError, match="already created"):
            companies.create()


def test_two_sessions_have_tables_of_their_own(graph: Any, context: SessionContext) -> None:
    with transaction(), transient(Company) as outer:
        outer.insert_many([Company(name="a")])
        with SessionContext(graph), transaction(), transient(Company) as inner:
            assert inner.table is not outer.table
            assert inner.insert_many([Company(name="b"), Company(name="c")]) == 2
            assert _count(inner) == 2
        assert _count(outer) == 1


def test_insert_many_of_nothing_returns_zero_and_sends_nothing(context: SessionContext, statements: list[str]) -> None:
    with transaction(), transient(Company) as companies:
        statements.clear()
        assert companies.insert_many([]) == 0
        assert companies.insert_many(iter(())) == 0
        assert statements == []


def test_insert_many_counts_rows_and_fills_defaults(session: Session) -> None:
    with transaction(), transient(Company) as companies:
        written = companies.insert_many(
            [Company(name="Acme", type=CompanyType.public), {"name": "Beta"}, Company(name="Gamma")]
        )
        assert written == 3
        rows = session.execute(select(companies.c.name, companies.c.type, companies.c.id)).all()
    assert sorted((name, kind or "") for name, kind, _ in rows) == [
        ("Acme", CompanyType.public),
        ("Beta", ""),
        ("Gamma", ""),
    ]
    assert all(isinstance(row_id, UUID) for *_, row_id in rows)


def test_insert_many_loads_expired_attributes(session: Session) -> None:
    with transaction():
        acme = Company(name="Acme", type=CompanyType.public)
        session.add(acme)
    session.expire(acme, ["type"])

    with transaction(), transient(Company) as companies:
        assert companies.insert_many([acme]) == 1
        assert session.execute(select(companies.c.id, companies.c.type)).one() == (acme.id, CompanyType.public)


def test_copy_keeps_awkward_strings_intact(session: Session) -> None:
    names = ["tab\there", "new\nline", "carriage\rreturn", "back\\slash", "\\N", "", "ünïcødé ✓", None]

    with transaction(), transient(Company) as companies:
        assert companies.insert_many([{"name": name} for name in names]) == len(names)
        stored = list(session.execute(select(companies.c.name)).scalars())

    assert sorted(stored, key=repr) == sorted(names, key=repr)


def test_copy_renders_each_type_as_postgresql_reads_it(session: Session) -> None:
    rows: list[dict[str, object]] = [
        dict(
            id=uuid4(),
            flag=True,
            count=2**40,
            ratio=0.1,
            amount=Decimal("-12.3456"),
            day=date(2024, 2, 29),
            at=time(23, 59, 58, 123456),
            label="plain",
        ),
        dict(
            id=uuid4(),
            flag=False,
            count=Size.large,
            ratio=float("inf"),
            amount=Decimal("0"),
            day=None,
            at=None,
            label=Colour.red,
        ),
        dict(id=uuid4()),
    ]

    with transaction(), transient(TemporaryKinds) as kinds:
        assert kinds.insert_many(rows) == 3
        assert kinds.upsert_into_on_conflict_do_nothing(TemporaryKinds) == 3

    stored = {row.id: row for row in session.execute(select(TemporaryKinds.__table__)).all()}
    columns = [column.key for column in TemporaryKinds.__table__.columns]
    for row in rows:
        expected = tuple(row.get(key) for key in columns)
        # Enum members arrive as their values.
        expected = tuple(value.value if isinstance(value, Enum) else value for value in expected)
        assert tuple(stored[row["id"]]) == expected


def test_values_copy_cannot_carry_go_in_with_an_insert(session: Session) -> None:
    values = [{"a": [1, 2]}, ["x", None], None]

    with transaction(), transient(TemporarySetting) as settings:
        items = [TemporarySetting(value=value, duration=timedelta(minutes=i)) for i, value in enumerate(values)]
        assert settings.insert_many(items) == 3
        # `position` is left to the database (SERIAL): the temporary table holds NULLs there.
        columns = ["id", "created_at", "updated_at", "value", "duration"]
        assert settings.upsert_into_on_conflict_do_nothing(TemporarySetting, columns=columns) == 3

    stored = session.execute(select(TemporarySetting.value, TemporarySetting.duration)).all()
    assert sorted(stored, key=repr) == sorted(
        [(value, timedelta(minutes=i)) for i, value in enumerate(values)], key=repr
    )


def test_serial_columns_get_no_sequence(session: Session) -> None:
    with transaction(), transient(TemporarySetting) as settings:
        default = session.execute(
            text(
                "SELECT column_default FROM information_schema.columns "
                "WHERE table_name = :table AND column_name = 'position'"
            ),
            {"table": settings.name},
        ).one()
    assert default == (None,)


def test_bad_input_is_a_typed_error_and_nothing_stays(context: SessionContext) -> None:
    with transaction(), transient(Company) as companies:
        with pytest.raises(InvalidInputError):
            with transaction():
                companies.insert_many([{"name": "fine"}, {"name": "nul\x00byte"}])
        assert _count(companies) == 0


def test_upsert_do_nothing_counts_only_inserted_rows(session: Session) -> None:
    with transaction():
        session.add(Company(name="Acme", type=CompanyType.private))
    with transaction(), transient(Company) as companies:
        companies.insert_many([Company(name="Acme", type=CompanyType.public), Company(name="Beta")])
        assert companies.upsert_into_on_conflict_do_nothing(Company) == 1

    assert sorted(session.execute(select(Company.name, Company.type)).all()) == [
        ("Acme", CompanyType.private),
        ("Beta", None),
    ]


def test_upsert_do_update_counts_inserted_and_updated_rows(session: Session) -> None:
    with transaction():
        acme = Company(name="Acme", type=CompanyType.private)
        session.add(acme)
    acme_id, created_at = acme.id, acme.created_at

    with transaction(), transient(Company) as companies:
        companies.insert_many([Company(name="Acme", type=CompanyType.public), Company(name="Beta")])
        assert companies.upsert_into_on_conflict_do_update(Company, index_elements=["name"]) == 2

    session.expunge_all()
    stored = {company.name: company for company in session.execute(select(Company)).scalars()}
    assert set(stored) == {"Acme", "Beta"}  # `name` is nullable: a set compares without ordering None
    # The conflicting row is updated in place: same id, same created_at, new type.
    assert (stored["Acme"].id, stored["Acme"].created_at, stored["Acme"].type) == (
        acme_id,
        created_at,
        CompanyType.public,
    )


def test_upsert_do_update_takes_set_and_where(session: Session) -> None:
    with transaction():
        session.add_all([Company(name="Acme", type=CompanyType.private), Company(name="Beta")])

    with transaction(), transient(Company) as companies:
        companies.insert_many([Company(name="Acme", type=CompanyType.public), Company(name="Beta")])
        # Only rows whose stored type is set are updated; only `type` changes.
        updated = companies.upsert_into_on_conflict_do_update(
            Company, index_elements=[Company.name], set_=["type"], where=Company.type.is_not(None)
        )
        assert updated == 1

    assert sorted(session.execute(select(Company.name, Company.type)).all()) == [
        ("Acme", CompanyType.public),
        ("Beta", None),
    ]


def test_upsert_do_update_needs_a_conflict_target(context: SessionContext) -> None:
    with transaction(), transient(Company) as companies:
        with pytest.raises(ValueError, match="index_elements"):
            companies.upsert_into_on_conflict_do_update(Company, set_=["type"])


def test_upsert_into_is_deprecated_and_does_nothing_on_conflict(session: Session) -> None:
    with transaction():
        session.add(Company(name="Acme"))
    with transaction(), transient(Company) as companies:
        companies.insert_many([Company(name="Acme"), Company(name="Beta")])
        with pytest.warns(DeprecationWarning, match="upsert_into_on_conflict_do_nothing"):
            assert companies.upsert_into(Company) == 1


def test_select_from_a_table_without_an_id(session: Session) -> None:
    with transaction():
        session.add_all(
            [
                TemporaryTag(name="a", kind="x", weight=1),
                TemporaryTag(name="b", kind="x"),
                TemporaryTag(name="a", kind="y"),
            ]
        )
    with transaction(), transient(TemporaryTag) as tags:
        assert tags.select_from(TemporaryTag) == 3
        assert tags.select_from(TemporaryTag.__table__, TemporaryTag.kind == "y") == 1
        assert _count(tags) == 4
        # And back: the three copies conflict with the originals, one row is new.
        tags.insert_many([{"name": "c", "kind": "z"}])
        assert tags.upsert_into_on_conflict_do_nothing(TemporaryTag) == 1


def test_select_from_a_query(session: Session) -> None:
    with transaction():
        session.add_all([Company(name="Acme"), Company(name="Beta", type=CompanyType.public)])
    with transaction(), transient(Company) as companies:
        assert companies.select_from(select(Company.id, Company.name).where(Company.type.is_(None))) == 1
        assert session.execute(select(companies.c.name, companies.c.type)).all() == [("Acme", None)]


def test_select_from_needs_a_common_column(context: SessionContext) -> None:
    with transaction(), transient(Company) as companies:
        with pytest.raises(ValueError, match="no column in common"):
            companies.select_from(select(func.now().label("nothing")))
        with pytest.raises(ValueError, match="not in both"):
            companies.select_from(Company, columns=["name", "kind"])


def test_bad_arguments_are_refused_before_any_sql() -> None:
    with pytest.raises(InvalidNameError):
        create_temporary_table(Company, name="t" * 64)
    with pytest.raises(ValueError, match="on_commit"):
        create_temporary_table(Company, on_commit="vanish")
    with pytest.raises(TypeError, match="mapped model class or a Table"):
        create_temporary_table("company")
    with pytest.raises(RuntimeError, match="create"):
        create_transient_table(Company).insert_many([{"name": "x"}])

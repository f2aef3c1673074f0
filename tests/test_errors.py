"""Database faults become the same typed error on both drivers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import (
    DatabaseUnavailableError,
    DuplicateModelError,
    InvalidInputError,
    MissingDependencyError,
    ModelIntegrityError,
    PersistenceError,
    QueryTimeoutError,
    ReferencedModelError,
    TransactionConflictError,
    translate,
    translating,
)
from microcosm_postgres.example import ExampleGraph
from tests.conftest import make_graph

PII = "jane.doe.private@example.com"


# Two temporary tables (parent, child) and a row in each: every constraint kind to break.
TABLES = """
CREATE TEMP TABLE parent (id int PRIMARY KEY, email varchar(20) UNIQUE);
CREATE TEMP TABLE child (
    id int PRIMARY KEY,
    parent_id int REFERENCES parent(id),
    qty int NOT NULL CHECK (qty > 0)
);
INSERT INTO parent VALUES (1, 'jane.doe@x.io');
INSERT INTO child VALUES (1, 1, 1);
"""


@pytest.fixture
def session(graph: ExampleGraph) -> Iterator[Session]:
    with SessionContext(graph) as context, transaction(commit=False) as session:
        session.execute(text(TABLES))
        current = context.session
        assert current is not None
        yield current


def fault(session: Session, sql: str, **params: Any) -> PersistenceError:
    with pytest.raises(PersistenceError) as raised, transaction(), translating(model_name="Thing"):
        session.execute(text(sql), params)
    error = raised.value
    assert error.__cause__ is not None  # always chained
    # The session is still usable after the failed block.
    with transaction():
        assert session.execute(text("SELECT count(*) FROM parent")).scalar() == 1
    return error


@pytest.mark.parametrize(
    ("sql", "params", "error_class", "status", "sqlstate"),
    [
        ("INSERT INTO parent VALUES (2, 'jane.doe@x.io')", {}, DuplicateModelError, 409, "23505"),
        ("INSERT INTO child VALUES (2, 99, 1)", {}, MissingDependencyError, 404, "23503"),
        ("UPDATE child SET parent_id = 99", {}, MissingDependencyError, 404, "23503"),
        ("DELETE FROM parent", {}, ReferencedModelError, 403, "23503"),
        ("INSERT INTO child VALUES (3, 1, NULL)", {}, ModelIntegrityError, 500, "23502"),
        ("INSERT INTO child VALUES (3, 1, -5)", {}, ModelIntegrityError, 500, "23514"),
        ("SELECT CAST(:value AS uuid)", {"value": "not-a-uuid"}, InvalidInputError, 400, "22P02"),
        ("INSERT INTO parent VALUES (3, :value)", {"value": "x" * 40}, InvalidInputError, 400, "22001"),
        ("INSERT INTO parent VALUES (:value, 'y')", {"value": 2**40}, InvalidInputError, 400, "22003"),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$",
            {},
            TransactionConflictError,
            409,
            "40001",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$",
            {},
            TransactionConflictError,
            409,
            "40P01",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '57014'; END $$",
            {},
            QueryTimeoutError,
            503,
            "57014",
        ),
    ],
)
def test_faults_by_sqlstate(
    session: Session, sql: str, params: dict[str, Any], error_class: type, status: int, sqlstate: str
) -> None:
    error = fault(session, sql, **params)
    assert type(error) is error_class
    assert error.status_code == status
    assert error.sqlstate == sqlstate


def test_constraint_and_table_are_attached(session: Session) -> None:
    error = fault(session, "INSERT INTO child VALUES (2, 99, 1)")
    assert (error.constraint, error.table) == ("child_parent_id_fkey", "child")
    assert "child_parent_id_fkey" in str(error)
    assert "Thing" in str(error)


def test_row_values_stay_out_of_messages(session: Session) -> None:
    session.execute(text("ALTER TABLE parent ALTER COLUMN email TYPE varchar(64)"))
    session.execute(text("UPDATE parent SET email = :email"), {"email": PII})
    error = fault(session, "INSERT INTO parent VALUES (7, :email)", email=PII)
    assert isinstance(error, DuplicateModelError)
    assert PII not in str(error)
    assert PII in str(error.__cause__)  # the detail is kept on the chained exception


def test_nul_byte_is_invalid_input_on_both_drivers(session: Session) -> None:
    error = fault(session, "INSERT INTO parent VALUES (5, :value)", value="a\x00b")
    assert type(error) is InvalidInputError
    assert error.status_code == 400


def test_real_serialization_failure(graph: ExampleGraph) -> None:
    """Two serializable transactions that read and write the same row: the second loses."""
    with graph.postgres.begin() as connection:
        connection.execute(
            text("DROP TABLE IF EXISTS counter; CREATE TABLE counter (n int); INSERT INTO counter VALUES (0)")
        )
    first = graph.sessionmaker()
    second = graph.sessionmaker()
    try:
        for session in (first, second):
            session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
            session.execute(text("SELECT n FROM counter"))
        first.execute(text("UPDATE counter SET n = n + 1"))
        first.commit()
        with pytest.raises(TransactionConflictError) as raised, translating():
            second.execute(text("UPDATE counter SET n = n + 1"))
        assert raised.value.retryable
    finally:
        first.close()
        second.close()
        with graph.postgres.begin() as connection:
            connection.execute(text("DROP TABLE counter"))


def test_pool_exhausted_is_unavailable() -> None:
    graph = make_graph(pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        with graph.postgres.connect():
            with pytest.raises(DatabaseUnavailableError, match="pool_timeout"), translating():
                graph.postgres.connect()
    finally:
        graph.postgres.dispose()


def test_non_database_errors_pass_through() -> None:
    assert translate(KeyError("x")) is None
    assert translate(ValueError("raised by the caller's own code")) is None
    with pytest.raises(KeyError), translating():
        raise KeyError("x")

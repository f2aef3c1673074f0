"""A refused login is `AuthenticationFailedError`: not retried, naming user, host and database, never the password."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hamcrest import assert_that, contains_string
from sqlalchemy import text
from sqlalchemy.engine import Engine

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import (
    AuthenticationFailedError,
    DatabaseMissingError,
    DatabaseUnavailableError,
    translating,
)
from tests.conftest import make_graph
from tests.scram import ScramServer, scram_server_running


@pytest.fixture(scope="module")
def scram_server() -> Iterator[ScramServer]:
    with scram_server_running() as server:
        yield server


def _count_connects(engine: Engine) -> list[int]:
    """Count the driver connect() calls of `engine` (each attempt of the retry loop is one)."""
    calls: list[int] = []
    connect = engine.dialect.connect

    def counting(*cargs: Any, **cparams: Any) -> Any:
        calls.append(1)
        return connect(*cargs, **cparams)

    engine.dialect.connect = counting  # type: ignore[method-assign]
    return calls


def test_the_right_password_logs_in(scram_server: ScramServer) -> None:
    graph = make_graph(**scram_server.config())
    try:
        with graph.postgres.connect() as connection:
            assert connection.execute(text("SELECT current_user")).scalar() == scram_server.username
    finally:
        graph.postgres.dispose()


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("wrong password", {"password": "not-the-password-0xC0FFEE"}),
        ("unknown role", {"username": "errors_nobody"}),
        ("role may not log in", {"username": "errors_nologin"}),
        ("no password", {"password": ""}),
    ],
)
def test_refused_login_is_typed_and_not_retried(
    scram_server: ScramServer, caplog: pytest.LogCaptureFixture, case: str, overrides: dict[str, Any]
) -> None:
    caplog.set_level(logging.DEBUG)
    config = scram_server.config(**overrides)
    graph = make_graph(**config, engine_retries=5, engine_retry_interval=1)
    engine = graph.postgres
    calls = _count_connects(engine)
    try:
        with pytest.raises(AuthenticationFailedError) as raised:
            engine.connect()
    finally:
        engine.dispose()
    error = raised.value
    assert len(calls) == 1  # no retry
    assert not error.retryable
    assert error.status_code == 503
    assert isinstance(error, DatabaseUnavailableError)
    message = str(error)
    for part in (repr(config["username"]), "'postgres'", f"{scram_server.host}:{scram_server.port}"):
        assert_that(message, contains_string(part))
    for secret in {scram_server.password, config["password"]} - {""}:
        for text_shown in (message, repr(error), str(error.__cause__), caplog.text):
            assert secret not in text_shown


def test_refused_login_reaches_a_session_typed(scram_server: ScramServer) -> None:
    graph = make_graph(**scram_server.config(password="wrong-again"), engine_retries=3)
    try:
        with SessionContext(graph), pytest.raises(AuthenticationFailedError):
            with transaction() as session:
                session.execute(text("SELECT 1"))
    finally:
        graph.postgres.dispose()


def test_unreachable_server_is_still_retried(scram_server: ScramServer) -> None:
    graph = make_graph(port=scram_server.closed_port, engine_retries=2, engine_retry_interval=1)
    engine = graph.postgres
    calls = _count_connects(engine)
    try:
        with pytest.raises(Exception) as raised:
            engine.connect()
    finally:
        engine.dispose()
    assert len(calls) == 3
    assert not isinstance(raised.value, AuthenticationFailedError)


def test_refused_login_outside_the_engine_is_typed_too(scram_server: ScramServer) -> None:
    """A raw driver connect (as a maintenance script might do) refused: `translating()` types it."""
    graph = make_graph()
    dbapi = graph.postgres.dialect.loaded_dbapi
    secret = "wrong-password-0xBADC0DE"
    with pytest.raises(AuthenticationFailedError) as raised, translating():
        dbapi.connect(
            host=scram_server.host,
            port=scram_server.port,
            user=scram_server.username,
            password=secret,
            dbname="postgres",
            connect_timeout=5,
        )
    graph.postgres.dispose()
    assert "?" not in str(raised.value)
    assert secret not in str(raised.value)
    assert not raised.value.retryable


def test_a_missing_database_is_typed_at_once_not_retried() -> None:
    """FATAL: database "x" does not exist (3D000, no SQLSTATE at connect on psycopg2): no retries."""
    missing = f"errors_missing_{uuid.uuid4().hex[:12]}"
    graph = make_graph(database_name=missing, engine_retries=5, engine_retry_interval=1)
    engine = graph.postgres
    calls = _count_connects(engine)
    try:
        with pytest.raises(DatabaseMissingError) as raised:
            engine.connect()
    finally:
        engine.dispose()
    error = raised.value
    assert len(calls) == 1  # no retry
    assert not error.retryable
    assert error.status_code == 503
    assert isinstance(error, DatabaseUnavailableError)
    message = str(error)
    url = engine.url
    for part in (f"{url.host}:{url.port}", repr(missing), "postgres.database_name", "microcosm_postgres provision"):
        assert_that(message, contains_string(part))
    assert "unreachable" not in message

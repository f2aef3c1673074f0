from __future__ import annotations

import logging
from typing import Any

import pytest
from hamcrest import assert_that, contains_string, equal_to, is_
from microcosm.errors import ValidationError
from microcosm.metadata import Metadata
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DatabaseUnavailableError, QueryTimeoutError, translating
from microcosm_postgres.example import ExampleGraph
from microcosm_postgres.factories.engine import make_engine, make_url
from tests.conftest import make_graph

SENTINEL = "s3ntinel-Pa55word"


@pytest.mark.parametrize(
    ("testing", "read_only", "database", "username"),
    [
        (True, False, "example_test_db", "example"),
        (True, True, "example_test_db", "example_ro"),
        (False, False, "example_db", "example"),
        (False, True, "example_db", "example_ro"),
    ],
)
def test_naming_convention(testing: bool, read_only: bool, database: str, username: str) -> None:
    url = make_url(Metadata("example", testing=testing), {"read_only": read_only})
    assert (url.database, url.username, url.host, url.port) == (database, username, "localhost", 5432)


def test_explicit_names_win() -> None:
    url = make_url(
        Metadata("example", testing=True), {"database_name": "other_db", "username": "bob", "read_only": True}
    )
    assert (url.database, url.username) == ("other_db", "bob")


def test_graph_engine_connects_by_convention(graph: ExampleGraph) -> None:
    with graph.postgres.connect() as connection:
        row = connection.execute(
            text("SELECT current_database(), current_user, current_setting('application_name')")
        ).one()
    assert tuple(row) == (graph.postgres.url.database, "example", "example")


def test_driver_is_always_named() -> None:
    url = make_url(Metadata("example", testing=True), {})
    assert url.drivername == "postgresql+psycopg2"
    with pytest.raises(ValidationError, match="postgres.driver"):
        make_url(Metadata("example", testing=True), {"driver": "mysql+pymysql"})


def _captured_connect_params(**config: Any) -> dict[str, Any]:
    """The keyword arguments the engine hands to the driver's connect()."""
    engine = make_engine(Metadata("example", testing=True), config)
    captured: dict[str, Any] = {}
    connect = engine.dialect.connect

    def capture(*cargs: Any, **cparams: Any) -> Any:
        captured.update(cparams)
        return connect(*cargs, **cparams)

    engine.dialect.connect = capture  # type: ignore[method-assign]

    try:
        with engine.connect():
            pass
    except Exception:
        pass
    finally:
        engine.dispose()
    return captured


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {"sslmode": "prefer"}),
        ({"require_ssl": True}, {"sslmode": "require"}),
        (
            {"verify_ssl": True, "ssl_cert_path": "/etc/ca.pem"},
            {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"},
        ),
        (
            {"require_ssl": True, "verify_ssl": True, "ssl_cert_path": "/ca"},
            {"sslmode": "verify-full", "sslrootcert": "/ca"},
        ),
    ],
)
def test_ssl_arguments(config: dict[str, Any], expected: dict[str, Any]) -> None:
    params = _captured_connect_params(engine_retries=0, **config)
    assert {key: params.get(key) for key in expected} == expected
    if "sslrootcert" not in expected:
        assert "sslrootcert" not in params


def test_require_ssl_is_enforced_by_the_driver() -> None:
    # The local server has SSL off: `prefer` connects, `require` must refuse.
    graph = make_graph(require_ssl=True, engine_retries=0)
    with SessionContext(graph), pytest.raises(DatabaseUnavailableError):
        with transaction() as session:
            session.execute(text("SELECT 1"))


def test_verify_ssl_without_cert_names_the_missing_key() -> None:
    graph = make_graph(verify_ssl=True)
    with pytest.raises(ValidationError, match="ssl_cert_path"):
        graph.postgres  # noqa: B018


def test_timeouts_and_application_name_reach_the_server() -> None:
    graph = make_graph(statement_timeout=150, application_name="billing-worker", connect_timeout=3)
    params = _captured_connect_params(statement_timeout=150, connect_timeout=3)
    assert params["connect_timeout"] == 3
    with SessionContext(graph):
        with transaction() as session:
            row = session.execute(
                text("SELECT current_setting('statement_timeout'), current_setting('application_name')")
            ).one()
            assert tuple(row) == ("150ms", "billing-worker")
        with pytest.raises(QueryTimeoutError) as raised, transaction() as session:
            with translating():
                session.execute(text("SELECT pg_sleep(2)"))
        assert raised.value.sqlstate == "57014"
        # The session is usable afterwards.
        with transaction() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
    graph.postgres.dispose()


def test_password_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    graph = make_graph(password=SENTINEL, port=1, engine_retries=1, engine_retry_interval=10, echo=True)
    engine = graph.postgres
    assert SENTINEL not in repr(engine)
    assert SENTINEL not in str(engine.url)
    with SessionContext(graph), pytest.raises(DatabaseUnavailableError) as raised:
        with transaction() as session:
            session.execute(text("SELECT 1"))
    chain = [raised.value, raised.value.__cause__, getattr(raised.value.__cause__, "orig", None)]
    for error in chain:
        assert SENTINEL not in str(error)
        assert SENTINEL not in repr(error)
    assert_that(caplog.text, contains_string("retrying"))
    assert SENTINEL not in caplog.text
    # The password is really used: it is in the parameters handed to the driver.
    assert_that(engine.url.password, is_(equal_to(SENTINEL)))

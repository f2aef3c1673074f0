"""The engine as 3.x services configure and call it: driver name, whole config, helper names, constants."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from microcosm.metadata import Metadata
from sqlalchemy import create_engine, text

from microcosm_postgres import constants
from microcosm_postgres.factories.engine import (
    choose_args,
    choose_connect_args,
    choose_database_name,
    choose_uri,
    choose_username,
    make_engine,
    make_url,
)
from tests.conftest import database_in_use, make_graph


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_bare_postgresql_driver_means_psycopg2(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="microcosm_postgres")
    assert make_url(Metadata("example", testing=True), {"driver": "postgresql"}).drivername == "postgresql+psycopg2"
    graph = make_graph(driver="postgresql")
    try:
        assert graph.postgres.dialect.driver == "psycopg2"
        with graph.postgres.connect() as connection:
            assert connection.execute(text("SELECT current_database()")).scalar() == database_in_use()
    finally:
        graph.postgres.dispose()
    assert _warnings(caplog) == []


def test_make_engine_accepts_the_whole_config(caplog: pytest.LogCaptureFixture) -> None:
    """`make_engine(graph.metadata, graph.config)` builds the engine `graph.config.postgres` describes."""
    graph = make_graph(application_name="whole-config-app", statement_timeout=4321)
    caplog.set_level(logging.WARNING, logger="microcosm_postgres")
    whole = make_engine(graph.metadata, graph.config)
    section = make_engine(graph.metadata, graph.config["postgres"])
    try:
        assert whole.url.render_as_string(hide_password=False) == section.url.render_as_string(hide_password=False)
        with whole.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT current_database(), current_setting('application_name'),"
                    " current_setting('statement_timeout')"
                )
            ).one()
        assert tuple(row) == (database_in_use(), "whole-config-app", "4321ms")
    finally:
        whole.dispose()
        section.dispose()
    assert _warnings(caplog) == []  # the other sections of the config are not "unknown keys"


def test_unknown_postgres_keys_are_reported_by_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="microcosm_postgres")
    url = make_url(Metadata("example", testing=True), {"hots": "db1", "password": "s3cret-value", "port": 6543})
    assert url.port == 6543
    (warning,) = _warnings(caplog)
    assert "hots" in warning
    assert "db1" not in warning  # names only, never values
    assert "s3cret-value" not in caplog.text


def test_choose_names_follow_the_convention() -> None:
    metadata = Metadata("example", testing=True)
    assert choose_database_name(metadata, {}) == "example_test_db"
    assert choose_username(metadata, {"read_only": True}) == "example_ro"
    assert choose_database_name(metadata, {"postgres": {"database_name": "other_db"}}) == "other_db"
    assert choose_username(Metadata("example"), {"postgres": {"username": "bob"}}) == "bob"


def test_choose_connect_args() -> None:
    args = choose_connect_args(Metadata("example", testing=True), {"require_ssl": True, "connect_timeout": 7})
    assert args["sslmode"] == "require"
    assert args["connect_timeout"] == 7
    assert args["application_name"] == "example"


def test_choose_uri_and_choose_args_make_working_engines() -> None:
    graph = make_graph(application_name="chosen-app")
    metadata, config = graph.metadata, graph.config
    by_uri = create_engine(choose_uri(metadata, config), connect_args=choose_connect_args(metadata, config))
    args, kwargs = choose_args(metadata, config)
    by_args = create_engine(*args, **kwargs)
    try:
        for engine in (by_uri, by_args):
            with engine.connect() as connection:
                row = connection.execute(text("SELECT current_database(), current_setting('application_name')")).one()
            assert tuple(row) == (database_in_use(), "chosen-app")
    finally:
        by_uri.dispose()
        by_args.dispose()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GLOBAL_SHARD_NAME", "global"),
        ("X_REQUEST_CLIENT_HEADER", "X-Request-Client"),
        ("X_REQUEST_SHARD_HEADER", "X-Request-Shard"),
    ],
)
def test_constants(name: str, value: Any) -> None:
    assert name in constants.__all__
    assert getattr(constants, name) == value

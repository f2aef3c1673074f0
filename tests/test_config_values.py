"""Bad configuration values: a typed error when the graph (or the component) is made, naming
the full key, the value and what is expected; never microcosm's "Missing required
configuration", never a connection attempt (an invalid port is not retried)."""

from __future__ import annotations

from typing import Any

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.errors import ValidationError
from sqlalchemy import text

from microcosm_postgres.errors import InvalidConfigurationError
from microcosm_postgres.graph import as_graph


def graph_from(**config: Any) -> Any:
    return create_object_graph(
        name="example", testing=True, loader=load_each(load_from_environ, load_from_dict(config))
    )


@pytest.mark.parametrize(("value", "expected"), [("abc", "an integer"), ("99999", "from 1 to 65535"), ("0", "1")])
def test_a_bad_postgres_port_from_the_environment_fails_at_graph_creation(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("EXAMPLE__POSTGRES__PORT", value)
    with pytest.raises(InvalidConfigurationError) as raised:
        create_object_graph(name="example", testing=True, loader=load_from_environ)
    error = raised.value
    assert isinstance(error, ValidationError)  # what microcosm's own refusals are
    assert error.key == "postgres.port"
    assert error.value == value
    message = str(error)
    assert "postgres.port" in message
    assert repr(value) in message
    assert expected in message
    assert "Missing required" not in message


def test_a_bad_shard_value_names_the_shard_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__HOST", "db-east")
    monkeypatch.setenv("EXAMPLE__SHARDS__EAST__POSTGRES__PORT", "abc")
    graph: Any = create_object_graph(name="example", testing=True, loader=load_from_environ)
    with pytest.raises(InvalidConfigurationError) as raised:
        graph.shards["east"]
    assert raised.value.key == "shards.east.postgres.port"
    assert "shards.east.postgres.port is 'abc', which is not an integer" in str(raised.value)
    assert "a int" not in str(raised.value)
    as_graph(graph).postgres.dispose()


def test_an_out_of_range_shard_port_is_refused_before_any_connection() -> None:
    graph = graph_from(shards={"east": {"postgres": {"host": "127.0.0.1", "port": 99999}}})
    with pytest.raises(InvalidConfigurationError) as raised:
        graph.shards["east"]
    assert raised.value.key == "shards.east.postgres.port"
    assert "99999" in str(raised.value)
    graph.postgres.dispose()


def test_a_bad_routed_engine_value_names_the_engine_key() -> None:
    graph = graph_from(
        sessionmaker={"engine_routing_strategy": "model_engine_routing_strategy"},
        secret={"postgres": {"host": "db-secret", "connect_timeout": "soon", "database_name": "example_test_x_db"}},
    )
    from tests.test_scale_routing import ScaleSecret  # noqa: F401  (a model routed to `secret`)

    with pytest.raises(InvalidConfigurationError) as raised:
        graph.use("sessionmaker")
    assert raised.value.key == "secret.postgres.connect_timeout"
    graph.postgres.dispose()


def test_a_bad_boolean_names_its_key() -> None:
    graph = graph_from(shards={"east": {"postgres": {"host": "db-east", "pgbouncer": "perhaps"}}})
    with pytest.raises(InvalidConfigurationError) as raised:
        graph.shards["east"]
    assert raised.value.key == "shards.east.postgres.pgbouncer"
    graph.postgres.dispose()


def test_a_bad_shard_value_fails_only_that_shard(example_databases: Any) -> None:
    """West's bad port: west's lookups, sessions and health report fail with west's error; east's work."""
    from microcosm_postgres import shards as shard_helpers
    from microcosm_postgres.context import SessionContext, transaction
    from microcosm_postgres.example import Company  # noqa: F401  (binds company_store)

    graph = graph_from(
        shards={
            "east": {"postgres": {"host": "127.0.0.1" if example_databases.host != "127.0.0.1" else "localhost"}},
            "west": {"postgres": {"port": "abc"}},
        }
    )
    engines = graph.shards
    try:
        assert "west" not in engines
        with pytest.raises(InvalidConfigurationError) as raised:
            engines["west"]
        assert raised.value.key == "shards.west.postgres.port"
        with SessionContext(graph, shard="east"), transaction() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
        with pytest.raises(InvalidConfigurationError), SessionContext(graph, shard="west"):
            graph.company_store.count()
        with pytest.raises(InvalidConfigurationError) as reported:
            shard_helpers.check_health(graph)
        message = str(reported.value)
        assert "shard 'west': shards.west.postgres.port is 'abc'" in message
        assert "shard 'east': PostgreSQL at" in message  # east answered, with its own report
        assert message.count("shards.west.postgres.port is") == 1
        assert ".;" not in message
    finally:
        for engine in engines.values():
            engine.dispose()


@pytest.mark.parametrize("key", ["PGBOUNCER", "ALLOW_DESTRUCTIVE", "ECHO"])
def test_a_bad_top_level_boolean_is_the_same_typed_error(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv(f"EXAMPLE__POSTGRES__{key}", "maybe")
    with pytest.raises(InvalidConfigurationError) as raised:
        create_object_graph(name="example", testing=True, loader=load_from_environ)
    name = f"postgres.{key.lower()}"
    assert raised.value.key == name
    assert f"{name} is 'maybe', which is not a boolean: use true or false" in str(raised.value)
    assert "Missing required" not in str(raised.value)


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("False", False), ("1", True), ("", False)])
def test_top_level_booleans_still_read_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("EXAMPLE__POSTGRES__ALLOW_DESTRUCTIVE", value)
    graph = create_object_graph(name="example", testing=True, loader=load_from_environ)
    assert graph.config.postgres.allow_destructive is expected

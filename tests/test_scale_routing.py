"""Engine routing: `model_engine_routing_strategy` sends `__engine__` models to their own engine."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.errors import ValidationError
from sqlalchemy import String, create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.pool import NullPool

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import CrossEngineTransactionError, DatabaseUnavailableError, UnsafeOperationError
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.factories.routing import ModelRouter, allow_cross_engine_writes
from microcosm_postgres.graph import as_graph
from microcosm_postgres.health import check_engines
from microcosm_postgres.models import EntityMixin, Model
from microcosm_postgres.operations import create_all, drop_all, recreate_all
from microcosm_postgres.store import Store
from microcosm_postgres.testing.database import PostgresServer, ensure_test_database
from tests.conftest import database_in_use, run_database, tables_on

SECRET_DATABASE = run_database("scale_secret")


class ScaleSecret(EntityMixin, Model):
    """A model kept in another database, as 3.x services declare it."""

    __tablename__ = "scale_secret"
    __engine__ = "secret"

    value: Mapped[str] = mapped_column(String(64), nullable=False)


def routed_graph(server: PostgresServer, **config: Any) -> ExampleGraph:
    """The example graph with the model strategy and a `secret` engine on the run's secret database."""
    secret = {
        "host": server.host,
        "port": server.port,
        "database_name": SECRET_DATABASE,
        # The suite's driver (CI runs it once per driver) for this engine too.
        "driver": os.environ.get("EXAMPLE__POSTGRES__DRIVER", "postgresql+psycopg2"),
    }
    base: dict[str, Any] = {
        "sessionmaker": {"engine_routing_strategy": "model_engine_routing_strategy"},
        "secret": {"postgres": secret},
    }
    for key, value in config.items():
        if key == "secret":
            value = {"postgres": {**secret, **value["postgres"]}}
        base[key] = {**base.get(key, {}), **value}
    loader = load_each(load_from_environ, load_from_dict(base))
    return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))


def secret_engine(graph: ExampleGraph) -> Engine:
    router = cast(Any, graph).model_engine_routing_strategy
    assert isinstance(router, ModelRouter)
    return router.engine("secret")


@pytest.fixture(scope="module")
def secret_database(example_databases: PostgresServer) -> PostgresServer:
    ensure_test_database("example", example_databases, database_name=SECRET_DATABASE)
    return example_databases


@pytest.fixture
def graph(secret_database: PostgresServer) -> Iterator[ExampleGraph]:
    graph = routed_graph(secret_database)
    recreate_all(graph)
    yield graph
    secret_engine(graph).dispose()
    graph.postgres.dispose()


def test_secret_model_rows_land_in_the_secret_database(graph: ExampleGraph, secret_database: PostgresServer) -> None:
    store = Store(graph, ScaleSecret)
    with SessionContext(graph):
        with transaction():
            store.create(ScaleSecret(value="hidden"))
        with transaction():
            graph.company_store.create(Company(name="Acme"))
        assert [row.value for row in store.search()] == ["hidden"]
        assert graph.company_store.count() == 1
    secret = create_engine(secret_database.admin_url.set(database=SECRET_DATABASE), poolclass=NullPool)
    main = create_engine(secret_database.admin_url.set(database=database_in_use()), poolclass=NullPool)
    try:
        with secret.connect() as connection:
            assert connection.execute(text("SELECT value FROM scale_secret")).scalars().all() == ["hidden"]
            assert not inspect(connection).has_table("company")
        with main.connect() as connection:
            # The plugin's session graph (default strategy, as in 3.x) may have created the table here.
            if inspect(connection).has_table("scale_secret"):
                assert connection.execute(text("SELECT count(*) FROM scale_secret")).scalar() == 0
    finally:
        secret.dispose()
        main.dispose()


def test_create_all_and_drop_all_act_on_every_routed_engine(
    graph: ExampleGraph, secret_database: PostgresServer
) -> None:
    # The plugin's session graph (default strategy, as in 3.x) created scale_secret in the main database too.
    main = create_engine(secret_database.admin_url.set(database=database_in_use()), poolclass=NullPool)
    with main.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS scale_secret"))
    main.dispose()
    drop_all(graph)
    assert "scale_secret" not in tables_on(secret_database.admin_url, SECRET_DATABASE)
    assert "company" not in tables_on(secret_database.admin_url, database_in_use())
    created = create_all(graph)
    assert "scale_secret" in created and "company" in created
    assert "scale_secret" in tables_on(secret_database.admin_url, SECRET_DATABASE)
    assert "company" not in tables_on(secret_database.admin_url, SECRET_DATABASE)
    main_tables = tables_on(secret_database.admin_url, database_in_use())
    assert {"company", "employee"} <= main_tables
    assert "scale_secret" not in main_tables


def test_writing_to_two_engines_in_one_transaction_is_refused(graph: ExampleGraph) -> None:
    store = Store(graph, ScaleSecret)
    with SessionContext(graph):
        with pytest.raises(CrossEngineTransactionError) as raised:
            with transaction():
                graph.company_store.create(Company(name="Acme"))
                store.create(ScaleSecret(value="hidden"))
        assert "hidden" not in str(raised.value)
        # Nothing half-written: the first write was rolled back with the transaction.
        assert graph.company_store.count() == 0
        assert store.count() == 0
        # Reading both in one transaction is fine, and the next transaction may write the other engine.
        with transaction():
            assert store.count() == 0
            graph.company_store.create(Company(name="Acme"))
            assert store.count() == 0
        with transaction():
            store.create(ScaleSecret(value="hidden"))
        assert store.count() == 1


def test_cross_engine_writes_when_opted_in(graph: ExampleGraph) -> None:
    store = Store(graph, ScaleSecret)
    with SessionContext(graph) as context:
        assert context.session is not None
        allow_cross_engine_writes(context.session)
        with transaction():
            graph.company_store.create(Company(name="Acme"))
            store.create(ScaleSecret(value="hidden"))
        assert graph.company_store.count() == 1
        assert store.count() == 1


def test_cross_engine_writes_by_config(secret_database: PostgresServer) -> None:
    graph = routed_graph(secret_database, sessionmaker={"allow_cross_engine_writes": True})
    try:
        recreate_all(graph)
        store = Store(graph, ScaleSecret)
        with SessionContext(graph), transaction():
            graph.company_store.create(Company(name="Acme"))
            store.create(ScaleSecret(value="hidden"))
    finally:
        secret_engine(graph).dispose()
        graph.postgres.dispose()


def test_default_strategy_keeps_every_model_on_postgres_and_says_so(
    secret_database: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    graph = as_graph(create_object_graph(name="example", testing=True))
    with caplog.at_level(logging.WARNING, logger="microcosm_postgres.factories.routing"):
        router = graph.sessionmaker.kw["router"]
    assert router.get_bind(ScaleSecret) is graph.postgres
    assert any("ScaleSecret ('secret')" in record.getMessage() for record in caplog.records)


def test_unknown_strategy_name_fails_at_graph_creation(secret_database: PostgresServer) -> None:
    graph = routed_graph(secret_database, sessionmaker={"engine_routing_strategy": "shard_engine_routing_strategy"})
    with pytest.raises(ValidationError, match="shard_engine_routing_strategy"):
        graph.use("sessionmaker")


def test_model_naming_an_engine_without_config_fails_at_graph_creation() -> None:
    loader = load_each(
        load_from_environ,
        load_from_dict(sessionmaker={"engine_routing_strategy": "model_engine_routing_strategy"}),
    )
    graph = create_object_graph(name="example", testing=True, loader=loader)
    with pytest.raises(ValidationError, match=r"secret\.postgres"):
        graph.use("sessionmaker")


def test_destructive_operations_check_every_routed_engine(secret_database: PostgresServer) -> None:
    # "localhost" is not the throwaway server's address as written: not provably a test server.
    graph = routed_graph(
        secret_database, secret={"postgres": {"host": "localhost", "database_name": "example_production_db"}}
    )
    try:
        with pytest.raises(UnsafeOperationError, match="example_production_db"):
            drop_all(graph)
        with pytest.raises(UnsafeOperationError, match="example_production_db"):
            recreate_all(graph)
    finally:
        graph.postgres.dispose()


def test_health_checks_every_routed_engine(graph: ExampleGraph) -> None:
    report = check_engines(graph)
    assert "engine 'postgres'" in report and "engine 'secret'" in report and SECRET_DATABASE in report


def test_health_names_the_routed_engine_that_does_not_answer(secret_database: PostgresServer) -> None:
    graph = routed_graph(
        secret_database, secret={"postgres": {"database_name": run_database("scale_missing"), "engine_retries": 0}}
    )
    try:
        with pytest.raises(DatabaseUnavailableError, match="engine 'secret'"):
            check_engines(graph)
    finally:
        secret_engine(graph).dispose()
        graph.postgres.dispose()

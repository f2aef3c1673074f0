"""A typed service passes the graph `create_object_graph` returned, as it is.

mypy --strict checks this module (see [tool.mypy] in pyproject.toml): the public functions
take a `GraphLike`, so an `ObjectGraph`, whose components mypy cannot see, is accepted.
Were they annotated with the `Graph` protocol alone, mypy would reject every call below.

"""

from __future__ import annotations

from types import SimpleNamespace

from microcosm.api import create_object_graph
from microcosm.object_graph import ObjectGraph
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from microcosm_postgres.graph import as_graph
from microcosm_postgres.health import check_health, migration_status
from microcosm_postgres.operations import create_all, drop_all, new_session, require_test_graph
from microcosm_postgres.testing.database import PostgresServer
from microcosm_postgres.testing.isolation import isolated


def test_public_functions_take_an_object_graph(example_databases: PostgresServer) -> None:
    graph: ObjectGraph = create_object_graph(name="example", testing=True)
    try:
        require_test_graph(graph)
        assert "is answering" in check_health(graph)
        assert migration_status(graph).head is None  # the example has no migrations
        create_all(graph)
        assert create_all(graph) == []  # every table exists now
        with isolated(graph) as context:
            assert context.session is not None
        session = new_session(graph)
        session.close()
    finally:
        as_graph(graph).postgres.dispose()


def test_model_cls_needs_only_metadata(example_databases: PostgresServer) -> None:
    graph = create_object_graph(name="example", testing=True)
    metadata = MetaData()
    Table("typing_probe", metadata, Column("id", Integer, primary_key=True))
    models = SimpleNamespace(metadata=metadata)  # no declarative base: a `metadata` attribute is enough
    try:
        assert create_all(graph, models) == ["typing_probe"]
        drop_all(graph, models)
        assert "typing_probe" not in inspect(as_graph(graph).postgres).get_table_names()
    finally:
        as_graph(graph).postgres.dispose()

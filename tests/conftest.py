"""Shared fixtures: the `example` service's graph against the real test database.

The driver comes from the environment like any microcosm config
(`EXAMPLE__POSTGRES__DRIVER=postgresql+psycopg` selects psycopg 3); CI runs the
suite once per driver.

"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

import microcosm_postgres.example  # noqa: F401 - binds company_store / employee_store
from microcosm_postgres.context import SessionContext

pytest_plugins = ["pytester"]


def make_graph(**postgres: Any) -> Any:
    """A testing graph for the example service, with `postgres` config overrides."""
    loader = load_each(load_from_environ, load_from_dict(postgres=postgres))
    return create_object_graph(name="example", testing=True, loader=loader)


@pytest.fixture
def graph() -> Iterator[Any]:
    graph = make_graph()
    yield graph
    graph.postgres.dispose()


@pytest.fixture
def context(graph: Any) -> Iterator[SessionContext]:
    with SessionContext(graph) as context:
        context.recreate_all()
        yield context


@pytest.fixture
def driver(graph: Any) -> str:
    return str(graph.postgres.dialect.driver)

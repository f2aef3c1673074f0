"""SmartMixin and the per-graph model -> store registry (smart.py)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from microcosm.api import create_object_graph

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import SessionNotOpenError
from microcosm_postgres.example import Company
from microcosm_postgres.models import EntityMixin as ModelsEntityMixin
from microcosm_postgres.models import SmartMixin as ModelsSmartMixin
from microcosm_postgres.smart import SmartMixin, store_for
from microcosm_postgres.store import Store
from microcosm_postgres.store import store_for as store_module_store_for
from tests.conftest import make_graph
from tests.models import Ticket


def test_names_stay_importable_from_their_1_0_modules() -> None:
    assert ModelsSmartMixin is SmartMixin
    assert issubclass(ModelsEntityMixin, SmartMixin)
    assert store_module_store_for is store_for


def test_an_ad_hoc_store_is_not_the_store_of_its_model(graph: Any, context: SessionContext) -> None:
    tickets = Store(graph, Ticket)
    with pytest.raises(LookupError, match="has no store for Ticket"):
        store_for(Ticket)
    with pytest.raises(LookupError, match="has no store for Ticket"):
        Ticket.count()
    tickets.assign_model_class_store()
    assert Ticket.store is tickets
    assert store_for(Ticket) is tickets
    with transaction():
        Ticket().create()
    assert Ticket.count() == 1


def test_the_bound_store_wins_over_one_made_earlier(graph: Any, context: SessionContext) -> None:
    ad_hoc = Store(graph, Company)
    bound = graph.company_store
    assert Company.store is bound
    assert store_for(Company) is bound
    assert ad_hoc is not bound


def test_each_graph_sees_its_own_store_and_the_attribute_works_outside_a_context() -> None:
    gc.collect()  # graphs of earlier tests must not count as "another graph"
    first = make_graph()
    store = first.company_store
    # The common single-graph service: Company.store works before any session is open.
    assert Company.store is store
    second = make_graph(database_name="example_test_secondary_db")
    second_store = second.company_store
    with SessionContext(first):
        assert Company.store is store
        with SessionContext(second):
            assert Company.store is second_store
        assert Company.store is store
    with pytest.raises(LookupError, match="ambiguous outside a SessionContext: several graphs have one"):
        Company.store  # noqa: B018
    graphs: list[Any] = [first, second]
    for graph in graphs:
        graph.postgres.dispose()


def test_shortcuts_need_a_session(graph: Any) -> None:
    graph.use("company_store")
    with pytest.raises(SessionNotOpenError):
        Company.count()


def test_the_registry_keeps_no_graph_alive() -> None:
    graph: Any = create_object_graph(name="example", testing=True)
    graph.use("company_store")
    with SessionContext(graph):
        assert Company.store is graph.company_store
    ref = weakref.ref(graph)
    graph.postgres.dispose()
    del graph
    gc.collect()
    assert ref() is None

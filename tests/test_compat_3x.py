"""Drop-in for microcosm-postgres 3.x services (issue #8): the store, model and session
surface such a service uses, tested from the 3.x behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from microcosm.registry import Registry
from sqlalchemy import inspect

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import ModelNotFoundError
from microcosm_postgres.example import Company
from microcosm_postgres.metrics import PostgresStoreMetrics, SQLExecutionStatus, configure_postgres_store_metrics
from microcosm_postgres.models import EPOCH, utcnow
from microcosm_postgres.store import Store
from tests.legacy_models import Clerk, Shop, ShopKind, legacy_tables


@pytest.fixture
def shops(graph: Any, context: SessionContext) -> Iterator[Store[Shop]]:
    with legacy_tables(graph, context.session):
        yield Store(graph, Shop, auto_filter_fields=[Shop.name])


class Reports:
    """Stands in for `store.postgres_store_metrics`, as a 3.x service's test patches it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def actions(self) -> list[tuple[str, str, str]]:
        return [(c["model_name"], c["action"], c["execution_result"].value) for c in self.calls]


# --- store calls ---------------------------------------------------------------------------


def test_replace_without_an_id_creates_the_row(graph: Any, context: SessionContext) -> None:
    store = graph.company_store
    with transaction():
        created = store.replace(None, Company(name="Acme"))
        smart = Company(name="Smart").replace()
    assert isinstance(created.id, UUID)
    assert isinstance(smart.id, UUID)
    SessionContext.session.expunge_all()
    assert sorted(company.name for company in store.search()) == ["Acme", "Smart"]


def test_replace_with_an_id_still_updates_or_creates_with_that_id(graph: Any, context: SessionContext) -> None:
    store = graph.company_store
    identifier = uuid4()
    with transaction():
        assert store.replace(identifier, Company(name="A")).id == identifier
        assert store.replace(identifier, Company(name="B")).name == "B"
    assert store.count() == 1


def test_search_first_takes_an_offset(graph: Any, context: SessionContext) -> None:
    store = graph.company_store
    with transaction():
        for name in ("a", "b", "c"):
            store.create(Company(name=name))
    names = [company.name for company in store.search()]
    first = store.search_first(offset=1)
    assert first is not None
    assert first.name == names[1]
    assert store.search_first(offset=3) is None
    assert Company.search_first(offset=2).name == names[2]
    assert store.search_first(limit=5, offset=0).name == names[0]


def test_create_assigns_an_id_when_the_id_type_holds_uuids(shops: Store[Shop]) -> None:
    with transaction():
        shop = shops.create(Shop(name="a"))
    assert isinstance(shop.id, UUID)
    shops.session.expunge_all()
    assert shops.retrieve(str(shop.id)).name == "a"
    assert shops.retrieve(shop.id.hex).id == shop.id
    with pytest.raises(ModelNotFoundError):
        shops.retrieve("not-a-uuid")


def test_auto_filters_name_the_columns(graph: Any) -> None:
    store = graph.company_store
    assert list(store.auto_filters) == ["name"]
    assert store.auto_filters["name"] is Company.name
    assert store.auto_filters is store.auto_filter_fields


# --- metrics -------------------------------------------------------------------------------


def test_every_timed_call_reports_through_postgres_store_metrics(graph: Any, context: SessionContext) -> None:
    store = graph.company_store
    assert store.postgres_store_metrics is graph.postgres_store_metrics
    assert isinstance(graph.postgres_store_metrics, PostgresStoreMetrics)
    reports = Reports()
    store.postgres_store_metrics = reports
    with transaction():
        company = store.create(Company(name="Acme"))
        store.update_with_diff(company.id, Company(name="Acme 2"))
    with pytest.raises(ModelNotFoundError):
        store.retrieve(uuid4())
    assert reports.actions() == [
        ("Company", "create", "SUCCESS"),
        ("Company", "retrieve", "SUCCESS"),  # inside update_with_diff: reported too
        ("Company", "update_with_diff", "SUCCESS"),
        ("Company", "retrieve", "FAILURE"),
    ]
    assert all(call["elapsed_time"] > 0 for call in reports.calls)
    assert reports.calls[0]["execution_result"] is SQLExecutionStatus.SUCCESS


class RecordingClient:
    def __init__(self) -> None:
        self.histograms: list[tuple[str, float, list[str]]] = []

    def histogram(self, name: str, value: float, tags: list[str]) -> None:
        self.histograms.append((name, value, tags))


def test_get_metrics_is_the_hook_that_chooses_the_client(graph: Any) -> None:
    client = RecordingClient()

    class ToClient(PostgresStoreMetrics):
        def get_metrics(self, graph: Any) -> Any:
            return client

    metrics = ToClient(graph)
    assert metrics.enabled
    metrics(model_name="Company", action="create", elapsed_time=1.5, execution_result=SQLExecutionStatus.SUCCESS)
    assert client.histograms == [
        (
            "store",
            1.5,
            ["source:microcosm-postgres", "action:create", "model_name:Company", "result:SUCCESS"],
        )
    ]
    assert not configure_postgres_store_metrics(graph).enabled  # testing graph: localhost


# --- models and sessions -------------------------------------------------------------------


def test_utcnow_and_epoch() -> None:
    now = utcnow()
    assert now.tzinfo is timezone.utc
    assert abs((datetime.now(timezone.utc) - now).total_seconds()) < 60
    assert EPOCH == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert EPOCH.timestamp() == 0


def test_session_context_surface(graph: Any) -> None:
    context = SessionContext(graph)
    before = context.session
    assert before is None
    assert context.open() is context
    assert SessionContext.session is context.session
    context.recreate_all()
    with transaction():
        graph.company_store.create(Company(name="Acme"))
    context.close()
    assert context.session is None


@pytest.mark.parametrize("expire_on_commit", [True, False])
def test_make_honours_expire_on_commit(graph: Any, expire_on_commit: bool) -> None:
    context = SessionContext.make(graph, expire_on_commit=expire_on_commit)
    try:
        context.recreate_all()
        with transaction():
            company = graph.company_store.create(Company(name="Acme"))
        assert bool(inspect(company).expired_attributes) is expire_on_commit
    finally:
        context.close()


# --- a small 3.x-style service, unchanged ------------------------------------------------


class ShopStore(Store[Shop]):
    def __init__(self, graph: Any) -> None:
        super().__init__(graph, Shop, auto_filter_fields=[Shop.name, Shop.kind])

    def _filter(self, query: Any, kind_in: Any = None, **filters: Any) -> Any:
        if kind_in is not None:
            query = query.filter(Shop.kind.in_(kind_in))
        return super()._filter(query, **filters)

    def _order_by(self, query: Any, **filters: Any) -> Any:
        return query.order_by(Shop.name.asc())


class ClerkStore(Store[Clerk]):
    def __init__(self, graph: Any) -> None:
        super().__init__(graph, Clerk, auto_filter_fields=[Clerk.shop_id])

    def search_by_shop(self, shop_id: Any, **kwargs: Any) -> list[Clerk]:
        return self.search(shop_id=shop_id, **kwargs)


def legacy_service_graph() -> Any:
    registry = Registry()
    registry.bind("shop_store", ShopStore)
    registry.bind("clerk_store", ClerkStore)
    # driver = "postgresql": 3.x's default, still present in existing config files.
    loader = load_each(load_from_environ, load_from_dict(postgres={"driver": "postgresql"}))
    return create_object_graph(name="example", testing=True, registry=registry, loader=loader)


def test_a_3x_style_service_runs_unchanged() -> None:
    graph = legacy_service_graph()
    shop_store, clerk_store = graph.use("shop_store", "clerk_store")
    reports = Reports()
    shop_store.postgres_store_metrics = reports
    try:
        with legacy_tables(graph), SessionContext(graph):
            with transaction():
                bakery = Shop(name="Bakery", kind=ShopKind.bakery).create()
                butcher = Shop(name="Butcher", kind="butcher").create()
                Clerk(name="Ann", shop_id=bakery.id).create()
            assert isinstance(bakery.id, UUID)
            assert Shop.store is shop_store
            assert [shop.name for shop in Shop.search()] == ["Bakery", "Butcher"]
            assert [shop.name for shop in Shop.search(kind="butcher")] == ["Butcher"]
            assert [shop.name for shop in Shop.search(kind_in=[ShopKind.bakery])] == ["Bakery"]
            assert Shop.count(name="Bakery") == 1
            assert Shop.search_first(offset=1).name == "Butcher"
            assert [clerk.name for clerk in clerk_store.search_by_shop(str(bakery.id))] == ["Ann"]
            with transaction():
                Shop(id=butcher.id, name="Butcher & Sons").update()
                _, delta = Shop(id=bakery.id, kind=ShopKind.butcher).update_with_diff()
                Shop(name="Florist").replace()
            assert delta["kind"] == (ShopKind.bakery, ShopKind.butcher)
            assert Shop.retrieve(butcher.id).name == "Butcher & Sons"
            assert Shop.count() == 3
            with transaction():
                assert Clerk.search()[0].delete() is True
            assert Clerk.count() == 0
        assert ("Shop", "create", "SUCCESS") in reports.actions()
        assert ("Shop", "update_with_diff", "SUCCESS") in reports.actions()
        assert {call["model_name"] for call in reports.calls} == {"Shop"}
    finally:
        graph.postgres.dispose()

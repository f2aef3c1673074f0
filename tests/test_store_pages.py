"""Keyset pagination (issue #9): search_page with an opaque cursor."""

from __future__ import annotations

from typing import Any

import pytest

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import InvalidInputError
from microcosm_postgres.store import Page, Store
from tests.models import Gadget, UnixGadget


@pytest.fixture(params=[Gadget, UnixGadget], ids=["datetime-key", "float-key"])
def store(request: pytest.FixtureRequest, graph: Any, context: SessionContext) -> Store[Any]:
    return Store(graph, request.param, auto_filter_fields=[request.param.size])


def test_pages_walk_every_row_once_in_key_order(store: Store[Any], statements: list[str]) -> None:
    model = store.model_class
    with transaction():
        # Several rows share a created_at: the id breaks the tie.
        rows = store.create_many([model(name=f"g{index}", size=index % 2) for index in range(23)])
    expected = sorted(rows, key=lambda row: (row.created_at, row.id))
    statements.clear()
    seen: list[Any] = []
    cursor = None
    pages = 0
    while True:
        page = store.search_page(after=cursor, limit=5)
        assert isinstance(page, Page)
        seen += page.items
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [row.id for row in seen] == [row.id for row in expected]
    assert pages == 5
    assert not any("count(" in statement.lower() or "OFFSET" in statement for statement in statements)


def test_filters_and_criteria_apply_to_pages(store: Store[Any]) -> None:
    model = store.model_class
    with transaction():
        store.create_many([model(name=f"g{index}", size=index % 2) for index in range(10)])
    first = store.search_page(size=1, limit=3)
    second = store.search_page(size=1, limit=3, after=first.next_cursor)
    by_criteria = store.search_page(model.size == 1, limit=3, after=first.next_cursor)
    assert [len(first.items), len(second.items)] == [3, 2]
    assert second.next_cursor is None
    assert by_criteria.items == second.items
    assert all(row.size == 1 for row in first.items + second.items)


def test_an_exact_last_page_has_no_next_cursor(store: Store[Any]) -> None:
    model = store.model_class
    with transaction():
        store.create_many([model(name=f"g{index}") for index in range(4)])
    page = store.search_page(limit=4)
    assert len(page.items) == 4
    assert page.next_cursor is None
    assert store.search_page(limit=4).items == page.items


@pytest.mark.parametrize("cursor", ["garbage", "", "W10", "WyJ4IiwieSJd", "bm90IGpzb24"])
def test_a_cursor_the_store_did_not_make_is_invalid_input(
    store: Store[Any], statements: list[str], cursor: str
) -> None:
    statements.clear()
    with pytest.raises(InvalidInputError, match="not a page cursor"):
        store.search_page(after=cursor)
    assert statements == []


@pytest.mark.parametrize("limit", [0, -1, "5"])
def test_limit_must_be_positive(store: Store[Any], limit: Any) -> None:
    with pytest.raises(InvalidInputError):
        store.search_page(limit=limit)

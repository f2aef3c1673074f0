"""create_many(..., attach=False): the rows are written, the session is left as it was (issue #9)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import inspect, text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import DuplicateModelError, InvalidInputError
from microcosm_postgres.example import Company
from microcosm_postgres.store import Store
from tests.models import Gadget, Ticket


def stored(graph: Any, table: str, columns: str = "id, name, size") -> list[tuple[Any, ...]]:
    """The rows in `table`, read with SQL through the test's session (past its identity map)."""
    rows = SessionContext.session.execute(text(f"SELECT {columns} FROM {table}"))
    return sorted(tuple(row) for row in rows)


def test_unattached_rows_are_stored_with_the_values_the_instances_hold(graph: Any, context: SessionContext) -> None:
    gadgets = Store(graph, Gadget)
    instances = [Gadget(name=f"g{index}", size=index) for index in range(50)]
    with transaction():
        created = gadgets.create_many(instances, attach=False)
    assert created == instances
    assert all(isinstance(gadget.id, UUID) and inspect(gadget).transient for gadget in created)
    assert not any(gadget in gadgets.session for gadget in created)
    assert list(gadgets.session) == []
    assert stored(graph, "test_gadget") == sorted((gadget.id, gadget.name, gadget.size) for gadget in instances)
    # Retrieved rows are the session's own instances, not the caller's.
    retrieved = gadgets.retrieve(instances[3].id)
    assert retrieved is not instances[3]
    assert retrieved.name == instances[3].name
    assert (retrieved.created_at, retrieved.updated_at) == (instances[3].created_at, instances[3].updated_at)


def test_attached_by_default(graph: Any, context: SessionContext) -> None:
    gadgets = Store(graph, Gadget)
    with transaction():
        [gadget] = gadgets.create_many([Gadget(name="attached")])
    assert inspect(gadget).persistent
    assert gadgets.retrieve(gadget.id) is gadget


def test_unattached_on_a_model_the_flush_writes(graph: Any, context: SessionContext) -> None:
    # A server default (SERIAL) takes the unit-of-work path: the instances leave the session after it.
    tickets = Store(graph, Ticket)
    with transaction():
        created = tickets.create_many([Ticket(), Ticket()], attach=False)
    assert list(tickets.session) == []
    assert all(inspect(ticket).detached for ticket in created)
    assert sorted(ticket.number for ticket in created) == [row[0] for row in stored(graph, "test_ticket", "number")]


@pytest.mark.parametrize("in_block", [True, False], ids=["in-block", "outside"])
def test_an_unattached_refused_batch_writes_nothing(graph: Any, context: SessionContext, in_block: bool) -> None:
    gadgets = Store(graph, Gadget)
    with transaction():
        gadgets.create(Gadget(name="taken"))
    batch = [Gadget(name="new-1"), Gadget(name="taken"), Gadget(name="new-2")]
    if in_block:
        with pytest.raises(DuplicateModelError), transaction():
            gadgets.create_many(batch, attach=False)
    else:
        with pytest.raises(DuplicateModelError):
            gadgets.create_many(batch, attach=False)
    assert stored(graph, "test_gadget", "name") == [("taken",)]
    with transaction():
        gadgets.create_many([Gadget(name="after")], attach=False)
    assert stored(graph, "test_gadget", "name") == [("after",), ("taken",)]


def test_unattached_enum_check_comes_before_any_id(graph: Any, context: SessionContext) -> None:
    batch = [Company(name="a"), Company(name="b", type="bogus")]
    with pytest.raises(InvalidInputError, match="allowed names"):
        graph.company_store.create_many(batch, attach=False)
    assert [company.id for company in batch] == [None, None]
    assert stored(graph, "company", "name") == []


def test_unattached_leaves_instances_the_session_had_in_it(graph: Any, context: SessionContext) -> None:
    gadgets = Store(graph, Gadget)
    with transaction():
        known = gadgets.create(Gadget(name="known"))
        [known_again, new] = gadgets.create_many([known, Gadget(name="new")], attach=False)
    assert known_again is known
    assert inspect(known).persistent
    assert new not in gadgets.session
    assert stored(graph, "test_gadget", "name") == [("known",), ("new",)]

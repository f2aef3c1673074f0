"""Our suite runs on the plugin's rollback isolation (`testing.isolation`): proof that it isolates.

The two turns of the first test write the same row (the name is unique) and each checks
first that the row is not there: whichever runs second, in any order, would find the
first one's row, or fail to write its own, if an isolated test's writes outlived it.

"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from microcosm_postgres._sessions import ISOLATION
from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import IsolationError
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.testing.isolation import Isolation, isolated

MARKER = "written by an isolated test"


def committed_count(graph: ExampleGraph) -> int:
    """How many marker rows another connection sees (only committed ones)."""
    with graph.postgres.connect() as connection:
        return int(
            connection.execute(text("SELECT count(*) FROM company WHERE name = :name"), {"name": MARKER}).scalar_one()
        )


@pytest.mark.parametrize("turn", ["first", "second"])
def test_what_an_isolated_test_writes_is_gone_for_the_next(
    graph: ExampleGraph, context: SessionContext, turn: str
) -> None:
    store = graph.company_store
    assert store.count(name=MARKER) == 0  # the other turn's row, if it survived, would show here
    assert committed_count(graph) == 0
    with transaction():
        store.create(Company(name=MARKER))
    assert store.count(name=MARKER) == 1  # the test sees its own write ...
    assert committed_count(graph) == 0  # ... which is never committed


def test_isolated_contexts_one_after_the_other_start_from_the_same_rows(graph: ExampleGraph) -> None:
    for _ in range(2):  # the second context must not see what the first wrote
        with isolated(graph):
            assert graph.company_store.count(name=MARKER) == 0
            with transaction():
                graph.company_store.create(Company(name=MARKER))
            assert graph.company_store.count(name=MARKER) == 1
    assert committed_count(graph) == 0


def test_a_session_that_does_not_route_is_refused_and_closed(graph: ExampleGraph) -> None:
    isolation = Isolation("default")
    with Session(graph.postgres) as session:
        session.execute(text("SELECT 1"))
        assert session.in_transaction()
        with pytest.raises(IsolationError, match="postgres_commit") as raised:
            isolation.adopt(session, "other")
        assert not session.in_transaction()
        assert ISOLATION not in session.info
    assert raised.value.status_code
    isolation.close()

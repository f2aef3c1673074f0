from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import pytest
from microcosm.api import create_object_graph, load_from_dict
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, maybe_transactional, transaction, transactional
from microcosm_postgres.errors import DuplicateModelError, SessionNotOpenError, UnsafeOperationError
from microcosm_postgres.example import Company, ExampleGraph
from tests.conftest import SECONDARY_DATABASE, make_graph


def names(store: Any) -> list[str]:
    return sorted(company.name for company in store.search())


def committed_names(graph: ExampleGraph) -> list[str]:
    """What another connection sees: only committed rows."""
    with graph.postgres.connect() as connection:
        return sorted(connection.execute(text("SELECT name FROM company")).scalars())


def test_no_session_is_a_clear_error() -> None:
    with pytest.raises(SessionNotOpenError, match=r"SessionContext\(graph\)"):
        SessionContext.session  # noqa: B018


def test_store_outside_its_graph_context_names_the_graph(graph: ExampleGraph) -> None:
    other = make_graph(database_name=SECONDARY_DATABASE)
    with SessionContext(other), pytest.raises(SessionNotOpenError, match="'example'"):
        graph.company_store.count()
    other.postgres.dispose()


def test_make_and_close(graph: ExampleGraph) -> None:
    context = SessionContext.make(graph)
    assert SessionContext.session is context.session
    context.close()
    with pytest.raises(SessionNotOpenError):
        SessionContext.session  # noqa: B018


def test_contexts_for_two_graphs_nest(graph: ExampleGraph, context: SessionContext) -> None:
    store = graph.company_store
    second = make_graph(database_name=SECONDARY_DATABASE)
    with transaction():
        store.create(Company(name="outer"))
    with SessionContext(second) as inner:
        inner.recreate_all()
        assert SessionContext.session is inner.session
        # The outer graph's store keeps using the outer graph's session.
        assert store.session is context.session
        assert names(store) == ["outer"]
        with transaction():
            second.company_store.create(Company(name="inner"))
        assert names(second.company_store) == ["inner"]
    assert SessionContext.session is context.session
    assert names(store) == ["outer"]
    second.postgres.dispose()


@pytest.mark.postgres_commit
def test_sessions_are_per_thread(graph: ExampleGraph, context: SessionContext) -> None:
    seen: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        try:
            SessionContext.session  # noqa: B018
        except SessionNotOpenError:
            seen[f"{name}-inherited"] = False
        with SessionContext(graph) as own:
            barrier.wait(timeout=5)
            seen[name] = own.session
            with transaction():
                graph.company_store.create(Company(name=name))
            barrier.wait(timeout=5)
            seen[f"{name}-current"] = SessionContext.session

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen["a"] is not seen["b"]
    assert seen["a-current"] is seen["a"]
    assert seen["b-current"] is seen["b"]
    assert seen["a-inherited"] is False
    assert seen["b-inherited"] is False
    assert SessionContext.session is context.session
    assert names(graph.company_store) == ["a", "b"]


def test_sessions_are_per_task(graph: ExampleGraph) -> None:
    async def task(name: str) -> tuple[Any, Any]:
        with SessionContext(graph) as own:
            await asyncio.sleep(0.01)  # let the other task open its context meanwhile
            return own.session, SessionContext.session

    async def both() -> list[tuple[Any, Any]]:
        return list(await asyncio.gather(task("a"), task("b")))

    (a_own, a_seen), (b_own, b_seen) = asyncio.run(both())
    assert a_own is a_seen
    assert b_own is b_seen
    assert a_own is not b_own


@pytest.mark.postgres_commit
def test_commit(graph: ExampleGraph, context: SessionContext) -> None:
    with transaction():
        graph.company_store.create(Company(name="Acme"))
    assert committed_names(graph) == ["Acme"]


@pytest.mark.postgres_commit
def test_rollback_on_exception(graph: ExampleGraph, context: SessionContext) -> None:
    with pytest.raises(ZeroDivisionError), transaction():
        graph.company_store.create(Company(name="Acme"))
        1 / 0  # noqa: B018
    assert committed_names(graph) == []
    assert names(graph.company_store) == []


@pytest.mark.postgres_commit
def test_nested_transaction_is_a_savepoint(graph: ExampleGraph, context: SessionContext) -> None:
    store = graph.company_store
    with transaction():
        store.create(Company(name="kept"))
        with pytest.raises(ValueError), transaction():
            store.create(Company(name="discarded"))
            raise ValueError("inner block fails")
        with transaction():
            store.create(Company(name="also kept"))
        assert committed_names(graph) == []  # nothing is visible before the outer commit
    assert committed_names(graph) == ["also kept", "kept"]


@pytest.mark.postgres_commit
def test_commit_false_is_a_dry_run(graph: ExampleGraph, context: SessionContext) -> None:
    with transaction(commit=False):
        graph.company_store.create(Company(name="Acme"))
        assert names(graph.company_store) == ["Acme"]
    assert committed_names(graph) == []
    with transaction():
        graph.company_store.create(Company(name="kept"))
        with transaction(commit=False):
            graph.company_store.create(Company(name="dry"))
    assert committed_names(graph) == ["kept"]


@pytest.mark.postgres_commit
def test_reads_before_transaction_are_adopted(graph: ExampleGraph, context: SessionContext) -> None:
    assert graph.company_store.count() == 0  # autobegins a transaction
    with transaction():
        graph.company_store.create(Company(name="Acme"))
    assert committed_names(graph) == ["Acme"]


@pytest.mark.postgres_commit
def test_transactional(graph: ExampleGraph, context: SessionContext) -> None:
    @transactional
    def create(name: str) -> Company:
        return graph.company_store.create(Company(name=name))

    @transactional
    def fail(name: str) -> None:
        graph.company_store.create(Company(name=name))
        raise RuntimeError("no")

    assert create("Acme").name == "Acme"
    with pytest.raises(RuntimeError):
        fail("Other")
    assert committed_names(graph) == ["Acme"]


@pytest.mark.postgres_commit
def test_maybe_transactional(graph: ExampleGraph, context: SessionContext) -> None:
    received: list[Any] = []

    @maybe_transactional
    def create(name: str) -> None:
        graph.company_store.create(Company(name=name))

    @maybe_transactional
    def create_seeing_commit(name: str, commit: bool = True) -> None:
        received.append(commit)
        graph.company_store.create(Company(name=name))

    create("committed")
    create("dry", commit=False)  # type: ignore[call-arg]  # maybe_transactional adds `commit`: `F -> F` cannot say it
    create_seeing_commit("dry too", commit=False)
    create_seeing_commit("committed too")
    assert received == [False, True]
    assert committed_names(graph) == ["committed", "committed too"]


@pytest.mark.postgres_commit
def test_recreate_all_refuses_a_database_that_is_not_a_test_database(
    graph: ExampleGraph, context: SessionContext
) -> None:
    with transaction():
        graph.company_store.create(Company(name="precious"))
    production = cast(
        ExampleGraph,
        create_object_graph(
            name="example",
            testing=False,
            loader=load_from_dict(postgres={"database_name": "example_db"}),
        ),
    )
    with SessionContext(production) as production_context, pytest.raises(UnsafeOperationError, match="'example_db'"):
        production_context.recreate_all()
    assert committed_names(graph) == ["precious"]
    production.postgres.dispose()


def test_graph_of_the_innermost_context(graph: ExampleGraph) -> None:
    other = make_graph(database_name=SECONDARY_DATABASE)
    with SessionContext(graph):
        assert SessionContext.graph is graph
        with SessionContext(other):
            assert SessionContext.graph is other
        assert SessionContext.graph is graph
    other.postgres.dispose()
    with pytest.raises(SessionNotOpenError):
        SessionContext.graph  # noqa: B018


def test_opening_twice_is_refused_and_keeps_the_open_session(graph: ExampleGraph) -> None:
    context = SessionContext(graph).open()
    try:
        session = context.session
        with pytest.raises(RuntimeError, match="already open"):
            context.open()
        assert context.session is session
        assert SessionContext.session is session
    finally:
        context.close()
    # Closing again is a no-op, and no session is left open.
    context.close()
    with pytest.raises(SessionNotOpenError):
        SessionContext.session  # noqa: B018


def test_a_deferred_constraint_refused_at_commit_is_translated(graph: ExampleGraph) -> None:
    with SessionContext(graph), pytest.raises(DuplicateModelError) as refused, transaction() as session:
        session.execute(
            text(
                """
                CREATE TEMP TABLE deferred_pair (id int UNIQUE DEFERRABLE INITIALLY DEFERRED);
                INSERT INTO deferred_pair VALUES (1), (1);
                """
            )
        )
    assert refused.value.status_code == 409
    assert refused.value.sqlstate == "23505"
    # COMMIT became ROLLBACK: the table made in the block is gone with it, and the session works.
    with SessionContext(graph):
        assert SessionContext.session.execute(text("SELECT to_regclass('pg_temp.deferred_pair')")).scalar() is None

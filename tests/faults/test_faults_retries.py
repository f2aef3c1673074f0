"""`@transactional(retries=N)`: whole blocks run again on retryable errors, never duplicated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction, transactional
from microcosm_postgres.errors import (
    CommitOutcomeUnknownError,
    DuplicateModelError,
    TransactionConflictError,
)
from microcosm_postgres.example import Company
from microcosm_postgres.identifiers import new_object_id
from tests.faults.conftest import company_names, terminate, wait_until
from tests.faults.proxy import FaultProxy

# A real serialization failure would need two racing transactions; the server raising the
# SQLSTATE itself goes through the same driver and translation.
CONFLICT = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"


def test_a_conflict_runs_the_whole_block_again(proxied_graph: Callable[..., Any], admin: Any) -> None:
    graph = proxied_graph()
    attempts: list[int] = []

    @transactional(retries=3, backoff=0)
    def create(name: str) -> None:
        attempts.append(1)
        graph.company_store.create(Company(name=name))
        if len(attempts) == 1:
            SessionContext.session.execute(text(CONFLICT))

    with SessionContext(graph):
        create("retried")
    assert len(attempts) == 2
    assert company_names(admin) == ["retried"]


def test_retries_end_with_the_last_error(proxied_graph: Callable[..., Any], admin: Any) -> None:
    graph = proxied_graph()
    attempts: list[int] = []

    @transactional(retries=2, backoff=0)
    def always_conflicts() -> None:
        attempts.append(1)
        graph.company_store.create(Company(name="never"))
        SessionContext.session.execute(text(CONFLICT))

    with SessionContext(graph), pytest.raises(TransactionConflictError):
        always_conflicts()
    assert len(attempts) == 3
    assert company_names(admin) == []


def test_an_error_that_is_not_retryable_is_not_retried(proxied_graph: Callable[..., Any]) -> None:
    graph = proxied_graph()
    attempts: list[int] = []

    @transactional(retries=3, backoff=0)
    def duplicate() -> None:
        attempts.append(1)
        graph.company_store.create(Company(name="twin"))
        graph.company_store.create(Company(name="twin"))

    with SessionContext(graph), pytest.raises(DuplicateModelError):
        duplicate()
    assert len(attempts) == 1


def test_a_connection_lost_before_commit_is_retried_once_written(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    attempts: list[int] = []

    @transactional(retries=3, backoff=0)
    def create() -> None:
        attempts.append(1)
        graph.company_store.create(Company(name="once"))
        if len(attempts) == 1:
            terminate(admin, int(SessionContext.session.execute(text("SELECT pg_backend_pid()")).scalar_one()))
            wait_until(lambda: proxy.connections == 0, "the proxy relayed the server's farewell")

    with SessionContext(graph):
        create()
    assert len(attempts) == 2
    assert company_names(admin) == ["once"]


def test_an_unknown_commit_outcome_is_not_retried_unless_idempotent(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    attempts: list[int] = []

    @transactional(retries=3, backoff=0)
    def create() -> None:
        attempts.append(1)
        graph.company_store.create(Company(name="maybe"))

    proxy.drop_next_commit_reply()
    with SessionContext(graph), pytest.raises(CommitOutcomeUnknownError):
        create()
    assert len(attempts) == 1
    assert company_names(admin) == ["maybe"]


def test_an_idempotent_create_after_an_unknown_outcome_counts_as_done(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    company_id = new_object_id()  # client-generated, outside the block: the same on every run
    attempts: list[int] = []

    @transactional(retries=3, idempotent=True, backoff=0)
    def create() -> Company:
        attempts.append(1)
        created: Company = graph.company_store.create(Company(id=company_id, name="exactly once"))
        return created

    proxy.drop_next_commit_reply()
    with SessionContext(graph):
        company = create()
    assert proxy.commit_replies_dropped == 1
    assert len(attempts) == 2
    # The first run committed; the second found its row: no false 409, no second row.
    assert company.id == company_id
    assert company_names(admin) == ["exactly once"]


def test_an_idempotent_create_survives_several_unknown_outcomes(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    company_id = new_object_id()
    attempts: list[int] = []

    @transactional(retries=3, idempotent=True, backoff=0)
    def create() -> Company:
        attempts.append(1)
        created: Company = graph.company_store.create(Company(id=company_id, name="thrice"))
        return created

    proxy.drop_next_commit_reply(times=2)
    with SessionContext(graph):
        create()
    assert len(attempts) == 3
    assert company_names(admin) == ["thrice"]


def test_an_idempotent_rerun_still_refuses_a_different_row(
    proxied_graph: Callable[..., Any], proxy: FaultProxy, admin: Any
) -> None:
    graph = proxied_graph()
    company_id = new_object_id()
    names = iter(["first", "second"])

    @transactional(retries=3, idempotent=True, backoff=0)
    def create() -> None:
        graph.company_store.create(Company(id=company_id, name=next(names)))

    proxy.drop_next_commit_reply()
    with SessionContext(graph), pytest.raises(DuplicateModelError):
        create()  # the row with this id holds other values: a real conflict
    assert company_names(admin) == ["first"]


def test_a_nested_block_is_not_retried_on_its_own(proxied_graph: Callable[..., Any]) -> None:
    graph = proxied_graph()
    attempts: list[int] = []

    @transactional(retries=3, backoff=0)
    def conflicts() -> None:
        attempts.append(1)
        SessionContext.session.execute(text(CONFLICT))

    with SessionContext(graph), pytest.raises(TransactionConflictError), transaction():
        conflicts()
    assert len(attempts) == 1


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="retries >= 0"):
        transactional(retries=-1)

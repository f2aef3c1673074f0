"""Locking reads (issue #9): for_update, nowait -> 409, and a SKIP LOCKED job queue."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.errors import InvalidInputError, ModelConflictError
from microcosm_postgres.store import Store
from tests.models import Gadget


@pytest.fixture
def gadgets(graph: Any, context: SessionContext) -> Store[Gadget]:
    return Store(graph, Gadget, auto_filter_fields=[Gadget.name])


@pytest.mark.parametrize(
    ("for_update", "clause"),
    [(True, "FOR UPDATE"), ("nowait", "FOR UPDATE NOWAIT"), ("skip_locked", "FOR UPDATE SKIP LOCKED")],
)
def test_locking_reads_say_so_in_sql(
    gadgets: Store[Gadget], statements: list[str], for_update: Any, clause: str
) -> None:
    with transaction():
        gadget = gadgets.create(Gadget(name="a"))
    statements.clear()
    with transaction():
        assert gadgets.retrieve(gadget.id, for_update=for_update) is gadget
        assert gadgets.search(name="a", for_update=for_update) == [gadget]
        assert gadgets.search(Gadget.size.is_(None), for_update=for_update) == [gadget]
    selects = [statement for statement in statements if statement.startswith("SELECT")]
    assert len(selects) == 3
    assert all(statement.rstrip().endswith(clause) for statement in selects), selects


def test_an_unknown_lock_mode_is_invalid_input(gadgets: Store[Gadget]) -> None:
    with pytest.raises(InvalidInputError, match="for_update must be True, 'nowait' or 'skip_locked'"):
        gadgets.search(for_update="share")


@pytest.mark.postgres_commit
@pytest.mark.parametrize("read", ["retrieve", "search"])
def test_nowait_on_a_locked_row_is_a_409(graph: Any, gadgets: Store[Gadget], read: str) -> None:
    with transaction():
        identifier = gadgets.create(Gadget(name="a")).id
    with transaction():
        gadgets.retrieve(identifier, for_update=True)  # held until this block ends
        with SessionContext(graph):  # another session, another connection
            with pytest.raises(ModelConflictError) as raised:
                if read == "retrieve":
                    gadgets.retrieve(identifier, for_update="nowait")
                else:
                    gadgets.search(name="a", for_update="nowait")
            assert raised.value.status_code == 409
            assert raised.value.sqlstate == "55P03"
            assert gadgets.search(name="a", for_update="skip_locked") == []
            # Outside a block the refused read left the session usable.
            assert gadgets.count() == 1


@pytest.mark.postgres_commit
def test_a_skip_locked_job_queue_hands_each_row_to_exactly_one_worker(graph: Any, gadgets: Store[Gadget]) -> None:
    with transaction():
        gadgets.create_many([Gadget(name=f"job-{index}", size=0) for index in range(60)])
    taken: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(number: int) -> None:
        try:
            with SessionContext(graph):
                start.wait(timeout=10)
                while True:
                    with transaction():
                        jobs = gadgets.search(Gadget.size == 0, limit=2, for_update="skip_locked")
                        if not jobs:
                            return
                        for job in jobs:
                            job.size = number + 1
                            taken.append((number, str(job.name)))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    names = [name for _, name in taken]
    assert sorted(names) == sorted(f"job-{index}" for index in range(60))  # each exactly once
    with graph.postgres.connect() as connection:
        stored = dict(connection.execute(text("SELECT name, size FROM test_gadget")).all())
    assert stored == {name: number + 1 for number, name in taken}

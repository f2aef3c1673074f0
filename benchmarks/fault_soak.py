"""Writers under faults: does every call get the truth about whether it committed?

    PYTHONPATH=. python benchmarks/fault_soak.py [--drivers postgresql+psycopg2 postgresql+psycopg]
        [--faults terminate reset crash commit-reply freeze partition]
        [--writers 6] [--duration 10] [--retries 3]

(from the repository root: it uses the fault proxy of `tests/faults`). Starts a
throwaway cluster of its own, with a loopback fault proxy in front of it. For each fault
and driver, `--writers` threads call, for `--duration` seconds,
`@transactional(retries=N, idempotent=True)` around `employee_store.create` of a row
whose id the caller generated, while a fault is injected every 200 ms:

    terminate     pg_terminate_backend of every writer backend
    reset         the proxy resets every connection (RST)
    crash         `pg_ctl restart -m immediate` of the cluster
    commit-reply  the proxy relays the next COMMIT, drops the server's reply, resets
    freeze        the proxy stops relaying for 5 s, then relays for 1 s
                  (statement_timeout=2000, connect_timeout=2; no retries: one call's bound)
    partition     as freeze, but the proxy drops the bytes (and then resets those links)

Afterwards the table is compared with what each call was told, and one line per fault and
driver is printed: calls, outcomes by error type, lost (told OK, not committed),
duplicated (one call, several rows), committed-but-raised (and what those calls were
told), untruthful (committed but told something other than "outcome unknown"), the
maximum latency of a failed call, and connections leaked (checked out after the run).
All traffic is on 127.0.0.1; every loop is bounded in time.

"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from microcosm.api import create_object_graph, load_from_dict
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from microcosm_postgres.context import SessionContext, transactional
from microcosm_postgres.errors import CommitOutcomeUnknownError
from microcosm_postgres.example import Employee
from microcosm_postgres.identifiers import new_object_id
from microcosm_postgres.provision import provision
from microcosm_postgres.testing.server import TemporaryServer
from tests.faults.proxy import FaultProxy

DATABASE = "example_test_soak_db"
APPLICATION = "fault_soak"
FAULTS = ("terminate", "reset", "crash", "commit-reply", "freeze", "partition")
DRIVERS = ("postgresql+psycopg2", "postgresql+psycopg")
INTERVAL = 0.2


@dataclass
class Call:
    id: UUID
    outcome: str
    latency: float
    attempts: int


@dataclass
class Run:
    fault: str
    driver: str
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    leaked: int = 0
    hung: int = 0
    replies_dropped: int = 0


def make_graph(server: TemporaryServer, port: int, driver: str, **postgres: Any) -> Any:
    config = {
        "host": "127.0.0.1",
        "port": port,
        "database_name": DATABASE,
        "driver": driver,
        "application_name": APPLICATION,
        **postgres,
    }
    return create_object_graph(name="example", testing=True, loader=load_from_dict(postgres=config))


def inject(fault: str, proxy: FaultProxy, server: TemporaryServer, admin: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        if fault == "terminate":
            with admin.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :app AND pid <> pg_backend_pid()"
                    ),
                    {"app": APPLICATION},
                )
        elif fault == "reset":
            proxy.reset_all()
        elif fault == "crash":
            server.restart(mode="immediate")
        elif fault == "commit-reply":
            proxy.drop_next_commit_reply()
        elif fault in ("freeze", "partition"):
            proxy.freeze() if fault == "freeze" else proxy.partition()
            stop.wait(5)
            proxy.thaw()
            stop.wait(1)
            continue
        stop.wait(INTERVAL)


def soak(fault: str, driver: str, server: TemporaryServer, admin: Any, args: argparse.Namespace) -> Run:
    proxy = FaultProxy(server.host, server.port)
    bounded = fault in ("freeze", "partition")
    graph = make_graph(
        server,
        proxy.port,
        driver,
        pool_size=args.writers,
        connect_timeout=2,
        statement_timeout=2000 if bounded else None,
    )
    retries = 0 if bounded else args.retries
    with admin.connect() as connection:
        connection.execute(text("TRUNCATE company, employee"))
        company_id = new_object_id()
        connection.execute(
            text("INSERT INTO company (id, name, created_at, updated_at) VALUES (:id, 'soak', now(), now())"),
            {"id": company_id},
        )
    run = Run(fault, driver)
    end = time.monotonic() + args.duration
    stop = threading.Event()

    @transactional(retries=retries, idempotent=True)
    def write(employee_id: UUID, number: int, attempts: list[int]) -> None:
        attempts.append(1)
        graph.employee_store.create(
            Employee(id=employee_id, first=f"call-{number}", last="soak", company_id=company_id)
        )

    def writer(index: int) -> None:
        number = index * 10_000_000
        while time.monotonic() < end:
            number += 1
            employee_id = new_object_id()
            started = time.monotonic()
            attempts: list[int] = []
            try:
                with SessionContext(graph):
                    write(employee_id, number, attempts)
                outcome = "OK"
            except Exception as error:
                outcome = type(error).__name__
            with run.lock:
                run.calls.append(Call(employee_id, outcome, time.monotonic() - started, len(attempts)))

    # Resolve the graph's components here: microcosm builds them lazily, not for racing threads.
    graph.use("postgres", "sessionmaker", "employee_store")
    injector = threading.Thread(target=inject, args=(fault, proxy, server, admin, stop), daemon=True)
    writers = [threading.Thread(target=writer, args=(index,), daemon=True) for index in range(args.writers)]
    injector.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(args.duration + 120)
    stop.set()
    injector.join(30)
    proxy.thaw()
    run.leaked = graph.postgres.pool.checkedout()
    run.hung = sum(thread.is_alive() for thread in writers)
    run.replies_dropped = proxy.commit_replies_dropped
    graph.postgres.dispose()
    proxy.close()
    return run


def report(run: Run, admin: Any) -> dict[str, Any]:
    with admin.connect() as connection:
        rows = connection.execute(text("SELECT id, first FROM employee WHERE last = 'soak'")).all()
    committed = {row.id for row in rows}
    per_call = Counter(row.first for row in rows)
    outcomes = Counter(call.outcome for call in run.calls)
    raised = [call for call in run.calls if call.outcome != "OK"]
    committed_raised = [call for call in raised if call.id in committed]
    told = Counter(call.outcome for call in committed_raised)
    unknown = CommitOutcomeUnknownError.__name__
    return {
        "fault": run.fault,
        "driver": run.driver.split("+")[1],
        "calls": len(run.calls),
        "outcomes": ", ".join(f"{name} {count}" for name, count in outcomes.most_common()),
        "run again": sum(1 for call in run.calls if call.attempts > 1),
        "COMMIT replies dropped": run.replies_dropped,
        "lost": sum(1 for call in run.calls if call.outcome == "OK" and call.id not in committed),
        "duplicated": sum(count - 1 for count in per_call.values() if count > 1),
        "committed but raised": ", ".join(f"{name} {count}" for name, count in told.most_common()) or "0",
        "untruthful": sum(count for name, count in told.items() if name != unknown),
        "max failed latency s": f"{max((call.latency for call in raised), default=0):.2f}",
        "leaked": run.leaked,
        "hung": run.hung,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drivers", nargs="+", default=list(DRIVERS))
    parser.add_argument("--faults", nargs="+", default=list(FAULTS), choices=FAULTS)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--duration", type=float, default=10, help="seconds per fault and driver")
    parser.add_argument("--retries", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("microcosm_postgres").setLevel(logging.ERROR)  # one warning per fault otherwise

    server = TemporaryServer.start(prefer="binaries")
    try:
        provision("example", testing=True, database_name=DATABASE, admin_url=server.admin_url)
        setup = make_graph(server, server.port, DRIVERS[0])
        with SessionContext(setup) as context:
            context.recreate_all()
        setup.postgres.dispose()
        admin = create_engine(server.admin_url.set(database=DATABASE), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            # The throwaway cluster runs with synchronous_commit off, which may lose acknowledged
            # commits in a crash: the soak measures this library, not that setting.
            connection.execute(text(f"ALTER DATABASE {DATABASE} SET synchronous_commit = on"))
        lines = []
        for fault in args.faults:
            for driver in args.drivers:
                lines.append(report(soak(fault, driver, server, admin, args), admin))
                print(" | ".join(f"{key}: {value}" for key, value in lines[-1].items()), flush=True)
        admin.dispose()
    finally:
        server.stop()
    keys = list(lines[0])
    print()
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for line in lines:
        print("| " + " | ".join(str(line[key]) for key in keys) + " |")


if __name__ == "__main__":
    main()

"""Store vs. raw driver, side by side in one process.

    python benchmarks/store_bench.py [--driver postgresql+psycopg] [--rounds 7] [--ops 300]

Runs each workload through `Store` and through the raw DBAPI connection with the
equivalent SQL, alternating rounds so both see the same machine state, and prints
the median microseconds per operation and the ratio store/raw. Uses the example
service's test database (it empties the company table).

Targets: retrieve, search and count within 1.3x of the raw driver; create N rows in
one transaction within 1.6x.

"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from itertools import count
from typing import Any
from uuid import uuid4

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company, CompanyType

TARGETS = {
    "retrieve by id": 1.3,
    "search (auto filter, limit)": 1.3,
    "count": 1.3,
    "create N in one transaction": 1.6,
}

_names = count()


def _name() -> str:
    return f"bench-{next(_names)}"


def timed(func: Callable[[], None], ops: int) -> float:
    """Microseconds per operation for `ops` calls of `func`."""
    started = time.perf_counter()
    for _ in range(ops):
        func()
    return (time.perf_counter() - started) / ops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", default=None, help="postgres.driver (default: config / psycopg2)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--batch", type=int, default=50, help="rows per transaction for 'create N'")
    args = parser.parse_args()

    overrides = {"postgres": {"driver": args.driver}} if args.driver else {}
    graph: Any = create_object_graph(
        name="example", testing=True, loader=load_each(load_from_environ, load_from_dict(overrides))
    )
    [store] = graph.use("company_store")

    with SessionContext(graph) as context:
        context.recreate_all()
        with transaction():
            seeded = [store.create(Company(name=_name(), type=CompanyType.public)) for _ in range(1000)]
        ids = [company.id for company in seeded]
        names = [company.name for company in seeded]

        raw = graph.postgres.raw_connection()  # same pool settings, same driver, same socket kind
        cursor = raw.cursor()
        raw.commit()

        def pick(values: list[Any]) -> Callable[[], Any]:
            position = count()
            return lambda: values[next(position) % len(values)]

        next_id, next_name = pick(ids), pick(names)
        columns = "id, created_at, updated_at, name, type"

        def raw_retrieve() -> None:
            cursor.execute(f"SELECT {columns} FROM company WHERE id = %s LIMIT 1", (next_id(),))
            cursor.fetchone()

        def store_retrieve() -> None:
            store.retrieve(next_id())

        def raw_search() -> None:
            cursor.execute(f"SELECT {columns} FROM company WHERE name = %s LIMIT %s", (next_name(), 10))
            cursor.fetchall()

        def store_search() -> None:
            store.search(name=next_name(), limit=10)

        def raw_count() -> None:
            cursor.execute("SELECT count(id) FROM company")
            cursor.fetchone()

        def store_count() -> None:
            store.count()

        insert = "INSERT INTO company (id, created_at, updated_at, name, type) VALUES (%s, now(), now(), %s, %s)"

        def raw_create_one() -> None:
            cursor.execute(insert, (uuid4(), _name(), "public"))
            raw.commit()

        def store_create_one() -> None:
            with transaction():
                store.create(Company(name=_name(), type=CompanyType.public))

        def raw_create_batch() -> None:
            for _ in range(args.batch):
                cursor.execute(insert, (uuid4(), _name(), "public"))
            raw.commit()

        def store_create_batch() -> None:
            with transaction():
                for _ in range(args.batch):
                    store.create(Company(name=_name(), type=CompanyType.public))

        workloads = [
            ("retrieve by id", raw_retrieve, store_retrieve, args.ops),
            ("search (auto filter, limit)", raw_search, store_search, args.ops),
            ("count", raw_count, store_count, args.ops),
            ("create 1 per transaction", raw_create_one, store_create_one, args.ops),
            (
                "create N in one transaction",
                raw_create_batch,
                store_create_batch,
                max(1, args.ops // args.batch),
            ),
        ]
        results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, *_ in workloads}
        for round_number in range(args.rounds + 1):
            for name, raw_op, store_op, ops in workloads:
                raw_us, store_us = timed(raw_op, ops), timed(store_op, ops)
                if name.startswith("create N"):
                    raw_us, store_us = raw_us / args.batch, store_us / args.batch
                if round_number:  # round 0 warms caches and the statement cache
                    results[name][0].append(raw_us)
                    results[name][1].append(store_us)
            context.session.expunge_all()
        raw.rollback()
        raw.close()

    print(
        f"driver: {graph.postgres.dialect.driver}   rounds: {args.rounds}   ops/round: {args.ops}   batch: {args.batch}"
    )
    print(f"{'workload':<30} {'raw us/op':>10} {'store us/op':>12} {'ratio':>7} {'target':>7}")
    for name, (raw_times, store_times) in results.items():
        raw_us, store_us = statistics.median(raw_times), statistics.median(store_times)
        target = TARGETS.get(name)
        ratio = store_us / raw_us
        verdict = "" if target is None else ("ok" if ratio <= target else "MISSED")
        target_text = f"{target:.1f}x" if target else "-"
        print(f"{name:<30} {raw_us:>10.1f} {store_us:>12.1f} {ratio:>6.2f}x {target_text:>7} {verdict}")


if __name__ == "__main__":
    main()

"""Store vs. raw psycopg2 and SQLAlchemy's own floors, side by side in one process.

    python benchmarks/store_bench.py [--driver postgresql+psycopg] [--prepared]
        [--rounds 5] [--ops 300] [--batch 50] [--many 1000] [--page-rows 200000]

Each workload runs through the raw psycopg2 connection (the denominator, whatever the
store's driver), SQLAlchemy Core executing the same statement on a connection of the
store's engine ("core"), the ORM executing it in a session ("orm"), and `Store`.
Rounds alternate so every column sees the same machine state; the table prints the
median microseconds per operation of raw, and each column's ratio to raw. `store/orm`
is the store's own cost over the ORM floor.

`--prepared` (psycopg 3 only) makes the driver prepare every statement on first use
(`prepare_threshold = 0`). Keyset pages: page 1 vs. a page near the end of a table of
`--page-rows` rows (20 per page; 200,000 rows: page 10,000), with OFFSET for
comparison. Uses the example service's test database (it empties the company table
and drops the bench_page table at the end). Timings are printed, never asserted.

Targets (issue #9): reads and single creates <= 1.3x raw, N creates in one transaction
<= 1.6x, create_many >= 20x faster than N creates, keyset page at depth <= 1.5x page 1.

"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from itertools import count
from typing import Any
from uuid import uuid4

import psycopg2
import psycopg2.extras
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import Column, MetaData, String, bindparam, event, func, insert, select, text
from sqlalchemy.orm import DeclarativeBase

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company, CompanyType
from microcosm_postgres.models import PrimaryKeyMixin
from microcosm_postgres.store import Store

TARGETS = {
    "retrieve by id": 1.3,
    "search by name, limit 10": 1.3,
    "count": 1.3,
    "create, commit each": 1.3,
    "create N in one transaction": 1.6,
    "create_many of N": 1.2,
    "create_many, attach=False": 1.2,
}

_names = count()


def _name() -> str:
    return f"bench-{next(_names)}"


def timed(func: Callable[[], Any], ops: int) -> float:
    """Microseconds per operation for `ops` calls of `func`."""
    started = time.perf_counter()
    for _ in range(ops):
        func()
    return (time.perf_counter() - started) / ops * 1e6


def raw_psycopg2(graph: Any) -> Any:
    url = graph.postgres.url
    psycopg2.extras.register_uuid()  # SQLAlchemy's psycopg2 dialect does this; with psycopg 3 nobody has
    return psycopg2.connect(host=url.host, port=url.port, dbname=url.database, user=url.username, password=url.password)


class BenchBase(DeclarativeBase):
    metadata = MetaData()


class BenchPage(PrimaryKeyMixin, BenchBase):
    """A throwaway table for the keyset benchmark (created and dropped here)."""

    __tablename__ = "bench_page"

    name = Column(String(64))


def bench_pages(graph: Any, rows: int, rounds: int) -> list[str]:
    """Keyset page 1 vs. the page at depth, and OFFSET at the same depth (ms per page)."""
    per_page = 20
    with graph.postgres.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS bench_page")
        BenchPage.__table__.create(connection)
        connection.exec_driver_sql(
            "INSERT INTO bench_page (id, created_at, updated_at, name) "
            "SELECT gen_random_uuid(), timestamp '2024-01-01' + n * interval '1 second', now(), 'p' || n "
            f"FROM generate_series(1, {rows}) AS n"
        )
        connection.exec_driver_sql("CREATE INDEX bench_page_key ON bench_page (created_at, id)")
        connection.exec_driver_sql("ANALYZE bench_page")
    store = Store(graph, BenchPage)
    depth = rows - 2 * per_page
    try:
        with SessionContext(graph) as context:
            with graph.postgres.connect() as connection:
                created_at, identifier = connection.execute(
                    text("SELECT created_at, id FROM bench_page ORDER BY created_at, id OFFSET :n LIMIT 1"),
                    {"n": depth - 1},
                ).one()
            deep_row = BenchPage(id=identifier, created_at=created_at)
            cursor = store._encode_cursor(deep_row)
            offset_query = select(BenchPage).order_by(BenchPage.created_at, BenchPage.id).offset(depth).limit(per_page)
            first: list[float] = []
            deep: list[float] = []
            offset: list[float] = []
            for _ in range(rounds):
                first.append(timed(lambda: store.search_page(limit=per_page), 20) / 1000)
                deep.append(timed(lambda: store.search_page(after=cursor, limit=per_page), 20) / 1000)
                offset.append(timed(lambda: context.session.execute(offset_query).scalars().all(), 3) / 1000)
                context.session.expunge_all()
            keyset_ids = [row.id for row in store.search_page(after=cursor, limit=per_page).items]
            assert keyset_ids == [row.id for row in context.session.execute(offset_query).scalars()]
    finally:
        with graph.postgres.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS bench_page")
    page_1, page_deep, page_offset = (statistics.median(values) for values in (first, deep, offset))
    page_number = depth // per_page + 1
    return [
        f"keyset pages of {per_page} over {rows:,} rows (ms per page):",
        f"  page 1 {page_1:.3f}   page {page_number:,} {page_deep:.3f}   "
        f"ratio {page_deep / page_1:.2f}x (target <= 1.5x)",
        f"  OFFSET to page {page_number:,}: {page_offset:.3f} ({page_offset / page_1:.0f}x page 1)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", default=None, help="postgres.driver (default: config / psycopg2)")
    parser.add_argument("--prepared", action="store_true", help="psycopg 3: prepare every statement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--batch", type=int, default=50, help="rows per transaction for 'create N'")
    parser.add_argument("--many", type=int, default=1000, help="rows per create_many")
    parser.add_argument("--page-rows", type=int, default=200_000, help="rows for the keyset benchmark (0: skip)")
    args = parser.parse_args()

    overrides = {"postgres": {"driver": args.driver}} if args.driver else {}
    graph: Any = create_object_graph(
        name="example", testing=True, loader=load_each(load_from_environ, load_from_dict(overrides))
    )
    if args.prepared:
        event.listen(graph.postgres, "connect", lambda connection, record: setattr(connection, "prepare_threshold", 0))
    [store] = graph.use("company_store")
    table = Company.__table__
    columns = "id, created_at, updated_at, name, type"
    raw_insert = "INSERT INTO company (id, created_at, updated_at, name, type) VALUES (%s, now(), now(), %s, %s)"

    with SessionContext(graph) as context:
        context.recreate_all()
        session = context.session
        with transaction():
            seeded = store.create_many([Company(name=_name(), type=CompanyType.public) for _ in range(1000)])
        ids = [company.id for company in seeded]
        names = [company.name for company in seeded]

        raw = raw_psycopg2(graph)
        cursor = raw.cursor()
        core = graph.postgres.connect()

        def pick(values: list[Any]) -> Callable[[], Any]:
            position = count()
            return lambda: values[next(position) % len(values)]

        next_id, next_name = pick(ids), pick(names)
        by_id = select(Company).where(Company.id == bindparam("identifier")).limit(1)
        core_by_id = select(table).where(table.c.id == bindparam("identifier")).limit(1)
        by_name = select(Company).where(Company.name == bindparam("name")).limit(10)
        core_by_name = select(table).where(table.c.name == bindparam("name")).limit(10)
        counting = select(func.count(table.c.id))

        def core_commit(statement: Any, params: Any) -> None:
            core.execute(statement, params)
            core.commit()

        def company_row() -> dict[str, Any]:
            return {"id": uuid4(), "name": _name(), "type": "public"}

        def orm_create_one() -> None:
            with transaction():
                session.add(Company(id=uuid4(), name=_name(), type=CompanyType.public))

        def orm_create_batch() -> None:
            with transaction():
                for _ in range(args.batch):
                    session.add(Company(id=uuid4(), name=_name(), type=CompanyType.public))
                    session.flush()

        def raw_create_batch() -> None:
            for _ in range(args.batch):
                cursor.execute(raw_insert, (uuid4(), _name(), "public"))
            raw.commit()

        def raw_create_many() -> None:
            psycopg2.extras.execute_values(
                cursor,
                "INSERT INTO company (id, created_at, updated_at, name, type) VALUES %s",
                [(str(uuid4()), _name(), "public") for _ in range(args.many)],
                template="(%s::uuid, now(), now(), %s, %s)",
                page_size=1000,
            )
            raw.commit()

        def core_create_many() -> None:
            core.execute(insert(table), [company_row() for _ in range(args.many)])
            core.commit()

        def orm_create_many() -> None:
            with transaction():
                session.add_all([Company(id=uuid4(), name=_name(), type=CompanyType.public) for _ in range(args.many)])

        def store_create_many() -> None:
            with transaction():
                store.create_many([Company(name=_name(), type=CompanyType.public) for _ in range(args.many)])

        def store_create_many_unattached() -> None:
            with transaction():
                store.create_many(
                    [Company(name=_name(), type=CompanyType.public) for _ in range(args.many)], attach=False
                )

        def store_creates_of_many() -> None:
            with transaction():
                for _ in range(args.many):
                    store.create(Company(name=_name(), type=CompanyType.public))

        def store_create_one() -> None:
            with transaction():
                store.create(Company(name=_name(), type=CompanyType.public))

        def store_create_batch() -> None:
            with transaction():
                for _ in range(args.batch):
                    store.create(Company(name=_name(), type=CompanyType.public))

        # name: (raw, core, orm, store, ops, rows per op)
        workloads: list[
            tuple[str, Callable[[], Any], Callable[[], Any], Callable[[], Any], Callable[[], Any], int, int]
        ] = [
            (
                "retrieve by id",
                lambda: (
                    cursor.execute(f"SELECT {columns} FROM company WHERE id = %s LIMIT 1", (next_id(),)),
                    cursor.fetchone(),
                ),
                lambda: core.execute(core_by_id, {"identifier": next_id()}).first(),
                lambda: session.execute(by_id, {"identifier": next_id()}).scalars().first(),
                lambda: store.retrieve(next_id()),
                args.ops,
                1,
            ),
            (
                "search by name, limit 10",
                lambda: (
                    cursor.execute(f"SELECT {columns} FROM company WHERE name = %s LIMIT %s", (next_name(), 10)),
                    cursor.fetchall(),
                ),
                lambda: core.execute(core_by_name, {"name": next_name()}).all(),
                lambda: session.execute(by_name, {"name": next_name()}).scalars().all(),
                lambda: store.search(name=next_name(), limit=10),
                args.ops,
                1,
            ),
            (
                "count",
                lambda: (cursor.execute("SELECT count(id) FROM company"), cursor.fetchone()),
                lambda: core.execute(counting).scalar(),
                lambda: session.execute(counting).scalar(),
                store.count,
                args.ops // 3,
                1,
            ),
            (
                "create, commit each",
                lambda: (cursor.execute(raw_insert, (uuid4(), _name(), "public")), raw.commit()),
                lambda: core_commit(insert(table), company_row()),
                orm_create_one,
                store_create_one,
                args.ops,
                1,
            ),
            (
                "create N in one transaction",
                raw_create_batch,
                lambda: core_commit(insert(table), [company_row() for _ in range(args.batch)]),
                orm_create_batch,
                store_create_batch,
                max(1, args.ops // args.batch),
                args.batch,
            ),
            (
                "create_many of N",
                raw_create_many,
                core_create_many,
                orm_create_many,
                store_create_many,
                2,
                args.many,
            ),
            (
                "create_many, attach=False",
                raw_create_many,
                core_create_many,
                orm_create_many,
                store_create_many_unattached,
                2,
                args.many,
            ),
        ]

        results: dict[str, list[list[float]]] = {name: [[], [], [], []] for name, *_ in workloads}
        many_vs_creates: list[float] = []
        unattached_vs_creates: list[float] = []
        for round_number in range(args.rounds + 1):
            for name, raw_op, core_op, orm_op, store_op, ops, rows in workloads:
                times = [timed(op, ops) / rows for op in (raw_op, core_op, orm_op, store_op)]
                if round_number:  # round 0 warms caches and the statement caches
                    for column, value in zip(results[name], times, strict=True):
                        column.append(value)
            if round_number:
                creates = timed(store_creates_of_many, 1) / args.many
                many_vs_creates.append(creates / statistics.median(results["create_many of N"][3]))
                unattached_vs_creates.append(creates / statistics.median(results["create_many, attach=False"][3]))
            session.expunge_all()
            with graph.postgres.begin() as connection:  # keep the table small between rounds
                connection.execute(
                    text("DELETE FROM company WHERE name NOT IN :names").bindparams(bindparam("names", expanding=True)),
                    {"names": names},
                )
        raw.close()
        core.close()

    driver = graph.postgres.dialect.driver + (" (prepared statements)" if args.prepared else "")
    print(f"store driver: {driver}   denominator: raw psycopg2   rounds: {args.rounds}   ops/round: {args.ops}")
    print(
        f"{'workload':<28} {'raw us/op':>9} {'core/raw':>9} {'orm/raw':>8} {'store/raw':>10} "
        f"{'store/orm':>10} {'target':>7}"
    )
    for name, (raw_times, core_times, orm_times, store_times) in results.items():
        raw_us, core_us, orm_us, store_us = (
            statistics.median(values) for values in (raw_times, core_times, orm_times, store_times)
        )
        target = TARGETS.get(name)
        ratio = store_us / raw_us
        verdict = "" if target is None else ("ok" if ratio <= target else "MISSED")
        print(
            f"{name:<28} {raw_us:>9.1f} {core_us / raw_us:>8.2f}x {orm_us / raw_us:>7.2f}x {ratio:>9.2f}x "
            f"{store_us / orm_us:>9.2f}x {target:>6.1f}x {verdict}"
        )
    print(
        f"create_many of {args.many} vs {args.many} store.create calls in one transaction: "
        f"{statistics.median(many_vs_creates):.1f}x faster (target >= 20x); "
        f"with attach=False {statistics.median(unattached_vs_creates):.1f}x"
    )
    if args.page_rows:
        for line in bench_pages(graph, args.page_rows, max(1, args.rounds // 2)):
            print(line)
    graph.postgres.dispose()


if __name__ == "__main__":
    main()

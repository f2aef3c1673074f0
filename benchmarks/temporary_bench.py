"""Temporary-table bulk upsert vs. raw COPY + INSERT ... SELECT ... ON CONFLICT, side by side.

    python benchmarks/temporary_bench.py [--driver postgresql+psycopg] [--rows 100000] [--rounds 5]
                                         [--database example_test_bench_db]

Each round empties the company table, then loads `--rows` companies into a temporary
table and upserts them into `company`, once with `transient()` (from model instances, and
from mappings) and once through the raw DBAPI connection of the same driver (COPY from a
buffer built from tuples, then the same INSERT ... SELECT ... ON CONFLICT DO NOTHING), all in
one transaction each. Prints the median seconds per load and the ratio. Target: <= 1.3x.

Uses the example service's test database (or `--database`, created when missing on the
configured server); it empties the company table.

"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company, CompanyType
from microcosm_postgres.temporary import transient
from microcosm_postgres.testing.database import ensure_test_database, test_server

TARGET = 1.3

RAW_DDL = (
    "CREATE TEMPORARY TABLE raw_company (id uuid, created_at timestamp, updated_at timestamp, "
    "name varchar(255), type varchar(255)) ON COMMIT DROP"
)
RAW_UPSERT = (
    "INSERT INTO company (id, created_at, updated_at, name, type) "
    "SELECT id, created_at, updated_at, name, type FROM raw_company ON CONFLICT DO NOTHING"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", default=None, help="postgres.driver (default: config / psycopg2)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", default=None, help="postgres.database_name (default: example_test_db)")
    args = parser.parse_args()

    postgres: dict[str, Any] = {}
    if args.driver:
        postgres["driver"] = args.driver
    if args.database:
        postgres["database_name"] = args.database
    with test_server("example") as server:
        ensure_test_database("example", server, database_name=args.database)
        graph: Any = create_object_graph(
            name="example",
            testing=True,
            loader=load_each(load_from_environ, load_from_dict(postgres=postgres) if postgres else load_from_dict({})),
        )
        try:
            run(graph, args)
        finally:
            graph.postgres.dispose()


def run(graph: Any, args: Any) -> None:
    now = datetime.now(timezone.utc)
    naive_now = now.replace(tzinfo=None)
    data = [(uuid4(), f"company-{index}") for index in range(args.rows)]

    with SessionContext(graph) as context:
        context.recreate_all()
        session = context.session

        def empty() -> None:
            with transaction():
                session.execute(text("TRUNCATE company CASCADE"))
            session.expunge_all()

        # The inputs are built before the clock starts: only loading and upserting are timed.
        def instances() -> Any:
            return [
                Company(id=row_id, name=name, type=CompanyType.public, created_at=now, updated_at=now)
                for row_id, name in data
            ]

        def mappings() -> Any:
            return [
                {"id": row_id, "name": name, "type": "public", "created_at": now, "updated_at": now}
                for row_id, name in data
            ]

        def tuples() -> Any:
            return [(row_id, naive_now, naive_now, name, "public") for row_id, name in data]

        def store(items: Any) -> None:
            with transaction(), transient(Company) as table:
                assert table.insert_many(items) == args.rows
                assert table.upsert_into_on_conflict_do_nothing(Company) == args.rows

        def raw(rows: Any) -> None:
            connection = graph.postgres.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute(RAW_DDL)
                buffer = io.StringIO()
                for row_id, created_at, updated_at, name, kind in rows:
                    buffer.write(f"{row_id}\t{created_at.isoformat()}\t{updated_at.isoformat()}\t{name}\t{kind}\n")
                copy_sql = "COPY raw_company (id, created_at, updated_at, name, type) FROM STDIN"
                if graph.postgres.dialect.driver == "psycopg2":
                    buffer.seek(0)
                    cursor.copy_expert(copy_sql, buffer)
                else:
                    with cursor.copy(copy_sql) as copy:
                        copy.write(buffer.getvalue())
                cursor.execute(RAW_UPSERT)
                assert cursor.rowcount == args.rows
                connection.commit()
            finally:
                connection.close()

        workloads: list[tuple[str, Callable[[], Any], Callable[[Any], None]]] = [
            ("raw COPY + INSERT ... ON CONFLICT", tuples, raw),
            ("transient(): model instances", instances, store),
            ("transient(): mappings", mappings, store),
        ]
        results: dict[str, list[float]] = {name: [] for name, *_ in workloads}
        for round_number in range(args.rounds + 1):
            for name, prepare, workload in workloads:
                empty()
                items = prepare()
                started = time.perf_counter()
                workload(items)
                elapsed = time.perf_counter() - started
                if round_number:  # round 0 warms caches
                    results[name].append(elapsed)
        empty()

    raw_seconds = statistics.median(results[workloads[0][0]])
    print(f"driver: {graph.postgres.dialect.driver}   rows: {args.rows}   rounds: {args.rounds}")
    print(f"{'workload':<36} {'seconds':>8} {'rows/s':>9} {'ratio':>7} {'target':>7}")
    for name, times in results.items():
        seconds = statistics.median(times)
        ratio = seconds / raw_seconds
        verdict = "" if name == workloads[0][0] else ("ok" if ratio <= TARGET else "MISSED")
        print(f"{name:<36} {seconds:>8.3f} {args.rows / seconds:>9.0f} {ratio:>6.2f}x {TARGET:>6.1f}x {verdict}")


if __name__ == "__main__":
    main()

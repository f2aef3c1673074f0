"""Per-test isolation overhead, side by side in one process.

    python benchmarks/isolation_bench.py [--tests 30] [--rows 10000]

For 2 and for 30 tables (each table empty, then holding `--rows` rows), times the
setup + teardown around a test body that inserts one row into two tables, for:

  (a) rollback   the plugin's default: outer transaction rolled back (testing.isolated)
  (b) reset      postgres_commit tests: real commits, then reset_all (one DO block)
  (b') truncate  the same with one TRUNCATE ... RESTART IDENTITY CASCADE, for comparison
  (c) recreate   drop and create every table around each test

and prints the median milliseconds per test. The body's own time is not counted.
Targets: (a) under 1 ms and flat in table and row count; (b) under 10 ms for 30 tables.
Uses the example service's test database; its bench_* tables are dropped at the end.

"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import SimpleNamespace
from typing import Any

from microcosm.api import create_object_graph
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, insert, text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.operations import truncate_all
from microcosm_postgres.testing.isolation import committed, isolated


def make_tables(count: int) -> MetaData:
    metadata = MetaData()
    first = Table("bench_0", metadata, Column("id", Integer, primary_key=True), Column("name", String(64)))
    for index in range(1, count):
        Table(
            f"bench_{index}",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("name", String(64)),
            Column("parent_id", ForeignKey(first.c.id), nullable=True),
        )
    return metadata


def fill(graph: Any, metadata: MetaData, rows: int) -> None:
    with graph.postgres.begin() as connection:
        for table in metadata.sorted_tables:
            connection.execute(
                text(f"INSERT INTO {table.name} (name) SELECT 'row ' || n FROM generate_series(1, :rows) n"),
                {"rows": rows},
            )
        connection.execute(text("ANALYZE"))


def body(metadata: MetaData) -> None:
    tables = metadata.sorted_tables
    with transaction() as session:
        session.execute(insert(tables[0]).values(name="test row"))
        session.execute(insert(tables[-1]).values(name="test row"))


def overhead(strategy: Callable[[], AbstractContextManager[Any]], metadata: MetaData, tests: int) -> float:
    """Median milliseconds of setup + teardown per test, body excluded."""
    samples = []
    for _ in range(tests):
        manager = strategy()
        started = time.perf_counter()
        manager.__enter__()
        entered = time.perf_counter()
        try:
            body(metadata)
        finally:
            leaving = time.perf_counter()
            manager.__exit__(None, None, None)
            done = time.perf_counter()
        samples.append((entered - started) + (done - leaving))
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=30, help="simulated tests per measurement")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per table in the 'full' runs")
    args = parser.parse_args()
    graph: Any = create_object_graph(name="example", testing=True)

    rows_out: list[tuple[str, int, int, float]] = []
    for table_count in (2, 30):
        metadata = make_tables(table_count)
        models = SimpleNamespace(metadata=metadata)
        metadata.drop_all(graph.postgres)
        metadata.create_all(graph.postgres)

        @contextmanager
        def recreate(metadata: MetaData = metadata) -> Iterator[None]:
            metadata.drop_all(graph.postgres)
            metadata.create_all(graph.postgres)
            with SessionContext(graph):
                yield

        @contextmanager
        def truncating(metadata: MetaData = metadata) -> Iterator[None]:
            try:
                with SessionContext(graph):
                    yield
            finally:
                truncate_all(graph.postgres, metadata)

        strategies: list[tuple[str, Callable[[], AbstractContextManager[Any]]]] = [
            ("(a) rollback", lambda: isolated(graph)),
            ("(b) reset", lambda models=models: committed(graph, models)),
            ("(b') truncate", truncating),
            ("(c) recreate", recreate),
        ]
        for rows in (0, args.rows):
            for name, strategy in strategies:
                if rows and name != "(a) rollback":
                    continue  # (b) and (c) empty the tables: the rows would not survive the first test
                if rows:
                    fill(graph, metadata, rows)
                rows_out.append((name, table_count, rows, overhead(strategy, metadata, args.tests)))
        metadata.drop_all(graph.postgres)
    graph.postgres.dispose()

    print(f"tests per measurement: {args.tests}   server: {graph.postgres.url.host}:{graph.postgres.url.port}")
    print(f"{'strategy':<15} {'tables':>6} {'rows/table':>10} {'ms/test':>9}")
    for name, table_count, rows, milliseconds in rows_out:
        print(f"{name:<15} {table_count:>6} {rows:>10} {milliseconds:>9.2f}")


if __name__ == "__main__":
    main()

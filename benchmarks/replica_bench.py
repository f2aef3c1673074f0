"""Read throughput from 4 threads: the primary alone, the replica, and both in turn.

    python benchmarks/replica_bench.py [--threads 4] [--reads 1500] [--rows 2000]

Starts a throwaway primary and a streaming standby (testing.topology), fills the example
service's `company` table with `--rows` rows, then each thread runs `--reads` read
transactions (a search by name and a count) through `company_store`, for three configs:

  primary     no `postgres.replicas`: every read on the primary
  replica     `replicas` = the standby: every read on the standby
  both        `replicas` = primary and standby: transactions take them in turn

and prints transactions per second and the ratio to `primary`. Every server runs on this
machine, so the servers share its cores: with 2 cores expect no gain (the point of a
replica is another machine's CPU and I/O); this measures the routing's overhead.

"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any, cast

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.example import Company, ExampleGraph
from microcosm_postgres.operations import recreate_all
from microcosm_postgres.provision import provision
from microcosm_postgres.testing.topology import ReplicationTopology

DATABASE = "example_test_replica_bench_db"


def make_graph(topology: ReplicationTopology, replicas: str) -> ExampleGraph:
    config: dict[str, Any] = {
        "host": topology.primary.host,
        "port": topology.primary.port,
        "database_name": DATABASE,
        "replicas": replicas,
        "pool_size": 8,
    }
    loader = load_each(load_from_environ, load_from_dict(postgres=config))
    return cast(ExampleGraph, create_object_graph(name="example", testing=True, loader=loader))


def run(graph: ExampleGraph, *, threads: int, reads: int, rows: int) -> float:
    """Read transactions per second over all threads."""
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            with SessionContext(graph):
                for index in range(reads):
                    with transaction():
                        graph.company_store.search(name=f"company-{(number * reads + index) % rows}")
                        graph.company_store.count()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    graph.use("sessionmaker", "company_store")  # microcosm builds components lazily, not thread-safely
    workers = [threading.Thread(target=work, args=(number,)) for number in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return threads * reads / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--reads", type=int, default=1500)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()

    topology = ReplicationTopology.start()
    try:
        provision("example", testing=True, database_name=DATABASE, admin_url=topology.primary.admin_url)
        primary = f"{topology.primary.host}:{topology.primary.port}"
        standby = f"{topology.standby.host}:{topology.standby.port}"
        setup = make_graph(topology, "")
        recreate_all(setup)
        with SessionContext(setup), transaction():
            setup.company_store.create_many([Company(name=f"company-{index}") for index in range(args.rows)])
        setup.postgres.dispose()
        topology.wait_for_replay()

        results: dict[str, float] = {}
        for label, replicas in (("primary", ""), ("replica", standby), ("both", f"{primary},{standby}")):
            graph = make_graph(topology, replicas)
            run(graph, threads=args.threads, reads=50, rows=args.rows)  # warm the pools and caches
            results[label] = run(graph, threads=args.threads, reads=args.reads, rows=args.rows)
            graph.postgres.dispose()
            for replica_set in cast(Any, graph).default_engine_routing_strategy.replicas.values():
                replica_set.dispose()
        print(f"{args.threads} threads x {args.reads} read transactions, {args.rows} rows")
        for label, rate in results.items():
            print(f"  {label:8} {rate:8.0f} tx/s   x{rate / results['primary']:.2f}")
    finally:
        topology.stop()


if __name__ == "__main__":
    main()

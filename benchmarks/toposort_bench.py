"""toposorted() at growing sizes: the time per node should stay flat (linear scaling).

    python benchmarks/toposort_bench.py [--sizes 10000 100000 200000] [--rounds 5]

For each size n, builds a DAG shaped like a clone job (a root, n/10 parents under it,
nine children per parent, nodes given in reverse so every edge works against the input
order) and prints the median time of `toposorted`, the microseconds per node, and the
ratio of that to the smallest size's. No database needed.

"""

from __future__ import annotations

import argparse
import statistics
import time

from microcosm_postgres.toposort import Edge, toposorted


def build(size: int) -> tuple[dict[int, int], list[Edge]]:
    parents = max(1, size // 10)
    edges = [Edge(0, parent) for parent in range(1, parents + 1)]
    edges += [Edge(1 + (child % parents), child) for child in range(parents + 1, size)]
    nodes = {index: index for index in reversed(range(size))}
    return nodes, edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 200_000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    print(f"{'nodes':>8} {'edges':>8} {'median s':>9} {'us/node':>8} {'vs first':>9}")
    first = None
    for size in args.sizes:
        nodes, edges = build(size)
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            ordered = toposorted(nodes, edges)
            times.append(time.perf_counter() - started)
        assert ordered[0] == 0 and len(ordered) == size
        seconds = statistics.median(times)
        per_node = seconds / size * 1e6
        first = first or per_node
        print(f"{size:>8} {len(edges):>8} {seconds:>9.3f} {per_node:>8.2f} {per_node / first:>8.2f}x")


if __name__ == "__main__":
    main()

"""toposorted: order, stability, cycles, edges outside the mapping, linear-ish cost."""

from __future__ import annotations

import pytest

from microcosm_postgres.toposort import CycleError, Edge, toposorted


def test_every_edge_source_precedes_its_target() -> None:
    nodes = {"employee": "E", "company": "C", "badge": "B"}
    edges = [Edge("company", "employee"), Edge("employee", "badge")]

    assert toposorted(nodes, edges) == ["C", "E", "B"]


def test_ties_keep_the_input_order() -> None:
    nodes = {name: name for name in "abcdef"}
    # Only d -> b is constrained; everything else stays where it was.
    assert toposorted(nodes, [Edge("d", "b")]) == ["a", "c", "d", "b", "e", "f"]
    # An input that already satisfies its edges comes back unchanged.
    assert toposorted(nodes, [Edge("a", "b"), Edge("b", "f"), Edge("c", "e")]) == list("abcdef")


def test_pairs_work_as_edges_and_duplicates_count_once() -> None:
    nodes = {1: "one", 2: "two", 3: "three"}

    assert toposorted(nodes, [(3, 1), (3, 1), Edge(3, 1), (2, 1)]) == ["two", "three", "one"]


def test_edges_to_nodes_outside_the_mapping_are_ignored() -> None:
    # 3.x reported a false cycle here.
    nodes = {"a": "A", "b": "B"}

    assert toposorted(nodes, [Edge("a", "b"), Edge("b", "elsewhere"), Edge("nowhere", "a")]) == ["A", "B"]


def test_a_cycle_is_a_typed_error_naming_its_nodes() -> None:
    nodes = {name: name for name in ["root", "a", "b", "c", "leaf"]}
    edges = [Edge("root", "a"), Edge("a", "b"), Edge("b", "c"), Edge("c", "a"), Edge("c", "leaf")]

    with pytest.raises(CycleError) as raised:
        toposorted(nodes, edges)

    error = raised.value
    assert isinstance(error, ValueError)
    assert sorted(error.cycle) == ["a", "b", "c"]
    # The cycle is given in edge order: each id has an edge to the next, the last to the first.
    edge_set = {(edge.from_id, edge.to_id) for edge in edges}
    assert all((node, error.cycle[(i + 1) % 3]) in edge_set for i, node in enumerate(error.cycle))
    assert "'a'" in str(error)
    assert "'b'" in str(error)
    assert "'c'" in str(error)
    assert "root" not in str(error)
    assert "leaf" not in str(error)


def test_a_self_loop_is_a_cycle_of_one() -> None:
    with pytest.raises(CycleError) as raised:
        toposorted({"a": 1, "b": 2}, [Edge("a", "b"), Edge("b", "b")])

    assert raised.value.cycle == ["b"]


def test_long_cycle_messages_are_shortened() -> None:
    nodes = {index: index for index in range(50)}
    edges = [Edge(index, (index + 1) % 50) for index in range(50)]

    with pytest.raises(CycleError) as raised:
        toposorted(nodes, edges)

    assert len(raised.value.cycle) == 50
    assert "(50 nodes)" in str(raised.value)


def test_empty() -> None:
    assert toposorted({}, []) == []


def test_a_long_chain_given_backwards_is_reversed() -> None:
    # 3.x was quadratic; 100,000 nodes would not finish in a test. No timing assertion:
    # this only proves the size works (benchmarks/toposort_bench.py measures the cost).
    size = 100_000
    nodes = {index: index for index in reversed(range(size))}
    edges = [Edge(index, index + 1) for index in range(size - 1)]

    assert toposorted(nodes, edges) == list(range(size))

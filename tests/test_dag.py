"""DAG and DAGCloner: a three-level DAG (company -> employees -> badges) cloned with substitutions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import String, Uuid, select
from sqlalchemy.orm import Mapped, mapped_column

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.dag import DAG, DAGCloner, Edge, underscore
from microcosm_postgres.errors import DuplicateModelError
from microcosm_postgres.example import Company, CompanyType, Employee, ExampleGraph
from microcosm_postgres.models import EntityMixin, Model
from microcosm_postgres.store import Store
from microcosm_postgres.toposort import CycleError
from tests.test_cloning import registered


class DagBadge(EntityMixin, Model):
    """A per-employee child; it declares its own edge (employee first).

    `employee_id` has no FOREIGN KEY: every test's `recreate_all` creates this table, and
    tests that drop `employee` through a metadata without it (subprocesses) must not be
    blocked by its constraint. The clone tests check each reference row by row instead.

    """

    __tablename__ = "test_dag_badge"
    __alias__ = "badge"

    code: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    employee_id: Mapped[UUID] = mapped_column(Uuid, nullable=False)

    @property
    def edges(self) -> list[Edge]:
        return [Edge(self.employee_id, self.id)]


class BadgeStore(Store[DagBadge]):
    def __init__(self, graph: ExampleGraph) -> None:
        super().__init__(graph, DagBadge, auto_filter_fields=[DagBadge.employee_id])


class CompanyCloner(DAGCloner):
    graph: ExampleGraph

    def __init__(self, graph: ExampleGraph) -> None:
        super().__init__(graph)
        self.badge_store = registered(BadgeStore(graph))

    def retrieve_root(self, company_id: UUID, **kwargs: Any) -> Company:
        return self.graph.company_store.retrieve(company_id)

    def iter_children(self, root: Company, **kwargs: Any) -> Iterator[Employee | DagBadge]:
        employees = self.graph.employee_store.search_by_company(root.id)
        yield from employees
        for employee in employees:
            yield from self.badge_store.search(employee_id=employee.id)

    def add_edges(self, dag: DAG) -> DAG:
        dag.build_edges()  # the badges' own edges
        dag.edges.extend(Edge(employee.company_id, employee.id) for employee in dag.nodes_map["employee"])
        return dag


@pytest.fixture
def cloner(graph: ExampleGraph, context: SessionContext) -> CompanyCloner:
    graph.use("company_store", "employee_store")
    return CompanyCloner(graph)


@pytest.fixture
def acme(cloner: CompanyCloner) -> Company:
    """Acme, two employees, two badges each."""
    graph = cloner.graph
    with transaction():
        company = graph.company_store.create(Company(name="Acme", type=CompanyType.private))
        for first, last in [("Ada", "Lovelace"), ("Grace", "Hopper")]:
            employee = graph.employee_store.create(Employee(first=first, last=last, company_id=company.id))
            for number in (1, 2):
                cloner.badge_store.create(DagBadge(code=f"{first}-{number}", employee_id=employee.id))
    return company


def _counts() -> tuple[int, int, int]:
    session = SessionContext.session
    companies, employees, badges = (
        len(session.execute(select(model.id)).all()) for model in (Company, Employee, DagBadge)
    )
    return companies, employees, badges


SUBSTITUTIONS = {"Acme": "Acme Copy", **{f"{first}-{n}": f"{first}-{n}b" for first in ("Ada", "Grace") for n in (1, 2)}}


def test_explain_builds_the_dag_without_writing(cloner: CompanyCloner, acme: Company) -> None:
    dag = cloner.explain(company_id=acme.id)

    assert _counts() == (1, 2, 4)
    assert sorted(dag.nodes_map) == ["badge", "company", "employee"]
    assert [len(dag.nodes_map[key]) for key in ("company", "employee", "badge")] == [1, 2, 4]
    assert len(dag.edges) == 6
    ordered = dag.ordered_nodes
    position = {node.id: index for index, node in enumerate(ordered)}
    assert all(position[edge.from_id] < position[edge.to_id] for edge in dag.edges)
    assert ordered[0] is acme


def test_clone_copies_the_three_levels_row_by_row(cloner: CompanyCloner, acme: Company) -> None:
    original = cloner.explain(company_id=acme.id)
    substitutions = dict(SUBSTITUTIONS)

    cloned = cloner.clone(substitutions, company_id=acme.id)

    assert _counts() == (2, 4, 8)
    new_id = cloned.substitutions
    session = SessionContext.session
    session.expunge_all()  # read back what the database holds

    [company] = session.execute(select(Company).where(Company.id == new_id[acme.id])).scalars()
    assert (company.name, company.type) == ("Acme Copy", CompanyType.private)

    for employee in original.nodes_map["employee"]:
        copy = session.get(Employee, new_id[employee.id])
        assert copy is not None
        assert (copy.first, copy.last, copy.company_id) == (employee.first, employee.last, company.id)
    for badge in original.nodes_map["badge"]:
        copy_badge = session.get(DagBadge, new_id[badge.id])
        assert copy_badge is not None
        assert copy_badge.code == f"{badge.code}b"
        assert copy_badge.employee_id == new_id[badge.employee_id]

    # The originals are untouched.
    acme_now = session.get(Company, acme.id)
    assert acme_now is not None
    assert acme_now.name == "Acme"
    codes = sorted(session.execute(select(DagBadge.code)).scalars())
    assert codes == sorted(f"{first}-{n}{suffix}" for first in ("Ada", "Grace") for n in (1, 2) for suffix in ("", "b"))
    # The returned DAG holds the clones, keyed by their ids, with the edges on the new ids.
    assert set(cloned.nodes) == {new_id[old] for old in original.nodes}
    assert {(edge.from_id, edge.to_id) for edge in cloned.edges} == {
        (new_id[edge.from_id], new_id[edge.to_id]) for edge in original.edges
    }


def test_clone_follows_the_edges_not_the_order_given(cloner: CompanyCloner, acme: Company) -> None:
    explained = cloner.explain(company_id=acme.id)
    # Badges first, company last: cloned in this order, references would keep the old ids.
    dag = DAG(list(reversed(explained.nodes.values())), explained.edges, dict(SUBSTITUTIONS))

    cloned = dag.clone()

    new_id = cloned.substitutions
    for node in explained.nodes_map["badge"]:
        assert cloned.nodes[new_id[node.id]].employee_id == new_id[node.employee_id]
    for node in explained.nodes_map["employee"]:
        assert cloned.nodes[new_id[node.id]].company_id == new_id[acme.id]
    # The clones come back in the order the nodes were given.
    assert [type(node) for node in cloned.nodes.values()] == [type(node) for node in dag.nodes.values()]


def test_a_failed_clone_leaves_nothing_written(cloner: CompanyCloner, acme: Company) -> None:
    # The badge codes are unique and not substituted: the last level fails.
    substitutions = {"Acme": "Acme Copy"}

    with pytest.raises(DuplicateModelError):
        cloner.clone(substitutions, company_id=acme.id)

    assert _counts() == (1, 2, 4)
    assert substitutions == {"Acme": "Acme Copy"}


def test_dag_clone_restores_its_substitutions_on_failure(cloner: CompanyCloner, acme: Company) -> None:
    dag = cloner.explain(company_id=acme.id)
    dag.substitutions["Acme"] = "Acme Copy"

    with pytest.raises(DuplicateModelError):
        dag.clone()

    assert dag.substitutions == {"Acme": "Acme Copy"}
    assert _counts() == (1, 2, 4)


def test_a_cycle_fails_before_anything_is_written(cloner: CompanyCloner, acme: Company) -> None:
    dag = cloner.explain(company_id=acme.id)
    [employee, *_] = dag.nodes_map["employee"]
    dag.edges.append(Edge(employee.id, acme.id))

    with pytest.raises(CycleError) as raised:
        dag.clone()

    assert set(raised.value.cycle) == {acme.id, employee.id}
    assert _counts() == (1, 2, 4)


def test_from_nodes_keeps_only_edges_inside_the_dag(cloner: CompanyCloner, acme: Company) -> None:
    badges = cloner.badge_store.search()
    employees = cloner.graph.employee_store.search()

    assert DAG.from_nodes(*badges).edges == []
    dag = DAG.from_nodes(*badges, employees[0])
    assert {edge.from_id for edge in dag.edges} == {employees[0].id}
    assert len(dag.edges) == 2
    # Building again adds nothing twice.
    assert len(dag.build_edges().edges) == 2


def test_dag_takes_a_mapping_or_nodes() -> None:
    company = Company(name="a")
    company.id = UUID(int=1)

    assert DAG([company]).nodes == {company.id: company}
    assert DAG({"key": company}).nodes == {"key": company}
    assert DAG([]).substitutions == {}


def test_nodes_map_uses_the_alias_or_the_underscored_class_name() -> None:
    employee, badge = Employee(first="a", last="b"), DagBadge(code="x")
    employee.id, badge.id = UUID(int=1), UUID(int=2)

    assert DAG([employee, badge]).nodes_map == {"employee": [employee], "badge": [badge]}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Company", "company"),
        ("CompanyType", "company_type"),
        ("HTTPServer", "http_server"),
        ("OAuth2Client", "o_auth2_client"),
        ("already_snake", "already_snake"),
        ("with-dash", "with_dash"),
    ],
)
def test_underscore(name: str, expected: str) -> None:
    assert underscore(name) == expected


def _readme_section_snippets() -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Temporary tables, cloning and DAGs", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.parametrize(
    ("index", "expected"),
    [(0, ["2", "1"]), (1, ["2", "Acme (copy) True"])],
)
def test_readme_section_snippets_run(example_databases: Any, index: int, expected: list[str]) -> None:
    snippet = _readme_section_snippets()[index]
    result = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == expected

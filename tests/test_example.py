from __future__ import annotations

import os
import subprocess
import sys


def run_example(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "microcosm_postgres.example"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_example_runs_the_readme_usage() -> None:
    result = run_example()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1"


def test_example_explains_an_unreachable_database() -> None:
    result = run_example(
        EXAMPLE__POSTGRES__PORT="1",
        EXAMPLE__POSTGRES__ENGINE_RETRIES="0",
        MICROCOSM_POSTGRES_TEST_SERVER="configured",  # no throwaway fallback
    )
    assert result.returncode == 1
    host = os.environ.get("EXAMPLE__POSTGRES__HOST", "localhost")
    assert f"No PostgreSQL server answered at {host}:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_example_falls_back_to_a_throwaway_server() -> None:
    result = run_example(EXAMPLE__POSTGRES__PORT="1", MICROCOSM_POSTGRES_TEST_SERVER="auto")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "throwaway server from" in lines[0]
    assert lines[-1] == "1"


def test_models_and_stores_need_no_test_toolkit() -> None:
    code = """
import sys

import microcosm_postgres.example as example
from microcosm.api import create_object_graph

graph = create_object_graph(name="example", testing=True)
assert isinstance(graph.company_store, example.CompanyStore)
assert isinstance(graph.employee_store, example.EmployeeStore)
print(sorted(name for name in example.__all__))
print(sorted(name for name in sys.modules if name.startswith("microcosm_postgres.testing")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names, toolkit = result.stdout.strip().splitlines()
    assert names == str(["Company", "CompanyStore", "CompanyType", "Employee", "EmployeeStore", "ExampleGraph"])
    assert toolkit == "[]"

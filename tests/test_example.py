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
    assert f"{host}:1" in result.stderr and "'example_test_db'" in result.stderr
    assert "createdb -O example example_test_db" in result.stderr


def test_example_falls_back_to_a_throwaway_server() -> None:
    result = run_example(EXAMPLE__POSTGRES__PORT="1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "throwaway server from" in lines[0] and lines[-1] == "1"

"""The README's "Failures and retries" snippet runs as written."""

from __future__ import annotations

from tests.test_readme import run, snippets


def test_retry_snippet_runs() -> None:
    snippet = next(snippet for snippet in snippets() if "idempotent=True" in snippet)
    result = run(snippet + "\nwith SessionContext(graph):\n    print(graph.company_store.count())\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"

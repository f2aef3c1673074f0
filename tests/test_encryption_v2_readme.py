"""The README's v2 encryption and re-encryption snippets run as written."""

from __future__ import annotations

from tests.test_readme import run, snippets

CLEANUP = "\nModel.metadata.drop_all(graph.postgres, tables=[Customer.__table__])\n"


def test_v2_columns_snippet() -> None:
    columns = next(snippet for snippet in snippets() if "class Customer" in snippet)
    result = run(columns + CLEANUP)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None Alice", "[REDACTED] []"]


def test_reencryption_snippet() -> None:
    columns = next(snippet for snippet in snippets() if "class Customer" in snippet)
    reencryption = next(snippet for snippet in snippets() if "ReencryptionCli(" in snippet)
    result = run(columns + reencryption + CLEANUP)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].startswith("Customer: 1 rows of client-a; would re-encrypt 0 values, would encrypt 0 plaintext")
    assert "Done: 0 values rewritten for client-a." in lines
    assert "Customer\tclient-a\tcurrent\t1" in lines
    assert lines[-1] == "0"
    assert "[##############################] 1/1 rows" in result.stderr

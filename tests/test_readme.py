"""The README's Python snippets run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def test_usage_prints_one() -> None:
    usage = next(snippet for snippet in snippets() if "company_store.count()" in snippet)
    result = run(usage)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_model_and_store_definition_works() -> None:
    definition = next(snippet for snippet in snippets() if "class VendorStore" in snippet)
    check = """
from microcosm.api import create_object_graph
from microcosm_postgres.context import SessionContext, transaction

graph = create_object_graph(name="example", testing=True)
with SessionContext(graph) as context:
    context.recreate_all()
    with transaction():
        graph.vendor_store.create(Vendor(name="Acme", type="reseller"))
    [vendor] = graph.vendor_store.search(name="Acme")
    print(vendor.type.name)
"""
    result = run(definition + check)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reseller"


def test_encryptor_snippet_prints_what_it_says() -> None:
    snippet = next(snippet for snippet in snippets() if "encryptor.beacon(" in snippet)
    result = run(snippet)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['key-a1', 'key-a2'] False 64"


def test_encrypted_models_snippet_prints_what_it_says() -> None:
    snippet = next(snippet for snippet in snippets() if "class Contact(EncryptableMixin" in snippet)
    # Its tables are dropped again: they are not the example's.
    cleanup = "\nModel.metadata.drop_all(graph.postgres, tables=[Contact.__table__, Encrypted.__table__])\n"
    result = run(snippet + cleanup)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alice@example.com ['key-a'] None"

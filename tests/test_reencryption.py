"""ReencryptionCli on the real database: dry run, atomic batches (a failure on purpose), resuming,
plaintext values of a tenant that got keys, audit, the command line."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import select, text

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.encryption.errors import EncryptionConfigError
from microcosm_postgres.encryption.v2.encryptors import set_encryptor_context
from microcosm_postgres.reencryption import ReencryptionCli
from microcosm_postgres.store import Store
from tests.encryption_v2_models import Person, Record
from tests.test_encryption_v2_columns import tables  # noqa: F401  (a fixture)


def keyed_graph(**key_ids: str) -> Any:
    """A testing graph whose tenants (client-a, client-b, ...) have these key ids."""
    registry = dict(context_keys=[f"client-{tenant}" for tenant in key_ids], key_ids=list(key_ids.values()))
    loader = load_each(load_from_environ, load_from_dict(multi_tenant_key_registry=registry))
    return create_object_graph(name="example", testing=True, loader=loader)


def rows_of(client_id: str) -> list[Person]:
    """The tenant's people, in a stable order (so that the test knows each batch)."""
    statement = select(Person).where(Person.client_id == client_id).order_by(Person.id)
    return list(SessionContext.session.scalars(statement))


def ciphertexts(graph: Any) -> dict[Any, bytes | None]:
    with graph.postgres.connect() as connection:
        rows = connection.execute(text("SELECT id, name_encrypted FROM test_encrypted_person ORDER BY id"))
        return {row.id: None if row.name_encrypted is None else bytes(row.name_encrypted) for row in rows}


@pytest.fixture
def graphs(tables: None) -> Iterator[dict[str, Any]]:  # noqa: F811
    """Before and after a key rotation of client-a (a-1 -> a-2 first, a-1 kept to decrypt),
    and a graph where client-a had no keys yet; the tables hold client-a's values written
    under a-1 (7) and in plaintext (1), and client-b's (1)."""
    made = {
        "no-keys": keyed_graph(b="b-1"),
        "old": keyed_graph(a="a-1", b="b-1"),
        "new": keyed_graph(a="a-2;a-1", b="b-1"),
    }
    old = made["old"]
    with old.postgres.begin() as connection:
        connection.execute(text("TRUNCATE test_encrypted_person, test_encrypted_record"))
    people = Store(old, Person)
    with set_encryptor_context("client-a", old.multi_tenant_encryptor), SessionContext(old), transaction():
        people.create_many([Person(client_id="client-a", name=f"person {number}") for number in range(7)])
    with set_encryptor_context("client-b", old.multi_tenant_encryptor), SessionContext(old), transaction():
        people.create(Person(client_id="client-b", name="person of b"))
    plain = made["no-keys"]
    with set_encryptor_context("client-a", plain.multi_tenant_encryptor), SessionContext(plain), transaction():
        Store(plain, Person).create(Person(client_id="client-a", name="written in plaintext"))
    yield made
    for graph in made.values():
        graph.postgres.dispose()


def cli(graph: Any, out: io.StringIO, err: io.StringIO) -> ReencryptionCli:
    return ReencryptionCli(
        instance_iterators={"person": rows_of},
        base_models_mapping={"person": Person},
        graph=graph,
        stdout=out,
        stderr=err,
    )


def test_a_dry_run_counts_and_changes_nothing(graphs: dict[str, Any]) -> None:
    graph = graphs["new"]
    before = ciphertexts(graph)
    out, err = io.StringIO(), io.StringIO()
    assert cli(graph, out, err).main(["reencrypt", "--client-id", "client-a", "--batch-size", "3"]) == 0
    assert ciphertexts(graph) == before
    assert "Person: 8 rows of client-a; would re-encrypt 7 values, would encrypt 1 plaintext values" in out.getvalue()
    assert "Dry run: 8 values to rewrite, nothing written (pass --no-dry-run to write)." in out.getvalue()
    assert "[##############################] 8/8 rows" in err.getvalue()


def test_a_dry_run_after_a_key_was_removed_predicts_the_failure(graphs: dict[str, Any]) -> None:
    # a-1 was dropped from the configuration before re-encryption: its 7 values no longer open.
    retired = keyed_graph(a="a-2", b="b-1")
    try:
        before = ciphertexts(retired)
        out, err = io.StringIO(), io.StringIO()
        assert cli(retired, out, err).main(["reencrypt", "--client-id", "client-a"]) == 1
        assert ciphertexts(retired) == before
        report = out.getvalue()
        assert "would re-encrypt 0 values, would encrypt 1 plaintext values" in report
        assert "; 7 cannot be decrypted (first: DecryptionError: A value of 'client-a' could not be decrypted" in report
        assert "Dry run: 7 values cannot be decrypted with client-a's keys, so --no-dry-run would fail" in report
        # The real run fails as predicted, and its failed batch is rolled back.
        out, err = io.StringIO(), io.StringIO()
        assert cli(retired, out, err).main(["reencrypt", "--client-id", "client-a", "--no-dry-run"]) == 1
        assert "DecryptionError" in err.getvalue()
        assert ciphertexts(retired) == before
        # With the old key listed again, the dry run finds nothing it cannot open.
        out = io.StringIO()
        assert cli(graphs["new"], out, io.StringIO()).main(["reencrypt", "--client-id", "client-a"]) == 0
        assert "cannot be decrypted" not in out.getvalue()
    finally:
        retired.postgres.dispose()


def test_batches_are_atomic_and_a_second_run_resumes(graphs: dict[str, Any]) -> None:
    graph = graphs["new"]
    with SessionContext(graph):
        order = [person.id for person in rows_of("client-a")]
    before = ciphertexts(graph)
    # Fail on purpose in the second batch (rows 3-5): a trigger refuses the update of row 4.
    with graph.postgres.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION test_refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused on purpose'; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER test_refuse_update BEFORE UPDATE ON test_encrypted_person FOR EACH ROW "
                f"WHEN (OLD.id = '{order[4]}') EXECUTE FUNCTION test_refuse_update()"
            )
        )
    out, err = io.StringIO(), io.StringIO()
    try:
        status = cli(graph, out, err).main(
            ["reencrypt", "--client-id", "client-a", "--no-dry-run", "--batch-size", "3"]
        )
    finally:
        with graph.postgres.begin() as connection:
            connection.execute(text("DROP TRIGGER test_refuse_update ON test_encrypted_person"))
            connection.execute(text("DROP FUNCTION test_refuse_update()"))
    assert status == 1
    failure = err.getvalue().strip().splitlines()[-1]
    assert failure.startswith("error: EncryptionError: Re-encrypting Person rows 4-6 of 8 for 'client-a' failed (")
    assert "refused on purpose" in failure
    assert failure.endswith("the 3 rows before it are done. Fix the cause and run the same command again to resume.")
    after = ciphertexts(graph)
    rewritten = [identifier for identifier in order if after[identifier] != before[identifier]]
    assert rewritten == order[:3]  # the first batch, whole; the second, not a row of it
    # Run again: the first batch is under the current keys already and is skipped.
    out, err = io.StringIO(), io.StringIO()
    assert cli(graph, out, err).main(["reencrypt", "--client-id", "client-a", "--no-dry-run", "--batch-size", "3"]) == 0
    plaintext_left = int(all(before[identifier] is not None for identifier in order[:3]))
    expected = f"re-encrypted {5 - plaintext_left} values, encrypted {plaintext_left} plaintext values"
    assert f"{expected}; 3 already under the current keys" in out.getvalue()
    assert "Done: 5 values rewritten for client-a." in out.getvalue()
    final = ciphertexts(graph)
    assert all(final[identifier] is not None for identifier in order)
    assert [final[identifier] for identifier in order[:3]] == [after[identifier] for identifier in order[:3]]
    # Every value reads back, and is found through its new beacon; client-b's row was not touched.
    people = Store(graph, Person, auto_filter_fields=[Person.name])
    with set_encryptor_context("client-a", graph.multi_tenant_encryptor), SessionContext(graph):
        names = sorted(person.name for person in rows_of("client-a"))
        assert names == sorted([f"person {number}" for number in range(7)] + ["written in plaintext"])
        assert len(people.search(name="written in plaintext")) == 1
        assert len(people.search(name="person 5")) == 1
    assert [final[key] for key in final if key not in order] == [before[key] for key in before if key not in order]
    # A third run has nothing left to do.
    out = io.StringIO()
    assert cli(graph, out, io.StringIO()).main(["reencrypt", "--client-id", "client-a", "--no-dry-run"]) == 0
    assert "Done: 0 values rewritten" in out.getvalue()


def test_audit_counts_by_tenant_and_keys_from_headers_only(graphs: dict[str, Any]) -> None:
    graph = graphs["new"]
    out = io.StringIO()
    assert cli(graph, out, io.StringIO()).main(["audit"]) == 0
    lines = set(out.getvalue().splitlines())
    # The plaintext value is client-a's: Person's client_id column says so.
    assert lines == {"Person\tclient-a\tstale\t7", "Person\tclient-b\tcurrent\t1", "Person\tclient-a\tplaintext\t1"}
    [audit] = cli(graph, io.StringIO(), io.StringIO()).audit("client-a")
    assert audit.counts == {("client-a", "stale"): 7, ("client-a", "plaintext"): 1}
    cli(graph, io.StringIO(), io.StringIO()).reencrypt("client-a", dry_run=False)
    [audit] = cli(graph, io.StringIO(), io.StringIO()).audit("client-a")
    assert audit.counts == {("client-a", "current"): 8}


def test_audit_attributes_plaintext_through_the_iterator_without_a_tenant_column(
    graphs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model whose tenant column is not known (here: named to a column it does not have).
    monkeypatch.setattr(Person, "__encryption_context_key__", "no_such_column", raising=False)
    graph = graphs["new"]
    out = io.StringIO()
    [audit] = cli(graph, out, io.StringIO()).audit()
    assert audit.counts[("-", "plaintext")] == 1  # nothing tells whose it is
    [audit] = cli(graph, io.StringIO(), io.StringIO()).audit("client-a")  # client-a's iterator gives its row
    assert audit.counts == {("client-a", "stale"): 7, ("client-a", "plaintext"): 1}
    [audit] = cli(graph, io.StringIO(), io.StringIO()).audit("client-b")
    assert audit.counts == {("client-b", "current"): 1}


def test_refusals(graphs: dict[str, Any]) -> None:
    graph = graphs["new"]
    out, err = io.StringIO(), io.StringIO()
    assert cli(graph, out, err).main(["reencrypt", "--client-id", "client-z"]) == 1
    assert "EncryptionConfigError: 'client-z' has no encryption keys" in err.getvalue()
    with pytest.raises(SystemExit) as exited:
        cli(graph, out, err).main(["reencrypt"])
    assert exited.value.code == 2
    with pytest.raises(EncryptionConfigError, match="only one is given for: record"):
        ReencryptionCli({"person": rows_of}, {"person": Person, "record": Record}, graph)
    with pytest.raises(EncryptionConfigError, match="--batch-size must be at least 1"):
        cli(graph, out, err).reencrypt("client-a", batch_size=0)

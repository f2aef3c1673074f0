"""v2 encrypted columns on the real database: the Store's operations, tenant isolation,
plaintext tenants, equality search through beacons (and what it costs), every encoder."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Mapped, aliased, mapped_column

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.encryption.errors import EncryptionError
from microcosm_postgres.encryption.v2.column import encryption
from microcosm_postgres.encryption.v2.encoders import REDACTED, StringEncoder
from microcosm_postgres.encryption.v2.encryptors import (
    current_encryptor_context,
    set_context_from_graph,
    set_encryptor_context,
)
from microcosm_postgres.errors import InvalidInputError
from microcosm_postgres.store import Store
from microcosm_postgres.testing.database import PostgresServer
from tests.encryption_v2_models import ENCRYPTOR, EncryptedBase, Level, Person, Record

TENANTS = dict(context_keys=["client-a", "client-b"], key_ids=["a-1", "b-1"])


def encryption_graph(**materials: Any) -> Any:
    """A testing graph of the example service on this run's database, with two tenants
    that have (static) keys; any other tenant has none."""
    loader = load_each(
        load_from_environ, load_from_dict(multi_tenant_key_registry=TENANTS, materials_manager=materials)
    )
    return create_object_graph(name="example", testing=True, loader=loader)


@pytest.fixture(scope="module")
def tables(example_databases: PostgresServer) -> Iterator[None]:
    graph = encryption_graph()
    EncryptedBase.metadata.create_all(graph.postgres)
    try:
        yield
    finally:
        EncryptedBase.metadata.drop_all(graph.postgres)
        graph.postgres.dispose()


@pytest.fixture
def graph(tables: None) -> Iterator[Any]:
    """The encryption graph, on empty tables (this module's `statements` records its engine)."""
    graph = encryption_graph()
    with graph.postgres.begin() as connection:
        connection.execute(text("TRUNCATE test_encrypted_person, test_encrypted_record"))
    yield graph
    graph.postgres.dispose()


@pytest.fixture
def people(graph: Any) -> Store[Person]:
    return Store(graph, Person, auto_filter_fields=[Person.name, Person.client_id, Person.tags])


def as_tenant(graph: Any, tenant: str | None) -> Any:
    return set_encryptor_context(tenant, graph.multi_tenant_encryptor)


def raw_row(graph: Any, table: str, identifier: Any) -> dict[str, Any]:
    with graph.postgres.connect() as connection:
        row = connection.execute(text(f"SELECT * FROM {table} WHERE id = :id"), {"id": identifier}).mappings().one()
    return dict(row)


def test_a_tenant_with_keys_stores_ciphertext_and_beacon_and_reads_its_value(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        person = people.create(Person(client_id="client-a", name="Alice Liddell", tags=["vip", "eu"]))
    stored = raw_row(graph, "test_encrypted_person", person.id)
    assert stored["name"] is None
    assert stored["tags"] is None
    assert b"Alice" not in bytes(stored["name_encrypted"])
    assert len(stored["name_beacon"]) == 64
    assert len(stored["tags_beacon"]) == 2
    with as_tenant(graph, "client-a"), SessionContext(graph):
        again = people.retrieve(person.id)
        assert again.name == "Alice Liddell"
        assert again.tags == ["vip", "eu"]
        assert again.born is None


def test_another_tenant_sees_the_redacted_value_never_the_plaintext(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        person = people.create(Person(client_id="client-a", name="Alice", tags=["vip"]))
    sdk_decrypts = _count_calls(graph.multi_tenant_encryptor, "decrypt")
    with as_tenant(graph, "client-b"), SessionContext(graph):
        seen = people.retrieve(person.id)
        assert seen.name == REDACTED
        assert seen.tags == []
        seen.tags.append("changed in place")
        assert Person.tags.encoder.redacted_value == []
        assert people.search(name="Alice") == []
    with as_tenant(graph, "client-c"), SessionContext(graph):  # a tenant without keys
        assert people.retrieve(person.id).name == REDACTED
    with as_tenant(graph, None), SessionContext(graph):  # no tenant at all
        assert people.retrieve(person.id).name == REDACTED
    with SessionContext(graph):  # no context set
        assert people.retrieve(person.id).name == REDACTED
    # Another tenant's message is recognised from its header: no key was tried on it.
    assert sdk_decrypts() == 0


def test_a_tenant_without_keys_keeps_plaintext_and_searches_it(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-c"), SessionContext(graph), transaction():
        person = people.create(Person(client_id="client-c", name="Carol", tags=["x", "y"]))
    stored = raw_row(graph, "test_encrypted_person", person.id)
    assert stored["name"] == "Carol"
    assert stored["tags"] == ["x", "y"]
    assert stored["name_encrypted"] is None
    assert stored["name_beacon"] is None
    with as_tenant(graph, "client-c"), SessionContext(graph):
        assert [found.id for found in people.search(name="Carol")] == [person.id]
        assert [found.id for found in people.search(tags="y")] == [person.id]
        assert people.count(name="Carol") == 1


def test_equality_search_compiles_to_the_beacon_and_never_sends_the_value(
    graph: Any, people: Store[Person], statements: list[str]
) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        alice = people.create(Person(client_id="client-a", name="Alice"))
        people.create(Person(client_id="client-a", name="Bob"))
    with as_tenant(graph, "client-b"), SessionContext(graph), transaction():
        people.create(Person(client_id="client-b", name="Alice"))
    statements.clear()
    with as_tenant(graph, "client-a"), SessionContext(graph):
        assert [found.id for found in people.search(name="Alice")] == [alice.id]
        assert people.count(name="Alice") == 1
        assert people.search_first(name="Alice", client_id="client-a") is not None
        found = SessionContext.session.scalars(select(Person).where(Person.name == "Alice")).all()
        assert [row.id for row in found] == [alice.id]
        assert len(SessionContext.session.scalars(select(Person).where(Person.name.in_(["Alice", "Bob"]))).all()) == 2
    assert all("name_beacon" in statement for statement in statements if "WHERE" in statement)
    with as_tenant(graph, "client-a"):
        compiled = select(Person).where(Person.name == "Alice").compile()
    assert "WHERE test_encrypted_person.name_beacon = :name_beacon_1" in str(compiled)
    assert compiled.params["name_beacon_1"] == graph.multi_tenant_encryptor.beacon("client-a", "Alice")
    assert "Alice" not in " ".join(statements)


def test_queries_compute_one_beacon_each_and_encrypt_nothing(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        people.create(Person(client_id="client-a", name="Alice"))
    before = ENCRYPTOR.calls.copy()
    sdk = graph.multi_tenant_encryptor["client-a"]
    sdk_encrypts = _count_calls(sdk, "encrypt")
    with as_tenant(graph, "client-a"), SessionContext(graph):
        statement = select(func.count()).select_from(Person).where(Person.name == "Alice")
        for _ in range(3):
            assert SessionContext.session.execute(statement).scalar() == 1
        assert people.count(name="Alice") == 1
        assert people.count(name="Nobody") == 0
    spent = ENCRYPTOR.calls - before
    assert spent["encrypt"] == 0
    assert spent["beacon_key"] == 3  # one per statement built (the first, and two store counts), none per run
    assert sdk_encrypts() == 0


def _count_calls(target: Any, name: str) -> Any:
    """Count calls of `target.name` from now on (an instance attribute wrapping the method)."""
    calls = []
    original = getattr(target, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    setattr(target, name, counted)
    return lambda: len(calls)


def test_update_rewrites_ciphertext_and_beacon(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        person = people.create(Person(client_id="client-a", name="Alice"))
    before = raw_row(graph, "test_encrypted_person", person.id)
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        updated = people.update(person.id, Person(name="Alicia"))
        assert updated.name == "Alicia"
    after = raw_row(graph, "test_encrypted_person", person.id)
    assert after["name_encrypted"] != before["name_encrypted"]
    assert after["name_beacon"] != before["name_beacon"]
    with as_tenant(graph, "client-a"), SessionContext(graph):
        assert people.search(name="Alice") == []
        assert [found.id for found in people.search(name="Alicia")] == [person.id]
        assert people.retrieve(person.id).name == "Alicia"


def test_create_many_and_delete(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        created = people.create_many([Person(client_id="client-a", name=f"n{i}") for i in range(5)], attach=False)
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        assert sorted(person.name for person in people.search()) == [f"n{i}" for i in range(5)]
        people.delete(created[0].id)
        assert people.count(name="n0") == 0
        assert people.count() == 4


def test_beacon_arrays_match_any_element(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        both = people.create(Person(client_id="client-a", name="A", tags=["vip", "eu"]))
        eu = people.create(Person(client_id="client-a", name="B", tags=["eu"]))
        people.create(Person(client_id="client-a", name="C", tags=None))
    with as_tenant(graph, "client-a"), SessionContext(graph):
        assert {person.id for person in people.search(tags="eu")} == {both.id, eu.id}
        assert [person.id for person in people.search(tags="vip")] == [both.id]
        found = SessionContext.session.scalars(select(Person).where(Person.tags.in_(["vip", "us"]))).all()
        assert [person.id for person in found] == [both.id]
        assert len(SessionContext.session.scalars(select(Person).where(Person.tags == None)).all()) == 1  # noqa: E711
        assert "@>" in str(select(Person).where(Person.tags == "eu").compile())


def test_none_default_and_unsupported_comparisons(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"):
        with pytest.raises(InvalidInputError, match="cannot be None; wrap its encoder in Nullable"):
            Person(client_id="client-a", name=None)
        with pytest.raises(InvalidInputError, match="takes a str"):
            Person(client_id="client-a", name=12)
        builders: list[Callable[[], Any]] = [
            lambda: Person.name > "a",
            lambda: Person.name.like("A%"),
            lambda: Person.name != "Alice",
        ]
        for build in builders:
            with pytest.raises(InvalidInputError, match="Encrypted columns support =="):
                build()
        with pytest.raises(InvalidInputError, match="has no beacon column"):
            Person.born == datetime.now(timezone.utc)  # noqa: B015
        with pytest.raises(InvalidInputError, match="compare with the value itself"):
            Person.name == bindparam("name")  # noqa: B015
        with SessionContext(graph), transaction():
            record = Store(graph, Record).create(Record(client_id="client-a"))
        assert record.quantity == -1  # the default: nothing stored
        assert raw_row(graph, "test_encrypted_record", record.id)["quantity_encrypted"] is None
        with SessionContext(graph):
            found = SessionContext.session.scalars(select(Record).where(Record.quantity == None)).all()  # noqa: E711
            assert [row.id for row in found] == [record.id]
            assert SessionContext.session.scalars(select(Record).where(Record.quantity.is_not(None))).all() == []


def test_aliases_work_and_selecting_an_encrypted_value_is_refused(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        alice = people.create(Person(client_id="client-a", name="Alice"))
        people.create(Person(client_id="client-a", name="Bob"))
    other = aliased(Person)
    with as_tenant(graph, "client-a"), SessionContext(graph):
        statement = select(other).where(other.name == "Alice")
        assert [row.id for row in SessionContext.session.scalars(statement)] == [alice.id]
        for build in (lambda: select(Person.name), lambda: select(Person).order_by(Person.name)):
            with pytest.raises(InvalidInputError, match="Person.name is encrypted: selecting it, ordering"):
                build()


def test_a_model_missing_a_column_is_told_which_to_declare() -> None:
    class Incomplete(EncryptedBase):
        __tablename__ = "test_encrypted_incomplete"
        id: Mapped[int] = mapped_column(primary_key=True)
        secret = encryption("secret", ENCRYPTOR, StringEncoder())
        secret_encrypted: Mapped[bytes | None] = secret.encrypted()

    try:
        with pytest.raises(TypeError, match="declare `secret_unencrypted = secret.unencrypted\\(\\)`"):
            Incomplete().secret  # noqa: B018
    finally:
        EncryptedBase.metadata.remove(Incomplete.__table__)  # type: ignore[arg-type]


def test_definition_errors_and_a_keyed_beacon_algorithm_of_ones_own(graph: Any) -> None:
    with pytest.raises(TypeError, match="use_beacon_array needs an ArrayEncoder"):
        encryption("x", ENCRYPTOR, StringEncoder(), use_beacon_array=True)
    with pytest.raises(TypeError, match="beacon_algorithm must be a function"):
        encryption("x", ENCRYPTOR, StringEncoder(), beacon_algorithm="sha256")  # type: ignore[arg-type]
    column = encryption("x", ENCRYPTOR, StringEncoder(), beacon_algorithm=lambda key, text: f"{len(key)}:{text[::-1]}")
    assert column.beacon_of(b"k" * 32, "abc") == "32:cba"


def test_a_tenant_without_keys_searches_in_and_nulls_on_the_plaintext(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-c"), SessionContext(graph), transaction():
        carol = people.create(Person(client_id="client-c", name="Carol", tags=["x"]))
        dave = people.create(Person(client_id="client-c", name="Dave"))
    with as_tenant(graph, "client-c"), SessionContext(graph):
        session = SessionContext.session
        names = session.scalars(select(Person).where(Person.name.in_(["Carol", "Dave", "Eve"]))).all()
        assert {row.id for row in names} == {carol.id, dave.id}
        tagged = session.scalars(select(Person).where(Person.tags.in_(["x", "z"]))).all()
        assert [row.id for row in tagged] == [carol.id]
        assert [row.id for row in session.scalars(select(Person).where(Person.tags.is_not(None)))] == [carol.id]
        assert "test_encrypted_person.name IN" in str(select(Person).where(Person.name.in_(["Carol"])).compile())


def test_writing_or_searching_without_a_context_is_an_error(graph: Any) -> None:
    with pytest.raises(EncryptionError, match="No encryption context is set"):
        Person(client_id="client-a", name="Alice")
    with pytest.raises(EncryptionError, match="set_encryptor_context"):
        Person.name == "Alice"  # noqa: B015


@pytest.mark.parametrize("tenant", ["client-a", "client-c"], ids=["encrypted", "plaintext"])
def test_every_encoder_round_trips_through_the_database(graph: Any, tenant: str) -> None:
    records = Store(graph, Record, auto_filter_fields=[Record.quantity, Record.amount, Record.level, Record.extra])
    values: dict[str, Any] = dict(
        quantity=-42,
        amount=Decimal("1234.5600"),
        level=Level.HIGH,
        extra={"b": [1, 2], "a": "ü"},
        note="n" * 1500,
    )
    with as_tenant(graph, tenant), SessionContext(graph), transaction():
        record = records.create(Record(client_id=tenant, **values))
    with as_tenant(graph, tenant), SessionContext(graph):
        again = records.retrieve(record.id)
        for key, value in values.items():
            assert getattr(again, key) == value, key
        assert [found.id for found in records.search(quantity=-42, level=Level.HIGH)] == [record.id]
        assert [found.id for found in records.search(amount=Decimal("1234.56"))] == [record.id]
        assert [found.id for found in records.search(extra={"a": "ü", "b": [1, 2]})] == [record.id]
        assert [found.id for found in records.search(level="HIGH")] == [record.id]
    with as_tenant(graph, "client-b"), SessionContext(graph):
        seen = records.retrieve(record.id)
        if tenant == "client-a":
            assert (seen.quantity, seen.amount, seen.level, seen.extra, seen.note) == (
                0,
                Decimal(0),
                None,
                {},
                REDACTED,
            )


def test_datetimes_are_stored_in_utc(graph: Any, people: Store[Person]) -> None:
    paris = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    for tenant in ("client-a", "client-c"):
        with as_tenant(graph, tenant), SessionContext(graph), transaction():
            person = people.create(Person(client_id=tenant, name="D", born=paris))
        with as_tenant(graph, tenant), SessionContext(graph):
            born = people.retrieve(person.id).born
            assert born == paris
            assert born is not None and born.utcoffset() == timedelta(0)


def test_a_decrypted_value_is_kept_per_instance_and_context(graph: Any, people: Store[Person]) -> None:
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        person = people.create(Person(client_id="client-a", name="Alice"))
    with as_tenant(graph, "client-a"), SessionContext(graph):
        loaded = people.retrieve(person.id)
        before = ENCRYPTOR.calls["decrypt"]
        assert [loaded.name for _ in range(5)] == ["Alice"] * 5
        assert ENCRYPTOR.calls["decrypt"] - before == 1
        with as_tenant(graph, "client-b"):
            assert loaded.name == REDACTED
        assert loaded.name == "Alice"


def test_set_context_from_graph_reads_the_client_header_from_opaque(graph: Any) -> None:
    assert current_encryptor_context() is None
    with graph.opaque.initialize(lambda: {"X-Request-Client": "client-b"}):
        with set_context_from_graph(graph):
            assert current_encryptor_context() == "client-b"
    with set_context_from_graph(graph):  # no header: no tenant
        assert current_encryptor_context() is None
    assert current_encryptor_context() is None


def test_the_context_is_per_thread(graph: Any) -> None:
    seen: list[str | None] = []
    with as_tenant(graph, "client-a"):
        thread = threading.Thread(target=lambda: seen.append(current_encryptor_context()))
        thread.start()
        thread.join(timeout=30)
        assert current_encryptor_context() == "client-a"
    assert seen == [None]


def test_two_graphs_keep_their_own_keys(graph: Any, people: Store[Person]) -> None:
    other = encryption_graph()  # same config, a new graph: static test keys are per key id, per process
    with as_tenant(graph, "client-a"), SessionContext(graph), transaction():
        person = people.create(Person(client_id="client-a", name="Alice"))
    assert other.multi_tenant_encryptor is not graph.multi_tenant_encryptor
    with as_tenant(other, "client-a"), SessionContext(graph):
        assert people.retrieve(person.id).name == "Alice"
    other.postgres.dispose()


def test_defining_and_using_v2_models_does_not_import_the_sdk_until_encrypting() -> None:
    code = (
        "import sys\n"
        "from microcosm_postgres.encryption.v2.column import encryption\n"
        "from microcosm_postgres.encryption.v2 import encoders, encryptors, beacons\n"
        "import tests.encryption_v2_models\n"
        "import microcosm_postgres.reencryption\n"
        "print(any(name.startswith('aws_encryption_sdk') for name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

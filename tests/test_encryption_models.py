"""v1 encrypted models and EncryptableStore on the real database (the run's own tables)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast
from uuid import UUID

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ
from sqlalchemy import ForeignKey, MetaData, String, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.encryption.encryptor import MultiTenantEncryptor
from microcosm_postgres.encryption.errors import DecryptionError, EncryptionError
from microcosm_postgres.encryption.models import EncryptableMixin, EncryptedMixin
from microcosm_postgres.encryption.store import EncryptableStore
from microcosm_postgres.errors import DuplicateModelError, ModelNotFoundError
from microcosm_postgres.models import NAMING_CONVENTION, PrimaryKeyMixin
from microcosm_postgres.store import Store
from microcosm_postgres.testing.database import PostgresServer


class Base(DeclarativeBase):
    """Tables of this module only (created and dropped here, not in Model.metadata)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Encrypted(EncryptedMixin, PrimaryKeyMixin, Base):
    __tablename__ = "test_encryption_encrypted"


class Secret(EncryptableMixin, PrimaryKeyMixin, Base):
    __tablename__ = "test_encryption_secret"
    __encryption_context_key__ = "client_id"
    __plaintext__ = "value"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[str | None] = mapped_column(String, nullable=True)
    encrypted_id: Mapped[UUID | None] = mapped_column(ForeignKey("test_encryption_encrypted.id"), nullable=True)


def encryption_graph(key_ids: str = "a-1;a-2,b-1") -> Any:
    registry = dict(context_keys="client-a,client-b", key_ids=key_ids)
    loader = load_each(load_from_environ, load_from_dict(multi_tenant_key_registry=registry))
    return create_object_graph(name="example", testing=True, loader=loader)


def stores(graph: Any) -> tuple[EncryptableStore[Secret], Store[Encrypted]]:
    encrypted_store = Store(graph, Encrypted)
    return EncryptableStore(graph, Secret, encrypted_store, auto_filter_fields=[Secret.name]), encrypted_store


@pytest.fixture
def graph(example_databases: PostgresServer) -> Iterator[Any]:
    graph = encryption_graph()
    Base.metadata.drop_all(graph.postgres)
    Base.metadata.create_all(graph.postgres)
    yield graph
    Base.metadata.drop_all(graph.postgres)
    graph.postgres.dispose()


def stored(graph: Any) -> tuple[list[tuple[str, str, str | None, bool]], int]:
    """What the database holds: (name, client, plaintext column, has ciphertext) per row, and the ciphertext rows."""
    with graph.postgres.connect() as connection:
        rows = connection.execute(
            text(f"SELECT name, client_id, value, encrypted_id IS NOT NULL FROM {Secret.__tablename__} ORDER BY name")
        ).all()
        count = connection.execute(text(f"SELECT count(*) FROM {Encrypted.__tablename__}")).scalar_one()
    return [cast(tuple[str, str, str | None, bool], tuple(row)) for row in rows], int(count)


def test_a_tenant_with_keys_is_stored_encrypted_and_read_decrypted(graph: Any) -> None:
    store, encrypted_store = stores(graph)
    with SessionContext(graph):
        with transaction():
            secret = store.create(Secret(name="s1", client_id="client-a", value="Zoë's secret"))
        assert secret.value == secret.plaintext == "Zoë's secret"
        assert secret.is_encrypted
        assert secret.encryption_context_key == "client-a"
        assert secret.encrypted is not None
        assert secret.encrypted.key_ids == ["a-1", "a-2"]
    assert stored(graph) == ([("s1", "client-a", None, True)], 1)
    with SessionContext(graph):
        [found] = store.search(name="s1")
        assert found.value == "Zoë's secret"
        assert store.retrieve(secret.id).value == "Zoë's secret"
        [ciphertext] = encrypted_store.search()
        assert "Zoë's secret".encode() not in ciphertext.ciphertext
        encryptor: MultiTenantEncryptor = graph.multi_tenant_encryptor
        assert encryptor.decrypt("client-a", ciphertext.ciphertext) == "Zoë's secret"


@pytest.mark.parametrize(
    ("context_keys", "expected"),
    [
        # Tenants configured: nothing asked for the encryptor, yet the first write encrypts
        # (the sessionmaker built it at graph creation).
        ("client-a,client-b", ([("s1", "client-a", None, True)], 1)),
        # Encryption switched off in one environment: the locked graph never built an
        # encryptor, and needs none to write and read its rows in plaintext.
        ("", ([("s1", "client-a", "locked", False)], 0)),
    ],
    ids=["tenants", "no-tenants"],
)
def test_a_locked_graph_writes_and_reads(
    graph: Any, context_keys: str, expected: tuple[list[tuple[str, str, str | None, bool]], int]
) -> None:
    registry = dict(context_keys=context_keys, key_ids="a-1;a-2,b-1" if context_keys else "")
    loader = load_each(load_from_environ, load_from_dict(multi_tenant_key_registry=registry))
    locked: Any = create_object_graph(name="example", testing=True, loader=loader)
    locked.use("postgres", "sessionmaker")
    locked.lock()
    try:
        store, _ = stores(locked)
        with SessionContext(locked), transaction():
            store.create(Secret(name="s1", client_id="client-a", value="locked"))
        with SessionContext(locked):
            assert store.search(name="s1")[0].value == "locked"
    finally:
        locked.postgres.dispose()
    assert stored(graph) == expected


def test_a_tenant_without_keys_keeps_its_plaintext(graph: Any) -> None:
    store, _ = stores(graph)
    with SessionContext(graph):
        with transaction():
            store.create(Secret(name="s1", client_id="client-z", value="plain"))
        [plain] = store.search(name="s1")
        assert plain.value == "plain"
        assert not plain.is_encrypted
    assert stored(graph) == ([("s1", "client-z", "plain", False)], 0)


def test_updates_reencrypt_and_replace_the_ciphertext_row(graph: Any) -> None:
    store, _ = stores(graph)
    with SessionContext(graph):
        with transaction():
            secret = store.create(Secret(name="s1", client_id="client-a", value="first"))
        with transaction():
            updated = store.update(secret.id, Secret(value="second"))
        assert updated.value == "second"
        with transaction():
            store.update(secret.id, Secret(name="renamed"))  # the plaintext untouched: no new ciphertext
    assert stored(graph) == ([("renamed", "client-a", None, True)], 1)
    with SessionContext(graph):
        assert store.retrieve(secret.id).value == "second"
        # Moving the row to a tenant without keys stores its plaintext, and drops the ciphertext.
        with transaction():
            store.update(secret.id, Secret(client_id="client-z"))
        with transaction():
            store.update(secret.id, Secret(name="cleared"))
    assert stored(graph) == ([("cleared", "client-z", "second", False)], 0)


def test_delete_removes_both_rows(graph: Any) -> None:
    store, _ = stores(graph)
    with SessionContext(graph):
        with transaction():
            first = store.create(Secret(name="s1", client_id="client-a", value="one"))
            store.create(Secret(name="s2", client_id="client-b", value="two"))
            store.create(Secret(name="s3", client_id="client-z", value="three"))
        with transaction():
            assert store.delete(first.id)
        assert stored(graph)[1] == 1
        with transaction():
            assert store.delete_many(Secret.name.in_(["s2", "s3"])) == 2
        with pytest.raises(ModelNotFoundError):
            store.delete(first.id)
    assert stored(graph) == ([], 0)


def test_a_refused_write_leaves_nothing_half_written(graph: Any) -> None:
    store, _ = stores(graph)
    with SessionContext(graph):
        with transaction():
            store.create(Secret(name="taken", client_id="client-a", value="one"))
        # The ciphertext row is written first in the flush; the duplicate name refuses the second row.
        with pytest.raises(DuplicateModelError), transaction():
            store.create(Secret(name="taken", client_id="client-a", value="two"))
        # Outside any block: the session is rolled back.
        with pytest.raises(DuplicateModelError):
            store.create(Secret(name="taken", client_id="client-b", value="three"))
        # Encryption itself refusing (not a string) writes nothing either.
        with pytest.raises(EncryptionError), transaction():
            store.create(Secret(name="other", client_id="client-a", value=12))
    assert stored(graph) == ([("taken", "client-a", None, True)], 1)


def test_two_graphs_with_different_keys_do_not_share_an_encryptor(graph: Any) -> None:
    store, _ = stores(graph)
    other = encryption_graph(key_ids="other-a,other-b")
    other_store, _ = stores(other)
    try:
        with SessionContext(graph):
            with transaction():
                secret = store.create(Secret(name="s1", client_id="client-a", value="for graph one"))
        with SessionContext(other), pytest.raises(DecryptionError):
            other_store.retrieve(secret.id)
        with SessionContext(other):
            with transaction():
                mine = other_store.create(Secret(name="s2", client_id="client-a", value="for graph two"))
            assert other_store.retrieve(mine.id).value == "for graph two"
        with SessionContext(graph):
            assert store.retrieve(secret.id).value == "for graph one"
            with pytest.raises(DecryptionError):
                store.retrieve(mine.id)
    finally:
        other.postgres.dispose()


def test_bulk_writes_that_would_bypass_encryption_are_refused(graph: Any) -> None:
    store, _ = stores(graph)
    with SessionContext(graph):
        with transaction():
            store.create_many(
                [
                    Secret(name="s1", client_id="client-a", value="one"),
                    Secret(name="s2", client_id="client-z", value="2"),
                ]
            )
        with pytest.raises(EncryptionError, match="update_many cannot set Secret.value"):
            store.update_many(Secret.name == "s1", value="plaintext!")
        with pytest.raises(EncryptionError, match="upsert"):
            store.upsert(Secret(name="s3", client_id="client-a", value="x"))
        with transaction():
            assert store.update_many(Secret.name == "s2", name="two") == 1
        assert sorted(secret.value or "" for secret in store.search()) == ["2", "one"]
        count = store.session.execute(select(func.count()).select_from(Encrypted)).scalar_one()
        assert count == 1
    assert stored(graph) == ([("s1", "client-a", None, True), ("two", "client-z", "2", False)], 1)

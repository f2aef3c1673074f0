"""v1 encrypted models: a plaintext attribute on one row, its ciphertext on another.

    class Encrypted(EncryptedMixin, EntityMixin, Model):
        __tablename__ = "encrypted"

    class Secret(EncryptableMixin, EntityMixin, Model):
        __tablename__ = "secret"
        __encryption_context_key__ = "client_id"   # the attribute that names the tenant
        __plaintext__ = "value"                     # the attribute that is encrypted (a str)
        client_id: Mapped[str]
        value: Mapped[str | None]
        encrypted_id: Mapped[UUID | None] = mapped_column(ForeignKey("encrypted.id"))

`EncryptedMixin` holds the ciphertext (an AWS Encryption SDK message) and the ids of the
keys that can open it (`key_ids`, GIN-indexed: re-encryption finds rows by key). An
`EncryptableMixin` model gets a many-to-one `encrypted` relationship through its
`__encrypted_identifier__` foreign key (default "encrypted_id"), loaded with each row
(one LEFT OUTER JOIN, no extra query).

When a session flushes an encryptable row whose plaintext (or tenant) changed, and the
graph of that session (the `SessionContext` that opened it) has keys for the row's
tenant, the plaintext is encrypted into a new `encrypted` row and the plaintext column
is written as NULL (the old ciphertext row is deleted). Loading the row decrypts it
again with the same graph's `multi_tenant_encryptor`: the encryptor is never held by a
class, so two graphs with different keys in one process each use their own. Rows of a
tenant without keys keep their value in the plaintext column (3.x did the same).
Write through `EncryptableStore` (or the session): its bulk statements that would
bypass the flush refuse to write plaintext.

"""

from __future__ import annotations

from itertools import chain
from typing import Any, ClassVar

from sqlalchemy import Index, LargeBinary, String, event, inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, Session, UOWTransaction, declared_attr, mapped_column, relationship
from sqlalchemy.orm.attributes import flag_modified, set_committed_value

from microcosm_postgres._sessions import graph_of
from microcosm_postgres.encryption.errors import DecryptionError, EncryptionConfigError, EncryptionError
from microcosm_postgres.encryption.factories import tenants_configured

__all__ = [
    "EncryptableMixin",
    "EncryptedMixin",
]

# session.info key: (instance, plaintext) pairs to show again once the flush wrote NULL.
_RESTORE = "microcosm_postgres.encryption.restore"


class EncryptedMixin:
    """A ciphertext row: `ciphertext` (an AWS Encryption SDK message) and `key_ids` (the
    ids of the keys that can open it; a GIN index finds rows under a key)."""

    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    key_ids: Mapped[list[str]] = mapped_column(ARRAY(String), nullable=False)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        table = cls.__tablename__  # type: ignore[attr-defined]
        return (Index(f"ix_{table}_key_ids", "key_ids", postgresql_using="gin"),)


class EncryptableMixin:
    """A model whose plaintext attribute is stored encrypted for tenants that have keys
    (see the module doc). Set `__encryption_context_key__` (the tenant attribute) and,
    when not "value" / "encrypted_id", `__plaintext__` / `__encrypted_identifier__`."""

    __encryption_context_key__: ClassVar[str]
    __plaintext__: ClassVar[str] = "value"
    __encrypted_identifier__: ClassVar[str] = "encrypted_id"

    @declared_attr
    def encrypted(cls) -> Mapped[Any]:
        """The ciphertext row (many-to-one through `__encrypted_identifier__`), loaded with the row."""
        identifier = cls.__encrypted_identifier__
        return relationship(
            lambda: _encrypted_class(cls),
            foreign_keys=lambda: [getattr(cls, identifier)],
            lazy="joined",
            innerjoin=False,
        )

    @property
    def encryption_context_key(self) -> str:
        """The row's tenant (the value of its `__encryption_context_key__` attribute, as a string).

        Raises:
            EncryptionConfigError: the model does not name its tenant attribute.

        """
        name = getattr(type(self), "__encryption_context_key__", None)
        if not name:
            raise EncryptionConfigError(
                f"{type(self).__name__} sets no __encryption_context_key__: name the attribute that holds the tenant."
            )
        return str(getattr(self, name))

    @property
    def plaintext(self) -> str | None:
        """The value of the `__plaintext__` attribute."""
        value: str | None = getattr(self, type(self).__plaintext__)
        return value

    @property
    def is_encrypted(self) -> bool:
        """True when the stored value is a ciphertext (the plaintext column holds NULL)."""
        return (
            self.__dict__.get("encrypted") is not None or getattr(self, type(self).__encrypted_identifier__) is not None
        )


def _encrypted_class(cls: Any) -> type[Any]:
    """The mapped class of the table `cls.__encrypted_identifier__` refers to."""
    column = cls.__table__.c[cls.__encrypted_identifier__]
    tables = {foreign_key.column.table for foreign_key in column.foreign_keys}
    for mapper in cls.registry.mappers:
        if mapper.local_table in tables:
            return mapper.class_  # type: ignore[no-any-return]
    raise EncryptionConfigError(
        f"{cls.__name__}.{cls.__encrypted_identifier__} must be a foreign key to a model with EncryptedMixin."
    )


def _encryptor_for(session: Session, what: str) -> Any:
    graph = graph_of(session)
    if graph is None:
        raise EncryptionError(
            f"Cannot tell which keys to {what} with: this session was not opened by `SessionContext(graph)`, "
            "whose graph's multi_tenant_encryptor encrypts. Use the models inside SessionContext(graph)."
        )
    if not tenants_configured(graph):
        # No tenant has keys: every value stays plaintext, and the graph (perhaps locked,
        # perhaps without the extra) is never asked for an encryptor it does not need.
        return frozenset()
    return graph.multi_tenant_encryptor


def _changed(state: Any, key: str) -> bool:
    return bool(state.attrs[key].history.has_changes())


def _encrypt_pending(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    """before_flush: encrypt the new or changed plaintexts of encryptable rows."""
    pending = [obj for obj in chain(session.new, session.dirty) if isinstance(obj, EncryptableMixin)]
    if not pending:
        return
    encryptor = None
    restore = session.info.setdefault(_RESTORE, [])
    for obj in pending:
        cls = type(obj)
        state = inspect(obj)
        new = state.transient or state.pending
        key = cls.__plaintext__
        tenant_changed = not new and _changed(state, cls.__encryption_context_key__)
        if not new and not (_changed(state, key) or tenant_changed):
            continue
        plaintext = getattr(obj, key)
        old = obj.__dict__.get("encrypted")
        if plaintext is None:
            if not new and _changed(state, key) and old is not None:
                obj.encrypted = None  # the value was cleared: its ciphertext goes too
                setattr(obj, cls.__encrypted_identifier__, None)
                session.delete(old)
            continue
        if encryptor is None:
            encryptor = _encryptor_for(session, "encrypt")
        tenant = obj.encryption_context_key
        if tenant not in encryptor:
            if old is not None:  # the tenant changed to one without keys: store the plaintext
                obj.encrypted = None
                setattr(obj, cls.__encrypted_identifier__, None)
                flag_modified(obj, key)  # the column held NULL: write the plaintext now
                session.delete(old)
            continue
        ciphertext, key_ids = encryptor.encrypt(tenant, plaintext)
        obj.encrypted = _encrypted_class(cls)(ciphertext=ciphertext, key_ids=key_ids)
        if old is not None:
            session.delete(old)
        setattr(obj, key, None)
        restore.append((obj, key, plaintext))


def _show_plaintexts(session: Session, flush_context: UOWTransaction) -> None:
    """after_flush_postexec: the rows hold NULL in the database; show their plaintext again."""
    for obj, key, plaintext in session.info.pop(_RESTORE, []):
        set_committed_value(obj, key, plaintext)


def _forget_plaintexts(session: Session, *args: Any) -> None:
    session.info.pop(_RESTORE, None)


def _decrypt_loaded(target: EncryptableMixin, context: Any, attrs: Any = None) -> None:
    """load / refresh: decrypt the row's ciphertext with its session's graph's keys."""
    encrypted = target.__dict__.get("encrypted")
    if encrypted is None:
        return
    session = context.session
    encryptor = _encryptor_for(session, "decrypt")
    tenant = target.encryption_context_key
    if tenant not in encryptor:
        raise DecryptionError(
            f"A {type(target).__name__} row of {tenant!r} is encrypted, but this graph has no keys for "
            f"{tenant!r}: add them to multi_tenant_key_registry."
        )
    set_committed_value(target, type(target).__plaintext__, encryptor.decrypt(tenant, encrypted.ciphertext))


event.listen(Session, "before_flush", _encrypt_pending)
event.listen(Session, "after_flush_postexec", _show_plaintexts)
event.listen(Session, "after_rollback", _forget_plaintexts)
event.listen(EncryptableMixin, "load", _decrypt_loaded, propagate=True)
event.listen(EncryptableMixin, "refresh", _decrypt_loaded, propagate=True)

"""`AwsKmsEncryptor`: the encryptor of v2 columns, for the current encryption context.

A model is defined once per process, but the keys belong to a graph and the tenant to
a request. So an `encryption(...)` column holds an `AwsKmsEncryptor`, which holds
nothing: what to encrypt with comes from a ContextVar (per thread, per asyncio task)
holding the current tenant (the encryption context key, e.g. a client id) and the
graph's `multi_tenant_encryptor`:

    with set_encryptor_context("client-a", graph.multi_tenant_encryptor):
        store.create(Employee(name="Alice"))

- `set_context_from_graph(graph)` takes the tenant from the request's client header,
  `X-Request-Client`, as microcosm exposes it in `graph.opaque` (microcosm-flask and
  microcosm-pubsub fill `graph.opaque` from request headers / message metadata).
- `register_flask_context(graph)` does that for every request of a Flask app (the
  header read from the request itself), and clears it when the request ends.

In a context whose tenant has keys, values are encrypted; a tenant without keys stores
its values in plaintext. Reading another tenant's ciphertext gives the redacted value
(the message header names its tenant: no decryption is attempted); so does reading any
ciphertext with no context set. Writing, or searching, with no context set is an
`EncryptionError`: there is no tenant to write for.

"""

from __future__ import annotations

from collections.abc import Hashable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from microcosm_postgres.constants import X_REQUEST_CLIENT_HEADER
from microcosm_postgres.encryption.errors import EncryptionError

if TYPE_CHECKING:
    from microcosm_postgres.encryption.encryptor import MultiTenantEncryptor

__all__ = [
    "CLIENT_HEADER",
    "AwsKmsEncryptor",
    "EncryptorContext",
    "current_encryptor_context",
    "register_flask_context",
    "set_context_from_graph",
    "set_encryptor_context",
]

#: The request header naming the tenant (client) whose keys encrypt.
CLIENT_HEADER = X_REQUEST_CLIENT_HEADER


@dataclass(frozen=True)
class _Current:
    encryption_context_key: str | None
    encryptor: MultiTenantEncryptor


_CURRENT: ContextVar[_Current | None] = ContextVar("microcosm_postgres_encryption_context", default=None)


class EncryptorContext:
    """The context `set_encryptor_context` set. Used with `with`, the previous one comes
    back at the end of the block; otherwise call `reset()` (or leave it to the end of the
    thread / task, whose context goes with it)."""

    def __init__(self, token: Token[_Current | None]) -> None:
        self._token: Token[_Current | None] | None = token

    def reset(self) -> None:
        """Restore the context that was current before (once; later calls do nothing)."""
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def __enter__(self) -> EncryptorContext:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.reset()


def set_encryptor_context(
    encryption_context_key: str | None, multi_tenant_encryptor: MultiTenantEncryptor
) -> EncryptorContext:
    """Make `encryption_context_key` (a tenant, e.g. a client id; None: no tenant) with the
    graph's `multi_tenant_encryptor` the current encryption context of this thread / task.

    Raises:
        EncryptionError: `encryption_context_key` is neither a string nor None.

    """
    if encryption_context_key is not None and not isinstance(encryption_context_key, str):
        raise EncryptionError(
            f"The encryption context key must be a string (a client id), not {type(encryption_context_key).__name__}."
        )
    return EncryptorContext(_CURRENT.set(_Current(encryption_context_key or None, multi_tenant_encryptor)))


def set_context_from_graph(graph: Any) -> EncryptorContext:
    """Set the current encryption context from the request's client header, as
    `graph.opaque` holds it (`X-Request-Client`; no header: no tenant), with
    `graph.multi_tenant_encryptor`.

    Raises:
        EncryptionConfigError: the graph cannot build `multi_tenant_encryptor` (e.g. the
            `encryption` extra is not installed).

    """
    client = graph.opaque.get(CLIENT_HEADER)
    return set_encryptor_context(str(client) if client else None, graph.multi_tenant_encryptor)


def current_encryptor_context() -> str | None:
    """The tenant of the current encryption context (None: none set)."""
    current = _CURRENT.get()
    return None if current is None else current.encryption_context_key


def register_flask_context(graph: Any, app: Any = None) -> None:
    """Set the encryption context for every request of a Flask app from its
    `X-Request-Client` header, and restore the previous one when the request ends.

    Args:
        graph: the object graph (its `multi_tenant_encryptor`, built now, so that a
            configuration error shows at start-up, not at the first request).
        app: the Flask app (default: `graph.flask`, microcosm-flask's component).

    Raises:
        EncryptionConfigError: the graph cannot build `multi_tenant_encryptor`.

    """
    from flask import g, request

    flask_app = app if app is not None else graph.flask
    multi_tenant_encryptor = graph.multi_tenant_encryptor
    slot = f"_microcosm_postgres_encryption_{id(multi_tenant_encryptor)}"

    def enter() -> None:
        client = request.headers.get(CLIENT_HEADER)
        setattr(g, slot, set_encryptor_context(client or None, multi_tenant_encryptor))

    def leave(exc: BaseException | None) -> None:
        context = getattr(g, slot, None)
        if context is not None:
            context.reset()

    flask_app.before_request(enter)
    flask_app.teardown_request(leave)


class AwsKmsEncryptor:
    """The `ContextEncryptor` of v2 columns over the current context's
    `multi_tenant_encryptor` (AWS Encryption SDK messages; KMS keys in production,
    static keys in testing graphs). It holds no state: one instance serves every graph."""

    def __repr__(self) -> str:
        return "AwsKmsEncryptor()"

    def context(self) -> Hashable | None:
        current = _CURRENT.get()
        if current is None or current.encryption_context_key is None:
            return None
        return (current.encryption_context_key, id(current.encryptor))

    def encrypt(self, plaintext: str) -> bytes | None:
        """A message for the current tenant; None when it has no keys (plaintext is kept).

        Raises:
            EncryptionError: no encryption context is set, or the keys refused.

        """
        current = self._required("write an encrypted value")
        if current.encryption_context_key not in current.encryptor:
            return None
        ciphertext, _ = current.encryptor.encrypt(current.encryption_context_key, plaintext)  # type: ignore[arg-type]
        return ciphertext

    def decrypt(self, ciphertext: bytes) -> str | None:
        """The plaintext of a message of the current tenant; None (redacted) when no
        context is set, the tenant has no keys, or the message is another tenant's.

        Raises:
            DecryptionError: a message of the current tenant that its keys do not open
                (keys removed from the configuration, the key service refusing), or
                bytes that are not a message.

        """
        from microcosm_postgres.encryption.v2._messages import read_header

        current = _CURRENT.get()
        if current is None or current.encryption_context_key is None:
            return None
        context = current.encryption_context_key
        header = read_header(ciphertext)
        if header is not None and header.tenant != context:
            return None  # another tenant's value: no key of this one is tried
        if context not in current.encryptor:
            return None
        return current.encryptor.decrypt(context, ciphertext)

    def beacon_key(self) -> bytes | None:
        """The current tenant's beacon key; None when it has no keys.

        Raises:
            EncryptionError: no encryption context is set.
            EncryptionConfigError: the tenant has keys but no beacon key.

        """
        current = self._required("search an encrypted value")
        if current.encryption_context_key not in current.encryptor:
            return None
        return current.encryptor.registry.beacon_key(current.encryption_context_key)  # type: ignore[arg-type]

    @staticmethod
    def _required(action: str) -> _Current:
        current = _CURRENT.get()
        if current is None or current.encryption_context_key is None:
            raise EncryptionError(
                f"No encryption context is set, so there is no tenant to {action} for: call "
                "set_encryptor_context(client_id, graph.multi_tenant_encryptor) (or register_flask_context(graph)) "
                "first."
            )
        return current

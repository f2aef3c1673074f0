"""What a message's header says, read without decrypting anything (no key, no KMS call).

An AWS Encryption SDK message starts with a plaintext header: the encryption context
(our tenant field among it) and the encrypted data keys (which master key wrapped each).
Reading it tells whose message this is, and under which keys, before any key service is
asked: another tenant's value is redacted without a decryption attempt, and re-encryption
skips values already under the tenant's current keys.

The header is parsed by the SDK's own deserializer (`deserialize_header`, which its
decrypting stream uses): the SDK exposes no public call that reads a header without
also fetching the data key. Kept in this one function, so that a change in the SDK
shows up here (and in tests/encryption/test_v2_messages.py) and nowhere else.

"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header

from microcosm_postgres.encryption.encryptor import CONTEXT_FIELD

__all__ = [
    "MessageHeader",
    "read_header",
]


@dataclass(frozen=True)
class MessageHeader:
    """The parts of a message header we use.

    Attributes:
        tenant: the encryption context key the message was made for (None: not ours).
        key_providers: the SDK's `MasterKeyInfo` of each encrypted data key (provider id,
            and key info: a KMS key's ARN, or a static key's id followed by the IV's
            description), as `SingleTenantEncryptor` maps them to key ids.

    """

    tenant: str | None
    key_providers: tuple[Any, ...]


def read_header(ciphertext: bytes) -> MessageHeader | None:
    """The header of `ciphertext`, or None when it is not an AWS Encryption SDK message."""
    try:
        header, _ = deserialize_header(io.BytesIO(bytes(ciphertext)))
    except Exception:  # the SDK's SerializationError / NotSupportedError, struct.error, ...: not a message
        return None
    providers = tuple(key.key_provider for key in header.encrypted_data_keys)
    return MessageHeader(header.encryption_context.get(CONTEXT_FIELD), providers)

"""Encryptors: strings in, AWS Encryption SDK messages out, per tenant.

Messages are made with key commitment (`CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT`,
algorithm suite `AES_256_GCM_HKDF_SHA512_COMMIT_KEY`); messages without it (3.x's, made
with `FORBID_ENCRYPT_ALLOW_DECRYPT`) still decrypt, signed or not. New messages are not
signed: an ECDSA P-384 signature per message only proves that the writer was allowed to
encrypt but not to decrypt, a distinction a service that encrypts and decrypts its own
columns with the same keys does not have, and it was most of the cost of every value
(about 3x on encrypt+insert and select+decrypt, see benchmarks/encryption_bench.py). The tenant is written into each
message's encryption context under "microcosm" (as 3.x did), and checked on decrypt: a
message made for tenant A, asked to decrypt as tenant B, is a `DecryptionError` even
when B's keys could open it.

"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from aws_encryption_sdk import Algorithm, CommitmentPolicy, EncryptionSDKClient
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag

from microcosm_postgres.encryption.beacons import beacon
from microcosm_postgres.encryption.errors import DecryptionError, EncryptionError
from microcosm_postgres.encryption.registry import MultiTenantKeyRegistry

__all__ = [
    "ALGORITHM",
    "CONTEXT_FIELD",
    "MultiTenantEncryptor",
    "SingleTenantEncryptor",
]

#: The algorithm suite of new messages: key commitment, no per-message signature.
ALGORITHM = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY

#: The encryption-context field that names the tenant in every message.
CONTEXT_FIELD = "microcosm"
# The SDK's own failures, the KMS client's (a key service that refuses or is unreachable), and
# a wrapped data key that a static key of the same id does not open (an AES-GCM tag mismatch).
_SDK_ERRORS = (AWSEncryptionSDKClientError, BotoCoreError, ClientError, InvalidTag, KeyError)


def _key_service_failure(error: BaseException) -> BaseException | None:
    """The key service's own failure behind `error` (a botocore connection or client error,
    which the SDK's KMS keys chain under their `DecryptKeyError`), or None: the keys did
    not fit, or the bytes are not a message."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (BotoCoreError, ClientError)):
            failure: BaseException = current
            return failure
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _close(decryptor: Any) -> None:
    """Close a decryption stream (the SDK's public `stream` API, not its one-shot `decrypt`).

    A stream that failed before reading the message's end refuses to close (the SDK's
    `SerializationError`) and would raise again when garbage-collected, which Python 3.13
    reports as an unraisable exception; the one-shot `decrypt` also logs a stack trace at
    ERROR for every message it cannot open. Here it is marked closed as `io.IOBase` does.

    """
    try:
        decryptor.close()
    except AWSEncryptionSDKClientError:
        io.IOBase.close(decryptor)


class SingleTenantEncryptor:
    """Encrypts and decrypts with one materials manager (one tenant's keys).

    Args:
        materials_manager: makes the data keys of new messages (the tenant's current keys).
        decrypting_materials_manager: opens messages (default: `materials_manager`).
        key_ids: the current key ids, for `key_ids` (audits); default: none known.

    """

    def __init__(
        self,
        materials_manager: CryptoMaterialsManager,
        *,
        decrypting_materials_manager: CryptoMaterialsManager | None = None,
        key_ids: Sequence[str] = (),
    ) -> None:
        self.materials_manager = materials_manager
        self.decrypting_materials_manager = decrypting_materials_manager or materials_manager
        self._key_ids = tuple(key_ids)
        self._client = EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT)

    def __repr__(self) -> str:
        return f"SingleTenantEncryptor(key_ids={list(self._key_ids)!r})"

    @property
    def key_ids(self) -> list[str]:
        """The current key ids (as configured)."""
        return list(self._key_ids)

    def encrypt(self, encryption_context_key: str, plaintext: str) -> tuple[bytes, list[str]]:
        """Encrypt `plaintext` (UTF-8) for the tenant: the message, and the ids of the keys
        that can open it (its encrypted data keys; configured ids in configuration order).

        Raises:
            EncryptionError: `plaintext` is not a string, or the keys refused (chained).

        """
        if not isinstance(plaintext, str):
            raise EncryptionError(
                f"Only strings are encrypted, not {type(plaintext).__name__}: encode the value first."
            )
        try:
            ciphertext, header = self._client.encrypt(
                source=plaintext.encode("utf-8"),
                materials_manager=self.materials_manager,
                encryption_context={CONTEXT_FIELD: encryption_context_key},
                algorithm=ALGORITHM,
            )
        except _SDK_ERRORS as error:
            raise EncryptionError(
                f"Encrypting for {encryption_context_key!r} failed ({type(error).__name__}): check the tenant's "
                "key ids and that the key service is reachable and lets this service use them."
            ) from error
        return ciphertext, self._ordered(self._key_id_of(key.key_provider) for key in header.encrypted_data_keys)

    def decrypt(self, encryption_context_key: str, ciphertext: bytes) -> str:
        """The plaintext of a message made for this tenant.

        Raises:
            DecryptionError: not a message, no key of this tenant opens it, it was made
                for another tenant (the message's encryption context says so), or the key
                service failed (unreachable or refusing: the message says so, the botocore
                error is chained).

        """
        try:
            decryptor = self._client.stream(
                mode="d", source=bytes(ciphertext), materials_manager=self.decrypting_materials_manager
            )
            try:
                plaintext = decryptor.read()
                header = decryptor.header
            finally:
                _close(decryptor)
        except _SDK_ERRORS as error:
            failure = _key_service_failure(error)
            if failure is not None:
                code = failure.response.get("Error", {}).get("Code") if isinstance(failure, ClientError) else None
                raise DecryptionError(
                    f"A value of {encryption_context_key!r} could not be decrypted: the key service failed "
                    f"({type(failure).__name__}{f' {code}' if code else ''}), so the value itself may be fine. "
                    "Check that KMS is reachable and lets this service decrypt with the tenant's keys, then retry."
                ) from error
            raise DecryptionError(
                f"A value of {encryption_context_key!r} could not be decrypted ({type(error).__name__}): it was "
                "made under keys this tenant does not have, or it is not an encrypted message."
            ) from error
        if header.encryption_context.get(CONTEXT_FIELD) != encryption_context_key:
            raise DecryptionError(
                f"A value asked for as {encryption_context_key!r} was encrypted for another tenant: "
                "read it with that tenant's context."
            )
        try:
            return bytes(plaintext).decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecryptionError(
                f"A value of {encryption_context_key!r} decrypted to bytes that are not UTF-8."
            ) from error

    def _ordered(self, key_ids: Iterable[str]) -> list[str]:
        """`key_ids` (a message holds its data keys as a set) in configuration order, others last."""
        rank = {key_id: index for index, key_id in enumerate(self._key_ids)}
        return sorted(set(key_ids), key=lambda key_id: (rank.get(key_id, len(rank)), key_id))

    def _key_id_of(self, key_provider: object) -> str:
        """The key id of an encrypted data key: a KMS key's ARN, or a static key's id (the
        raw format appends the IV's description to it: the configured id it starts with)."""
        key_info = getattr(key_provider, "key_info", b"")
        info = key_info if isinstance(key_info, bytes) else str(key_info).encode("utf-8")
        for key_id in self._key_ids:
            if info == key_id.encode("utf-8") or (
                getattr(key_provider, "provider_id", None) != "aws-kms" and info.startswith(key_id.encode("utf-8"))
            ):
                return key_id
        return info.decode("utf-8", errors="replace")


class MultiTenantEncryptor:
    """The `multi_tenant_encryptor` component: a `SingleTenantEncryptor` per tenant, and
    the tenants' beacon keys. One per graph (two graphs never share one).

    Tenants that are not configured are not `in` it; encrypting or decrypting for them is
    an error (callers check `in` first and keep such tenants' values as plaintext).

    """

    def __init__(self, encryptors: Mapping[str, SingleTenantEncryptor], registry: MultiTenantKeyRegistry) -> None:
        self.encryptors = dict(encryptors)
        self.registry = registry

    def __repr__(self) -> str:
        return f"MultiTenantEncryptor(contexts={list(self.encryptors)!r})"

    def __contains__(self, encryption_context_key: object) -> bool:
        return encryption_context_key in self.encryptors

    def __iter__(self) -> Iterator[str]:
        return iter(self.encryptors)

    def __getitem__(self, encryption_context_key: str) -> SingleTenantEncryptor:
        return self._encryptor(encryption_context_key, EncryptionError)

    def _encryptor(
        self, encryption_context_key: str, error_class: type[EncryptionError] | type[DecryptionError]
    ) -> SingleTenantEncryptor:
        try:
            return self.encryptors[encryption_context_key]
        except KeyError:
            raise error_class(
                f"No encryption keys are configured for {encryption_context_key!r}: add it to "
                "multi_tenant_key_registry.context_keys, or check `in` first and keep its values as plaintext."
            ) from None

    def encrypt(self, encryption_context_key: str, plaintext: str) -> tuple[bytes, list[str]]:
        """Encrypt for the tenant (see `SingleTenantEncryptor.encrypt`).

        Raises:
            EncryptionError: the tenant has no keys, or encryption failed.

        """
        return self._encryptor(encryption_context_key, EncryptionError).encrypt(encryption_context_key, plaintext)

    def decrypt(self, encryption_context_key: str, ciphertext: bytes) -> str:
        """Decrypt as the tenant (see `SingleTenantEncryptor.decrypt`).

        Raises:
            DecryptionError: the tenant has no keys, or the message is not for it.

        """
        return self._encryptor(encryption_context_key, DecryptionError).decrypt(encryption_context_key, ciphertext)

    def beacon(self, encryption_context_key: str, value: str) -> str:
        """The tenant's beacon of `value`: a keyed HMAC-SHA256, hex (no KMS call).

        Raises:
            EncryptionConfigError: the tenant has no beacon key.

        """
        return beacon(self.registry.beacon_key(encryption_context_key), value)

    def key_ids(self, encryption_context_key: str) -> list[str]:
        """The tenant's current key ids (a message under other keys needs re-encryption).

        Raises:
            EncryptionConfigError: the tenant has no keys.

        """
        return self.registry.key_ids(encryption_context_key)

"""Master key providers: static raw keys (testing graphs) and AWS KMS.

`StaticMasterKeyProvider` wraps data keys with fixed 256-bit AES keys held in memory,
one per key id, under the provider id "static". Testing graphs use it with keys made
at random once per process (`testing_keys`): no KMS, nothing to configure. A message
made with any raw-key provider of the same provider id, key id and key decrypts with it
(that is the format's contract, and how a 3.x test ciphertext is read).

`make_kms_provider` is the AWS Encryption SDK's strict KMS provider for the given key
ARNs; `make_kms_discovery_provider` decrypts with any key of one account and partition.
Both take a botocore session: the endpoint, region and credentials come from the
standard AWS configuration (`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_KMS`, ...).

"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import botocore.session
from aws_encryption_sdk import DiscoveryAwsKmsMasterKeyProvider, StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.base import MasterKeyProvider
from aws_encryption_sdk.key_providers.kms import DiscoveryFilter
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

__all__ = [
    "STATIC_PROVIDER_ID",
    "StaticMasterKeyProvider",
    "make_kms_discovery_provider",
    "make_kms_provider",
    "make_static_provider",
    "testing_keys",
]

STATIC_PROVIDER_ID = "static"
_KEY_BYTES = 32
# The static keys of testing graphs: random, made once per process per key id, never written anywhere.
_PROCESS_KEYS: dict[str, bytes] = {}


class StaticMasterKeyProvider(RawMasterKeyProvider):  # type: ignore[misc]
    """Raw AES-256-GCM wrapping keys held in memory, by key id (provider id "static").

    Decrypting a message whose key id this provider has no key for fails (the SDK's
    `DecryptKeyError`), so tenants with different key ids cannot read each other's data.

    """

    provider_id = STATIC_PROVIDER_ID

    def __init__(self, **kwargs: Any) -> None:
        # attrs-style config: the SDK's providers take their settings as keyword arguments.
        self._keys: dict[str, bytes] = {}
        super().__init__(**kwargs)

    def __repr__(self) -> str:
        return f"StaticMasterKeyProvider(key_ids={sorted(self._keys)!r})"

    def add_static_key(self, key_id: str, key: bytes) -> None:
        """Use `key` (32 bytes) for `key_id`, and add it as a master key (it wraps new data keys)."""
        if len(key) != _KEY_BYTES:
            raise ValueError(f"A static key is {_KEY_BYTES} bytes (AES-256), not {len(key)}.")
        self._keys[key_id] = key
        self.add_master_key(key_id)

    def _get_raw_key(self, key_id: bytes | str) -> WrappingKey:
        name = key_id.decode("utf-8") if isinstance(key_id, bytes) else key_id
        try:
            key = self._keys[name]
        except KeyError:
            raise KeyError("This static provider has no key with that key id.") from None
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=key,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def testing_keys(key_ids: Sequence[str]) -> dict[str, bytes]:
    """Random keys for `key_ids`, the same ones for the whole process."""
    return {key_id: _PROCESS_KEYS.setdefault(key_id, os.urandom(_KEY_BYTES)) for key_id in key_ids}


def make_static_provider(keys: Mapping[str, bytes]) -> StaticMasterKeyProvider:
    """A static provider with these keys (key id -> 32 bytes), in this order (the first
    one makes each message's data key)."""
    provider = StaticMasterKeyProvider()
    for key_id, key in keys.items():
        provider.add_static_key(key_id, key)
    return provider


def make_kms_provider(key_ids: Sequence[str], *, botocore_session: botocore.session.Session) -> MasterKeyProvider:
    """The SDK's strict KMS provider: encrypts under every key of `key_ids` (ARNs), and
    decrypts only messages that one of them can open."""
    return StrictAwsKmsMasterKeyProvider(key_ids=list(key_ids), botocore_session=botocore_session)


def make_kms_discovery_provider(
    *, partition: str, account_id: str, botocore_session: botocore.session.Session
) -> MasterKeyProvider:
    """The SDK's discovery KMS provider, limited to keys of `account_id` in `partition`:
    decrypts with whichever key of that account the message names (decryption only)."""
    return DiscoveryAwsKmsMasterKeyProvider(
        discovery_filter=DiscoveryFilter(account_ids=[account_id], partition=partition),
        botocore_session=botocore_session,
    )

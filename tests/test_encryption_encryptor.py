"""Encryptors with static keys: round trips, tenant isolation, 3.x ciphertexts, commitment, beacons."""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import os
import sys
from typing import Any, cast

import pytest
from aws_encryption_sdk import Algorithm, CommitmentPolicy, EncryptionSDKClient
from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider
from microcosm.api import create_object_graph, load_from_dict

from microcosm_postgres.encryption.beacons import beacon
from microcosm_postgres.encryption.encryptor import MultiTenantEncryptor, SingleTenantEncryptor
from microcosm_postgres.encryption.errors import DecryptionError, EncryptionConfigError, EncryptionError
from microcosm_postgres.encryption.materials import CacheSettings, make_materials_manager
from microcosm_postgres.encryption.providers import make_static_provider


def encryptor_graph(**materials: Any) -> Any:
    loader = load_from_dict(
        multi_tenant_key_registry=dict(context_keys=["client-a", "client-b"], key_ids=["a-1;a-2", "b-1"]),
        materials_manager=materials,
    )
    return create_object_graph(name="example", testing=True, loader=loader)


@pytest.fixture(params=[False, True], ids=["uncached", "cached"])
def encryptor(request: pytest.FixtureRequest) -> MultiTenantEncryptor:
    graph = encryptor_graph(enable_cache=request.param)
    encryptor = graph.multi_tenant_encryptor
    assert isinstance(encryptor, MultiTenantEncryptor)
    return encryptor


def test_each_tenant_round_trips(encryptor: MultiTenantEncryptor) -> None:
    for tenant, text in (("client-a", "Zoë O'Brien ✓"), ("client-b", ""), ("client-b", "x" * 10_000)):
        ciphertext, key_ids = encryptor.encrypt(tenant, text)
        assert text.encode() not in ciphertext or text == ""
        assert encryptor.decrypt(tenant, ciphertext) == text
        assert key_ids == encryptor.key_ids(tenant)
    assert encryptor.key_ids("client-a") == ["a-1", "a-2"]
    assert "client-a" in encryptor
    assert "client-c" not in encryptor


def test_a_tenant_cannot_decrypt_another_tenants_ciphertext(encryptor: MultiTenantEncryptor) -> None:
    ciphertext, _ = encryptor.encrypt("client-a", "secret of a")
    with pytest.raises(DecryptionError) as raised:
        encryptor.decrypt("client-b", ciphertext)
    assert "secret of a" not in str(raised.value)


def test_the_tenant_in_the_encryption_context_is_checked_even_when_the_keys_open_the_message() -> None:
    # Two tenants under the same key (allowed by config): the keys open the message, the context refuses it.
    provider = make_static_provider({"shared": os.urandom(32)})
    single = SingleTenantEncryptor(make_materials_manager(provider, CacheSettings()), key_ids=["shared"])
    ciphertext, key_ids = single.encrypt("client-a", "secret of a")
    assert key_ids == ["shared"]
    assert single.decrypt("client-a", ciphertext) == "secret of a"
    with pytest.raises(DecryptionError, match="encrypted for another tenant"):
        single.decrypt("client-b", ciphertext)


def test_unknown_tenants_and_bad_input_are_typed_errors(encryptor: MultiTenantEncryptor) -> None:
    with pytest.raises(EncryptionError, match="No encryption keys are configured for 'client-c'"):
        encryptor.encrypt("client-c", "x")
    with pytest.raises(DecryptionError, match="'client-c'"):
        encryptor.decrypt("client-c", b"whatever")
    with pytest.raises(DecryptionError, match="not an encrypted message"):
        encryptor.decrypt("client-a", b"not a message at all")
    with pytest.raises(EncryptionError, match="Only strings are encrypted, not int"):
        encryptor.encrypt("client-a", 12)  # type: ignore[arg-type]
    with pytest.raises(EncryptionConfigError):
        encryptor.key_ids("client-c")


def test_two_graphs_with_different_keys_do_not_share_an_encryptor() -> None:
    first = encryptor_graph().multi_tenant_encryptor
    loader = load_from_dict(multi_tenant_key_registry=dict(context_keys=["client-a"], key_ids=["other-a"]))
    second = cast(
        MultiTenantEncryptor,
        create_object_graph(name="example", testing=True, loader=loader).use("multi_tenant_encryptor")[0],
    )
    assert first is not second
    ciphertext, _ = first.encrypt("client-a", "only the first graph's keys")
    with pytest.raises(DecryptionError):
        second.decrypt("client-a", ciphertext)


class _ThreeXProvider(RawMasterKeyProvider):  # type: ignore[misc]
    """A raw static key provider written the way the SDK documents it, independent of ours."""

    provider_id = "static"

    def __init__(self, **kwargs: Any) -> None:
        self.key = b""

    def _get_raw_key(self, key_id: bytes) -> WrappingKey:
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=self.key,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def three_x_message(key: bytes, key_id: str, tenant: str, plaintext: str) -> tuple[bytes, Any]:
    """A message as 3.x wrote them: no key commitment, the tenant under "microcosm"."""
    provider = _ThreeXProvider()
    provider.key = key
    provider.add_master_key(key_id)
    client = EncryptionSDKClient(commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    ciphertext, header = client.encrypt(
        source=plaintext.encode(),
        key_provider=provider,
        encryption_context={"microcosm": tenant},
        algorithm=Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384,
    )
    return ciphertext, header


def test_a_3x_message_decrypts() -> None:
    key = os.urandom(32)
    ciphertext, header = three_x_message(key, "key-2019", "client-a", "from the 3.x days")
    assert not header.algorithm.is_committing()
    ours = SingleTenantEncryptor(
        make_materials_manager(make_static_provider({"key-2019": key}), CacheSettings()), key_ids=["key-2019"]
    )
    assert ours.decrypt("client-a", ciphertext) == "from the 3.x days"
    with pytest.raises(DecryptionError):
        ours.decrypt("client-b", ciphertext)
    # Under another key, the same message cannot be read.
    stranger = SingleTenantEncryptor(
        make_materials_manager(make_static_provider({"key-2019": os.urandom(32)}), CacheSettings())
    )
    with pytest.raises(DecryptionError):
        stranger.decrypt("client-a", ciphertext)


def test_new_messages_commit_to_their_key(encryptor: MultiTenantEncryptor) -> None:
    ciphertext, _ = encryptor.encrypt("client-a", "committed")
    reader = EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    materials = encryptor["client-a"].decrypting_materials_manager
    plaintext, header = reader.decrypt(source=ciphertext, materials_manager=materials)
    assert plaintext == b"committed"
    assert header.algorithm.is_committing()
    assert header.algorithm == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert header.algorithm.signing_algorithm_info is None


def test_signed_messages_of_3x_still_decrypt(encryptor: MultiTenantEncryptor) -> None:
    # 3.x's default suite signed every message; a signed committing message decrypts too.
    client = EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT)
    materials = encryptor["client-a"].decrypting_materials_manager
    ciphertext, header = client.encrypt(
        source=b"signed",
        materials_manager=materials,
        encryption_context={"microcosm": "client-a"},
        algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
    )
    assert header.algorithm.signing_algorithm_info is not None
    assert encryptor.decrypt("client-a", ciphertext) == "signed"


def test_beacons_are_keyed_hmacs(encryptor: MultiTenantEncryptor) -> None:
    key = b"k" * 32
    assert beacon(key, "alice@example.com") == hmac.new(key, b"alice@example.com", hashlib.sha256).hexdigest()
    assert beacon(key, "alice@example.com") != hashlib.sha256(b"alice@example.com").hexdigest()
    assert beacon(key, "x") != beacon(b"j" * 32, "x")
    with pytest.raises(ValueError, match="non-empty key"):
        beacon(b"", "x")
    # Per tenant: deterministic for one tenant, different across tenants.
    assert encryptor.beacon("client-a", "x") == encryptor.beacon("client-a", "x")
    assert encryptor.beacon("client-a", "x") != encryptor.beacon("client-b", "x")
    assert len(encryptor.beacon("client-a", "x")) == 64


def test_a_message_that_cannot_be_opened_leaves_no_noise(
    encryptor: MultiTenantEncryptor, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's one-shot decrypt logs a stack trace at ERROR for each such message, and its
    # half-read stream raises again when collected (an unraisable exception on Python 3.13).
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    ciphertext, _ = encryptor.encrypt("client-a", "secret of a")
    with caplog.at_level(logging.DEBUG, logger="aws_encryption_sdk"):
        for _ in range(3):
            with pytest.raises(DecryptionError):
                encryptor.decrypt("client-b", ciphertext)
        gc.collect()
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert unraisable == []

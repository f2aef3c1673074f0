"""The KMS path: the AWS Encryption SDK's real KMS providers against a local KMS (moto's server
mode on loopback, on a free port), with fake credentials. KMS calls are counted with botocore
events on the graph's botocore session."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.session
import pytest
from microcosm.api import create_object_graph, load_from_dict
from moto.server import ThreadedMotoServer

from microcosm_postgres.encryption.encryptor import MultiTenantEncryptor
from microcosm_postgres.encryption.errors import DecryptionError, EncryptionError

REGION = "us-east-1"
BEACON_KEYS = ["beacon-secret-of-tenant-a-0123456789", "beacon-secret-of-tenant-b-0123456789"]


@dataclass(frozen=True)
class LocalKms:
    endpoint: str
    client: Any

    def new_key(self) -> str:
        return str(self.client.create_key(Description="microcosm-postgres test key")["KeyMetadata"]["Arn"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def kms() -> Iterator[LocalKms]:
    """A local KMS for this module, and an environment that points the AWS SDKs at it."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", "/dev/null")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            patch.setenv("AWS_ENDPOINT_URL_KMS", endpoint)
            client = botocore.session.Session().create_client("kms", region_name=REGION)
            yield LocalKms(endpoint, client)
        finally:
            server.stop()


def kms_graph(
    key_ids: list[str], *, account_ids: list[str] | None = None, restricted: bool = False, cache: bool = False
) -> Any:
    contexts = ["client-a", "client-b"][: len(key_ids)]
    loader = load_from_dict(
        multi_tenant_key_registry=dict(
            context_keys=contexts,
            key_ids=key_ids,
            account_ids=account_ids or [],
            beacon_keys=BEACON_KEYS[: len(key_ids)],
            restricted_kms_policy=restricted,
        ),
        materials_manager=dict(enable_cache=cache),
    )
    return create_object_graph(name="example", testing=False, loader=loader)


def counted(graph: Any) -> tuple[MultiTenantEncryptor, Counter[str]]:
    """The graph's encryptor, and a counter of the KMS operations it calls."""
    calls: Counter[str] = Counter()

    def count(model: Any, **kwargs: Any) -> None:
        calls[model.name] += 1

    graph.materials_manager.botocore_session.register("before-call.kms", count)
    encryptor = graph.multi_tenant_encryptor
    assert isinstance(encryptor, MultiTenantEncryptor)
    return encryptor, calls


def test_tenants_round_trip_through_kms_and_stay_apart(kms: LocalKms) -> None:
    key_a1, key_a2, key_b = kms.new_key(), kms.new_key(), kms.new_key()
    encryptor, calls = counted(kms_graph([f"{key_a1};{key_a2}", key_b]))
    ciphertext, key_ids = encryptor.encrypt("client-a", "personal data of a")
    assert key_ids == [key_a1, key_a2]
    assert calls == Counter(GenerateDataKey=1, Encrypt=1)
    assert encryptor.decrypt("client-a", ciphertext) == "personal data of a"
    assert calls["Decrypt"] == 1
    with pytest.raises(DecryptionError):
        encryptor.decrypt("client-b", ciphertext)
    ciphertext_b, key_ids_b = encryptor.encrypt("client-b", "personal data of b")
    assert key_ids_b == [key_b]
    assert encryptor.decrypt("client-b", ciphertext_b) == "personal data of b"


@pytest.mark.parametrize("cache", [False, True], ids=["uncached", "cached"])
def test_caching_saves_kms_calls(kms: LocalKms, cache: bool) -> None:
    encryptor, calls = counted(kms_graph([kms.new_key()], cache=cache))
    messages = [encryptor.encrypt("client-a", f"value {number}")[0] for number in range(5)]
    for _ in range(2):
        assert [encryptor.decrypt("client-a", message) for message in messages] == [f"value {n}" for n in range(5)]
    if cache:
        # One data key for the five messages (max_messages_encrypted 100), opened once.
        assert calls == Counter(GenerateDataKey=1, Decrypt=1)
    else:
        assert calls == Counter(GenerateDataKey=5, Decrypt=10)


def test_an_unrestricted_account_decrypts_under_a_key_no_longer_listed(kms: LocalKms) -> None:
    old, new = kms.new_key(), kms.new_key()
    account = old.split(":")[4]
    ciphertext, _ = kms_graph([old]).multi_tenant_encryptor.encrypt("client-a", "made before the rotation")
    rotated = kms_graph([new], account_ids=[account]).multi_tenant_encryptor
    assert rotated.decrypt("client-a", ciphertext) == "made before the rotation"
    assert rotated.key_ids("client-a") == [new]
    # A restricted key policy: only the listed keys decrypt.
    restricted = kms_graph([new], account_ids=[account], restricted=True).multi_tenant_encryptor
    with pytest.raises(DecryptionError):
        restricted.decrypt("client-a", ciphertext)
    # Another account's filter does not open it either.
    elsewhere = kms_graph([new], account_ids=["000000000000"]).multi_tenant_encryptor
    with pytest.raises(DecryptionError):
        elsewhere.decrypt("client-a", ciphertext)


def test_a_key_kms_refuses_is_an_encryption_error(kms: LocalKms) -> None:
    missing = kms.new_key().rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    encryptor = kms_graph([missing]).multi_tenant_encryptor
    with pytest.raises(EncryptionError, match="'client-a'") as raised:
        encryptor.encrypt("client-a", "not today")
    assert raised.value.__cause__ is not None
    assert "not today" not in str(raised.value)


def test_an_unreachable_key_service_is_told_apart_from_wrong_keys(
    kms: LocalKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A KMS of this test's own (the module's stays up), stopped after the first decrypt.
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        client = botocore.session.Session().create_client("kms", region_name=REGION)
        key = str(client.create_key(Description="microcosm-postgres test key")["KeyMetadata"]["Arn"])
        cached, uncached = kms_graph([key], cache=True), kms_graph([key])
        ciphertext, _ = cached.multi_tenant_encryptor.encrypt("client-a", "still readable")
        assert cached.multi_tenant_encryptor.decrypt("client-a", ciphertext) == "still readable"
        assert uncached.multi_tenant_encryptor.decrypt("client-a", ciphertext) == "still readable"
    finally:
        server.stop()
    # KMS is down: the cache still holds the data key; without it, the message says KMS failed.
    assert cached.multi_tenant_encryptor.decrypt("client-a", ciphertext) == "still readable"
    with pytest.raises(DecryptionError, match="the key service failed \\(EndpointConnectionError\\)") as raised:
        uncached.multi_tenant_encryptor.decrypt("client-a", ciphertext)
    assert "keys this tenant does not have" not in str(raised.value)
    # Wrong keys are still said to be wrong keys.
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", kms.endpoint)
    other = kms_graph([kms.new_key()])
    with pytest.raises(DecryptionError, match="keys this tenant does not have"):
        other.multi_tenant_encryptor.decrypt("client-a", ciphertext)

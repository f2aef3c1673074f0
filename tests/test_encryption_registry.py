"""The encryption configuration: the registry's lists, the defects 3.x had, the missing extra."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

from microcosm_postgres.encryption.encryptor import MultiTenantEncryptor
from microcosm_postgres.encryption.errors import EncryptionConfigError
from microcosm_postgres.encryption.registry import MultiTenantKeyRegistry, make_key_registry, parse_key_ids

ARN_A = "arn:aws:kms:us-east-1:123456789012:key/11111111-1111-1111-1111-111111111111"
ARN_B = "arn:aws:kms:us-east-1:123456789012:key/22222222-2222-2222-2222-222222222222"
BEACON_A = "beacon-secret-of-tenant-a-0123456789"
BEACON_B = "beacon-secret-of-tenant-b-0123456789"


def encryption_graph(*, testing: bool, **registry: Any) -> Any:
    loader = load_each(load_from_environ, load_from_dict(multi_tenant_key_registry=registry))
    return create_object_graph(name="example", testing=testing, loader=loader)


def test_lists_arrive_as_lists_or_as_environment_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE__MULTI_TENANT_KEY_REGISTRY__CONTEXT_KEYS", "client-a, client-b")
    monkeypatch.setenv("EXAMPLE__MULTI_TENANT_KEY_REGISTRY__KEY_IDS", f"{ARN_A};{ARN_B},{ARN_B}")
    monkeypatch.setenv("EXAMPLE__MULTI_TENANT_KEY_REGISTRY__BEACON_KEYS", f"{BEACON_A},{BEACON_B}")
    monkeypatch.setenv("EXAMPLE__MULTI_TENANT_KEY_REGISTRY__ACCOUNT_IDS", "123456789012,")
    monkeypatch.setenv("EXAMPLE__MULTI_TENANT_KEY_REGISTRY__RESTRICTED_KMS_POLICY", "true")
    registry = encryption_graph(testing=False).multi_tenant_key_registry
    assert isinstance(registry, MultiTenantKeyRegistry)
    assert list(registry.contexts) == ["client-a", "client-b"]
    assert registry.key_ids("client-a") == [ARN_A, ARN_B]
    assert registry.key_ids("client-b") == [ARN_B]
    assert registry.beacon_key("client-b") == BEACON_B.encode()
    assert registry.tenant("client-a").account_id == "123456789012"
    assert registry.tenant("client-b").account_id is None
    assert registry.tenant("client-a").partition == "aws"
    assert registry.restricted_kms_policy is True


def test_key_ids_per_tenant_may_be_lists() -> None:
    assert parse_key_ids([["k1", "k2"], "k3;k4", "k5"]) == [["k1", "k2"], ["k3", "k4"], ["k5"]]
    assert parse_key_ids("") == []


@pytest.mark.parametrize(
    ("registry", "named"),
    [
        (dict(context_keys=["a", "b"], key_ids=[ARN_A]), "key_ids has 1 entries but context_keys has 2"),
        (dict(context_keys=["a"], key_ids=[ARN_A, ARN_B]), "key_ids has 2 entries but context_keys has 1"),
        (
            dict(context_keys=["a", "b"], key_ids=[ARN_A, ARN_B], beacon_keys=[BEACON_A]),
            "beacon_keys has 1 entries",
        ),
        (
            dict(context_keys=["a"], key_ids=[ARN_A], beacon_keys=[BEACON_A], account_ids=["1", "2"]),
            "account_ids has 2 entries",
        ),
        (
            dict(context_keys=["a"], key_ids=[ARN_A], beacon_keys=[BEACON_A], partitions=["aws", "aws-cn"]),
            "partitions has 2 entries",
        ),
        (dict(context_keys=["a", "a"], key_ids=[ARN_A, ARN_B], beacon_keys=[BEACON_A, BEACON_B]), "'a' twice"),
        (dict(context_keys=["a"], key_ids=[""], beacon_keys=[BEACON_A]), "no key id for 'a'"),
        (dict(context_keys=[""], key_ids=[ARN_A], beacon_keys=[BEACON_A]), "empty entry"),
    ],
)
def test_lists_of_different_lengths_are_refused_not_truncated(registry: dict[str, Any], named: str) -> None:
    graph = encryption_graph(testing=False, **registry)
    with pytest.raises(EncryptionConfigError, match=named):
        graph.use("multi_tenant_key_registry")


def test_a_production_graph_without_beacon_keys_fails_at_start_up() -> None:
    graph = encryption_graph(testing=False, context_keys=["a"], key_ids=[ARN_A])
    with pytest.raises(EncryptionConfigError, match="beacon_keys has 0 entries") as raised:
        graph.use("multi_tenant_encryptor")
    assert "test-key" not in str(raised.value)


def test_bad_encryption_config_fails_when_the_session_machinery_is_built() -> None:
    # Nothing asks for the encryptor: building the sessionmaker checks it all the same.
    graph = encryption_graph(testing=False, context_keys=["a"], key_ids=[ARN_A])
    with pytest.raises(EncryptionConfigError, match="Beacon keys are required outside tests"):
        graph.use("postgres", "sessionmaker")
    mismatched = encryption_graph(testing=True, context_keys=["a", "b"], key_ids=["k1"])
    with pytest.raises(EncryptionConfigError, match="key_ids has 1 entries but context_keys has 2"):
        mismatched.use("sessionmaker")


def test_a_production_graph_refuses_a_short_beacon_key() -> None:
    graph = encryption_graph(testing=False, context_keys=["a"], key_ids=[ARN_A], beacon_keys=["short"])
    with pytest.raises(EncryptionConfigError, match="at least 16 bytes") as raised:
        graph.use("multi_tenant_key_registry")
    assert "short" not in str(raised.value)


def test_a_graph_without_tenants_needs_no_beacon_keys() -> None:
    registry = encryption_graph(testing=False).multi_tenant_key_registry
    assert list(registry.contexts) == []
    assert "a" not in registry


def test_testing_graphs_get_random_beacon_keys_per_process() -> None:
    first = encryption_graph(testing=True, context_keys=["a", "b"], key_ids=["k1", "k2"]).multi_tenant_key_registry
    second = encryption_graph(testing=True, context_keys=["a"], key_ids=["k1"]).multi_tenant_key_registry
    assert len(first.beacon_key("a")) == 32
    assert first.beacon_key("a") != first.beacon_key("b")
    assert first.beacon_key("a") == second.beacon_key("a")  # beacons stay comparable within the run
    assert first.beacon_key("a") != b"test-key"


def test_restricted_kms_policy_needs_key_arns() -> None:
    graph = encryption_graph(
        testing=False,
        context_keys=["a"],
        key_ids=["alias/tenant-a"],
        beacon_keys=[BEACON_A],
        restricted_kms_policy=True,
    )
    with pytest.raises(EncryptionConfigError, match="'alias/tenant-a', which is not a key ARN"):
        graph.use("multi_tenant_key_registry")


def test_unknown_tenants_are_config_errors() -> None:
    registry = make_key_registry(context_keys=["a"], key_ids=[["k1"]], testing=True)
    with pytest.raises(EncryptionConfigError, match="No encryption keys are configured for 'b'"):
        registry.key_ids("b")
    with pytest.raises(EncryptionConfigError, match="'b'"):
        registry.beacon_key("b")


def test_key_material_stays_out_of_reprs() -> None:
    registry = make_key_registry(context_keys=["a"], key_ids=[[ARN_A]], beacon_keys=[BEACON_A])
    assert BEACON_A not in repr(registry)
    assert BEACON_A not in repr(registry.tenant("a"))
    graph = encryption_graph(testing=True, context_keys=["a"], key_ids=["k1"], beacon_keys=[BEACON_A])
    encryptor = graph.multi_tenant_encryptor
    for shown in (repr(encryptor), repr(encryptor["a"]), repr(graph.materials_manager)):
        assert BEACON_A not in shown
        assert "k1" in shown or "'a'" in shown


def test_cache_settings_out_of_range_are_refused() -> None:
    loader = load_from_dict(
        multi_tenant_key_registry=dict(context_keys=["a"], key_ids=["k1"]),
        materials_manager=dict(enable_cache=True, cache_capacity=0),
    )
    graph = create_object_graph(name="example", testing=True, loader=loader)
    with pytest.raises(EncryptionConfigError, match="cache_capacity"):
        graph.use("multi_tenant_encryptor")


_WITHOUT_SDK = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "aws_encryption_sdk" or name.startswith("aws_encryption_sdk."):
            raise ModuleNotFoundError("No module named 'aws_encryption_sdk' (blocked by the test)")
        return None

sys.meta_path.insert(0, Block())
from microcosm.api import create_object_graph, load_from_dict
import microcosm_postgres.example  # noqa: F401  (binds company_store)
from microcosm_postgres.encryption.errors import EncryptionConfigError

graph = create_object_graph(name="example", testing=True, loader=load_from_dict())
graph.use("postgres", "sessionmaker", "company_store", "multi_tenant_key_registry")
print("loaded:", any(name.startswith("aws_encryption_sdk") for name in sys.modules))
try:
    graph.multi_tenant_encryptor
except EncryptionConfigError as error:
    print("error:", error)
# With tenants configured, building the sessionmaker asks for the encryptor: the same error, at start-up.
tenants = create_object_graph(name="example", testing=True, loader=load_from_dict(
    multi_tenant_key_registry=dict(context_keys=["a"], key_ids=["k1"])))
try:
    tenants.use("postgres", "sessionmaker")
except EncryptionConfigError as error:
    print("error:", error)
"""


def test_graphs_without_encryption_never_import_the_sdk_and_asking_without_it_says_what_to_install() -> None:
    result = subprocess.run([sys.executable, "-c", _WITHOUT_SDK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "loaded: False"
    assert lines[1].startswith("error: The 'multi_tenant_encryptor' component needs the `encryption` extra")
    assert "pip install -e '.[encryption]'" in lines[1]
    assert lines[2] == lines[1]


def test_a_service_configures_its_test_tenants_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the README tells a service's conftest.py to set; the graph is made as the pytest
    # plugin makes its own (the default loader: the environment only).
    monkeypatch.setenv("EXAMPLE__MULTI_TENANT_KEY_REGISTRY__CONTEXT_KEYS", "client-a,client-b")
    monkeypatch.setenv("EXAMPLE__MULTI_TENANT_KEY_REGISTRY__KEY_IDS", "key-a1;key-a2,key-b")
    graph: Any = create_object_graph(name="example", testing=True)
    graph.use("postgres", "sessionmaker")
    graph.lock()
    encryptor: MultiTenantEncryptor = graph.multi_tenant_encryptor  # built by the sessionmaker, before the lock
    assert list(encryptor) == ["client-a", "client-b"]
    assert encryptor.key_ids("client-a") == ["key-a1", "key-a2"]
    ciphertext, key_ids = encryptor.encrypt("client-a", "personal")
    assert key_ids == ["key-a1", "key-a2"]
    assert encryptor.decrypt("client-a", ciphertext) == "personal"
    assert "client-c" not in encryptor
    graph.postgres.dispose()

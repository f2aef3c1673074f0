"""v2 columns through KMS (a local moto server): searching costs no KMS call, nor does
reading another tenant's row; only decrypting the current tenant's values does."""

from __future__ import annotations

from collections import Counter
from typing import Any

from microcosm.api import create_object_graph, load_each, load_from_dict, load_from_environ

from microcosm_postgres.context import SessionContext, transaction
from microcosm_postgres.encryption.v2.encoders import REDACTED
from microcosm_postgres.encryption.v2.encryptors import set_encryptor_context
from microcosm_postgres.store import Store
from tests.encryption_v2_models import Person
from tests.test_encryption_kms import BEACON_KEYS, LocalKms, counted, kms  # noqa: F401  (kms: a fixture)
from tests.test_encryption_v2_columns import tables  # noqa: F401  (a fixture)


def kms_database_graph(key_ids: list[str]) -> Any:
    """A production-style graph (KMS keys, configured beacon keys) on this run's database."""
    registry = dict(context_keys=["client-a", "client-b"], key_ids=key_ids, beacon_keys=BEACON_KEYS)
    loader = load_each(load_from_environ, load_from_dict(multi_tenant_key_registry=registry))
    return create_object_graph(name="example", testing=False, loader=loader)


def test_searching_and_other_tenants_rows_cost_no_kms_call(kms: LocalKms, tables: None) -> None:  # noqa: F811
    graph = kms_database_graph([kms.new_key(), kms.new_key()])
    encryptor, calls = counted(graph)
    people = Store(graph, Person, auto_filter_fields=[Person.name])
    try:
        with set_encryptor_context("client-a", encryptor), SessionContext(graph), transaction():
            alice = people.create(Person(client_id="client-a", name="Alice KMS"))
            people.create(Person(client_id="client-a", name="Bob KMS"))
        assert calls == Counter(GenerateDataKey=2)  # one data key per message
        calls.clear()
        with set_encryptor_context("client-a", encryptor), SessionContext(graph):
            assert people.count(name="Alice KMS") == 1
            assert people.count(name="Nobody") == 0
        assert calls == Counter()  # beacons come from the registry's keys
        with set_encryptor_context("client-b", encryptor), SessionContext(graph):
            assert people.retrieve(alice.id).name == REDACTED
            assert people.search(name="Alice KMS") == []
        assert calls == Counter()  # another tenant's message: its header says so, no key is tried
        with set_encryptor_context("client-a", encryptor), SessionContext(graph):
            [found] = people.search(name="Alice KMS")
            assert found.name == "Alice KMS"
        assert calls == Counter(Decrypt=1)
    finally:
        graph.postgres.dispose()

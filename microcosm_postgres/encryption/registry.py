"""`multi_tenant_key_registry`: the tenants that encrypt, their key ids and beacon keys.

Configuration (`multi_tenant_key_registry.*`), one entry per tenant in each list, in the
same order as `context_keys`:

- `context_keys`: the tenants (encryption context keys, e.g. client ids).
- `key_ids`: each tenant's master keys, ";"-separated (KMS key ARNs; any label in
  testing graphs, whose keys are static). The first one makes the data key, every one
  can decrypt.
- `partitions`, `account_ids`: the AWS partition (default "aws") and account of each
  tenant's keys; with an account id and an unrestricted key policy, messages made under
  a key of that account that is no longer listed still decrypt (see `restricted_kms_policy`).
- `beacon_keys`: each tenant's secret for beacons (keyed HMACs). Required outside tests.
- `restricted_kms_policy`: the KMS key policies let this service use the listed keys
  only: decrypt with the listed keys alone, and every key id must be a key ARN.

Lists arrive as lists (config files, code) or, from environment variables, as one string:
comma-separated between tenants, ";" between one tenant's key ids:

    ACME__MULTI_TENANT_KEY_REGISTRY__CONTEXT_KEYS=client-a,client-b
    ACME__MULTI_TENANT_KEY_REGISTRY__KEY_IDS="arn:...:key/1;arn:...:key/2,arn:...:key/3"

Lists of different lengths are refused (`EncryptionConfigError`), never truncated.
Key material never reaches logs, reprs or error messages.

"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from microcosm.api import defaults, typed
from microcosm.config.types import boolean

from microcosm_postgres.encryption.errors import EncryptionConfigError

__all__ = [
    "MultiTenantKeyRegistry",
    "TenantKeys",
    "configure_key_registry",
    "make_key_registry",
    "parse_key_ids",
    "parse_list",
]

_CONFIG = "multi_tenant_key_registry"
_DEFAULT_PARTITION = "aws"
# Outside tests a beacon key shorter than this is refused: a short secret can be guessed.
_MIN_BEACON_KEY_BYTES = 16
# Random beacon keys of testing graphs: one per tenant, the same for the whole process
# (beacons stay comparable between the graphs of one test run), never written anywhere.
_TESTING_BEACON_KEYS: dict[str, bytes] = {}


def parse_list(value: Any, *, key: str = "") -> list[str]:
    """A config list: a list (or tuple) as it is, or a comma-separated string (from the
    environment); items are stripped, "" is the empty list.

    Raises:
        EncryptionConfigError: `value` is neither.

    """
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",")]
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value]
    raise EncryptionConfigError(
        f"{_CONFIG}.{key} must be a list or a comma-separated string, not {type(value).__name__}."
    )


def parse_key_ids(value: Any) -> list[list[str]]:
    """`key_ids`: per tenant, its ";"-separated key ids (a tenant may also be given as a list)."""
    if isinstance(value, (list, tuple)):
        items: list[Any] = list(value)
    else:
        items = list(parse_list(value, key="key_ids"))
    result = []
    for item in items:
        parts = item if isinstance(item, (list, tuple)) else str(item).split(";")
        result.append([str(part).strip() for part in parts if str(part).strip()])
    return result


@dataclass(frozen=True)
class TenantKeys:
    """One tenant's keys. `repr` leaves the beacon key out."""

    context: str
    key_ids: tuple[str, ...]
    beacon_key: bytes | None = field(default=None, repr=False)
    partition: str = _DEFAULT_PARTITION
    account_id: str | None = None


class MultiTenantKeyRegistry:
    """The tenants that encrypt, with their key ids and beacon keys (see the module doc)."""

    def __init__(self, tenants: Iterable[TenantKeys], *, testing: bool = False, restricted_kms_policy: bool = False):
        self._tenants: dict[str, TenantKeys] = {}
        for tenant in tenants:
            if tenant.context in self._tenants:
                raise EncryptionConfigError(
                    f"{_CONFIG}.context_keys names {tenant.context!r} twice: give each tenant once."
                )
            self._tenants[tenant.context] = tenant
        self.testing = testing
        self.restricted_kms_policy = restricted_kms_policy

    def __repr__(self) -> str:
        return f"MultiTenantKeyRegistry(contexts={list(self._tenants)!r}, testing={self.testing!r})"

    def __contains__(self, encryption_context_key: object) -> bool:
        return encryption_context_key in self._tenants

    @property
    def contexts(self) -> Sequence[str]:
        """The tenants with keys, in configuration order."""
        return tuple(self._tenants)

    def tenant(self, encryption_context_key: str) -> TenantKeys:
        """The tenant's keys.

        Raises:
            EncryptionConfigError: the tenant has no keys.

        """
        try:
            return self._tenants[encryption_context_key]
        except KeyError:
            raise EncryptionConfigError(
                f"No encryption keys are configured for {encryption_context_key!r}: "
                f"add it to {_CONFIG}.context_keys with its key_ids."
            ) from None

    def key_ids(self, encryption_context_key: str) -> list[str]:
        """The tenant's current key ids. Raises EncryptionConfigError when it has none."""
        return list(self.tenant(encryption_context_key).key_ids)

    def beacon_key(self, encryption_context_key: str) -> bytes:
        """The tenant's beacon key.

        Raises:
            EncryptionConfigError: the tenant is not configured, or has no beacon key.

        """
        key = self.tenant(encryption_context_key).beacon_key
        if not key:
            raise EncryptionConfigError(
                f"No beacon key is configured for {encryption_context_key!r}: set {_CONFIG}.beacon_keys."
            )
        return key


def _same_length(name: str, values: Sequence[Any], contexts: Sequence[str], *, optional: bool) -> None:
    if optional and not values:
        return
    if len(values) != len(contexts):
        raise EncryptionConfigError(
            f"{_CONFIG}.{name} has {len(values)} entries but context_keys has {len(contexts)}: "
            f"give one per tenant, in the order of context_keys"
            + (" (or none)." if optional else ".")
            + (
                " Beacon keys are required outside tests (graphs not created with testing=True)."
                if name == "beacon_keys" and not optional
                else ""
            )
        )


def make_key_registry(
    *,
    context_keys: Sequence[str],
    key_ids: Sequence[Sequence[str]],
    partitions: Sequence[str] = (),
    account_ids: Sequence[str] = (),
    beacon_keys: Sequence[str | bytes] = (),
    restricted_kms_policy: bool = False,
    testing: bool = False,
) -> MultiTenantKeyRegistry:
    """The registry for these (already split) lists; see the module doc for their meaning.

    Testing graphs without `beacon_keys` get a random beacon key per tenant (per process).

    Raises:
        EncryptionConfigError: lists of different lengths, an empty tenant name, a tenant
            without key ids, missing or short (< 16 bytes) beacon keys outside tests, or (with
            `restricted_kms_policy`) a key id that is not a key ARN.

    """
    contexts = list(context_keys)
    _same_length("key_ids", key_ids, contexts, optional=False)
    _same_length("partitions", partitions, contexts, optional=True)
    _same_length("account_ids", account_ids, contexts, optional=True)
    _same_length("beacon_keys", beacon_keys, contexts, optional=testing)
    tenants = []
    for index, context in enumerate(contexts):
        if not context:
            raise EncryptionConfigError(f"{_CONFIG}.context_keys has an empty entry (number {index + 1}).")
        ids = tuple(key_ids[index])
        if not ids:
            raise EncryptionConfigError(f"{_CONFIG}.key_ids has no key id for {context!r}.")
        if restricted_kms_policy and not testing:
            for key_id in ids:
                if not key_id.startswith("arn:") or ":key/" not in key_id:
                    raise EncryptionConfigError(
                        f"{_CONFIG}.key_ids for {context!r} has {key_id!r}, which is not a key ARN: "
                        "with restricted_kms_policy every key is named by its ARN (arn:<partition>:kms:...:key/...)."
                    )
        if beacon_keys:
            given = beacon_keys[index]
            beacon_key = given.encode("utf-8") if isinstance(given, str) else bytes(given)
            if len(beacon_key) < (1 if testing else _MIN_BEACON_KEY_BYTES):
                raise EncryptionConfigError(
                    f"{_CONFIG}.beacon_keys has a key of {len(beacon_key)} bytes for {context!r}: "
                    f"use a random secret of at least {_MIN_BEACON_KEY_BYTES} bytes."
                )
        else:
            beacon_key = _TESTING_BEACON_KEYS.setdefault(context, os.urandom(32))
        tenants.append(
            TenantKeys(
                context=context,
                key_ids=ids,
                beacon_key=beacon_key,
                partition=(partitions[index] if partitions else "") or _DEFAULT_PARTITION,
                account_id=(account_ids[index] if account_ids else "") or None,
            )
        )
    return MultiTenantKeyRegistry(tenants, testing=testing, restricted_kms_policy=restricted_kms_policy)


@defaults(  # type: ignore[untyped-decorator]  # microcosm leaves it unannotated; it returns the function as is
    # The tenants that encrypt (encryption context keys, e.g. client ids): a list, or comma-separated.
    context_keys=typed(parse_list, default_value=[]),
    # Per tenant, its master key ids separated by ";" (KMS key ARNs; labels in testing graphs).
    key_ids=typed(parse_key_ids, default_value=[]),
    # Per tenant, the AWS partition of its keys (empty: "aws").
    partitions=typed(parse_list, default_value=[]),
    # Per tenant, the AWS account of its keys (decryption may use any key of it, unless restricted).
    account_ids=typed(parse_list, default_value=[]),
    # Per tenant, the secret of its beacons (keyed HMACs). Required outside tests.
    beacon_keys=typed(parse_list, default_value=[]),
    # The KMS key policies allow the listed keys only: decrypt with them alone; key ids must be ARNs.
    restricted_kms_policy=typed(boolean, default_value=False),
)
def configure_key_registry(graph: Any) -> MultiTenantKeyRegistry:
    """The `multi_tenant_key_registry` component (checked when the graph builds it).

    Raises:
        EncryptionConfigError: see `make_key_registry`.

    """
    config: Mapping[str, Any] = graph.config.multi_tenant_key_registry
    return make_key_registry(
        context_keys=parse_list(config["context_keys"], key="context_keys"),
        key_ids=parse_key_ids(config["key_ids"]),
        partitions=parse_list(config["partitions"], key="partitions"),
        account_ids=parse_list(config["account_ids"], key="account_ids"),
        beacon_keys=parse_list(config["beacon_keys"], key="beacon_keys"),
        restricted_kms_policy=boolean(config["restricted_kms_policy"]),
        testing=bool(graph.metadata.testing),
    )

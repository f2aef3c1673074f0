"""`materials_manager`: the cryptographic materials managers of each tenant, cached or not.

Configuration (`materials_manager.*`):

- `enable_cache` (default false): cache data keys (a `CachingCryptoMaterialsManager` with
  a `LocalCryptoMaterialsCache` per tenant), so that encrypting does not call KMS for
  every message and decrypting a message whose data key was seen does not either.
- `cache_capacity` (default 100): entries per tenant's cache.
- `cache_max_age` (default 300.0): seconds an entry is used.
- `cache_max_messages_encrypted` (default 100): messages encrypted under one cached data key.

Each tenant's materials come from its own provider (static raw keys in testing graphs,
KMS otherwise; see `providers`) and its own cache: a data key is never shared between
tenants. One botocore session per graph makes the KMS clients (`botocore_session`,
where a test or a service can register botocore event handlers).

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import botocore.session
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
from aws_encryption_sdk.key_providers.base import MasterKeyProvider
from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager
from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager
from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager

from microcosm_postgres.encryption.errors import EncryptionConfigError
from microcosm_postgres.encryption.providers import (
    make_kms_discovery_provider,
    make_kms_provider,
    make_static_provider,
    testing_keys,
)
from microcosm_postgres.encryption.registry import MultiTenantKeyRegistry

__all__ = [
    "CacheSettings",
    "MaterialsManagers",
    "TenantMaterials",
    "make_materials_manager",
]


@dataclass(frozen=True)
class CacheSettings:
    """`materials_manager.*`: whether and how data keys are cached."""

    enable_cache: bool = False
    cache_capacity: int = 100
    cache_max_age: float = 300.0
    cache_max_messages_encrypted: int = 100

    def __post_init__(self) -> None:
        if self.enable_cache:
            if self.cache_capacity < 1:
                raise EncryptionConfigError("materials_manager.cache_capacity must be at least 1.")
            if self.cache_max_age <= 0:
                raise EncryptionConfigError("materials_manager.cache_max_age must be a positive number of seconds.")
            if self.cache_max_messages_encrypted < 1:
                raise EncryptionConfigError("materials_manager.cache_max_messages_encrypted must be at least 1.")


def make_materials_manager(provider: MasterKeyProvider, settings: CacheSettings) -> CryptoMaterialsManager:
    """A materials manager over `provider`: caching (a cache of its own) when `settings.enable_cache`."""
    if not settings.enable_cache:
        return DefaultCryptoMaterialsManager(master_key_provider=provider)
    return CachingCryptoMaterialsManager(
        master_key_provider=provider,
        cache=LocalCryptoMaterialsCache(capacity=settings.cache_capacity),
        max_age=float(settings.cache_max_age),
        max_messages_encrypted=settings.cache_max_messages_encrypted,
    )


@dataclass(frozen=True)
class TenantMaterials:
    """One tenant's materials managers: `encrypting` (its current keys) and `decrypting`
    (the same, or, for an account with an unrestricted key policy, any key of the account)."""

    encrypting: CryptoMaterialsManager
    decrypting: CryptoMaterialsManager


class MaterialsManagers:
    """The `materials_manager` component: each tenant's materials, built from the registry."""

    def __init__(
        self,
        registry: MultiTenantKeyRegistry,
        settings: CacheSettings,
        *,
        botocore_session: botocore.session.Session | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.botocore_session = botocore_session if botocore_session is not None else botocore.session.Session()

    def __repr__(self) -> str:
        return f"MaterialsManagers(contexts={list(self.registry.contexts)!r}, settings={self.settings!r})"

    def for_context(self, encryption_context_key: str) -> TenantMaterials:
        """The tenant's materials managers (new ones at each call: callers keep them).

        Raises:
            EncryptionConfigError: the tenant has no keys.

        """
        tenant = self.registry.tenant(encryption_context_key)
        if self.registry.testing:
            manager = make_materials_manager(make_static_provider(testing_keys(tenant.key_ids)), self.settings)
            return TenantMaterials(manager, manager)
        encrypting = make_materials_manager(
            make_kms_provider(tenant.key_ids, botocore_session=self.botocore_session), self.settings
        )
        if self.registry.restricted_kms_policy or tenant.account_id is None:
            return TenantMaterials(encrypting, encrypting)
        discovery = make_kms_discovery_provider(
            partition=tenant.partition, account_id=tenant.account_id, botocore_session=self.botocore_session
        )
        return TenantMaterials(encrypting, make_materials_manager(discovery, self.settings))


def _cache_settings(config: Any) -> CacheSettings:
    return CacheSettings(
        enable_cache=bool(config["enable_cache"]),
        cache_capacity=int(config["cache_capacity"]),
        cache_max_age=float(config["cache_max_age"]),
        cache_max_messages_encrypted=int(config["cache_max_messages_encrypted"]),
    )

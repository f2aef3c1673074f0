"""The factories of `materials_manager` and `multi_tenant_encryptor` (entry points).

Every graph loads every entry point's module, so this one imports nothing of the AWS
Encryption SDK: a graph that never asks for these components never imports it, and one
that asks without the `encryption` extra installed gets an `EncryptionConfigError`
saying what to install.

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from microcosm.api import defaults, typed
from microcosm.config.types import boolean

from microcosm_postgres.encryption.errors import EncryptionConfigError

if TYPE_CHECKING:
    from microcosm_postgres.encryption.encryptor import MultiTenantEncryptor
    from microcosm_postgres.encryption.materials import MaterialsManagers

__all__ = [
    "INSTALL_HINT",
    "configure_materials_manager",
    "configure_multi_tenant_encryptor",
    "encryption_at_start_up",
    "tenants_configured",
]

INSTALL_HINT = "pip install -e '.[encryption]'"


def _require_sdk(component: str) -> None:
    try:
        import aws_encryption_sdk  # noqa: F401
    except ImportError as error:
        raise EncryptionConfigError(
            f"The {component!r} component needs the `encryption` extra (aws-encryption-sdk): "
            f"install it with `{INSTALL_HINT}` (or microcosm-postgres[encryption])."
        ) from error


@defaults(  # type: ignore[untyped-decorator]  # microcosm leaves it unannotated; it returns the function as is
    # Cache data keys per tenant (fewer KMS calls); off by default.
    enable_cache=typed(boolean, default_value=False),
    # Entries in each tenant's cache.
    cache_capacity=typed(int, default_value=100),
    # Seconds a cached data key is used.
    cache_max_age=typed(float, default_value=300.0),
    # Messages encrypted under one cached data key.
    cache_max_messages_encrypted=typed(int, default_value=100),
)
def configure_materials_manager(graph: Any) -> MaterialsManagers:
    """The `materials_manager` component (see `encryption.materials`).

    Raises:
        EncryptionConfigError: the extra is not installed, or a cache setting is out of range.

    """
    _require_sdk("materials_manager")
    from microcosm_postgres.encryption.materials import MaterialsManagers, _cache_settings

    return MaterialsManagers(graph.multi_tenant_key_registry, _cache_settings(graph.config.materials_manager))


def configure_multi_tenant_encryptor(graph: Any) -> MultiTenantEncryptor:
    """The `multi_tenant_encryptor` component: an encryptor per configured tenant.

    Raises:
        EncryptionConfigError: the extra is not installed, or the configuration is not valid.

    """
    _require_sdk("multi_tenant_encryptor")
    from microcosm_postgres.encryption.encryptor import MultiTenantEncryptor, SingleTenantEncryptor

    materials: MaterialsManagers = graph.materials_manager
    registry = materials.registry
    encryptors = {}
    for context in registry.contexts:
        tenant = materials.for_context(context)
        encryptors[context] = SingleTenantEncryptor(
            tenant.encrypting, decrypting_materials_manager=tenant.decrypting, key_ids=registry.key_ids(context)
        )
    return MultiTenantEncryptor(encryptors, registry)


def encryption_at_start_up(graph: Any) -> None:
    """Build `multi_tenant_encryptor` (and so its key registry and materials) now when the
    configuration names tenants (`multi_tenant_key_registry.context_keys` not empty).

    The `sessionmaker` factory calls it, so that a graph that can open sessions has
    checked its encryption configuration at creation, and a locked graph already holds
    its encryptor (models resolve it lazily, on their first write). A graph without
    tenants builds nothing here and never imports the AWS Encryption SDK.

    Raises:
        EncryptionConfigError: the configuration is not valid (see `make_key_registry`),
            or the `encryption` extra is not installed.

    """
    if tenants_configured(graph):
        graph.multi_tenant_encryptor  # noqa: B018  (resolving it builds and checks it)


def tenants_configured(graph: Any) -> bool:
    """True when the graph's configuration names tenants
    (`multi_tenant_key_registry.context_keys` not empty): only then does it have, or need,
    a `multi_tenant_encryptor`.

    Raises:
        EncryptionConfigError: `context_keys` is not a list (or a comma-separated string).

    """
    from microcosm_postgres.encryption.registry import parse_list

    config = graph.config.get("multi_tenant_key_registry") or {}
    return bool(parse_list(config.get("context_keys"), key="context_keys"))

"""Beacons: keyed HMAC-SHA256 digests of values, for equality search on encrypted columns.

A beacon is deterministic for one key (same value, same beacon), so a column of beacons
can be indexed and compared; without the key it cannot be recomputed, so unlike an
unkeyed SHA-256 (3.x's default) it cannot be reversed by hashing a dictionary of likely
values. Each tenant has its own beacon key (`multi_tenant_key_registry.beacon_keys`).

"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

__all__ = [
    "beacon",
]


def beacon(key: bytes, value: str) -> str:
    """The HMAC-SHA256 of `value` (UTF-8) under `key`, as 64 lowercase hex digits.

    Raises:
        ValueError: `key` is empty (a beacon without a secret key is an unkeyed hash).

    """
    if not key:
        raise ValueError("A beacon needs a non-empty key: configure multi_tenant_key_registry.beacon_keys.")
    digest = hmac.HMAC(key, hashes.SHA256())
    digest.update(value.encode("utf-8"))
    return digest.finalize().hex()

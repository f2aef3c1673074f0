"""Re-encryption of v2 encrypted values under a tenant's current keys (`ReencryptionCli`)."""

from __future__ import annotations

from microcosm_postgres.reencryption.cli import ReencryptionCli

__all__ = ["ReencryptionCli"]

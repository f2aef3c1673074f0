"""The typed errors of column encryption (all `PersistenceError`s, with a `status_code`)."""

from __future__ import annotations

from microcosm_postgres.errors import PersistenceError

__all__ = [
    "DecryptionError",
    "EncryptionConfigError",
    "EncryptionError",
]


class EncryptionConfigError(PersistenceError):
    """The encryption configuration cannot work (500), raised when the graph builds the
    encryption components: lists of different lengths, missing beacon keys outside tests,
    a key id a restricted KMS policy cannot use, or the `encryption` extra not installed.
    The message names the config key to fix; it never contains key material."""

    status_code = 500
    default_message = "The encryption configuration is not valid."


class EncryptionError(PersistenceError):
    """A value could not be encrypted (500): no keys for the tenant, or the key service
    refused (the KMS error is chained as `__cause__`)."""

    status_code = 500
    default_message = "The value could not be encrypted."


class DecryptionError(PersistenceError):
    """A ciphertext could not be decrypted for the tenant asked (500): it was made for
    another tenant, under keys this tenant does not have, it is not a valid message, or
    the key service failed (unreachable, or refused: the message says which). The
    message never contains the ciphertext or any plaintext."""

    status_code = 500
    default_message = "The value could not be decrypted."

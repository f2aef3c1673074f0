"""Column encryption per tenant (the `encryption` extra: `pip install -e '.[encryption]'`).

Ciphertexts are AWS Encryption SDK messages (the `aws-encryption-sdk` package is the
format): 3.x services switch with their data. Each tenant ("encryption context key",
e.g. a client id) has its own keys; the tenant is written into every message's
encryption context and checked on decrypt.

- `registry`: `multi_tenant_key_registry`, the tenants, their key ids and beacon keys (config).
- `providers`: master key providers (static raw keys for testing graphs, KMS otherwise).
- `materials`: `materials_manager`, the cryptographic materials managers (cached or not).
- `encryptor`: `SingleTenantEncryptor`, `MultiTenantEncryptor` (`multi_tenant_encryptor`).
- `beacons`: the keyed HMAC-SHA256 beacon for equality search on encrypted values.
- `models`, `store`: the v1 models (`EncryptableMixin`, `EncryptedMixin`) and `EncryptableStore`.

Importing this package (or `registry`, `errors`, `beacons`, `factories`) does not import
the AWS Encryption SDK; the components do, when a graph asks for them.

"""

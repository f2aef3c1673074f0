"""Encrypted columns, v2: one model attribute over a ciphertext, a plaintext and a beacon column.

- `column.encryption(key, encryptor, encoder, ...)`: the attribute, and its
  `.encrypted()`, `.unencrypted()`, `.beacon()` columns.
- `encoders`: `StringEncoder`, `TextEncoder`, `IntEncoder`, `DecimalEncoder`,
  `DatetimeEncoder`, `ArrayEncoder(...)`, `JSONEncoder`, `EnumEncoder(Enum)`, `Nullable(...)`.
- `encryptors`: `AwsKmsEncryptor` and the current encryption context
  (`set_encryptor_context`, `set_context_from_graph`, `register_flask_context`).
- `beacons`: equality search through keyed beacons.

Importing these modules does not import the AWS Encryption SDK; encrypting does (the
`encryption` extra: `pip install -e '.[encryption]'`).

"""

"""`EncryptableStore`: a Store for an `EncryptableMixin` model and its ciphertext rows.

Every write goes through the session's flush, where the models encrypt (see
`encryption.models`): the plaintext row and its ciphertext row are written in the same
flush, so in the same transaction; a refused write leaves neither (inside a
`transaction()` block the block is aborted, outside one the session is rolled back).
Reads decrypt as rows load. Bulk statements that would write plaintext without the
flush (`update_many` of the plaintext or tenant, `upsert`, `upsert_many`) are refused.

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import delete, select

from microcosm_postgres.encryption.errors import EncryptionError
from microcosm_postgres.encryption.models import EncryptableMixin
from microcosm_postgres.metrics import postgres_metric_timing
from microcosm_postgres.store import Store

__all__ = [
    "EncryptableStore",
]

EncryptableT = TypeVar("EncryptableT", bound=EncryptableMixin)


class EncryptableStore(Store[EncryptableT]):
    """A Store that writes and deletes an encryptable row together with its ciphertext row.

    Args:
        graph: the object graph (its `multi_tenant_encryptor` encrypts, through the session).
        model_class: an `EncryptableMixin` model.
        encrypted_store: the Store of its `EncryptedMixin` model.

    """

    def __init__(
        self,
        graph: Any,
        model_class: type[EncryptableT],
        encrypted_store: Store[Any],
        auto_filter_fields: Sequence[Any] = (),
    ) -> None:
        super().__init__(graph, model_class, auto_filter_fields)
        self.encrypted_store = encrypted_store
        # Writes go through the flush (where the models encrypt), never a bare INSERT / UPDATE.
        self._insert_plan = None
        self._plain_update = False
        self._encrypted_identifier = getattr(model_class, model_class.__encrypted_identifier__)

    @postgres_metric_timing()
    def delete(self, identifier: Any) -> bool:
        """Delete the row and its ciphertext row (no decryption); return True.

        Raises:
            ModelNotFoundError: no row has this identifier.
            ReferencedModelError: other rows still reference it.

        """
        identifier = self._identifier(identifier)
        with self._translating("delete"):
            encrypted_id = self.session.execute(
                select(self._encrypted_identifier).where(self._primary_key == identifier)
            ).scalar_one_or_none()
        super().delete(identifier)
        if encrypted_id is not None:
            self.encrypted_store.delete(encrypted_id)
        return True

    @postgres_metric_timing()
    def delete_many(self, *criteria: Any) -> int:
        """Delete the rows matching `criteria` and their ciphertext rows; return how many rows went."""
        with self._translating("delete_many"):
            encrypted_ids = (
                [
                    encrypted_id
                    for encrypted_id in self.session.execute(
                        select(self._encrypted_identifier).where(*criteria)
                    ).scalars()
                    if encrypted_id is not None
                ]
                if criteria
                else []
            )
        count = super().delete_many(*criteria)
        if encrypted_ids:
            encrypted_class = self.encrypted_store.model_class
            with self.flushing("delete_many") as session:
                session.execute(
                    delete(encrypted_class).where(encrypted_class.id.in_(encrypted_ids)),
                    execution_options={"synchronize_session": "fetch"},
                )
        return count

    def update_many(self, *criteria: Any, **values: Any) -> int:
        """`Store.update_many`, refused for the plaintext and tenant attributes (one UPDATE
        cannot encrypt per row: update rows one by one with `update`).

        Raises:
            EncryptionError: `values` sets the plaintext or the tenant.

        """
        cls = self.model_class
        for key in (cls.__plaintext__, cls.__encryption_context_key__, cls.__encrypted_identifier__):
            if key in values:
                raise EncryptionError(
                    f"update_many cannot set {cls.__name__}.{key}: one UPDATE cannot encrypt per row. Use update()."
                )
        return super().update_many(*criteria, **values)

    def upsert(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: an INSERT ... ON CONFLICT cannot encrypt. Raises EncryptionError."""
        raise EncryptionError(f"upsert of {self.model_name} cannot encrypt: use create() or update().")

    def upsert_many(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: an INSERT ... ON CONFLICT cannot encrypt. Raises EncryptionError."""
        raise EncryptionError(f"upsert_many of {self.model_name} cannot encrypt: use create() or update().")

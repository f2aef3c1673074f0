"""Identifiers for new rows."""

from __future__ import annotations

from uuid import UUID, uuid4

__all__ = ["new_object_id"]


def new_object_id() -> UUID:
    """A new random (version 4) UUID."""
    return uuid4()

"""Before/after comparison of a model's column values: `Version`, `Delta`, `Change`.

As in microcosm-postgres 3.x, `before - after` (or `before.difference(after)`) is the
`Delta` of the columns whose values differ, each a `Change(before, after)`.

"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import inspect

__all__ = [
    "Change",
    "Delta",
    "Version",
]


class Change(NamedTuple):
    """One column's value before and after."""

    before: Any
    after: Any


class Delta(dict[str, Change]):
    """The columns that differ from `left` to `right`, by attribute name.

    `Delta(left, right)` compares two versions (mappings of attribute name to value): a
    key whose values differ, or that only one side has, becomes `Change(left, right)`
    (None for the missing side). `Delta()` is empty.

    """

    def __init__(self, left: dict[str, Any] | None = None, right: dict[str, Any] | None = None) -> None:
        self.left = left if left is not None else {}
        self.right = right if right is not None else {}
        keys = list(self.left) + [key for key in self.right if key not in self.left]
        super().__init__(
            {
                key: Change(self.left.get(key), self.right.get(key))
                for key in keys
                if self.left.get(key) != self.right.get(key)
            }
        )


class Version(dict[str, Any]):
    """A snapshot of an instance's column values, by attribute name."""

    def __init__(self, instance: Any) -> None:
        mapper = inspect(type(instance))
        super().__init__({attr.key: getattr(instance, attr.key) for attr in mapper.column_attrs})

    def difference(self, other: dict[str, Any]) -> Delta:
        """The `Delta` from this version (before) to `other` (after)."""
        return Delta(self, other)

    def __sub__(self, other: dict[str, Any]) -> Delta:
        """`before - after`: the same as `before.difference(after)`."""
        return self.difference(other)

"""Before/after comparison of a model's column values: `Version`, `Delta`, `Change`."""

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
    """The columns that differ between two versions, by attribute name."""


class Version(dict[str, Any]):
    """A snapshot of an instance's column values, by attribute name.

    `after - before` is the `Delta` of the columns whose values differ.

    """

    def __init__(self, instance: Any) -> None:
        mapper = inspect(type(instance))
        super().__init__({attr.key: getattr(instance, attr.key) for attr in mapper.column_attrs})

    def __sub__(self, other: Version) -> Delta:
        return Delta({key: Change(other.get(key), value) for key, value in self.items() if other.get(key) != value})

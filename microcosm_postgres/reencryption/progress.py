"""A progress bar on standard error, small enough to need no dependency.

On a terminal it redraws one line (`\\r`); elsewhere (a log file, CI) it writes a line
at each tenth of the way, so that a long run shows it is alive without flooding the log.

"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 30


class Progress:
    """Progress of `total` units of one task, labelled `label`, on `stream` (stderr)."""

    def __init__(self, label: str, total: int, *, unit: str = "rows", stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._tenth = -1
        self._draw()

    def advance(self, count: int) -> None:
        """Count `count` more units done."""
        self.done = min(self.total, self.done + count)
        self._draw()

    def close(self) -> None:
        """End the bar's line (on a terminal)."""
        if self._tty:
            self.stream.write("\n")
        self.stream.flush()

    def line(self) -> str:
        """The bar as text: `label [#####-----] done/total unit`."""
        filled = _WIDTH if self.total == 0 else _WIDTH * self.done // self.total
        return f"{self.label} [{'#' * filled}{'-' * (_WIDTH - filled)}] {self.done}/{self.total} {self.unit}"

    def _draw(self) -> None:
        if self._tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
            return
        tenth = 10 if self.total == 0 else 10 * self.done // self.total
        if tenth != self._tenth:
            self._tenth = tenth
            self.stream.write(self.line() + "\n")
            self.stream.flush()

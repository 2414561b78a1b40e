"""A one-line progress report of the data passes of a streamed objective, rewritten in place."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressLine:
    """Writes ``<label>: pass P  batch i/N  E examples  T s`` to a text stream, in place.

    The line is rewritten (with a carriage return) at most every ``every`` seconds,
    and always at the end of a pass; :meth:`close` ends it with a newline.
    """

    def __init__(
        self, stream: TextIO | None = None, label: str = "dataset_mean", every: float = 0.5
    ):
        self.stream, self.label, self.every = stream, label, every
        self._last = -float("inf")
        self._open = False
        self._started = time.perf_counter()

    def start(self) -> None:
        """Marks the start of a pass (its elapsed time counts from here)."""
        self._started = time.perf_counter()

    def update(self, passes: int, batch: int, total: Any, examples: int, *, force: bool = False):
        """Reports batch ``batch`` (from 1) of ``total`` (None: unknown) in pass ``passes``."""
        now = time.perf_counter()
        if not force and now - self._last < self.every:
            return
        self._last = now
        of = "?" if total is None else str(total)
        line = (
            f"{self.label}: pass {passes}  batch {batch}/{of}  {examples:,} examples  "
            f"{now - self._started:.1f} s"
        )
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write("\r" + line)
        stream.flush()
        self._open = True

    def close(self) -> None:
        """Ends the line (a newline) if anything was written since the last close."""
        if self._open:
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write("\n")
            stream.flush()
            self._open = False

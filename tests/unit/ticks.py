"""A monotonic clock a test moves by hand: no test depends on how fast the machine is."""

from __future__ import annotations


class Ticks:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

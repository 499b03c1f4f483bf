"""A monotonic clock a test moves by hand: no test depends on how fast the machine is."""

from __future__ import annotations


class Ticks:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.reads = 0  # how often the code under test has looked: proof that it ran at a given time

    def __call__(self) -> float:
        self.reads += 1
        return self.now

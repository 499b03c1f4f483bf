"""Refusing a signed delivery seen before, for as long as its signature is valid.

A signature proves who sent a message, not that it is sent once: anyone who saw a delivery (a log, a
proxy, a captured connection) could post it again while its signature is still inside its validity
window. The receiver remembers each signature it accepted, by keyid and nonce (or by the signature
itself when there is no nonce), until that window has closed; after that the time checks refuse it
anyway, so the memory is bounded by the rate of deliveries times the window.

The cache is in memory: a restarted receiver forgets, and several replicas do not share it. That is
what the time window bounds; say so where a stronger guarantee is needed (docs/receiver.md).
"""

from __future__ import annotations

import heapq
import threading

MAX_ENTRIES = 1_000_000


class ReplayError(ValueError):
    """The signature was accepted before and is still inside its validity window."""


class ReplayCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._until: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        self._max = max_entries

    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, key = heapq.heappop(self._expiry)
            if self._until.get(key) == until:
                del self._until[key]

    def remember(self, key_id: str, token: str, *, until: float, now: float) -> None:
        """Record ``token`` for ``key_id`` until ``until``; raise ReplayError if it is already there."""
        key = (key_id, token)
        with self._lock:
            self._purge(now)
            if key in self._until:
                raise ReplayError("replayed: this signature's nonce was already accepted")
            if len(self._until) >= self._max:
                # Forgetting an entry early would let a replay through: refuse (and say why) instead.
                raise ReplayError("replay cache full: too many live signatures to remember another")
            self._until[key] = until
            heapq.heappush(self._expiry, (until, key))

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

"""A work queue with per-item scheduling, as client-go's rate-limited delaying queue.

- An item is queued once however often it is added; the earliest due time wins.
- An item is never handed to two workers at once: added while in work, it is queued again when done.
- Urgent items (emergencies) come first, and ``get(urgent_only=True)`` serves a worker that takes
  nothing else, so containment never waits behind planned work or the start-up pass.
- ``put_back`` returns an item handed out but not worked on (a worker that is no longer the leader's)
  to where it was: not lost, and not worked on until a worker takes it again.
- ``shutdown`` wakes every waiting worker at once; what is queued is dropped (it is recomputed from
  the cluster at the next start), so a stop never waits for a backlog to drain.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):
    """The queue is shut down: the worker should return."""


class WorkQueue(Generic[T]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[int, float, int, T]] = []  # (0 urgent / 1 ordinary, due, seq, item)
        self._queued: dict[T, tuple[int, float]] = {}  # the live entry of each queued item
        self._active: dict[T, tuple[int, float]] = {}  # in work, with the entry it was handed out as
        self._again: dict[T, tuple[int, float]] = {}  # added while in work: queued when done
        self._seq = itertools.count()
        self._shutdown = False

    def add(self, item: T, *, delay: float = 0.0, urgent: bool = False) -> None:
        with self._cond:
            if self._shutdown:
                return
            lane, due = (0 if urgent else 1), self._clock() + max(0.0, delay)
            if item in self._active:
                held = self._again.get(item)
                if held is None or (lane, due) < held:
                    self._again[item] = (lane, due)
                return
            held = self._queued.get(item)
            if held is not None and held <= (lane, due):
                return
            self._push(item, lane, due)

    def _push(self, item: T, lane: int, due: float) -> None:
        self._queued[item] = (lane, due)
        heapq.heappush(self._heap, (lane, due, next(self._seq), item))
        self._cond.notify_all()

    def get(self, *, urgent_only: bool = False, timeout: float | None = None) -> T | None:
        """The next due item (marked in work until ``done``); None on timeout; ShutDown when stopping."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    raise ShutDown
                now = self._clock()
                wait = self._ready(now, urgent_only)
                if isinstance(wait, tuple):
                    item = wait[0]
                    return item
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def _ready(self, now: float, urgent_only: bool) -> tuple[T] | float | None:
        """The item to hand out now, else how long until the next one is due (None: nothing queued)."""
        # Stale heap entries (superseded by an earlier due time) are skipped lazily.
        candidates: list[tuple[int, float, int, T]] = []
        found: tuple[T] | float | None = None
        while self._heap:
            lane, due, _seq, item = self._heap[0]
            if self._queued.get(item) != (lane, due):
                heapq.heappop(self._heap)
                continue
            if urgent_only and lane != 0:
                break
            if due <= now:
                heapq.heappop(self._heap)
                del self._queued[item]
                self._active[item] = (lane, due)
                found = (item,)
                break
            found = due - now if not isinstance(found, float) else min(found, due - now)
            if lane != 0 or urgent_only:
                break  # the heap is ordered: nothing behind this one is due sooner in its lane
            # An urgent item not yet due: an ordinary one due now may go first.
            candidates.append(heapq.heappop(self._heap))
        for entry in candidates:
            heapq.heappush(self._heap, entry)
        return found

    def put_back(self, item: T) -> None:
        """Queue an item handed out by ``get`` again as it was (its lane, its due time): it was not worked on."""
        with self._cond:
            held = self._active.pop(item, None)
            again = self._again.pop(item, None)
            if self._shutdown or held is None:
                return
            entry = held if again is None else min(held, again)
            queued = self._queued.get(item)
            if queued is None or entry < queued:
                self._push(item, *entry)

    def done(self, item: T) -> None:
        with self._cond:
            self._active.pop(item, None)
            again = self._again.pop(item, None)
            if again is not None and not self._shutdown:
                held = self._queued.get(item)
                if held is None or again < held:
                    self._push(item, *again)
            self._cond.notify_all()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._heap.clear()
            self._queued.clear()
            self._again.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

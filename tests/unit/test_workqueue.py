"""The engine's work queue: once per item, never two workers on one item, urgent first, due times kept."""

from __future__ import annotations

import threading

import pytest

from tests.unit.ticks import Ticks
from webhookcerts.service import workqueue


def test_an_item_added_twice_is_handed_out_once_at_its_earliest_due_time() -> None:
    ticks = Ticks()
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue(ticks)
    q.add("a", delay=30)
    q.add("a", delay=10)
    q.add("a", delay=50)
    assert len(q) == 1
    assert q.get(timeout=0) is None
    ticks.now += 10
    assert q.get(timeout=0) == "a"
    q.done("a")
    assert q.get(timeout=0) is None and len(q) == 0


def test_an_item_added_while_in_work_comes_back_only_after_done() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue(Ticks())
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")
    # Not to a second worker while the first still holds it.
    assert q.get(timeout=0) is None
    q.done("a")
    assert q.get(timeout=0) == "a"


def test_urgent_items_go_first_and_the_urgent_lane_takes_nothing_else() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue(Ticks())
    for name in ("p1", "p2", "p3"):
        q.add(name)
    q.add("emergency", urgent=True)
    assert q.get(urgent_only=True, timeout=0) == "emergency"
    assert q.get(urgent_only=True, timeout=0) is None
    assert [q.get(timeout=0) for _ in range(3)] == ["p1", "p2", "p3"]


def test_an_ordinary_item_becomes_urgent_when_an_emergency_arrives() -> None:
    ticks = Ticks()
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue(ticks)
    q.add("a", delay=600)
    q.add("a", urgent=True)
    assert q.get(urgent_only=True, timeout=0) == "a"


def test_shutdown_wakes_a_waiting_worker_and_drops_the_backlog() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    for i in range(1000):
        q.add(f"item-{i}", delay=3600)
    stopped = threading.Event()

    def worker() -> None:
        with pytest.raises(workqueue.ShutDown):
            q.get()
        stopped.set()

    thread = threading.Thread(target=worker)
    thread.start()
    q.shutdown()
    thread.join(10)
    assert stopped.is_set() and len(q) == 0
    q.add("late")
    assert len(q) == 0


def test_an_item_put_back_is_queued_as_it_was_and_handed_out_again() -> None:
    ticks = Ticks()
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue(ticks)
    q.add("urgent", urgent=True)
    q.add("ordinary")
    assert q.get(timeout=0) == "urgent"
    q.put_back("urgent")
    # Still in its lane: the urgent-only worker finds it, and it is not lost.
    assert len(q) == 2
    assert q.get(urgent_only=True, timeout=0) == "urgent"
    q.done("urgent")
    assert q.get(timeout=0) == "ordinary"
    q.add("ordinary", delay=5)  # added while in work: the earlier of the two entries wins
    q.put_back("ordinary")
    assert q.get(timeout=0) == "ordinary"

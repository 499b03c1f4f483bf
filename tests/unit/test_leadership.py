"""The leader-election decision (create, renew, take over only what is free or expired, else wait), and
the elector's renew deadline, kept by its watchdog whatever the Lease call in flight is doing."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from tests import conftest
from tests.unit.ticks import Ticks
from webhookcerts.domain import leadership
from webhookcerts.domain.leadership import Move, Record
from webhookcerts.kube import client as kube_client
from webhookcerts.service import leader


def held_by(holder: str, duration: int = 15) -> Record:
    return Record(holder=holder, duration_seconds=duration, renew_time="t", transitions=2, resource_version="7")


def test_no_lease_is_created_and_ones_own_is_renewed() -> None:
    assert leadership.decide(None, "a", unchanged_for=0) is Move.CREATE
    assert leadership.decide(held_by("a"), "a", unchanged_for=100) is Move.RENEW


def test_a_lease_someone_renews_is_waited_for_until_it_goes_unrenewed_for_its_duration() -> None:
    assert leadership.decide(held_by("b"), "a", unchanged_for=14.9) is Move.WAIT
    assert leadership.decide(held_by("b"), "a", unchanged_for=15.0) is Move.WAIT
    assert leadership.decide(held_by("b"), "a", unchanged_for=15.1) is Move.TAKE


def test_a_released_lease_is_taken_at_once() -> None:
    assert leadership.decide(held_by(""), "a", unchanged_for=0) is Move.TAKE


# The elector's watchdog, on a clock the test moves: a Lease call that never returns (a connection the
# API server stopped answering) must not keep a leader leading past its renew deadline.


class FakeLeases:
    """The Lease as ``kube.leases`` reads and writes it; ``hang`` holds the next read or write until let go."""

    def __init__(self) -> None:
        self.record: Record | None = None
        self.hang: set[str] = set()  # "read", "write"
        self.hanging = threading.Event()  # a call is being held
        self.let_go = threading.Event()
        self.version = 0

    def _maybe_hang(self, call: str) -> None:
        if call in self.hang:
            self.hang.discard(call)
            self.hanging.set()
            assert self.let_go.wait(30), "the test never let the call go"
            self.let_go.clear()

    def read(self, clients: object, namespace: str, name: str, *, timeout: float | None = None) -> Record | None:
        self._maybe_hang("read")
        return self.record

    def write(self, clients: object, namespace: str, name: str, **kw: Any) -> None:
        self._maybe_hang("write")
        self.version += 1
        self.record = Record(kw["holder"], kw["duration_seconds"], "t", kw["transitions"], str(self.version))


@pytest.fixture
def fake_leases(monkeypatch: pytest.MonkeyPatch) -> FakeLeases:
    fake = FakeLeases()
    monkeypatch.setattr(leader, "leases", fake)
    return fake


def elector(ticks: Ticks, events: list[str]) -> leader.Elector:
    # ``retry`` is real time (how often the threads look), the deadline is on the test's clock.
    return leader.Elector(
        cast(kube_client.Clients, None),
        "ns",
        "lease",
        "me",
        on_started=lambda: events.append("started"),
        on_stopped=lambda: events.append("stopped"),
        duration=15,
        renew_deadline=10,
        retry=0.01,
        clock=ticks,
    )


def test_a_leader_whose_renewal_hangs_stops_at_the_deadline_and_a_later_renewal_starts_afresh(
    fake_leases: FakeLeases,
) -> None:
    ticks, events = Ticks(), []
    e = elector(ticks, events)
    e.start()
    try:
        assert conftest.poll(lambda: events == ["started"]), events
        fake_leases.hang.add("read")
        assert fake_leases.hanging.wait(10)
        ticks.now += 9.9
        # Just before the deadline it still leads: once the clock has been read a few more times at 9.9 s
        # (the watchdog has looked, however slow the machine), nothing has happened.
        looked = ticks.reads + 5
        assert conftest.poll(lambda: ticks.reads >= looked or events != ["started"]), "nothing read the clock"
        assert events == ["started"], events
        ticks.now += 0.2
        # The read is still held: the watchdog, not the end of the call, gave leadership up.
        assert conftest.poll(lambda: events == ["started", "stopped"]), events
        assert not e.leading
        fake_leases.let_go.set()
        # The Lease still names this replica: the next renewal is a fresh start, announced as one.
        assert conftest.poll(lambda: events == ["started", "stopped", "started"]), events
        assert e.leading
    finally:
        fake_leases.let_go.set()
        e.stop()


def test_a_renewal_answered_after_the_deadline_does_not_count(fake_leases: FakeLeases) -> None:
    ticks, events = Ticks(), []
    e = elector(ticks, events)
    e.start()
    try:
        assert conftest.poll(lambda: events == ["started"]), events
        fake_leases.hang.add("write")
        assert fake_leases.hanging.wait(10)
        fake_leases.hanging.clear()
        ticks.now += 10.5
        assert conftest.poll(lambda: events == ["started", "stopped"]), events
        # The write succeeds, late; the next read is held, so only that late answer could make it lead.
        fake_leases.hang.add("read")
        fake_leases.let_go.set()
        assert fake_leases.hanging.wait(10)
        assert events == ["started", "stopped"] and not e.leading
        fake_leases.let_go.set()
        assert conftest.poll(lambda: events == ["started", "stopped", "started"]), events
    finally:
        fake_leases.let_go.set()
        e.stop()


def test_a_standby_is_alive_and_an_elector_whose_thread_ended_is_not(fake_leases: FakeLeases) -> None:
    fake_leases.record = held_by("other")
    events: list[str] = []
    e = elector(Ticks(), events)
    assert e.dead_threads() == []
    e.start()
    try:
        assert conftest.poll(lambda: e._holder_logged == "other")
        assert e.dead_threads() == [] and not e.leading
    finally:
        e.stop()
    assert sorted(e.dead_threads()) == ["leader-deadline", "leader-election"]

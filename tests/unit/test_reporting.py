"""The reporting core (receiver/reporting.py): what a tally counts and keeps, when the reporter writes.

The write bound is proven with injected clocks and a fake writer, never with the machine's time: a
simulated minute at 2,000 presentations a second.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading

import pytest

from tests import conftest
from webhookcerts.domain import reports
from webhookcerts.receiver import reporting

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def sha256(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def sha1(n: int) -> str:
    return hashlib.sha1(str(n).encode(), usedforsecurity=False).hexdigest()


class FakeTime:
    """One clock for both the report's timestamps and the reporter's schedule."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime.datetime:
        return T0 + datetime.timedelta(seconds=self.seconds)


class FakeWriter:
    def __init__(self) -> None:
        self.specs: list[reports.PresentationReportSpec] = []
        self.fail_with: Exception | None = None
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, spec: reports.PresentationReportSpec) -> None:
        with self.lock:
            self.attempts += 1
            if self.fail_with is not None:
                raise self.fail_with
            self.specs.append(spec)


def reporter_at(clock: FakeTime, writer: FakeWriter, tally: reporting.Tally, **kwargs: object) -> reporting.Reporter:
    return reporting.Reporter(
        tally,
        writer,
        trust_secret_name="trust",
        clock=clock.now,
        monotonic=clock.monotonic,
        **kwargs,  # type: ignore[arg-type]
    )


# --- Tally ---------------------------------------------------------------------------------------


def test_a_tally_counts_each_certificate_by_its_fingerprints() -> None:
    clock = FakeTime()
    tally = reporting.Tally(clock=clock.now)
    tally.record(sha256=sha256(1), sha1=sha1(1), accepted=True)
    clock.seconds = 10
    tally.record(sha256=sha256(1), sha1=sha1(1), accepted=False)
    clock.seconds = 20
    tally.record(sha256=sha256(1), sha1=sha1(1), accepted=True)
    tally.record(sha256=None, sha1=sha1(2), accepted=False, at=T0 + datetime.timedelta(seconds=5))
    tally.record(sha256=None, sha1=None, accepted=True)  # nothing to tell it by: not counted

    first, second = sorted(tally.snapshot(), key=lambda c: c.first_seen)
    assert (first.sha256, first.sha1, first.accepted, first.refused) == (sha256(1), sha1(1), 2, 1)
    assert first.first_seen == T0
    assert first.last_seen == first.last_accepted == T0 + datetime.timedelta(seconds=20)
    assert first.last_refused == T0 + datetime.timedelta(seconds=10)
    assert (second.sha256, second.sha1, second.accepted, second.refused) == (None, sha1(2), 0, 1)
    assert second.last_accepted is None
    assert tally.started == T0
    # What the report's schema takes, as it will be sent.
    reports.PresentationReportSpec(
        trust_secret_name="trust",
        reporter="receiver",
        start_time=tally.started,
        heartbeat_time=T0,
        heartbeat_interval_seconds=15,
        certificates=tally.snapshot(),
    )


def test_a_tally_takes_fingerprints_as_servers_log_them_and_ignores_what_is_not_one() -> None:
    tally = reporting.Tally()
    colons = ":".join(sha1(1)[i : i + 2] for i in range(0, 40, 2)).upper()
    tally.record(sha256=None, sha1=colons, accepted=True)
    tally.record(sha256="not-a-fingerprint", sha1=sha1(1), accepted=True)
    tally.record(sha256=sha1(2), sha1=None, accepted=True)  # a sha1 given as a sha256: not one
    [entry] = tally.snapshot()
    assert (entry.sha256, entry.sha1, entry.accepted) == (None, sha1(1), 2)


def test_a_full_tally_drops_the_certificate_least_recently_seen_never_the_newest() -> None:
    clock = FakeTime()
    tally = reporting.Tally(clock=clock.now)
    for n in range(reports.MAX_CERTIFICATES):
        clock.seconds = n
        tally.record(sha256=sha256(n), sha1=None, accepted=True)
    clock.seconds = 100
    tally.record(sha256=sha256(0), sha1=None, accepted=True)  # 0 seen again: 1 is now the oldest
    tally.record(sha256=sha256(999), sha1=None, accepted=True)

    held = {c.sha256 for c in tally.snapshot()}
    assert len(held) == reports.MAX_CERTIFICATES
    assert sha256(999) in held and sha256(0) in held
    assert sha256(1) not in held
    assert tally.evicted == 1


def test_a_tally_stays_bounded_whatever_it_is_shown() -> None:
    tally = reporting.Tally()
    for n in range(20 * reports.MAX_CERTIFICATES):
        tally.record(sha256=sha256(n), sha1=sha1(n), accepted=n % 2 == 0)
        tally.written(tally.snapshot())
    snapshot = tally.snapshot()
    assert len(snapshot) == len(tally) == reports.MAX_CERTIFICATES
    assert snapshot[0].sha256 == sha256(20 * reports.MAX_CERTIFICATES - 1)  # the newest, first


def test_a_tally_counts_exactly_under_concurrent_recording() -> None:
    tally = reporting.Tally()
    per_thread, threads = 5000, 4

    def work(offset: int) -> None:
        for i in range(per_thread):
            tally.record(sha256=sha256(i % 3), sha1=None, accepted=(i + offset) % 2 == 0)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    snapshot = tally.snapshot()
    assert sum(c.accepted + c.refused for c in snapshot) == per_thread * threads
    assert sum(c.accepted for c in snapshot) == per_thread * threads // 2


def test_a_fingerprint_is_new_until_a_written_report_holds_it() -> None:
    tally = reporting.Tally()
    told: list[int] = []
    tally.listen(lambda: told.append(1))
    assert not tally.has_new()
    tally.record(sha256=sha256(1), sha1=None, accepted=True)
    tally.record(sha256=sha256(2), sha1=None, accepted=True)
    assert tally.has_new() and told == [1]  # told once, not per certificate
    before = tally.snapshot()
    tally.record(sha256=sha256(3), sha1=None, accepted=True)  # while the report is being written
    tally.written(before)
    assert tally.has_new()  # 3 is in no written report yet
    tally.written(tally.snapshot())
    assert not tally.has_new()
    tally.record(sha256=sha256(1), sha1=None, accepted=False)
    assert not tally.has_new()  # counts changed, no new certificate: the heartbeat carries it


# --- PodIdentity ---------------------------------------------------------------------------------


def test_the_pod_identity_comes_from_the_downward_api() -> None:
    pod = reporting.PodIdentity.from_env({"POD_NAME": "rx-0", "POD_NAMESPACE": "ns", "POD_UID": "u-1"})
    assert pod == reporting.PodIdentity("rx-0", "ns", "u-1")
    with pytest.raises(reporting.ReportingError, match=r"^POD_NAMESPACE, POD_UID not set"):
        reporting.PodIdentity.from_env({"POD_NAME": "rx-0", "POD_UID": ""})


# --- Reporter ------------------------------------------------------------------------------------


def test_the_heartbeat_is_written_every_interval_with_nothing_presented() -> None:
    clock, writer = FakeTime(), FakeWriter()
    reporter = reporter_at(clock, writer, reporting.Tally(clock=clock.now), interval=15, trust_hash=lambda: "abc")
    assert reporter.tick() == 15  # the first report at once
    clock.seconds = 14.9
    assert reporter.tick() == pytest.approx(0.1)
    assert len(writer.specs) == 1
    clock.seconds = 15
    reporter.tick()
    clock.seconds = 30
    reporter.tick()
    assert [s.heartbeat_time for s in writer.specs] == [T0 + datetime.timedelta(seconds=s) for s in (0, 15, 30)]
    assert all(s.certificates == [] and s.start_time == T0 for s in writer.specs)
    assert writer.specs[0].heartbeat_interval_seconds == 15
    assert writer.specs[0].trust_hash == "abc" and writer.specs[0].reporter == "receiver"


def test_a_new_fingerprint_is_written_after_the_minimum_gap_not_at_the_heartbeat() -> None:
    clock, writer = FakeTime(), FakeWriter()
    tally = reporting.Tally(clock=clock.now)
    reporter = reporter_at(clock, writer, tally, interval=15, min_gap=2)
    reporter.tick()
    clock.seconds = 0.5
    tally.record(sha256=sha256(1), sha1=None, accepted=True)
    assert reporter.tick() == pytest.approx(1.5)  # not before the gap
    assert len(writer.specs) == 1
    clock.seconds = 2
    assert reporter.tick() == 15  # written; the next is the heartbeat
    assert [c.sha256 for c in writer.specs[-1].certificates] == [sha256(1)]
    clock.seconds = 3
    tally.record(sha256=sha256(1), sha1=None, accepted=True)  # known: waits for the heartbeat
    assert reporter.tick() == pytest.approx(14)


@pytest.mark.parametrize("distinct", [3, None], ids=["three-certificates", "a-new-one-every-time"])
def test_writes_per_minute_are_bounded_at_2000_presentations_a_second(distinct: int | None) -> None:
    clock, writer = FakeTime(), FakeWriter()
    tally = reporting.Tally(clock=clock.now)
    reporter = reporter_at(clock, writer, tally)  # the defaults: 15 s heartbeat, 2 s gap
    woken: list[int] = []
    tally.listen(lambda: woken.append(1))  # what wakes the reporter's thread
    next_tick = 0.0
    for n in range(2000 * 60):
        clock.seconds = n / 2000
        key = n % distinct if distinct is not None else n
        tally.record(sha256=sha256(key), sha1=None, accepted=True)
        if clock.seconds >= next_tick or woken:
            woken.clear()
            next_tick = clock.seconds + reporter.tick()
    writes = len(writer.specs)
    if distinct is not None:
        # The first report, one early for the certificates it did not hold, then the heartbeats.
        assert 60 / reporting.DEFAULT_INTERVAL <= writes <= 2 + 60 / reporting.DEFAULT_INTERVAL
        assert sum(c.accepted for c in writer.specs[-1].certificates) > 2000 * 45  # the last heartbeat's counts
    else:
        # Even a stream of certificates never seen before writes at most once per gap.
        assert writes <= 1 + 60 / reporting.DEFAULT_MIN_GAP
        assert all(len(s.certificates) <= reports.MAX_CERTIFICATES for s in writer.specs)


def test_a_failed_write_is_logged_and_tried_again_at_the_next_heartbeat(caplog: pytest.LogCaptureFixture) -> None:
    clock, writer = FakeTime(), FakeWriter()
    tally = reporting.Tally(clock=clock.now)
    reporter = reporter_at(clock, writer, tally, interval=15, min_gap=2)
    writer.fail_with = ConnectionRefusedError("the API server is away")
    tally.record(sha256=sha256(1), sha1=None, accepted=True)
    with caplog.at_level(logging.WARNING, logger="webhookcerts.reporter"):
        assert reporter.tick() == 15  # new fingerprint or not: no retry before the heartbeat
    [record] = [json.loads(r.getMessage()) for r in caplog.records if "report_write_failed" in r.getMessage()]
    assert record["error"] == "ConnectionRefusedError: the API server is away"
    assert reporter.failures == 1
    clock.seconds = 10
    tally.record(sha256=sha256(2), sha1=None, accepted=True)
    assert reporter.tick() == pytest.approx(5)
    assert writer.attempts == 1
    writer.fail_with = None
    clock.seconds = 15
    reporter.tick()
    assert {c.sha256 for c in writer.specs[-1].certificates} == {sha256(1), sha256(2)}  # nothing lost
    assert not tally.has_new() and reporter.last_error is None


def test_a_trust_secret_name_the_report_cannot_carry_is_refused_at_once() -> None:
    with pytest.raises(reporting.ReportingError, match="Not_A_Name"):
        reporting.Reporter(reporting.Tally(), FakeWriter(), trust_secret_name="Not_A_Name")


def test_the_thread_writes_heartbeats_early_flushes_and_a_last_report_on_stop() -> None:
    writer = FakeWriter()
    tally = reporting.Tally()
    reporter = reporting.Reporter(tally, writer, trust_secret_name="trust", interval=3600, min_gap=0.01).start()
    try:
        assert conftest.poll(lambda: len(writer.specs) >= 1)  # the first report, at start
        tally.record(sha256=sha256(1), sha1=sha1(1), accepted=True)
        # Woken by the new fingerprint, long before the hour's heartbeat.
        assert conftest.poll(lambda: any(s.certificates for s in list(writer.specs)))
        tally.record(sha256=sha256(1), sha1=sha1(1), accepted=True)
        written = len(writer.specs)
    finally:
        reporter.stop()
    assert len(writer.specs) == written + 1
    assert writer.specs[-1].certificates[0].accepted == 2


def test_stop_returns_within_its_timeout_when_the_last_write_hangs() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hanging(spec: reports.PresentationReportSpec) -> None:
        calls.append(1)
        if len(calls) > 1:
            release.wait()  # the API server never answers the last write

    reporter = reporting.Reporter(
        reporting.Tally(), hanging, trust_secret_name="trust", interval=3600, stop_timeout=0.2
    ).start()
    assert conftest.poll(lambda: len(calls) == 1)
    stopping = threading.Thread(target=reporter.stop)
    stopping.start()
    stopping.join(30)
    try:
        assert not stopping.is_alive(), "stop() waited for a write that does not end"
        assert len(calls) == 2
    finally:
        release.set()

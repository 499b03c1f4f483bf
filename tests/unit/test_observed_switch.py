"""``reports.observed_switch``: when the endpoints' reports prove the provider presents the next certificate.

Reports go through ``reports.aggregate`` as the operator's pass sends them, at fake times: every reason
the verdict can give, and each boundary on both sides (exactly ``minPresentations``, the quiet period's
edge, a reporter started inside the period, a heartbeat exactly at the stale limit).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from webhookcerts.domain import reports

UTC = datetime.UTC
NOW = datetime.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)
SECOND = datetime.timedelta(seconds=1)
QUIET = HOUR
CURRENT = reports.Fingerprints("aa" * 32, "a1" * 20)
NEXT = reports.Fingerprints("bb" * 32, "b1" * 20)
INTERVAL = 30
# A report is stale after three heartbeat intervals and the grace.
STALE_AFTER = 3 * datetime.timedelta(seconds=INTERVAL) + reports.STALE_GRACE


def seen_cert(fp: reports.Fingerprints, accepted: int, last: datetime.datetime, **more: Any) -> dict[str, Any]:
    return {
        "sha256": fp.sha256,
        "accepted": accepted,
        "refused": more.pop("refused", 0),
        "firstSeen": more.pop("first", last - HOUR),
        "lastSeen": last,
        **more,
    }


def source(
    pod: str,
    *certificates: dict[str, Any],
    started: datetime.datetime = NOW - 2 * HOUR,
    heartbeat: datetime.datetime = NOW,
    counted: bool = True,
    why_not: str = "",
) -> reports.ReportSource:
    spec = reports.PresentationReportSpec.model_validate(
        {
            "trustSecretName": "webhook-trust",
            "reporter": "receiver",
            "startTime": started,
            "heartbeatTime": heartbeat,
            "heartbeatIntervalSeconds": INTERVAL,
            "certificates": list(certificates),
        }
    )
    return reports.ReportSource(pod, spec, counted, why_not)


def switched(pod: str = "receiver-0", accepted: int = 10, **kwargs: Any) -> reports.ReportSource:
    """A reporter that saw the next accepted ``accepted`` times and the current last 2h ago."""
    return source(pod, seen_cert(NEXT, accepted, NOW - SECOND), seen_cert(CURRENT, 500, NOW - 2 * HOUR), **kwargs)


def verdict(
    *sources: reports.ReportSource, current_trusted: bool = True, min_presentations: int = 10
) -> reports.Verdict:
    seen = reports.aggregate(sources, current=CURRENT, next_=NEXT, revoked=(), now=NOW)
    return reports.observed_switch(
        seen, min_presentations=min_presentations, quiet_period=QUIET, now=NOW, current_trusted=current_trusted
    )


def test_the_next_accepted_often_enough_and_the_current_quiet_is_a_switch() -> None:
    found = verdict(switched())
    assert (found.ready, found.reason) == (True, "ProviderSwitched")
    assert found.recheck_at is None


def test_no_reporter_is_never_a_switch_and_a_report_not_counted_is_named() -> None:
    found = verdict()
    assert (found.ready, found.reason) == (False, "NoReporters")
    stray = switched("stray-0", counted=False, why_not="pod stray-0 is not Running")
    found = verdict(stray)
    assert (found.ready, found.reason) == (False, "NoReporters")
    assert "pod stray-0 is not Running" in found.message


def test_a_stale_reporter_blocks_the_switch_however_clear_the_others_are() -> None:
    at_the_limit = NOW - STALE_AFTER
    # Positive control: a heartbeat exactly at the limit is not stale yet.
    assert verdict(switched(), switched("receiver-1", heartbeat=at_the_limit)).ready
    found = verdict(switched(), switched("receiver-1", heartbeat=at_the_limit - SECOND))
    assert (found.ready, found.reason) == (False, "ReportersStale")
    assert "receiver-1" in found.message and "receiver-0" not in found.message


def test_the_only_reporter_stale_is_no_switch() -> None:
    found = verdict(switched(heartbeat=NOW - STALE_AFTER - SECOND))
    assert (found.ready, found.reason) == (False, "ReportersStale")


@pytest.mark.parametrize(("accepted", "ready"), [(9, False), (10, True)])
def test_exactly_min_presentations_is_enough(accepted: int, ready: bool) -> None:
    found = verdict(switched(accepted=accepted))
    assert found.ready is ready
    if not ready:
        assert found.reason == "AwaitingNextPresentations"
        assert "accepted 9 of the 10 times required" in found.message


def test_presentations_add_up_over_the_reporters_and_refusals_do_not_count() -> None:
    a = source("a", seen_cert(NEXT, 4, NOW - SECOND, refused=100))
    b = source("b", seen_cert(NEXT, 5, NOW - SECOND))
    assert verdict(a, b).reason == "AwaitingNextPresentations"
    c = source("c", seen_cert(NEXT, 1, NOW - SECOND))
    assert verdict(a, b, c).ready


@pytest.mark.parametrize(("ago", "ready"), [(QUIET - SECOND, False), (QUIET, True)])
def test_the_current_presented_inside_the_quiet_period_waits_until_it_ends(
    ago: datetime.timedelta, ready: bool
) -> None:
    last = NOW - ago
    found = verdict(source("r", seen_cert(NEXT, 10, NOW - SECOND), seen_cert(CURRENT, 1, last)))
    assert found.ready is ready
    if not ready:
        assert found.reason == "CurrentStillPresented"
        assert found.recheck_at == last + QUIET


def test_a_refused_presentation_of_the_current_is_a_presentation_too() -> None:
    refused = seen_cert(CURRENT, 0, NOW - 2 * HOUR, refused=1, lastSeen=NOW - HOUR + SECOND)
    assert verdict(source("r", seen_cert(NEXT, 10, NOW - SECOND), refused)).reason == "CurrentStillPresented"


def test_the_current_seen_at_one_reporter_is_enough_to_wait() -> None:
    quiet = switched("a")
    busy = source("b", seen_cert(CURRENT, 1, NOW - 10 * SECOND))
    assert verdict(quiet).ready
    assert verdict(quiet, busy).reason == "CurrentStillPresented"


@pytest.mark.parametrize(("ago", "ready"), [(QUIET - SECOND, False), (QUIET, True)])
def test_a_reporter_started_inside_the_quiet_period_proves_nothing_for_it(ago: datetime.timedelta, ready: bool) -> None:
    # A restarted reporter counts from zero: it never saw the current certificate, and that is no proof.
    fresh = source("new-0", seen_cert(NEXT, 10, NOW - SECOND), started=NOW - ago)
    found = verdict(switched(), fresh)
    assert found.ready is ready
    if not ready:
        assert found.reason == "ReporterTooRecent"
        assert found.recheck_at == NOW - ago + QUIET


def test_the_quiet_period_is_proven_only_as_far_as_the_oldest_heartbeat() -> None:
    # The current presented 1h and 30s ago: quiet for the period by the clock, but the reporter last wrote
    # 60s ago, and what it saw since is not in the report yet (the flaw found in the first version).
    lagging = source(
        "r",
        seen_cert(NEXT, 10, NOW - 61 * SECOND),
        seen_cert(CURRENT, 1, NOW - QUIET - 30 * SECOND),
        heartbeat=NOW - 60 * SECOND,
    )
    found = verdict(lagging)
    assert (found.ready, found.reason) == (False, "CurrentStillPresented")
    # The moment is past: only a new report can change this, so no wake-up in the past (a busy loop).
    assert found.recheck_at is None
    written_later = source(
        "r",
        seen_cert(NEXT, 10, NOW - 61 * SECOND),
        seen_cert(CURRENT, 1, NOW - QUIET - 30 * SECOND),
        heartbeat=NOW - 30 * SECOND,
    )
    assert verdict(written_later).ready


def test_a_heartbeat_from_a_clock_ahead_proves_nothing_beyond_now() -> None:
    ahead = source("r", seen_cert(NEXT, 10, NOW), seen_cert(CURRENT, 1, NOW - QUIET + SECOND), heartbeat=NOW + HOUR)
    assert verdict(ahead).reason == "CurrentStillPresented"


def test_a_current_no_longer_trusted_needs_no_quiet_period_but_every_other_proof() -> None:
    busy = source("r", seen_cert(NEXT, 10, NOW - SECOND), seen_cert(CURRENT, 0, NOW - SECOND, refused=50))
    assert verdict(busy).reason == "CurrentStillPresented"
    found = verdict(busy, current_trusted=False)
    assert (found.ready, found.reason) == (True, "ProviderSwitched")
    fresh = source("r", seen_cert(NEXT, 10, NOW - SECOND), started=NOW - SECOND)
    assert verdict(fresh, current_trusted=False).ready
    assert verdict(current_trusted=False).reason == "NoReporters"
    assert verdict(switched(heartbeat=NOW - HOUR), current_trusted=False).reason == "ReportersStale"
    assert verdict(switched(accepted=9), current_trusted=False).reason == "AwaitingNextPresentations"


def test_times_past_now_are_read_as_now_and_never_break_the_pass() -> None:
    """A report's times are the reporter's word: 9999-12-31T23:59:59Z is admitted by the CRD's
    date-time, and the first interval added to it overflows (every pass of every object on that trust
    store failed). Whatever lies after now is read as now: it proves no quiet period and no reporter is
    live beyond its heartbeat interval from now."""
    end = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    last_current = source("r", seen_cert(NEXT, 10, NOW - SECOND), seen_cert(CURRENT, 1, end, first=end))
    found = verdict(last_current)
    assert (found.reason, found.recheck_at) == ("CurrentStillPresented", NOW + QUIET)
    assert verdict(switched(started=end)).reason == "ReporterTooRecent"
    assert verdict(switched(started=end)).recheck_at == NOW + QUIET
    ahead = switched(heartbeat=end)
    seen = reports.aggregate([ahead], current=CURRENT, next_=NEXT, revoked=(CURRENT,), now=NOW)
    [reporter] = seen.reporters
    assert (reporter.heartbeat_time, reporter.stale, reporter.stale_at) == (NOW, False, NOW + STALE_AFTER)
    knock = source("r", seen_cert(CURRENT, 0, end, refused=1, lastRefused=end))
    seen = reports.aggregate([knock], current=None, next_=None, revoked=(CURRENT,), now=NOW)
    assert [s.last_seen for s in seen.revoked] == [NOW]


def test_a_fresh_report_that_cannot_be_counted_holds_the_switch_off() -> None:
    """It may be a real endpoint that still sees the current certificate (its pod could not be read):
    it can block the cut-over, never enable it; once stale it no longer blocks."""
    uncounted = source("other-0", seen_cert(CURRENT, 5, NOW - SECOND), counted=False, why_not="pod not read")
    found = verdict(switched(), uncounted)
    assert (found.ready, found.reason) == (False, "ReportsNotCounted")
    assert "other-0 (pod not read)" in found.message
    gone = source("other-0", counted=False, why_not="pod gone", heartbeat=NOW - STALE_AFTER - SECOND)
    assert verdict(switched(), gone).ready


def test_silence_is_no_proof_the_next_must_be_presented_inside_the_quiet_period() -> None:
    """The next accepted often enough, then nothing at all for the quiet period: no switch."""
    quiet = source("receiver-0", seen_cert(NEXT, 10, NOW - QUIET - SECOND), seen_cert(CURRENT, 500, NOW - 2 * HOUR))
    found = verdict(quiet)
    assert (found.ready, found.reason) == (False, "NextNotPresentedLately")
    lately = source("receiver-0", seen_cert(NEXT, 10, NOW - QUIET + SECOND), seen_cert(CURRENT, 500, NOW - 2 * HOUR))
    assert verdict(lately).ready


def test_a_revoked_certificate_knocks_only_by_refused_presentations() -> None:
    """A reporter's counts run since it started: the 500 accepted presentations of a certificate from
    before its cut-over are the provider's, not knocks; only the refused ones after count."""
    old = reports.Fingerprints("cc" * 32, "c1" * 20)
    retired = source("receiver-0", seen_cert(old, 500, NOW - HOUR))
    seen = reports.aggregate([retired], current=CURRENT, next_=NEXT, revoked=[old], now=NOW)
    assert seen.revoked == ()
    knocked = source("receiver-0", seen_cert(old, 500, NOW, refused=2, lastRefused=NOW, lastAccepted=NOW - HOUR))
    seen = reports.aggregate([knocked], current=CURRENT, next_=NEXT, revoked=[old], now=NOW)
    assert [(s.sha256, s.presentations, s.last_seen) for s in seen.revoked] == [(old.sha256, 2, NOW)]

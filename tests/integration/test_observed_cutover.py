"""``spec.cutover.policy: Observed`` on a real API server: the operator cuts over once the reports prove it.

The ``Harness`` of test_service (fake clock, real API server) and the reports of test_presentations,
written as admin for Pod objects the test creates and sets Running. Each negative check is followed by
the change that makes the same pass cut over, so a check that could not have seen a cut-over fails.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from tests.integration.test_presentations import entry, report, reporter_pod
from tests.integration.test_service import Harness, active, condition, harness, rotating
from webhookcerts.domain import names

pytestmark = pytest.mark.integration

__all__ = ["harness"]

SECOND = datetime.timedelta(seconds=1)
QUIET = datetime.timedelta(minutes=10)
OBSERVED: dict[str, Any] = {"policy": "Observed", "observed": {"minPresentations": 5, "quietPeriod": "10m"}}


def cutover_ready(h: Harness, name: str) -> tuple[str, str] | None:
    found = condition(h.status(name), names.CUTOVER_READY)
    return None if found is None else (found.status, found.reason)


def test_observed_cuts_over_once_the_next_is_accepted_often_enough_and_the_current_is_quiet(harness: Harness) -> None:
    h = harness
    status = rotating(h, "obs", cutover=OBSERVED)
    assert status.current is not None and status.next is not None
    current, nxt, old_serial, new_serial = (
        status.current.certificate,
        status.next.certificate,
        status.current.serial,
        status.next.serial,
    )
    # Before any report the condition says so: nobody can prove a switch.
    assert cutover_ready(h, "obs") == ("False", "NoReporters")
    uid = reporter_pod(h, "recv-0")

    # The provider still presents the current; the next was accepted, but not often enough yet.
    presented = h.fake.now()
    report(h, "recv-0", uid, [entry(current, accepted=50, last=presented), entry(nxt, accepted=4, last=presented)])
    h.run("obs")
    assert h.status("obs").stage == "Rotating"
    assert cutover_ready(h, "obs") == ("False", "AwaitingNextPresentations")

    # Accepted often enough, but the current was presented inside the quiet period: wait, and wake when
    # it can end.
    report(h, "recv-0", uid, [entry(current, accepted=50, last=presented), entry(nxt, accepted=5, last=presented)])
    result = h.run("obs")
    assert h.status("obs").stage == "Rotating"
    assert cutover_ready(h, "obs") == ("False", "CurrentStillPresented")
    assert result.wakeup == presented + QUIET

    # A second before the quiet period ends, with a fresh report: still not.
    h.fake.set(presented + QUIET - SECOND)
    report(h, "recv-0", uid, [entry(current, accepted=50, last=presented), entry(nxt, accepted=9, last=h.fake.now())])
    h.run("obs")
    assert h.status("obs").stage == "Rotating"
    assert cutover_ready(h, "obs") == ("False", "CurrentStillPresented")
    assert not h.events("obs", "ObservedCutover")

    # The quiet period over, proven by a report written then: the same cut-over step as the annotation.
    h.fake.set(presented + QUIET)
    report(h, "recv-0", uid, [entry(current, accepted=50, last=presented), entry(nxt, accepted=9, last=h.fake.now())])
    h.run("obs")
    status = h.status("obs")
    assert status.stage == "Active"
    assert status.current is not None and status.current.serial == new_serial and status.next is None
    assert [(e.serial, e.reason) for e in status.history] == [(old_serial, "Superseded")]
    assert h.secret_fingerprint(status.current.secret_name) == status.current.fingerprint
    assert h.api.secret(f"{status.current.secret_name}-next") is None
    (event,) = h.events("obs", "ObservedCutover")
    assert event.type == "Normal" and new_serial in event.message and "retired and its key destroyed" in event.message
    assert not h.events("obs", "CutOver")
    # Nothing pending: nothing to be ready for.
    assert cutover_ready(h, "obs") is None


def test_observed_never_cuts_over_with_the_only_reporter_stale(harness: Harness) -> None:
    h = harness
    status = rotating(h, "stale", cutover=OBSERVED)
    assert status.current is not None and status.next is not None
    current, nxt = status.current.certificate, status.next.certificate
    uid = reporter_pod(h, "recv-0")
    # Quiet for the period even up to the old heartbeat: only its staleness stands in the way.
    last = h.fake.now() - 5 * QUIET
    lines = [entry(current, accepted=50, last=last), entry(nxt, accepted=50, last=last)]
    report(h, "recv-0", uid, lines, heartbeat=h.fake.now() - 3 * QUIET + SECOND)
    # Everything but the heartbeat says the provider switched long ago.
    h.run("stale")
    assert h.status("stale").stage == "Rotating"
    ready = condition(h.status("stale"), names.CUTOVER_READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "ReportersStale")
    assert "recv-0" in ready.message
    # The positive control: the same report with a fresh heartbeat cuts over.
    report(h, "recv-0", uid, lines, heartbeat=h.fake.now())
    h.run("stale")
    assert h.status("stale").stage == "Active"
    assert h.events("stale", "ObservedCutover")


def test_manual_never_cuts_over_on_the_reports(harness: Harness) -> None:
    h = harness
    status = rotating(h, "manual")
    assert status.next is not None
    # The reporter has counted for two hours; the next accepted 500 times and the current never seen.
    report(h, "recv-0", reporter_pod(h, "recv-0"), [entry(status.next.certificate, accepted=500, last=h.fake.now())])
    h.run("manual")
    assert h.status("manual").stage == "Rotating"
    assert cutover_ready(h, "manual") is None
    assert not h.events("manual", "ObservedCutover")
    # Switched to Observed, the same reports cut over: what Manual ignored was proof enough.
    h.api.patch_spec("manual", cutover=OBSERVED)
    h.run("manual")
    assert h.status("manual").stage == "Active"
    assert h.events("manual", "ObservedCutover")


@pytest.mark.parametrize("emergency_policy", ["RevokeImmediately", "KeepUntilCutover"])
def test_after_an_emergency_a_compromised_certificate_still_presented_holds_off_only_what_it_keeps_trusted(
    harness: Harness, emergency_policy: str
) -> None:
    h = harness
    name = f"inc-{emergency_policy.lower()}"
    active(h, name, cutover=OBSERVED, emergencyPolicy=emergency_policy)
    old = h.status(name).current
    assert old is not None
    h.api.emergency(name, "INC-7")
    h.settle(name)
    status = h.status(name)
    assert status.stage == "Compromised" and status.next is not None
    # The replacement is accepted, and the compromised certificate is still presented (the provider's
    # slow instance, or whoever stole the key), refused or not.
    uid = reporter_pod(h, "recv-0")
    now = h.fake.now()
    report(
        h,
        "recv-0",
        uid,
        [entry(old.certificate, accepted=3, refused=7, last=now), entry(status.next.certificate, accepted=5, last=now)],
    )
    h.run(name)
    status = h.status(name)
    if emergency_policy == "KeepUntilCutover":
        # Still trusted: the cut-over would drop trust, so it waits, and says how to revoke it now.
        assert status.stage == "Compromised"
        ready = condition(status, names.CUTOVER_READY)
        assert ready is not None and ready.reason == "CurrentStillPresented"
        assert "someone else holds its key" in ready.message
        # The positive control: quiet for the period, the same object cuts over.
        h.fake.advance(QUIET)
        report(
            h,
            "recv-0",
            uid,
            [
                entry(old.certificate, accepted=3, refused=7, last=now),
                entry(status.next.certificate, accepted=9, last=h.fake.now()),
            ],
        )
        h.run(name)
        status = h.status(name)
    # Under RevokeImmediately it left every trust form at containment: no quiet period to wait for.
    assert status.stage == "Active"
    assert [(e.serial, e.reason, e.incident) for e in status.history][:1] == [(old.serial, "Compromised", "INC-7")]
    assert h.events(name, "ObservedCutover")

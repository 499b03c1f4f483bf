"""The observed cut-over in the chain (``policy.observed_cutover``, ``domain.cutover``) and its spec.

Hand-built observations as in test_policy.py, with the reports already added up: Manual never acts on
them, Observed acts only with a pending next and a verdict that says the provider switched, after an
asked-for cut-over and before expiry; an emergency replacement is handled as ``domain.cutover`` says.
"""

from __future__ import annotations

import datetime
import types
from typing import Any

import pydantic
import pytest

from tests.unit import test_policy as tp
from webhookcerts.domain import cutover, names, policy, reports
from webhookcerts.service import derived

Action = policy.Action
HOUR = datetime.timedelta(hours=1)
SECOND = datetime.timedelta(seconds=1)
NOW = tp.RENEWAL + 10 * HOUR
CURRENT = reports.Fingerprints(tp.CURRENT.fingerprint)
NEXT = reports.Fingerprints(tp.NEXT.fingerprint)
OBSERVED = {"cutover": {"policy": "Observed"}}


def entry(fp: reports.Fingerprints, accepted: int, last: datetime.datetime, refused: int = 0) -> dict[str, Any]:
    return {"sha256": fp.sha256, "accepted": accepted, "refused": refused, "firstSeen": last, "lastSeen": last}


def seen(
    *certificates: dict[str, Any],
    now: datetime.datetime = NOW,
    heartbeat: datetime.datetime | None = None,
    started: datetime.datetime | None = None,
) -> reports.Presentations:
    spec = reports.PresentationReportSpec.model_validate(
        {
            "trustSecretName": "webhook-trust",
            "reporter": "receiver",
            "startTime": started or now - 5 * HOUR,
            "heartbeatTime": heartbeat or now,
            "heartbeatIntervalSeconds": 30,
            "certificates": list(certificates),
        }
    )
    source = reports.ReportSource("receiver-0", spec)
    return reports.aggregate([source], current=CURRENT, next_=NEXT, revoked=(), now=now)


SWITCHED = seen(entry(NEXT, 10, NOW - SECOND), entry(CURRENT, 100, NOW - 2 * HOUR))
STILL_PRESENTED = seen(entry(NEXT, 10, NOW - SECOND), entry(CURRENT, 100, NOW - 10 * SECOND))


def observe(
    st: Any = None, *, presentations: reports.Presentations | None = SWITCHED, now: datetime.datetime = NOW, **spec: Any
) -> policy.Observation:
    base = tp.observe(st if st is not None else tp.status(pending=tp.NEXT), now=now, sp=tp.spec(**spec))
    return policy.Observation(**{**base.__dict__, "presentations": presentations})


def test_observed_cuts_over_once_the_reports_prove_the_switch() -> None:
    decision = policy.decide(observe(**OBSERVED))
    assert (decision.action, decision.reason) == (Action.CUTOVER, "ObservedCutover")
    assert tp.NEXT.serial in decision.message and "accepted 10 times" in decision.message


def test_manual_never_acts_on_the_reports() -> None:
    assert tp.decided(observe()) == (Action.UP_TO_DATE, "UpToDate")
    assert tp.decided(observe(cutover={"policy": "Manual"})) == (Action.UP_TO_DATE, "UpToDate")
    assert cutover.verdict(observe()) is None


@pytest.mark.parametrize(
    ("presentations", "reason"),
    [
        (None, cutover.UNKNOWN),
        (seen(), "AwaitingNextPresentations"),
        (STILL_PRESENTED, "CurrentStillPresented"),
        (seen(entry(NEXT, 10, NOW - SECOND), started=NOW - 10 * SECOND), "ReporterTooRecent"),
        (seen(entry(NEXT, 10, NOW - SECOND), heartbeat=NOW - HOUR), "ReportersStale"),
    ],
)
def test_observed_waits_while_the_proof_is_missing(presentations: reports.Presentations | None, reason: str) -> None:
    obs = observe(presentations=presentations, **OBSERVED)
    assert tp.decided(obs) == (Action.UP_TO_DATE, "UpToDate")
    found = cutover.verdict(obs)
    assert found is not None and not found.ready and found.reason == reason


def test_no_reporter_is_never_enough() -> None:
    empty = reports.aggregate([], current=CURRENT, next_=NEXT, revoked=(), now=NOW)
    obs = observe(presentations=empty, **OBSERVED)
    assert tp.decided(obs) == (Action.UP_TO_DATE, "UpToDate")
    assert cutover.verdict(obs) == reports.Verdict(
        False, "NoReporters", "no endpoint reports which certificate the provider presents"
    )


def test_nothing_to_cut_over_to_is_no_verdict() -> None:
    obs = observe(tp.status(), now=tp.ISSUED, **OBSERVED)
    assert cutover.verdict(obs) is None
    assert tp.decided(obs) == (Action.UP_TO_DATE, "UpToDate")


def test_an_asked_for_cutover_goes_first_and_an_expired_current_still_cuts_over() -> None:
    asked = tp.observe(tp.status(pending=tp.NEXT), now=NOW, sp=tp.spec(**OBSERVED), cutover=tp.NEXT.serial)
    # Asked for by a person while the reports prove it too: the person's reason and Event.
    asked = policy.Observation(**{**asked.__dict__, "presentations": SWITCHED})
    assert tp.decided(asked) == (Action.CUTOVER, "CutoverRequested")
    # Expired and the provider still presenting the current: expiry cuts over, as without reports.
    end = tp.CURRENT.not_after
    still = seen(entry(NEXT, 10, end - SECOND), entry(CURRENT, 100, end - 10 * SECOND), now=end)
    expired = observe(presentations=still, now=end, **OBSERVED)
    assert tp.decided(expired) == (Action.CUTOVER, "Expired")
    assert tp.decided(observe(presentations=None, now=tp.CURRENT.not_after, **OBSERVED)) == (Action.CUTOVER, "Expired")


def test_a_broken_key_secret_stops_the_observed_cutover() -> None:
    obs = tp.observe(tp.status(pending=tp.NEXT), now=NOW, sp=tp.spec(**OBSERVED), next_secret=tp.holding(None))
    obs = policy.Observation(**{**obs.__dict__, "presentations": SWITCHED})
    assert tp.decided(obs) == (Action.NOT_READY, "NextSecretInvalid")


def test_an_emergency_replacement_under_revoke_immediately_needs_no_quiet_period() -> None:
    # Containment took the current out of every trust form: the cut-over drops no trust, and whoever
    # holds the stolen key cannot hold it off by presenting it.
    contained = tp.status(
        pending=tp.NEXT, reason="Emergency", compromised_by="INC-1", revoked=(tp.CURRENT.fingerprint,)
    )
    assert tp.decided(observe(contained, presentations=STILL_PRESENTED, **OBSERVED)) == (
        Action.CUTOVER,
        "ObservedCutover",
    )
    assert tp.decided(observe(contained, presentations=seen(entry(NEXT, 9, NOW)), **OBSERVED))[0] is Action.UP_TO_DATE
    # Status that does not list it as revoked (written before the fingerprint was): the policy says it.
    unlisted = tp.status(pending=tp.NEXT, reason="Emergency", compromised_by="INC-1")
    assert tp.decided(observe(unlisted, presentations=STILL_PRESENTED, **OBSERVED))[1] == "ObservedCutover"


def test_an_emergency_replacement_under_keep_until_cutover_waits_and_says_how_to_revoke_now() -> None:
    kept = tp.status(pending=tp.NEXT, reason="Emergency", compromised_by="INC-1")
    obs = observe(kept, presentations=STILL_PRESENTED, emergencyPolicy="KeepUntilCutover", **OBSERVED)
    assert tp.decided(obs) == (Action.UP_TO_DATE, "UpToDate")
    found = cutover.verdict(obs)
    assert found is not None and found.reason == "CurrentStillPresented"
    assert "someone else holds its key" in found.message
    assert f"webhookcerts.io/cutover={tp.NEXT.serial}" in found.message
    switched = observe(kept, emergencyPolicy="KeepUntilCutover", **OBSERVED)
    assert tp.decided(switched) == (Action.CUTOVER, "ObservedCutover")


def test_the_pass_wakes_when_the_quiet_period_can_be_proven_in_whole_seconds() -> None:
    last = NOW - 10 * SECOND + datetime.timedelta(microseconds=250_000)
    obs = observe(presentations=seen(entry(NEXT, 10, NOW), entry(CURRENT, 1, last)), **OBSERVED)
    found = cutover.verdict(obs)
    assert found is not None and found.recheck_at == last + HOUR
    wakeup = policy.next_wakeup(obs.spec, obs.status, obs)
    assert wakeup == (last + HOUR).replace(microsecond=0) + SECOND
    # Without the observation (or under Manual) the wake-up is expiry's, as before.
    assert policy.next_wakeup(obs.spec, obs.status) == tp.CURRENT.not_after
    assert policy.next_wakeup(obs.spec, obs.status, observe()) == tp.CURRENT.not_after
    # Never later than expiry.
    late = observe(now=tp.CURRENT.not_after - 10 * SECOND, presentations=STILL_PRESENTED, **OBSERVED)
    assert policy.next_wakeup(late.spec, late.status, late) == tp.CURRENT.not_after


# --- the spec ----------------------------------------------------------------------------------------


def test_the_spec_defaults_to_manual_with_ten_presentations_and_an_hour() -> None:
    sp = tp.spec()
    assert sp.cutover.policy == "Manual"
    assert (sp.cutover.observed.min_presentations, sp.cutover.observed.quiet_period) == (10, "1h")
    assert tp.spec(cutover={"policy": "Observed"}).cutover.observed.quiet_period_delta == HOUR


@pytest.mark.parametrize(
    ("cutover_spec", "renew_before", "message"),
    [
        ({"policy": "Observed", "observed": {"quietPeriod": "59s"}}, "2160h", "shorter than the minimum of 1m"),
        ({"policy": "Observed", "observed": {"minPresentations": 0}}, "2160h", "greater than or equal to 1"),
        ({"policy": "Observed", "observed": {"minPresentations": 1_000_001}}, "2160h", "less than or equal to"),
        ({"policy": "Observed", "observed": {"quietPeriod": "2160h"}}, "2160h", "must be shorter than renewBefore"),
        ({"policy": "Later"}, "2160h", "'Manual' or 'Observed'"),
    ],
)
def test_a_nonsense_cutover_spec_is_refused(cutover_spec: dict[str, Any], renew_before: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        tp.spec(cutover=cutover_spec, renewBefore=renew_before)


def test_the_quiet_period_bound_applies_only_under_observed() -> None:
    # A Manual object with a short renewBefore is not refused for a quiet period it never uses.
    assert tp.spec(renewBefore="30m").cutover.policy == "Manual"
    assert tp.spec(cutover={"policy": "Observed", "observed": {"quietPeriod": "1m"}}, renewBefore="1m59s")


# --- the condition -----------------------------------------------------------------------------------


class ConditionRecorder:
    """The part of ``state.Pass`` that ``derived.conclude`` writes conditions through."""

    def __init__(self, obs: policy.Observation) -> None:
        self.last, self.status = obs, obs.status.model_copy(deep=True)
        self.resource = types.SimpleNamespace(generation=1)
        self.conditions: dict[str, tuple[str, str]] = {names.CUTOVER_READY: ("False", "Stale")}

    def set_condition(self, type: str, status: str, reason: str, message: str) -> None:
        self.conditions[type] = (status, reason)

    def drop_condition(self, type: str) -> None:
        self.conditions.pop(type, None)


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (observe(**OBSERVED), ("True", "ProviderSwitched")),
        (observe(presentations=STILL_PRESENTED, **OBSERVED), ("False", "CurrentStillPresented")),
        (observe(presentations=None, **OBSERVED), ("Unknown", cutover.UNKNOWN)),
        (observe(), None),
        (observe(tp.status(), now=tp.ISSUED, **OBSERVED), None),
    ],
)
def test_cutover_ready_says_what_the_verdict_says_and_goes_without_a_pending_next(
    obs: policy.Observation, expected: tuple[str, str] | None
) -> None:
    p = ConditionRecorder(obs)
    decision = policy.Decision(Action.UP_TO_DATE, "UpToDate")
    derived.conclude(p, decision, [])  # type: ignore[arg-type]
    assert p.conditions.get(names.CUTOVER_READY) == expected

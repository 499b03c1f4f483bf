"""The decision chain, pure: hand-built observations at fake-clock times in, named decisions out.

Every Action and reason the chain can return is reached here, and so is the order of the checks (an
emergency beats a broken Secret, an interrupted cut-over is finished before the current Secret is
judged, refusals never block a planned renewal). No keys are generated: the chain sees only the
public facts ``pki.CertificateInfo`` carries.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from webhookcerts.domain import clock, models, names, pki, policy, renewal

UTC = datetime.UTC
Action = policy.Action
ISSUED = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
YEAR = datetime.timedelta(hours=8760)
RENEW_BEFORE = datetime.timedelta(hours=2160)
RENEWAL = ISSUED + YEAR - RENEW_BEFORE
SECOND = datetime.timedelta(seconds=1)


def info(serial: str, fingerprint: str, issued: datetime.datetime = ISSUED) -> pki.CertificateInfo:
    # The chain compares serials and fingerprints; the PEM is carried through, never parsed.
    return pki.CertificateInfo(
        serial=serial,
        fingerprint=fingerprint,
        not_before=issued - datetime.timedelta(minutes=5),
        not_after=issued + YEAR,
        pem=f"-----BEGIN CERTIFICATE-----\n{serial}\n-----END CERTIFICATE-----\n",
    )


CURRENT = info("0A1B2C", "aa" * 32)
NEXT = info("3D4E5F", "bb" * 32, issued=RENEWAL)
OTHER = info("778899", "cc" * 32)


def spec(**changes: Any) -> models.WebhookCertificateSpec:
    fields: dict[str, Any] = {
        "environment": "sandbox",
        "subject": {"commonName": "hooks.example.com"},
        "secretName": "hooks-tls",
        "trust": {"secretName": "webhook-trust"},
        **changes,
    }
    return models.WebhookCertificateSpec.model_validate(fields)


def record(cert: pki.CertificateInfo, stored_in: str = "hooks-tls", revision: int = 1) -> dict[str, Any]:
    return {
        "serial": cert.serial,
        "fingerprint": cert.fingerprint,
        "notBefore": cert.not_before,
        "notAfter": cert.not_after,
        "certificate": cert.pem,
        "secretName": stored_in,
        "revision": revision,
    }


def status(
    current: pki.CertificateInfo | None = CURRENT,
    pending: pki.CertificateInfo | None = None,
    *,
    reason: models.NextReason = "Planned",
    compromised_by: str | None = None,
    handled: str | None = None,
    revoked: tuple[str, ...] = (),
) -> models.WebhookCertificateStatus:
    fields: dict[str, Any] = {"revokedFingerprints": list(revoked)}
    if current is not None:
        fields["current"] = {**record(current), "compromisedBy": compromised_by}
        fields["revision"] = 1
    if pending is not None:
        fields["next"] = {**record(pending, "hooks-tls-next", 2), "reason": reason, "issuedAt": pending.not_before}
        fields["revision"] = 2
    if handled is not None:
        fields["lastEmergencyRotation"] = {"reference": handled, "handledAt": ISSUED}
    return models.WebhookCertificateStatus.model_validate(fields)


def holding(cert: pki.CertificateInfo | None) -> policy.SecretObservation:
    return policy.SecretObservation.missing() if cert is None else policy.SecretObservation(exists=True, info=cert)


def next_of(cert: pki.CertificateInfo, reason: str, incident: str = "") -> policy.SecretObservation:
    """A next Secret the operator wrote (its reason and incident annotations), recorded nowhere."""
    annotations = {names.NEXT_REASON_ANNOTATION: reason, names.INCIDENT_ANNOTATION: incident}
    return policy.SecretObservation(exists=True, info=cert, annotations=annotations)


def broken(problem: str = "SecretCorrupted", message: str = "has no tls.key") -> policy.SecretObservation:
    return policy.SecretObservation(exists=True, problem=problem, message=message)


def observe(
    st: models.WebhookCertificateStatus,
    *,
    now: datetime.datetime = ISSUED,
    current_secret: policy.SecretObservation | None = None,
    next_secret: policy.SecretObservation | None = None,
    emergency: str | None = None,
    cutover: str | None = None,
    discard: str | None = None,
    sp: models.WebhookCertificateSpec | None = None,
) -> policy.Observation:
    """What the reconciler would see, with the Secrets holding what status records unless told otherwise."""
    if current_secret is None:
        current_secret = holding(_as_info(st.current))
    if next_secret is None:
        next_secret = holding(_as_info(st.next))
    return policy.Observation(
        spec=sp or spec(),
        status=st,
        now=now,
        current_secret=current_secret,
        next_secret=next_secret,
        emergency_reference=emergency,
        cutover_serial=cutover,
        discard_serial=discard,
    )


def _as_info(rec: models.CertificateRecord | None) -> pki.CertificateInfo | None:
    if rec is None:
        return None
    return pki.CertificateInfo(rec.serial, rec.fingerprint, rec.not_before, rec.not_after, rec.certificate)


def decided(obs: policy.Observation) -> tuple[Action, str]:
    decision = policy.decide(obs)
    return decision.action, decision.reason


# --- first issue and adoption ------------------------------------------------------------------------


def test_nothing_recorded_and_no_secret_issues_the_first_key() -> None:
    decision = policy.decide(observe(status(current=None)))
    assert (decision.action, decision.reason) == (Action.ISSUE_INITIAL, "SecretDoesNotExist")
    assert "hooks-tls" in decision.message


def test_nothing_recorded_but_a_sound_secret_is_adopted_not_replaced() -> None:
    obs = observe(status(current=None), current_secret=holding(CURRENT))
    assert decided(obs) == (Action.ADOPT_CURRENT, "SecretAdopted")


@pytest.mark.parametrize("problem", ["SecretCorrupted", "KeyMismatch"])
def test_nothing_recorded_and_a_broken_secret_is_reported_never_overwritten(problem: str) -> None:
    obs = observe(status(current=None), current_secret=broken(problem, "the key does not fit"))
    decision = policy.decide(obs)
    assert (decision.action, decision.reason) == (Action.NOT_READY, problem)
    assert "the key does not fit" in decision.message


# --- the current Secret is never auto-replaced ---------------------------------------------------------


@pytest.mark.parametrize(
    ("current_secret", "reason"),
    [
        (policy.SecretObservation.missing(), "SecretDoesNotExist"),
        (broken("SecretCorrupted"), "SecretCorrupted"),
        (broken("KeyMismatch"), "KeyMismatch"),
        (holding(OTHER), "SecretChanged"),
    ],
    ids=["missing", "corrupted", "key-mismatch", "other-certificate"],
)
@pytest.mark.parametrize("when", [ISSUED, RENEWAL, CURRENT.not_after], ids=["fresh", "due", "expired"])
def test_a_broken_current_secret_stops_everything_and_names_the_recovery(
    current_secret: policy.SecretObservation, reason: str, when: datetime.datetime
) -> None:
    # Even when renewal or expiry is due: the provider may still hold the recorded key.
    decision = policy.decide(observe(status(), now=when, current_secret=current_secret))
    assert (decision.action, decision.reason) == (Action.NOT_READY, reason)
    assert "webhookcerts.io/emergency-rotation" in decision.message
    assert decision.action not in policy.MUTATING


@pytest.mark.parametrize(
    "current_secret",
    [policy.SecretObservation.missing(), broken(), broken("KeyMismatch"), holding(OTHER)],
    ids=["missing", "corrupted", "key-mismatch", "other-certificate"],
)
@pytest.mark.parametrize("reason", ["Emergency", "Planned"])
def test_a_cutover_the_user_asks_for_is_the_way_out_of_a_broken_current_secret(
    current_secret: policy.SecretObservation, reason: models.NextReason
) -> None:
    # After the documented recovery (an emergency issued a replacement) the cut-over must get through,
    # or the Secret stays broken for good. It rewrites the current Secret with the checked next key.
    st = status(pending=NEXT, reason=reason)
    waiting = policy.decide(observe(st, current_secret=current_secret))
    assert waiting.action is Action.NOT_READY
    assert f"webhookcerts.io/cutover={NEXT.serial}" in waiting.message
    assert decided(observe(st, current_secret=current_secret, cutover=NEXT.serial)) == (
        Action.CUTOVER,
        "CutoverRequested",
    )
    # Only to the pending next, and only from a sound next Secret.
    assert policy.decide(observe(st, current_secret=current_secret, cutover="DEADBEEF")).action is Action.NOT_READY
    broken_next = observe(st, current_secret=current_secret, next_secret=broken(), cutover=NEXT.serial)
    assert decided(broken_next) == (Action.NOT_READY, "NextSecretInvalid")


def test_expiry_alone_does_not_replace_a_broken_current_secret() -> None:
    obs = observe(status(pending=NEXT), now=CURRENT.not_after, current_secret=broken())
    assert decided(obs) == (Action.NOT_READY, "SecretCorrupted")


def test_a_changed_current_secret_names_both_fingerprints() -> None:
    decision = policy.decide(observe(status(), current_secret=holding(OTHER)))
    assert OTHER.fingerprint in decision.message and CURRENT.fingerprint in decision.message


# --- the next Secret -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "next_secret",
    [policy.SecretObservation.missing(), broken(), holding(OTHER)],
    ids=["missing", "corrupted", "other-certificate"],
)
@pytest.mark.parametrize(
    ("when", "cutover"),
    [(RENEWAL, None), (RENEWAL, NEXT.serial), (CURRENT.not_after, None)],
    ids=["idle", "cutover-requested", "expired"],
)
def test_a_broken_pending_next_is_never_cut_over_to(
    next_secret: policy.SecretObservation, when: datetime.datetime, cutover: str | None
) -> None:
    obs = observe(status(pending=NEXT), now=when, next_secret=next_secret, cutover=cutover)
    decision = policy.decide(obs)
    assert (decision.action, decision.reason) == (Action.NOT_READY, "NextSecretInvalid")
    assert "hooks-tls-next" in decision.message


@pytest.mark.parametrize(
    ("next_secret", "revoked"),
    [(broken(), ()), (holding(CURRENT), ()), (holding(OTHER), (OTHER.fingerprint,))],
    ids=["corrupted", "copy-of-current", "revoked"],
)
def test_a_left_over_next_secret_without_a_pending_record_is_deleted(
    next_secret: policy.SecretObservation, revoked: tuple[str, ...]
) -> None:
    obs = observe(status(revoked=revoked), next_secret=next_secret)
    assert decided(obs) == (Action.DELETE_STALE_NEXT, "StaleNextSecret")


@pytest.mark.parametrize(("when", "expected"), [(ISSUED, Action.UP_TO_DATE), (RENEWAL, Action.ISSUE_NEXT)])
def test_an_unrecorded_sound_next_secret_is_kept_for_adoption(when: datetime.datetime, expected: Action) -> None:
    # A crash between writing the next Secret and recording it leaves exactly this; deleting it would
    # throw away a key the repair adopts.
    obs = observe(status(), now=when, next_secret=holding(NEXT))
    assert policy.decide(obs).action is expected


# --- planned renewal and expiry, along a fake clock ----------------------------------------------------


def test_renewal_starts_exactly_at_renewal_time_along_a_fake_clock() -> None:
    fake = clock.FakeClock(ISSUED)
    st = status()
    actions: set[Action] = set()
    for _ in range(274):  # 6600 h (8760 h - 2160 h) is 275 days
        fake.advance(datetime.timedelta(days=1))
        actions.add(policy.decide(observe(st, now=fake.now())).action)
    fake.advance(datetime.timedelta(days=1) - SECOND)
    actions.add(policy.decide(observe(st, now=fake.now())).action)
    assert fake.now() == RENEWAL - SECOND
    assert actions == {Action.UP_TO_DATE}

    fake.advance(SECOND)
    assert fake.now() == RENEWAL == renewal.renewal_time(CURRENT.not_after, RENEW_BEFORE)
    decision = policy.decide(observe(st, now=fake.now()))
    assert (decision.action, decision.reason) == (Action.ISSUE_NEXT, "NearingExpiry")
    assert "2026-10-03T12:00:00Z" in decision.message


@pytest.mark.parametrize(
    ("renew_before", "due"), [("2160h", RENEWAL), ("720h", ISSUED + YEAR - datetime.timedelta(hours=720))]
)
def test_renewal_time_follows_renew_before(renew_before: str, due: datetime.datetime) -> None:
    sp = spec(renewBefore=renew_before)
    assert policy.decide(observe(status(), now=due - SECOND, sp=sp)).action is Action.UP_TO_DATE
    assert policy.decide(observe(status(), now=due, sp=sp)).action is Action.ISSUE_NEXT


@pytest.mark.parametrize("when", [RENEWAL, CURRENT.not_after - SECOND])
def test_a_pending_next_is_not_issued_twice(when: datetime.datetime) -> None:
    assert decided(observe(status(pending=NEXT), now=when)) == (Action.UP_TO_DATE, "UpToDate")


@pytest.mark.parametrize("late", [datetime.timedelta(0), datetime.timedelta(days=400)])
def test_expiry_cuts_over_to_the_pending_next(late: datetime.timedelta) -> None:
    decision = policy.decide(observe(status(pending=NEXT), now=CURRENT.not_after + late))
    assert (decision.action, decision.reason) == (Action.CUTOVER, "Expired")
    assert CURRENT.serial in decision.message


def test_expiry_without_a_next_issues_one() -> None:
    decision = policy.decide(observe(status(), now=CURRENT.not_after))
    assert (decision.action, decision.reason) == (Action.ISSUE_NEXT, "Expired")


# --- cut-over by annotation ----------------------------------------------------------------------------


@pytest.mark.parametrize("written", ["3D4E5F", "3d4e5f", "3D:4E:5F", "3d:4e:5f", " 3D4E5F ", "003D4E5F"])
def test_cutover_annotation_matches_the_serial_however_it_is_written(written: str) -> None:
    decision = policy.decide(observe(status(pending=NEXT), cutover=written))
    assert (decision.action, decision.reason) == (Action.CUTOVER, "CutoverRequested")
    assert NEXT.serial in decision.message


@pytest.mark.parametrize("written", [CURRENT.serial, "0a:1b:2c"])
def test_cutover_annotation_naming_the_current_certificate_is_a_no_op(written: str) -> None:
    # After a cut-over the annotation stays and names the new current: nothing to do, nothing refused.
    result = policy.plan(observe(status(), cutover=written))
    assert result.decision.action is Action.UP_TO_DATE
    assert result.refusals == ()


@pytest.mark.parametrize(
    ("pending", "fragment"),
    [(NEXT, f"the pending next certificate has serial {NEXT.serial}"), (None, "no rotation is pending")],
)
def test_cutover_to_an_unknown_serial_is_refused_and_changes_nothing(
    pending: pki.CertificateInfo | None, fragment: str
) -> None:
    result = policy.plan(observe(status(pending=pending), cutover="DEADBEEF"))
    assert result.decision.action is Action.UP_TO_DATE
    (refusal,) = result.refusals
    assert (refusal.action, refusal.reason) == (Action.REFUSE_CUTOVER, "CutoverSerialMismatch")
    assert fragment in refusal.message and "DEADBEEF" in refusal.message


def test_cutover_annotation_before_the_first_issue_is_ignored() -> None:
    result = policy.plan(observe(status(current=None), cutover="3D4E5F"))
    assert result.decision.action is Action.ISSUE_INITIAL
    assert result.refusals == ()


# --- emergencies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pending", [None, NEXT], ids=["idle", "rotating"])
def test_a_new_emergency_reference_starts_an_emergency_rotation(pending: pki.CertificateInfo | None) -> None:
    decision = policy.decide(observe(status(pending=pending), emergency="INC-1234"))
    assert (decision.action, decision.reason, decision.reference) == (
        Action.EMERGENCY,
        "EmergencyRequested",
        "INC-1234",
    )
    assert "INC-1234" in decision.message


def test_the_same_emergency_reference_twice_is_a_no_op() -> None:
    st = status(pending=NEXT, reason="Emergency", compromised_by="INC-1234", handled="INC-1234")
    result = policy.plan(observe(st, emergency="INC-1234"))
    assert result.decision.action is Action.UP_TO_DATE
    assert result.refusals == ()


def test_an_earlier_incident_put_back_is_not_handled_again() -> None:
    # INC-1 was handled and cut over, then INC-2; a GitOps sync restoring INC-1 must not revoke again.
    retired = {
        "serial": OTHER.serial,
        "fingerprint": OTHER.fingerprint,
        "notBefore": OTHER.not_before,
        "notAfter": OTHER.not_after,
        "revision": 1,
        "reason": "Compromised",
        "retiredAt": ISSUED,
        "incident": "INC-1",
    }
    st = status(handled="INC-2").model_copy(update={"history": [models.HistoryEntry.model_validate(retired)]})
    result = policy.plan(observe(st, emergency="INC-1"))
    assert (result.decision.action, result.refusals) == (Action.UP_TO_DATE, ())
    assert policy.decide(observe(st, emergency="INC-3")).action is Action.EMERGENCY


def test_a_different_emergency_reference_is_handled_again() -> None:
    st = status(pending=NEXT, reason="Emergency", compromised_by="INC-1234", handled="INC-1234")
    decision = policy.decide(observe(st, emergency="INC-5678"))
    assert (decision.action, decision.reference) == (Action.EMERGENCY, "INC-5678")


@pytest.mark.parametrize(
    "current_secret",
    [policy.SecretObservation.missing(), broken(), broken("KeyMismatch"), holding(OTHER)],
    ids=["missing", "corrupted", "key-mismatch", "other-certificate"],
)
def test_an_emergency_beats_a_broken_current_secret(current_secret: policy.SecretObservation) -> None:
    # The emergency rotation is the documented recovery from a broken Secret, so it must get through.
    obs = observe(status(), current_secret=current_secret, emergency="INC-1")
    assert decided(obs) == (Action.EMERGENCY, "EmergencyRequested")


def test_containment_comes_first_and_the_replacement_key_after_it() -> None:
    # The emergency decision itself generates nothing: it is recorded first, then the key follows.
    assert policy.decide(observe(status(pending=NEXT), emergency="INC-9")).action is Action.EMERGENCY
    contained = status(compromised_by="INC-9", handled="INC-9", revoked=(CURRENT.fingerprint,))
    for emergency in ("INC-9", None):
        decision = policy.decide(observe(contained, emergency=emergency))
        assert (decision.action, decision.reason, decision.reference) == (
            Action.ISSUE_REPLACEMENT,
            "EmergencyReplacement",
            "INC-9",
        )
    # Also when the current Secret is broken (the emergency was its recovery) or the certificate expired.
    assert policy.decide(observe(contained, current_secret=broken())).action is Action.ISSUE_REPLACEMENT
    assert policy.decide(observe(contained, now=CURRENT.not_after)).action is Action.ISSUE_REPLACEMENT
    # Once the replacement is recorded as next, nothing more is issued.
    replaced = status(pending=NEXT, reason="Emergency", compromised_by="INC-9", handled="INC-9")
    assert policy.decide(observe(replaced, emergency="INC-9")).action is Action.UP_TO_DATE


def test_an_emergency_beats_a_due_renewal_and_expiry() -> None:
    for when in (RENEWAL, CURRENT.not_after):
        assert policy.decide(observe(status(), now=when, emergency="INC-1")).action is Action.EMERGENCY
    obs = observe(status(pending=NEXT), now=CURRENT.not_after, emergency="INC-1", cutover=NEXT.serial)
    assert policy.decide(obs).action is Action.EMERGENCY


@pytest.mark.parametrize("reference", ["", "   ", "X" * 129, "INC-1\nINC-2", "INC\x00"])
def test_an_unusable_emergency_reference_is_refused(reference: str) -> None:
    result = policy.plan(observe(status(), emergency=reference))
    assert result.decision.action is Action.UP_TO_DATE
    (refusal,) = result.refusals
    assert (refusal.action, refusal.reason, refusal.reference) == (
        Action.REFUSE_EMERGENCY,
        "InvalidEmergencyReference",
        reference,
    )


# --- the order of the chain ----------------------------------------------------------------------------


def test_an_interrupted_cutover_is_finished_before_the_current_secret_is_judged() -> None:
    # The crash came after the current Secret got the next key and before status recorded it: the
    # Secret differs from the recorded current, which would otherwise read as SecretChanged.
    obs = observe(status(pending=NEXT), current_secret=holding(NEXT))
    decision = policy.decide(obs)
    assert (decision.action, decision.reason) == (Action.CUTOVER, "CutoverResumed")
    assert NEXT.serial in decision.message


def test_an_interrupted_cutover_is_finished_even_if_the_next_secret_is_gone() -> None:
    # The cut-over deletes the next Secret last; a crash just after that leaves status behind.
    obs = observe(status(pending=NEXT), current_secret=holding(NEXT), next_secret=policy.SecretObservation.missing())
    assert decided(obs) == (Action.CUTOVER, "CutoverResumed")


@pytest.mark.parametrize(
    ("emergency", "cutover", "refused"),
    [
        ("   ", None, [Action.REFUSE_EMERGENCY]),
        (None, "DEADBEEF", [Action.REFUSE_CUTOVER]),
        ("", "DEADBEEF", [Action.REFUSE_EMERGENCY, Action.REFUSE_CUTOVER]),
    ],
)
def test_refusals_do_not_block_a_planned_renewal(
    emergency: str | None, cutover: str | None, refused: list[Action]
) -> None:
    result = policy.plan(observe(status(), now=RENEWAL, emergency=emergency, cutover=cutover))
    assert (result.decision.action, result.decision.reason) == (Action.ISSUE_NEXT, "NearingExpiry")
    assert [r.action for r in result.refusals] == refused


def test_a_refused_cutover_does_not_block_a_cutover_forced_by_expiry() -> None:
    result = policy.plan(observe(status(pending=NEXT), now=CURRENT.not_after, cutover="DEADBEEF"))
    assert (result.decision.action, result.decision.reason) == (Action.CUTOVER, "Expired")
    assert [r.action for r in result.refusals] == [Action.REFUSE_CUTOVER]


def test_a_requested_cutover_beats_expiry_and_says_so() -> None:
    decision = policy.decide(observe(status(pending=NEXT), now=CURRENT.not_after, cutover=NEXT.serial))
    assert (decision.action, decision.reason) == (Action.CUTOVER, "CutoverRequested")


def test_a_left_over_next_secret_is_cleaned_before_a_renewal_is_issued() -> None:
    obs = observe(status(), now=RENEWAL, next_secret=holding(CURRENT))
    assert policy.decide(obs).action is Action.DELETE_STALE_NEXT


def test_plan_returns_the_first_decision_of_any_chain() -> None:
    calls: list[str] = []

    def check(name: str, result: policy.Decision | None) -> policy.Check:
        def run(obs: policy.Observation) -> policy.Decision | None:
            calls.append(name)
            return result

        return run

    refuse = policy.Decision(Action.REFUSE_CUTOVER, "R")
    first = policy.Decision(Action.ISSUE_NEXT, "First")
    chain = [check("a", None), check("b", refuse), check("c", first), check("d", policy.Decision(Action.CUTOVER, "D"))]
    result = policy.plan(observe(status()), chain)
    assert result == policy.Plan(first, (refuse,))
    assert calls == ["a", "b", "c"]
    empty = policy.plan(observe(status()), [check("x", None)])
    assert (empty.decision.action, empty.decision.reason) == (Action.UP_TO_DATE, "UpToDate")


def test_a_healthy_certificate_before_renewal_is_up_to_date() -> None:
    for when in (ISSUED, RENEWAL - SECOND):
        result = policy.plan(observe(status(), now=when))
        assert (result.decision.action, result.decision.reason, result.refusals) == (Action.UP_TO_DATE, "UpToDate", ())


def test_every_action_is_reachable_and_only_key_changes_are_mutating() -> None:
    reached = {
        policy.decide(observe(status(current=None))).action,
        policy.decide(observe(status(current=None), current_secret=holding(CURRENT))).action,
        policy.decide(observe(status(), now=RENEWAL)).action,
        policy.decide(observe(status(), emergency="INC-1")).action,
        policy.decide(observe(status(compromised_by="INC-1", handled="INC-1"), emergency="INC-1")).action,
        policy.decide(observe(status(pending=NEXT), cutover=NEXT.serial)).action,
        policy.decide(observe(status(), next_secret=broken())).action,
        policy.decide(observe(status(), current_secret=broken())).action,
        policy.decide(observe(status())).action,
        policy.decide(observe(status(pending=NEXT), discard=NEXT.serial)).action,
        policy.decide(observe(status(), next_secret=next_of(NEXT, "Planned"))).action,
        *(r.action for r in policy.plan(observe(status(), emergency="", cutover="FF", discard="FF")).refusals),
    }
    assert reached == set(Action)
    passive = {
        Action.REFUSE_EMERGENCY,
        Action.REFUSE_CUTOVER,
        Action.REFUSE_DISCARD,
        Action.NOT_READY,
        Action.UP_TO_DATE,
    }
    assert set(policy.MUTATING) == set(Action) - passive


def test_the_chain_does_not_read_the_clock_itself() -> None:
    # Same observation, same decision, whatever the real time is: the time comes in the observation.
    obs = observe(status(), now=RENEWAL - SECOND)
    assert policy.decide(obs) == policy.decide(dataclasses.replace(obs))
    assert policy.decide(dataclasses.replace(obs, now=RENEWAL)).action is Action.ISSUE_NEXT


# --- validate_reference and next_wakeup ----------------------------------------------------------------


@pytest.mark.parametrize("reference", ["INC-1234", "PagerDuty #42 / 2026-01-01", "X" * 128, "Vorfall-Ä"])
def test_usable_emergency_references(reference: str) -> None:
    assert policy.validate_reference(reference) is None


@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ("", "is empty"),
        (" \t ", "is empty"),
        ("X" * 129, "129 characters long"),
        ("INC-1\nrm -rf", "control characters"),
        ("INC\x1b[31m", "control characters"),
    ],
)
def test_unusable_emergency_references_say_why(reference: str, fragment: str) -> None:
    problem = policy.validate_reference(reference)
    assert problem is not None and fragment in problem


def test_next_wakeup_is_the_renewal_time_then_the_expiry() -> None:
    sp = spec()
    assert policy.next_wakeup(sp, status(current=None)) is None
    assert policy.next_wakeup(sp, status()) == RENEWAL
    assert policy.next_wakeup(sp, status(pending=NEXT)) == CURRENT.not_after
    assert policy.next_wakeup(spec(renewBefore="1h"), status()) == CURRENT.not_after - datetime.timedelta(hours=1)


def test_next_wakeup_is_whole_seconds() -> None:
    # cert-manager PR #4399: a sub-second wake-up fired a moment early, found nothing due, never renewed.
    fractional = dataclasses.replace(CURRENT, not_after=CURRENT.not_after + datetime.timedelta(microseconds=999_999))
    wakeup = policy.next_wakeup(spec(), status(current=fractional))
    assert wakeup is not None and wakeup.microsecond == 0
    assert policy.decide(observe(status(current=fractional), now=wakeup)).action is Action.ISSUE_NEXT


def test_a_lost_next_key_is_discarded_by_serial_and_the_current_stays() -> None:
    lost = observe(status(pending=NEXT), next_secret=holding(None), discard=NEXT.serial.lower())
    decision = policy.decide(lost)
    assert (decision.action, decision.reason) == (Action.DISCARD_NEXT, "NextDiscarded")
    # Without the annotation the same state is NotReady, and the message names the way out.
    stuck = policy.decide(observe(status(pending=NEXT), next_secret=holding(None)))
    assert stuck.action is Action.NOT_READY
    assert f"webhookcerts.io/discard-next={NEXT.serial}" in stuck.message


def test_a_discard_naming_another_serial_is_refused_and_blocks_nothing() -> None:
    result = policy.plan(observe(status(pending=NEXT), discard="FF"))
    assert result.decision.action is Action.UP_TO_DATE
    assert [(r.action, r.reason) for r in result.refusals] == [(Action.REFUSE_DISCARD, "DiscardSerialMismatch")]
    # Once discarded (history says so) the annotation left behind is neither acted on nor refused.
    done = status().model_copy(
        update={
            "history": [
                models.HistoryEntry(
                    serial=NEXT.serial,
                    fingerprint=NEXT.fingerprint,
                    not_before=NEXT.not_before,
                    not_after=NEXT.not_after,
                    revision=2,
                    reason="Discarded",
                    retired_at=ISSUED,
                )
            ]
        }
    )
    assert policy.plan(observe(done, discard=NEXT.serial)).refusals == ()


def test_every_emergency_reference_ever_handled_is_remembered_beyond_the_history() -> None:
    # INC-1 handled long ago: the history no longer names it and the last handled is INC-9.
    old = status(handled="INC-9").model_copy(update={"emergency_references": ["INC-1", "INC-9"]})
    assert policy.decide(observe(old, emergency="INC-1")).action is Action.UP_TO_DATE
    assert policy.decide(observe(old, emergency="INC-10")).action is Action.EMERGENCY

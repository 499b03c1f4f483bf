"""An object deleted and re-created: what its key Secrets record decides, pure (lifecycle invariant 11).

Status starts empty; the key Secrets carry the incident marks (``domain.incidents``). The chain must
not take the emergency annotation the manifest still carries for a new incident, must adopt a next key
of ours instead of deleting it, and must still delete a next key that is really stale.
"""

from __future__ import annotations

import datetime

from tests.unit.test_policy import CURRENT, ISSUED, NEXT, RENEWAL, decided, holding, next_of, observe, status
from webhookcerts.domain import incidents, models, names, policy

Action = policy.Action


def marked(cert: policy.SecretObservation, st: models.WebhookCertificateStatus) -> policy.SecretObservation:
    """``cert``'s Secret carrying the marks ``st`` gives a current key Secret."""
    annotations = {k: v for k, v in incidents.marks(st, "key").items() if v is not None}
    return policy.SecretObservation(exists=True, info=cert.info, annotations={**cert.annotations, **annotations})


def contained(reference: str = "INC-1") -> models.WebhookCertificateStatus:
    """What status recorded before the object went: the current compromised, its reference handled."""
    st = status(compromised_by=reference, handled=reference, revoked=(CURRENT.fingerprint,))
    st.emergency_references = [reference]
    return st


def test_a_handled_reference_recorded_on_the_key_secret_is_not_a_new_incident() -> None:
    empty = status(current=None)
    # Positive control: the same annotation with no record beside the key is an emergency.
    assert decided(observe(empty, current_secret=holding(CURRENT), emergency="INC-1")) == (
        Action.EMERGENCY,
        "EmergencyRequested",
    )
    obs = observe(empty, current_secret=marked(holding(CURRENT), contained()), emergency="INC-1")
    assert decided(obs) == (Action.ADOPT_CURRENT, "SecretAdopted")
    # Another reference is a new incident all the same.
    obs = observe(empty, current_secret=marked(holding(CURRENT), contained()), emergency="INC-2")
    assert decided(obs) == (Action.EMERGENCY, "EmergencyRequested")


def test_a_replacement_in_the_next_secret_records_its_incident_as_handled() -> None:
    obs = observe(
        status(current=None),
        current_secret=holding(CURRENT),
        next_secret=next_of(NEXT, "Emergency", "INC-1"),
        emergency="INC-1",
    )
    assert decided(obs) == (Action.ADOPT_CURRENT, "SecretAdopted")
    assert "INC-1" in policy.recorded_on_secrets(obs).references


def test_an_unrecorded_planned_next_is_adopted_before_renewal_and_renewed_into_at_renewal() -> None:
    for when in (ISSUED, RENEWAL - datetime.timedelta(seconds=1)):
        decision = policy.decide(observe(status(), now=when, next_secret=next_of(NEXT, "Planned")))
        assert (decision.action, decision.reason) == (Action.ADOPT_NEXT, "NextAdopted")
        assert "hooks-tls-next" in decision.message and NEXT.serial in decision.message
    # At renewal time the renewal adopts it itself and announces it (as after a crash).
    assert decided(observe(status(), now=RENEWAL, next_secret=next_of(NEXT, "Planned"))) == (
        Action.ISSUE_NEXT,
        "NearingExpiry",
    )


def test_a_next_secrets_word_alone_never_compromises_a_sound_current() -> None:
    """Anyone who can write a Secret can write a next Secret's annotations: beside a current certificate
    status records as sound, an "Emergency" next is neither adopted (which would revoke the provider's
    certificate and trust the Secret's) nor deleted (it may be the key the provider holds)."""
    for when in (ISSUED, RENEWAL - datetime.timedelta(seconds=1)):
        obs = observe(status(), now=when, next_secret=next_of(NEXT, "Emergency", "INC-1"))
        assert decided(obs) == (Action.UP_TO_DATE, "UpToDate")
    # Beside a compromised current, the replacement step adopts it (same incident): not this check.
    obs = observe(contained(), next_secret=next_of(NEXT, "Emergency", "INC-1"))
    assert decided(obs) == (Action.ISSUE_REPLACEMENT, "EmergencyReplacement")


def test_records_on_the_secrets_never_silence_an_emergency_of_an_object_whose_status_speaks() -> None:
    """Handled references recorded on the Secrets count only for an object re-created empty: a Secret
    listing a future incident's reference must not make a real emergency be ignored."""
    forged = next_of(NEXT, "Emergency", "INC-9")
    obs = observe(status(), next_secret=forged, emergency="INC-9")
    assert "INC-9" in policy.recorded_on_secrets(obs).references
    assert decided(obs) == (Action.EMERGENCY, "EmergencyRequested")
    obs = observe(status(), current_secret=marked(holding(CURRENT), contained("INC-9")), emergency="INC-9")
    assert decided(obs) == (Action.EMERGENCY, "EmergencyRequested")


def test_a_next_secret_that_is_revoked_retired_or_not_ours_is_never_adopted() -> None:
    revoked = status(revoked=(NEXT.fingerprint,))
    stale = (Action.DELETE_STALE_NEXT, "StaleNextSecret")
    assert decided(observe(revoked, next_secret=next_of(NEXT, "Planned"))) == stale
    retired = status()
    retired.history = [
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
    assert decided(observe(retired, next_secret=next_of(NEXT, "Planned"))) == stale
    # No reason annotation (not made by the operator for a purpose), an emergency without incident,
    # an expired one: left alone here.
    for seen, now in (
        (holding(NEXT), ISSUED),
        (next_of(NEXT, "Emergency"), ISSUED),
        (next_of(NEXT, "Planned"), NEXT.not_after),
    ):
        assert policy.adoptable_next(observe(status(), next_secret=seen, now=now), status()) is None


def test_the_marks_round_trip_and_only_the_current_key_says_compromised() -> None:
    st = contained()
    key, nxt = incidents.marks(st, "key"), incidents.marks(st, "next")
    assert key[names.COMPROMISED_BY_ANNOTATION] == "INC-1"
    assert nxt[names.COMPROMISED_BY_ANNOTATION] is None
    back = incidents.recorded({k: v for k, v in key.items() if v is not None})
    assert back.compromised_by == "INC-1"
    assert back.revoked == (CURRENT.fingerprint,)
    assert back.references == ("INC-1",)
    assert back.last == st.last_emergency_rotation
    # Nothing to record: no annotation at all (an idle object's Secrets are never patched for it).
    assert all(v is None for v in incidents.marks(status(), "key").values())


def test_unreadable_marks_record_nothing() -> None:
    found = incidents.recorded(
        {
            names.EMERGENCIES_ANNOTATION: "{not json",
            names.REVOKED_ANNOTATION: "zz,,short",
            names.COMPROMISED_BY_ANNOTATION: " ",
        }
    )
    assert found == incidents.Recorded()


def test_the_marks_stay_bounded() -> None:
    st = status(revoked=tuple(f"{i:064x}" for i in range(3000)))
    text = incidents.marks(st, "key")[names.REVOKED_ANNOTATION]
    assert text is not None and len(text) <= incidents.LIST_MAX
    # The newest are kept: they are the ones a re-created object still meets.
    assert text.endswith(f"{2999:064x}")

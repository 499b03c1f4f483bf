"""What to do next with one WebhookCertificate: an ordered chain of pure checks with named reasons.

Modelled on cert-manager's trigger policies: each check looks at an ``Observation`` (spec, status,
annotations, what the key Secrets hold, the time) and either returns a ``Decision`` or passes. The
first decision wins. The order encodes the lifecycle's priorities:

1. an emergency beats everything (it is also the documented recovery from a broken Secret). It is
   two decisions: ``Emergency`` contains (the compromised certificate is recorded as revoked and
   leaves the trust store) and only then ``IssueReplacement`` generates the new key, so containment
   never waits for RSA key generation;
2. an interrupted cut-over is finished before anything else reads the current Secret; a pending
   next the user gives up (``discard-next``: lost or damaged, not exposed) goes next; a next key of
   ours that status does not record (the object was deleted and re-created) is adopted, never
   deleted: the provider may hold it. An emergency reference the key Secrets record as handled
   (``domain.incidents``) is not a new incident;
3. a current Secret that is missing, corrupt or changed stops everything (never auto-replaced: the
   provider holds a copy of that key) but a cut-over the user asks for, which is the way out;
4. a cut-over asked for by annotation, then one the endpoints' reports prove safe
   (``spec.cutover.policy: Observed``, ``domain.cutover``), then one forced by expiry;
5. the planned renewal at ``renewalTime``.

Nothing here performs I/O; ``webhookcerts.service`` carries decisions out, one small step at a time.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from webhookcerts.domain import cutover, incidents, models, names, renewal
from webhookcerts.domain.incidents import MAX_REFERENCE_LENGTH as MAX_REFERENCE_LENGTH
from webhookcerts.domain.incidents import validate_reference as validate_reference
from webhookcerts.domain.observations import MUTATING as MUTATING
from webhookcerts.domain.observations import Action as Action
from webhookcerts.domain.observations import Check as Check
from webhookcerts.domain.observations import Decision as Decision
from webhookcerts.domain.observations import Observation as Observation
from webhookcerts.domain.observations import SecretObservation as SecretObservation


def emergency_pending(status: models.WebhookCertificateStatus, reference: str | None) -> bool:
    """True when ``reference`` names an incident this object has not handled yet."""
    if reference is None:
        return False
    if reference in status.emergency_references:
        return False
    handled = status.last_emergency_rotation
    if handled is not None and handled.reference == reference:
        return False
    # An earlier incident's reference put back (a GitOps sync of an old manifest, an undo): it was
    # handled when it came first, and rotating again would revoke the certificate in use now. Status
    # written before every reference was recorded still has the history to go by.
    return not any(entry.incident == reference for entry in status.history)


def containment_pending(status: models.WebhookCertificateStatus, reference: str | None) -> bool:
    """True while an emergency has to take trust away first: a new incident, or one recorded whose
    replacement key is not issued yet (its trust writes may not have gone through: a retry of them is
    as urgent as the first try, and goes before the key)."""
    current = status.current
    contained = current is not None and bool(current.compromised_by) and status.next is None
    return contained or emergency_pending(status, reference)


def recorded_on_secrets(obs: Observation) -> incidents.Recorded:
    """What the key Secrets record of past incidents (what status knew before the object was re-created).

    A next Secret made for an emergency is itself a record: a replacement is only ever issued once its
    incident was contained.
    """
    found = incidents.recorded(obs.current_secret.annotations).merge(incidents.recorded(obs.next_secret.annotations))
    annotations = obs.next_secret.annotations
    incident = annotations.get(names.INCIDENT_ANNOTATION, "")
    if annotations.get(names.NEXT_REASON_ANNOTATION) == "Emergency" and incident:
        found = found.merge(incidents.Recorded(references=(incident,)))
    return found


def emergency_requested(obs: Observation) -> Decision | None:
    reference = obs.emergency_reference
    if reference is None or not emergency_pending(obs.status, reference):
        return None
    if obs.status.current is None and reference in recorded_on_secrets(obs).references:
        # Handled by this object before it was deleted and re-created (the manifest still carries the
        # annotation): adopting its Secrets restores the record; a second containment would revoke the
        # replacement the provider may already present. Only while status records nothing: anyone who
        # can write a Secret can write these annotations, and they must never silence an emergency of
        # an object whose status speaks for itself.
        return None
    problem = validate_reference(reference)
    if problem is not None:
        return Decision(Action.REFUSE_EMERGENCY, "InvalidEmergencyReference", problem, reference)
    return Decision(
        Action.EMERGENCY,
        "EmergencyRequested",
        f"emergency rotation for incident {reference}: the current key is treated as compromised",
        reference,
    )


def replacement_due(obs: Observation) -> Decision | None:
    """Containment is recorded and no next certificate exists yet: generate the replacement key."""
    current, handled = obs.status.current, obs.status.last_emergency_rotation
    if current is None or not current.compromised_by or obs.status.next is not None:
        return None
    reference = handled.reference if handled is not None else current.compromised_by
    return Decision(
        Action.ISSUE_REPLACEMENT,
        "EmergencyReplacement",
        f"incident {reference}: the compromised certificate is contained; issuing its replacement",
        reference,
    )


def cutover_interrupted(obs: Observation) -> Decision | None:
    pending = obs.status.next
    if pending is not None and obs.current_secret.fingerprint == pending.fingerprint:
        return Decision(
            Action.CUTOVER,
            "CutoverResumed",
            f"finishing the cut-over to serial {pending.serial} that was interrupted",
        )
    return None


def current_secret_sound(obs: Observation) -> Decision | None:
    secret, recorded, name = obs.current_secret, obs.status.current, obs.spec.secret_name
    if recorded is None:
        if not secret.exists:
            return Decision(Action.ISSUE_INITIAL, "SecretDoesNotExist", f"issuing the first key into Secret {name}")
        if secret.problem is None:
            return Decision(Action.ADOPT_CURRENT, "SecretAdopted", f"adopting the key already in Secret {name}")
    pending = obs.status.next
    if recorded is not None and pending is not None and _same_serial(obs.cutover_serial or "", pending.serial):
        # The way out of a broken current Secret: the user cuts over to the pending next (the one an
        # emergency issued, typically). The cut-over rewrites this Secret, so its state no longer
        # matters; the next Secret is still checked before anything is copied from it.
        return None
    recovery = (
        "the provider may still hold the old key, so the operator will not replace it on its own; "
        "to recover, start an emergency rotation: kubectl annotate --overwrite whc NAME "
        "webhookcerts.io/emergency-rotation=<incident reference>"
    )
    if pending is not None:
        recovery += (
            ", or, once the provider uses the pending next certificate, cut over to it: "
            f"kubectl annotate --overwrite whc NAME webhookcerts.io/cutover={pending.serial}"
        )
    if not secret.exists:
        return Decision(
            Action.NOT_READY,
            "SecretDoesNotExist",
            f"Secret {name} with the current key is missing; {recovery}",
        )
    if secret.problem is not None:
        return Decision(Action.NOT_READY, secret.problem, f"Secret {name}: {secret.message}; {recovery}")
    if recorded is not None and secret.fingerprint != recorded.fingerprint:
        return Decision(
            Action.NOT_READY,
            "SecretChanged",
            f"Secret {name} holds a certificate (fingerprint {secret.fingerprint}) other than the recorded "
            f"current one ({recorded.fingerprint}); {recovery}",
        )
    return None


def discard_requested(obs: Observation) -> Decision | None:
    """The non-emergency way out of a lost or damaged next key (nothing was exposed): give it up.

    The pending next leaves the trust store and the current certificate stays trusted as it is; the
    renewal that follows issues a new planned next. The annotation names the serial, as a cut-over
    does, so a stale annotation never discards a later next.
    """
    serial = obs.discard_serial
    pending = obs.status.next
    if serial is None:
        return None
    if pending is not None and _same_serial(serial, pending.serial):
        return Decision(
            Action.DISCARD_NEXT,
            "NextDiscarded",
            f"discarding the pending next serial {pending.serial}; the current certificate stays trusted "
            "and a new next is issued",
        )
    if pending is None and any(_same_serial(serial, h.serial) for h in obs.status.history if h.reason == "Discarded"):
        return None
    expected = f"the pending next certificate has serial {pending.serial}" if pending else "no rotation is pending"
    return Decision(
        Action.REFUSE_DISCARD,
        "DiscardSerialMismatch",
        f"discarding serial {serial} refused: {expected}; nothing was changed",
    )


def adoptable_next(obs: Observation, status: models.WebhookCertificateStatus) -> models.NextReason | None:
    """Why the unrecorded next Secret was made, when ``status`` may adopt it as its pending next.

    A next key the operator made (its ``next-reason`` annotation) for a purpose status no longer knows
    of: the object was deleted and re-created, and the provider may hold that key. Never one that
    is broken, expired, the current one, or revoked or retired (those are stale).
    """
    secret, current = obs.next_secret, status.current
    if status.next is not None or current is None or secret.info is None:
        return None
    reason = secret.annotations.get(names.NEXT_REASON_ANNOTATION)
    if reason == "Emergency" and (not secret.annotations.get(names.INCIDENT_ANNOTATION) or not current.compromised_by):
        # A replacement only ever stands beside a compromised current certificate. A next Secret's word
        # alone (anyone who can write a Secret can write it) never makes the current one compromised,
        # nor its own certificate trusted.
        return None
    if reason not in ("Planned", "Emergency") or _retired(status, secret.info.fingerprint):
        return None
    if secret.info.fingerprint == current.fingerprint or obs.now >= secret.info.not_after:
        return None
    return "Planned" if reason == "Planned" else "Emergency"


def _retired(status: models.WebhookCertificateStatus, fingerprint: str) -> bool:
    return fingerprint in status.revoked_fingerprints or any(h.fingerprint == fingerprint for h in status.history)


def next_adopted(obs: Observation) -> Decision | None:
    """An unrecorded next key of ours that nothing else in the chain adopts: adopt it, never delete it.

    After a crash the step that made it adopts it itself (``IssueNext`` at renewal time,
    ``IssueReplacement`` after containment) and says what it is for; this is the rest: a planned next
    before renewal time. A replacement beside a current certificate status records as sound is never
    adopted: the next Secret's word alone does not make the current one compromised (``adoptable_next``).
    """
    reason = adoptable_next(obs, obs.status)
    current = obs.status.current
    if reason is None or current is None:
        return None
    if reason == "Planned" and (
        current.compromised_by or obs.now >= renewal.renewal_time(current.not_after, obs.spec.renew_before_delta)
    ):
        return None
    serial = obs.next_secret.info.serial if obs.next_secret.info is not None else "-"
    return Decision(
        Action.ADOPT_NEXT,
        "NextAdopted",
        f"adopting the {reason.lower()} next key already in Secret {obs.spec.next_secret_name} (serial {serial}): "
        "the provider may hold it",
    )


def next_secret_sound(obs: Observation) -> Decision | None:
    secret, pending, name = obs.next_secret, obs.status.next, obs.spec.next_secret_name
    current_fp = obs.status.current.fingerprint if obs.status.current else None
    if pending is None:
        if secret.exists and (
            secret.fingerprint is None or secret.fingerprint == current_fp or _retired(obs.status, secret.fingerprint)
        ):
            return Decision(Action.DELETE_STALE_NEXT, "StaleNextSecret", f"Secret {name} is left over; deleting it")
        return None
    if not secret.exists or secret.problem is not None or secret.fingerprint != pending.fingerprint:
        what = "is missing" if not secret.exists else (secret.message or "holds another certificate")
        return Decision(
            Action.NOT_READY,
            "NextSecretInvalid",
            f"Secret {name} with the pending next key {what}; if that key was not exposed, give it up and "
            f"issue a new one (the current certificate stays trusted): kubectl annotate --overwrite whc NAME "
            f"webhookcerts.io/discard-next={pending.serial}; if it was, start an emergency rotation",
        )
    return None


def cutover_requested(obs: Observation) -> Decision | None:
    serial = obs.cutover_serial
    if serial is None or obs.status.current is None:
        return None
    if _same_serial(serial, obs.status.current.serial):
        return None
    pending = obs.status.next
    if pending is not None and _same_serial(serial, pending.serial):
        return Decision(Action.CUTOVER, "CutoverRequested", f"cutting over to serial {pending.serial}")
    expected = f"the pending next certificate has serial {pending.serial}" if pending else "no rotation is pending"
    return Decision(
        Action.REFUSE_CUTOVER,
        "CutoverSerialMismatch",
        f"cut-over to serial {serial} refused: {expected}; nothing was changed",
    )


def observed_cutover(obs: Observation) -> Decision | None:
    """Policy Observed: cut over once the reports prove the provider presents the next certificate."""
    verdict = cutover.verdict(obs)
    if verdict is None or not verdict.ready or obs.status.next is None:
        return None
    return Decision(
        Action.CUTOVER, "ObservedCutover", f"cutting over to serial {obs.status.next.serial}: {verdict.message}"
    )


def expired(obs: Observation) -> Decision | None:
    current = obs.status.current
    if current is None or obs.now < current.not_after:
        return None
    if obs.status.next is not None:
        return Decision(
            Action.CUTOVER,
            "Expired",
            f"serial {current.serial} expired at {current.not_after:%Y-%m-%dT%H:%M:%SZ}",
        )
    return Decision(Action.ISSUE_NEXT, "Expired", f"serial {current.serial} expired with no next certificate")


def nearing_expiry(obs: Observation) -> Decision | None:
    current = obs.status.current
    if current is None or obs.status.next is not None:
        return None
    due = renewal.renewal_time(current.not_after, obs.spec.renew_before_delta)
    if obs.now >= due:
        return Decision(
            Action.ISSUE_NEXT,
            "NearingExpiry",
            f"renewal time {due:%Y-%m-%dT%H:%M:%SZ} reached: issuing the next certificate beside the current one",
        )
    return None


CHAIN: Sequence[Check] = (
    emergency_requested,
    replacement_due,
    cutover_interrupted,
    discard_requested,
    next_adopted,
    current_secret_sound,
    next_secret_sound,
    cutover_requested,
    observed_cutover,
    expired,
    nearing_expiry,
)


# A refusal is reported as a condition but must not block the rest of the chain: a mistyped
# annotation may not stop a planned renewal.
REFUSALS = frozenset({Action.REFUSE_EMERGENCY, Action.REFUSE_CUTOVER, Action.REFUSE_DISCARD})


@dataclasses.dataclass(frozen=True)
class Plan:
    decision: Decision
    refusals: tuple[Decision, ...] = ()


def plan(obs: Observation, chain: Sequence[Check] = CHAIN) -> Plan:
    """The first decision of the chain, and the refusals met on the way to it."""
    refusals: list[Decision] = []
    for check in chain:
        decision = check(obs)
        if decision is None:
            continue
        if decision.action in REFUSALS:
            refusals.append(decision)
            continue
        return Plan(decision, tuple(refusals))
    up_to_date = Decision(Action.UP_TO_DATE, "UpToDate", "the current certificate is valid and not yet due for renewal")
    return Plan(up_to_date, tuple(refusals))


def decide(obs: Observation, chain: Sequence[Check] = CHAIN) -> Decision:
    return plan(obs, chain).decision


def next_wakeup(
    spec: models.WebhookCertificateSpec, status: models.WebhookCertificateStatus, obs: Observation | None = None
) -> datetime.datetime | None:
    """When the chain's answer can next change on its own (renewal time, expiry, or the moment an
    observed cut-over's quiet period can be proven, from ``obs``)."""
    current = status.current
    if current is None:
        return None
    if status.next is None:
        return renewal.renewal_time(current.not_after, spec.renew_before_delta)
    verdict = cutover.verdict(obs) if obs is not None else None
    if verdict is not None and verdict.recheck_at is not None:
        return min(current.not_after, renewal.whole_second_after(verdict.recheck_at))
    return current.not_after


def stage_of(status: models.WebhookCertificateStatus) -> models.Stage:
    """The stage status records: what the recorded current and next certificates say."""
    if status.current is None:
        return "Issuing"
    if status.next is not None:
        return "Compromised" if status.next.reason == "Emergency" else "Rotating"
    # Contained, with the replacement key not yet issued.
    return "Compromised" if status.current.compromised_by else "Active"


def _same_serial(a: str, b: str) -> bool:
    # Users copy serials from openssl (colons, lower case) as often as from our status.
    def canon(s: str) -> str:
        return s.replace(":", "").strip().upper().lstrip("0")

    return canon(a) == canon(b)

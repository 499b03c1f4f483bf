"""What status derives from the recorded certificates and the last decision: stage, renewal time, conditions.

``derive`` runs with every status save, so a step's status is consistent the moment it lands, not a
pass later; ``conclude`` runs once at the end of a pass with the decision the pass ended on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from webhookcerts.domain import conditions, cutover, names, policy, renewal

if TYPE_CHECKING:
    from webhookcerts.service.state import Pass


def derive(p: Pass) -> None:
    current, pending = p.status.current, p.status.next
    p.status.stage = policy.stage_of(p.status)
    p.status.renewal_time = renewal.renewal_time(current.not_after, p.spec.renew_before_delta) if current else None
    if pending is not None:
        reason = "Renewing" if pending.reason == "Planned" else "EmergencyRotation"
        p.set_condition(
            names.ROTATION_IN_PROGRESS,
            "True",
            reason,
            f"next serial {pending.serial} is trusted beside the current one; cut over once the provider uses it",
        )
    elif conditions.get(p.status.conditions, names.ROTATION_IN_PROGRESS) is not None:
        p.set_condition(names.ROTATION_IN_PROGRESS, "False", "Idle", "no rotation is pending")

    if current is not None and current.compromised_by:
        p.set_condition(
            names.COMPROMISED,
            "True",
            "EmergencyRotation",
            f"incident {current.compromised_by}: serial {current.serial} is compromised",
        )
    elif conditions.get(p.status.conditions, names.COMPROMISED) is not None:
        p.set_condition(names.COMPROMISED, "False", "CutOver", "the compromised certificate has been retired")

    if renewal.is_short_validity(p.spec.duration_delta):
        p.set_condition(
            names.SHORT_VALIDITY,
            "True",
            "BelowOneYear",
            f"duration {p.spec.duration} is shorter than the provider's recommended minimum of one year (8760h)",
        )
    else:
        p.drop_condition(names.SHORT_VALIDITY)


_REFUSAL_CONDITIONS = {
    policy.Action.REFUSE_CUTOVER: names.CUTOVER_REFUSED,
    policy.Action.REFUSE_EMERGENCY: names.EMERGENCY_REFUSED,
    policy.Action.REFUSE_DISCARD: names.DISCARD_REFUSED,
}


def conclude(p: Pass, decision: policy.Decision, refusals: list[policy.Decision]) -> None:
    """Ready and the refusal conditions, from the decision the pass ended on."""
    current = p.status.current
    if decision.action is policy.Action.NOT_READY:
        p.set_condition(names.READY, "False", decision.reason, decision.message)
    elif current is not None:
        p.set_condition(
            names.READY,
            "True",
            "CertificateValid",
            f"serial {current.serial} valid until {current.not_after:%Y-%m-%dT%H:%M:%SZ}",
        )
    else:
        p.set_condition(names.READY, "False", "Issuing", "no certificate has been issued yet")
    for action, type in _REFUSAL_CONDITIONS.items():
        refusal = next((r for r in refusals if r.action is action), None)
        if refusal is not None:
            p.set_condition(type, "True", refusal.reason, refusal.message)
        else:
            p.drop_condition(type)
    _cutover_ready(p)
    p.status.observed_generation = p.resource.generation


def _cutover_ready(p: Pass) -> None:
    """Under policy Observed, while a next is pending: what the reports prove, or what is still missing."""
    verdict = cutover.verdict(p.last) if p.last is not None else None
    if verdict is None:
        p.drop_condition(names.CUTOVER_READY)
        return
    if verdict.ready:
        p.set_condition(names.CUTOVER_READY, "True", verdict.reason, verdict.message)
    elif verdict.reason == cutover.UNKNOWN:
        p.set_condition(names.CUTOVER_READY, "Unknown", verdict.reason, verdict.message)
    else:
        p.set_condition(names.CUTOVER_READY, "False", verdict.reason, verdict.message)

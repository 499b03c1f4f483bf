"""Kubernetes-style status conditions, updated so that an unchanged state writes nothing.

A reconcile that rewrote every condition on every pass would bump ``lastTransitionTime`` and produce a
status patch each time (and with it a watch event, and another reconcile). ``set_condition`` reports
whether anything changed so the caller can skip the patch, and moves ``lastTransitionTime`` only when
the status itself flips, as ``meta.SetStatusCondition`` does in Go.
"""

from __future__ import annotations

import datetime

from webhookcerts.domain import models


def get(conditions: list[models.Condition], type: str) -> models.Condition | None:
    return next((c for c in conditions if c.type == type), None)


def remove(conditions: list[models.Condition], type: str) -> tuple[list[models.Condition], bool]:
    kept = [c for c in conditions if c.type != type]
    return kept, len(kept) != len(conditions)


def set_condition(
    conditions: list[models.Condition],
    *,
    type: str,
    status: models.ConditionStatus,
    reason: str,
    message: str,
    now: datetime.datetime,
    observed_generation: int | None,
) -> tuple[list[models.Condition], bool]:
    """Return the new list (order kept, a new type appended) and whether it differs from the old one."""
    if now.tzinfo is None:
        raise ValueError("set_condition needs a timezone-aware time")
    # metav1.Time has whole seconds; a fraction here would never compare equal after a round trip.
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    existing = get(conditions, type)
    transition = now if existing is None or existing.status != status else existing.last_transition_time
    updated = models.Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    if existing is None:
        return [*conditions, updated], True
    if existing == updated:
        return list(conditions), False
    return [updated if c.type == type else c for c in conditions], True

"""What the policy chain reads and answers: observations of one object and its key Secrets, decisions.

The vocabulary ``domain.policy`` decides in, kept apart from the chain itself; ``policy`` re-exports
every name, so callers keep writing ``policy.Observation`` and ``policy.Action``. Pure: no I/O here.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable

from webhookcerts.domain import models, pki, reports


class Action(enum.Enum):
    ISSUE_INITIAL = "IssueInitial"
    ADOPT_CURRENT = "AdoptCurrent"
    ADOPT_NEXT = "AdoptNext"
    ISSUE_NEXT = "IssueNext"
    EMERGENCY = "Emergency"
    ISSUE_REPLACEMENT = "IssueReplacement"
    CUTOVER = "Cutover"
    DELETE_STALE_NEXT = "DeleteStaleNext"
    DISCARD_NEXT = "DiscardNext"
    REFUSE_EMERGENCY = "RefuseEmergency"
    REFUSE_CUTOVER = "RefuseCutover"
    REFUSE_DISCARD = "RefuseDiscard"
    NOT_READY = "NotReady"
    UP_TO_DATE = "UpToDate"


# Decisions that change key material; the others only set conditions.
MUTATING = frozenset(
    {
        Action.ISSUE_INITIAL,
        Action.ADOPT_CURRENT,
        Action.ADOPT_NEXT,
        Action.ISSUE_NEXT,
        Action.EMERGENCY,
        Action.ISSUE_REPLACEMENT,
        Action.CUTOVER,
        Action.DELETE_STALE_NEXT,
        Action.DISCARD_NEXT,
    }
)


@dataclasses.dataclass(frozen=True)
class SecretObservation:
    """What one key Secret holds, already checked: public facts only, never the key."""

    exists: bool
    info: pki.CertificateInfo | None = None
    problem: str | None = None
    message: str = ""
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def missing(cls) -> SecretObservation:
        return cls(exists=False)

    @property
    def fingerprint(self) -> str | None:
        return self.info.fingerprint if self.info is not None else None


@dataclasses.dataclass(frozen=True)
class Observation:
    spec: models.WebhookCertificateSpec
    status: models.WebhookCertificateStatus
    now: datetime.datetime
    current_secret: SecretObservation
    next_secret: SecretObservation
    emergency_reference: str | None = None
    cutover_serial: str | None = None
    discard_serial: str | None = None
    # What the endpoints report of the object's trust store, added up for its certificates; None when
    # not known (the operator does not read reports, or an older install has no PresentationReport CRD).
    presentations: reports.Presentations | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    message: str = ""
    reference: str | None = None


Check = Callable[[Observation], Decision | None]

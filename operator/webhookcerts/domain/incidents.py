"""What status knows of incidents, written onto the key Secrets so that it survives the object.

GitOps tools delete and re-create objects (``kubectl replace --force``, Argo CD's ``Replace=true``);
the key Secrets stay (``deletionPolicy: Retain``) but status starts empty. Without a record beside the
key, a compromised current key would be adopted as healthy and trusted again, the replacement the
provider may already present would not be adopted, and the emergency annotation the manifest still
carries would read as a new incident. So each key Secret carries (lifecycle invariant 11):

- ``webhookcerts.io/compromised-by``: on the current key Secret, the incident that compromised it;
- ``webhookcerts.io/revoked-fingerprints``: the fingerprints status revokes (the newest, bounded);
- ``webhookcerts.io/emergency-rotations``: the emergency references handled, and the last one with
  when it was handled (JSON).

The marks are a function of status (``marks``); what a re-created object reads back is ``recorded``;
``validate_reference`` says whether an incident reference is usable at all (``policy`` re-exports it).
Values written by hand that cannot be read count as no record: the record only ever adds revocations
and handled references, never trust. Pure: no I/O here.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Literal

from webhookcerts.domain import models, names, pki

# All annotations of an object together may hold 256 KiB; each list keeps well inside it.
LIST_MAX = 64 * 1024

Role = Literal["key", "next"]


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What key Secrets say of past incidents."""

    compromised_by: str | None = None
    revoked: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    last: models.EmergencyRecord | None = None

    def merge(self, other: Recorded) -> Recorded:
        last = self.last
        if other.last is not None and (last is None or other.last.handled_at > last.handled_at):
            last = other.last
        return Recorded(
            compromised_by=self.compromised_by or other.compromised_by,
            revoked=_unique([*self.revoked, *other.revoked]),
            references=_unique([*self.references, *other.references]),
            last=last,
        )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _newest(items: list[str]) -> list[str]:
    """The newest entries (lists grow at the end) that fit in ``LIST_MAX`` once joined."""
    kept: list[str] = []
    size = 2
    for item in reversed(items):
        size += len(json.dumps(item)) + 1
        if size > LIST_MAX:
            break
        kept.append(item)
    return kept[::-1]


def marks(status: models.WebhookCertificateStatus, role: Role) -> dict[str, str | None]:
    """The annotations a key Secret in ``role`` carries for this status; None: the annotation goes.

    Only the current key Secret says it is compromised: a cut-over writes the replacement into it and
    takes the mark away, while the handled references stay (the manifest may still carry one).
    """
    current = status.current
    compromised = current.compromised_by if role == "key" and current is not None else None
    revoked = _newest(list(status.revoked_fingerprints))
    references = list(status.emergency_references)
    last = status.last_emergency_rotation
    if last is not None and last.reference not in references:
        references.append(last.reference)
    emergencies: str | None = None
    if references:
        record: dict[str, object] = {"references": _newest(references)}
        if last is not None:
            record["last"] = {"reference": last.reference, "handledAt": last.handled_at.isoformat()}
        emergencies = json.dumps(record, separators=(",", ":"), sort_keys=True)
    return {
        names.COMPROMISED_BY_ANNOTATION: compromised or None,
        names.REVOKED_ANNOTATION: ",".join(revoked) or None,
        names.EMERGENCIES_ANNOTATION: emergencies,
    }


def marked(annotations: Mapping[str, str], wanted: Mapping[str, str | None]) -> bool:
    return all(annotations.get(k) == v for k, v in wanted.items())


def recorded(annotations: Mapping[str, str]) -> Recorded:
    """What one key Secret's annotations record; anything unreadable reads as not recorded."""
    compromised = annotations.get(names.COMPROMISED_BY_ANNOTATION, "").strip() or None
    revoked = _unique(
        fp
        for fp in (pki.normalize_fingerprint(f) for f in annotations.get(names.REVOKED_ANNOTATION, "").split(","))
        if len(fp) == 64
    )
    references: tuple[str, ...] = ()
    last: models.EmergencyRecord | None = None
    try:
        raw = json.loads(annotations.get(names.EMERGENCIES_ANNOTATION) or "{}")
    except ValueError:
        raw = {}
    if isinstance(raw, dict):
        listed = raw.get("references")
        if isinstance(listed, list):
            references = _unique(str(r) for r in listed if isinstance(r, str) and r.strip())
        entry = raw.get("last")
        if isinstance(entry, dict) and isinstance(entry.get("reference"), str):
            try:
                last = models.EmergencyRecord(
                    reference=entry["reference"], handled_at=datetime.datetime.fromisoformat(entry["handledAt"])
                )
            except (KeyError, TypeError, ValueError):
                last = None
    if compromised is not None:
        references = _unique([*references, compromised])
    if last is not None:
        references = _unique([*references, last.reference])
    return Recorded(compromised, revoked, references, last)


MAX_REFERENCE_LENGTH = 128


def validate_reference(reference: str) -> str | None:
    """Why an emergency reference is unusable, or None when it is fine."""
    if not reference.strip():
        return "the emergency-rotation annotation is empty: set it to an incident reference, e.g. INC-1234"
    if len(reference) > MAX_REFERENCE_LENGTH:
        return (
            f"the emergency-rotation reference is {len(reference)} characters long; "
            f"use an incident reference of at most {MAX_REFERENCE_LENGTH}"
        )
    if not reference.isprintable():
        return "the emergency-rotation reference contains control characters; use a plain incident reference"
    return None

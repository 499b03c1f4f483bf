"""The steps that change key material, one per policy decision, each in a crash-safe write order.

Crash-safe write orders (the lifecycle's invariant 3):
- rotation: write the next key Secret, record it in status, update the trust store;
- containment: record the compromised certificate as revoked, update every trust store, nudge the
  consumers, and only then mark the incident on the key Secret (best effort: the next pass repairs a
  failure); the replacement key is a later step (invariant 8: containment before key generation);
- cut-over: write the current Secret, record status, update the trust store, delete the old key Secret.
A crash between two steps is repaired by the next pass: an unrecorded next Secret made for the same
purpose is adopted (never a second key), an interrupted cut-over is finished. An object deleted and
re-created adopts what its key Secrets record (``domain.incidents``): a compromised key comes back
compromised, a replacement or planned next comes back pending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from webhookcerts.domain import incidents, models, names, pki, policy
from webhookcerts.kube import secrets
from webhookcerts.service import claims, trust_store
from webhookcerts.service.state import Pass

logger = logging.getLogger(__name__)


def _record(info: pki.CertificateInfo, secret_name: str, revision: int) -> dict[str, Any]:
    return {
        "serial": info.serial,
        "fingerprint": info.fingerprint,
        "not_before": info.not_before,
        "not_after": info.not_after,
        "certificate": info.pem,
        "secret_name": secret_name,
        "revision": revision,
    }


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _history_entry(
    p: Pass, record: models.CertificateRecord, reason: models.RetireReason, incident: str | None
) -> dict[str, Any]:
    return {
        "serial": record.serial,
        "fingerprint": record.fingerprint,
        "not_before": record.not_before,
        "not_after": record.not_after,
        "revision": record.revision,
        "reason": reason,
        "retired_at": p.now,
        "incident": incident,
        "sha1": pki.sha1_fingerprint(record.certificate),
    }


def _trim(p: Pass, history: list[Any]) -> list[Any]:
    return history[: p.spec.revision_history_limit]


def _adoptable_next(p: Pass, obs: policy.Observation, reason: str, incident: str | None) -> pki.KeyPair | None:
    """An unrecorded next Secret that an interrupted step made for this very purpose."""
    secret = obs.next_secret
    if secret.info is None or p.next_raw is None:
        return None
    wanted = {names.NEXT_REASON_ANNOTATION: reason, names.INCIDENT_ANNOTATION: incident or ""}
    if any(secret.annotations.get(k, "") != v for k, v in wanted.items()):
        return None
    if secret.info.fingerprint in p.status.revoked_fingerprints:
        return None
    return pki.KeyPair(p.next_raw.data[names.TLS_KEY], p.next_raw.data[names.TLS_CERT])


def _issue_next(
    p: Pass, obs: policy.Observation, reason: models.NextReason, incident: str | None
) -> pki.CertificateInfo:
    pair = _adoptable_next(p, obs, reason, incident)
    if pair is None:
        if p.next_raw is not None:
            # Ours (the ownership check passed) but made for another purpose and never recorded, so
            # nobody was told of it: it goes, at the version observed, before a new one is created.
            p.delete_secret(p.spec.next_secret_name, resource_version=p.next_raw.resource_version)
            p.next_raw = None
        pair = p.new_pair()
        annotations = {
            **incidents.marks(p.status, "next"),
            names.NEXT_REASON_ANNOTATION: reason,
            names.INCIDENT_ANNOTATION: incident or "",
        }
        # Create-only: a second operator process that created one meanwhile makes this fail (409);
        # the pass is decided again and adopts that key instead of overwriting it.
        p.write_key_secret(p.spec.next_secret_name, pair, annotations, create_only=True)
    return pki.inspect(pair.cert_pem)


def issue_initial(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    pair = p.new_pair()
    try:
        p.write_key_secret(p.spec.secret_name, pair, {}, create_only=True)
    except Exception as exc:
        if secrets.is_conflict(exc):
            # Someone else wrote it first: the next observation adopts or flags it.
            found = secrets.read(p.ctx.clients, p.resource.namespace, p.spec.secret_name)
            if found is not None:
                p.view.put_secret(p.resource.namespace, found)
            return
        raise
    info = pki.inspect(pair.cert_pem)
    revision = p.status.revision + 1
    p.update(current=_record(info, p.spec.secret_name, revision), revision=revision)
    p.save()
    p.event(
        "Normal",
        "Issued",
        f"issued serial {info.serial} (expires {info.not_after:%Y-%m-%d}) into Secret {p.spec.secret_name}",
    )


def _restored(p: Pass, obs: policy.Observation, compromised_by: str | None) -> dict[str, Any]:
    """What the key Secrets record of past incidents, merged into status (an object re-created empty)."""
    found = policy.recorded_on_secrets(obs)
    references = _unique([*p.status.emergency_references, *found.references])
    last = p.status.last_emergency_rotation or found.last
    if last is None and references:
        last = models.EmergencyRecord(reference=compromised_by or references[-1], handled_at=p.now)
    # Anyone who can write a Secret can write these marks: a fingerprint a neighbour sharing the trust
    # store offers as its current or next is never revoked on their word (an outage, not a revocation).
    offered = {
        record.fingerprint
        for entry in p.view.naming_trust(p.resource.namespace, p.spec.trust.secret_name)
        if entry.name != p.resource.name and entry.status is not None
        for record in (entry.status.current, entry.status.next)
        if record is not None
    }
    return {
        "revoked_fingerprints": _unique(
            [*p.status.revoked_fingerprints, *(f for f in found.revoked if f not in offered)]
        ),
        "emergency_references": references,
        "last_emergency_rotation": last.model_dump() if last is not None else None,
    }


def _next_adoption(p: Pass, obs: policy.Observation, reason: models.NextReason) -> dict[str, Any]:
    """The status changes that record the unrecorded next Secret as the pending next."""
    info = obs.next_secret.info
    assert info is not None
    revision = p.status.revision + 1
    return {
        "next": {**_record(info, p.spec.next_secret_name, revision), "reason": reason, "issued_at": p.now},
        "revision": revision,
    }


def adopt_current(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    """Adopt the key Secret as current, with what it records (an object re-created, a key made by hand).

    A compromised key comes back compromised (revoked, never trusted again), the emergencies handled
    stay handled, and an unrecorded next key of ours is adopted as pending in the same status write,
    so no trust write ever sees the current certificate without the replacement the provider may use.
    """
    assert obs.current_secret.info is not None
    info = obs.current_secret.info
    compromised_by = incidents.recorded(obs.current_secret.annotations).compromised_by
    revision = max(p.status.revision, 1)
    p.update(
        current={**_record(info, p.spec.secret_name, revision), "compromised_by": compromised_by},
        revision=revision,
        **_restored(p, obs, compromised_by),
    )
    if compromised_by and p.spec.emergency_policy == "RevokeImmediately":
        p.update(revoked_fingerprints=_unique([*p.status.revoked_fingerprints, info.fingerprint]))
    reason = policy.adoptable_next(obs, p.status)
    if reason is not None:
        p.update(**_next_adoption(p, obs, reason))
    p.save()
    said = f" (compromised by incident {compromised_by})" if compromised_by else ""
    pending = p.status.next
    also = f"; the {pending.reason.lower()} next serial {pending.serial} pending" if pending is not None else ""
    p.event("Normal", "Adopted", f"adopted serial {info.serial}{said} already in Secret {p.spec.secret_name}{also}")


def adopt_next(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    reason = policy.adoptable_next(obs, p.status)
    assert reason is not None, "the policy adopts only an adoptable next Secret"
    p.update(**_next_adoption(p, obs, reason))
    p.save()
    trust_store.sync(p)
    p.event("Normal", decision.reason, decision.message)


def issue_next(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    info = _issue_next(p, obs, "Planned", None)
    revision = p.status.revision + 1
    pending = {**_record(info, p.spec.next_secret_name, revision), "reason": "Planned", "issued_at": p.now}
    p.update(next=pending, revision=revision)
    p.save()
    p.ctx.metrics.rotated(p.resource.namespace, p.resource.name, p.spec.environment, "planned")
    trust_store.sync(p)
    p.event(
        "Normal",
        "Renewing",
        f"{decision.message}; next serial {info.serial} in Secret {p.spec.next_secret_name}: "
        "submit its bundle to the provider, then cut over",
    )


def contain(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    """The emergency's first step: no key is generated here, so trust is taken away at once."""
    reference = decision.reference or ""
    revoked = list(p.status.revoked_fingerprints)
    history: list[Any] = list(p.status.history)
    discarded = p.status.next
    if discarded is not None:
        # A pending next was exposed to the same incident: it is discarded, never cut over to.
        history.insert(0, _history_entry(p, discarded, "Compromised", reference))
        revoked.append(discarded.fingerprint)
    elif obs.next_secret.fingerprint is not None:
        # An unrecorded next key (left by an object deleted and re-created) was as exposed.
        revoked.append(obs.next_secret.fingerprint)
    current: dict[str, Any] | None = p.status.current.model_dump() if p.status.current is not None else None
    changes: dict[str, Any] = {}
    references = list(p.status.emergency_references)
    if current is None and obs.current_secret.info is not None:
        # Re-created, its key not adopted yet: the certificate in its Secret is the one compromised,
        # and what its Secrets record of earlier incidents still holds.
        current = _record(obs.current_secret.info, p.spec.secret_name, max(p.status.revision, 1))
        restored = _restored(p, obs, reference)
        changes["revision"] = current["revision"]
        revoked = [*restored["revoked_fingerprints"], *revoked]
        references = restored["emergency_references"]
    if current is not None:
        changes["current"] = {**current, "compromised_by": reference}
        if p.spec.emergency_policy == "RevokeImmediately":
            revoked.append(current["fingerprint"])
    p.update(
        **changes,
        next=None,
        history=_trim(p, history),
        revoked_fingerprints=_unique(revoked),
        last_emergency_rotation={"reference": reference, "handled_at": p.now},
        emergency_references=_unique([*references, reference]),
    )
    p.save()
    p.ctx.metrics.rotated(p.resource.namespace, p.resource.name, p.spec.environment, "emergency")
    trust_store.sync(p)
    trust_store.sweep(p)
    removed = " and removed from the trust store" if p.spec.emergency_policy == "RevokeImmediately" else ""
    p.event(
        "Warning",
        "EmergencyRotation",
        f"incident {reference}: serial {current['serial'] if current else '-'} treated as compromised{removed}; "
        f"a new key is being issued into Secret {p.spec.next_secret_name}",
    )
    # Only now, with trust taken away, is the incident written beside the key (it survives the object);
    # a failure here is repaired by the next pass (claims.upkeep) and never holds containment back.
    try:
        claims.mark_keys(p, only_ours=True)
    except Exception as exc:  # best effort, after containment
        logger.warning(
            "%s/%s: incident %s contained; marking the key Secret failed (the next pass retries): %s",
            p.resource.namespace,
            p.resource.name,
            reference,
            type(exc).__name__,
        )


def recontain(p: Pass) -> None:
    """Containment's trust writes again, before anything else of a pass that finds an emergency recorded
    but no replacement yet: the pass that recorded it may have died (or failed) before they landed.
    A write that has nothing to change sends nothing."""
    trust_store.sync(p)
    trust_store.sweep(p)


def issue_replacement(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    reference = decision.reference or ""
    info = _issue_next(p, obs, "Emergency", reference)
    revision = p.status.revision + 1
    pending = {**_record(info, p.spec.next_secret_name, revision), "reason": "Emergency", "issued_at": p.now}
    p.update(next=pending, revision=revision)
    p.save()
    trust_store.sync(p)
    p.event(
        "Normal",
        "ReplacementIssued",
        f"incident {reference}: new serial {info.serial} in Secret {p.spec.next_secret_name}: "
        "submit its bundle, then cut over",
    )


def cutover(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    pending = p.status.next
    assert pending is not None, "the policy cuts over only to a recorded next certificate"
    if obs.current_secret.fingerprint != pending.fingerprint:
        # The policy checked the next Secret holds exactly the pending certificate.
        assert p.next_raw is not None
        pair = pki.KeyPair(p.next_raw.data[names.TLS_KEY], p.next_raw.data[names.TLS_CERT])
        # The compromise mark was the old key's: it goes in the same write (the handled incidents stay).
        p.write_key_secret(p.spec.secret_name, pair, {names.COMPROMISED_BY_ANNOTATION: None}, create_only=False)
    old = p.status.current
    history: list[Any] = list(p.status.history)
    revoked = list(p.status.revoked_fingerprints)
    if old is not None:
        reason: models.RetireReason = "Compromised" if old.compromised_by else "Superseded"
        history.insert(0, _history_entry(p, old, reason, old.compromised_by))
        revoked.append(old.fingerprint)
    current = {
        **pending.model_dump(exclude={"reason", "issued_at", "compromised_by"}),
        "secret_name": p.spec.secret_name,
    }
    p.update(current=current, next=None, history=_trim(p, history), revoked_fingerprints=_unique(revoked))
    p.save()
    p.ctx.metrics.cut_over(p.resource.namespace, p.resource.name, p.spec.environment)
    trust_store.sync(p)
    # Only now, with the trust store no longer naming it, is the old key destroyed.
    p.delete_secret(p.spec.next_secret_name, resource_version=p.next_raw.resource_version if p.next_raw else None)
    done = (
        f"serial {pending.serial} is now current{f'; serial {old.serial} retired and its key destroyed' if old else ''}"
    )
    if decision.reason == "ObservedCutover":
        # Nobody asked for this one: its own reason, so it can be told apart and alerted on.
        p.event("Normal", "ObservedCutover", f"{done}; {decision.message}")
    else:
        p.event("Normal", "CutOver", f"{decision.message}: {done}")


def discard_next(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    """Give up a pending next that was lost or damaged but not exposed: the current stays as it is."""
    pending = p.status.next
    assert pending is not None, "the policy discards only a recorded next certificate"
    history: list[Any] = list(p.status.history)
    history.insert(0, _history_entry(p, pending, "Discarded", None))
    # Out of the trust store for good: a copy of the discarded key must not come back as trusted.
    revoked = _unique([*p.status.revoked_fingerprints, pending.fingerprint])
    p.update(next=None, history=_trim(p, history), revoked_fingerprints=revoked)
    p.save()
    trust_store.sync(p)
    if p.next_raw is not None:
        p.delete_secret(p.spec.next_secret_name, resource_version=p.next_raw.resource_version)
    p.event("Normal", decision.reason, decision.message)


def delete_stale_next(p: Pass, obs: policy.Observation, decision: policy.Decision) -> None:
    p.delete_secret(p.spec.next_secret_name, resource_version=p.next_raw.resource_version if p.next_raw else None)
    p.event("Normal", decision.reason, decision.message)


def writes(spec: models.WebhookCertificateSpec, action: policy.Action) -> tuple[str, ...]:
    """The key Secrets a step writes, takes as its own (adoption) or deletes: a conflict on any of them
    refuses the step. Containment writes none of them."""
    key, next_key = spec.secret_name, spec.next_secret_name
    return {
        policy.Action.ISSUE_INITIAL: (key,),
        policy.Action.ADOPT_CURRENT: (key, next_key),
        policy.Action.ADOPT_NEXT: (next_key,),
        policy.Action.ISSUE_NEXT: (next_key,),
        policy.Action.ISSUE_REPLACEMENT: (next_key,),
        policy.Action.CUTOVER: (key, next_key),
        policy.Action.DELETE_STALE_NEXT: (next_key,),
        policy.Action.DISCARD_NEXT: (next_key,),
    }.get(action, ())


STEPS: dict[policy.Action, Callable[[Pass, policy.Observation, policy.Decision], None]] = {
    policy.Action.ISSUE_INITIAL: issue_initial,
    policy.Action.ADOPT_CURRENT: adopt_current,
    policy.Action.ADOPT_NEXT: adopt_next,
    policy.Action.ISSUE_NEXT: issue_next,
    policy.Action.EMERGENCY: contain,
    policy.Action.ISSUE_REPLACEMENT: issue_replacement,
    policy.Action.CUTOVER: cutover,
    policy.Action.DELETE_STALE_NEXT: delete_stale_next,
    policy.Action.DISCARD_NEXT: discard_next,
}

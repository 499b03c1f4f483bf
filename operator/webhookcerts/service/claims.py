"""Checking that every Secret the object names is its to write, and refusing only what is disputed.

The rule is ``domain.ownership``'s; this module gathers what it needs: each Secret as it exists (from
the view; the key and trust Secrets, which a user may have made, from the API when the view has no
copy) and every other object that names the same Secret (the view's claim index, no LIST).

A conflict refuses the writes to the disputed Secret and nothing else (``Pass.disputed``): a bundle
name someone else took must not stop a renewal, and nothing at all may stop containment, which writes
only status and the trust stores (it checks the one trust Secret it writes, never the others).
"""

from __future__ import annotations

from webhookcerts.domain import incidents, names, ownership, policy
from webhookcerts.kube import secrets
from webhookcerts.service import state

RECHECK_SECONDS = 30.0


def _existing(p: state.Pass, name: str, role: ownership.Role) -> secrets.SecretData | None:
    ns = p.resource.namespace
    if role == "key" and name == p.spec.secret_name:
        return p.current_raw
    held = p.view.secret(ns, name)
    if held is not None and held.labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY:
        return held
    if held is not None or role in ("trust", "bundle"):
        # Not watched (no label of ours): a copy the view holds may be gone or renamed by now.
        found = secrets.read(p.ctx.clients, ns, name)
        if found is None:
            p.view.drop_secret(ns, name)
        else:
            p.view.put_secret(ns, found)
        return found
    # The next key: only the operator creates it, and the view sees every Secret of its label.
    return None


def problems(p: state.Pass, created: str, *, only: str | None = None) -> dict[str, str]:
    """Each Secret its object names that this pass may not write, with why; empty when it may write
    them all. ``only`` checks that one name (containment checks just the trust Secret it writes)."""
    me = ownership.Claimant(p.resource.name, "key", created)
    own = ownership.claims(p.spec)
    found: dict[str, str] = {}
    for secret_name, role in own:
        if only is not None and secret_name != only:
            continue
        existing = _existing(p, secret_name, role)
        seen = None if existing is None else ownership.holder(secret_name, existing.labels, existing.annotations)
        if role == "trust" and seen is not None and seen.role != "trust" and _written_as_trust(p, secret_name):
            # A trust store this object wrote, relabelled since (anyone who may edit it can): its labels
            # must not turn containment off. Other objects' claims on the name still count.
            seen = None
        rivals = [
            ownership.Claimant(entry.name, their_role, entry.created)
            for entry in p.view.claimants(p.resource.namespace, secret_name)
            if entry.name != p.resource.name and not entry.deleting
            for claimed, their_role in entry.claimed
            if claimed == secret_name
        ]
        problem = ownership.conflict(
            secret_name, role, ownership.Claimant(me.name, role, me.created), seen, rivals, own
        )
        if problem is not None and secret_name not in found:
            found[secret_name] = problem
    return found


def _written_as_trust(p: state.Pass, name: str) -> bool:
    """Whether status records ``name`` as a trust Secret this object wrote (only the operator writes status)."""
    trust = p.status.trust
    return trust is not None and (trust.secret_name == name or any(r.secret_name == name for r in trust.stores))


def message(found: dict[str, str]) -> str:
    return "; ".join(dict.fromkeys(found.values()))


def refused(why: str) -> policy.Decision:
    """The decision a pass ends on when a step was refused for a disputed Secret (Ready=False)."""
    return policy.Decision(policy.Action.NOT_READY, "SecretConflict", why)


def report(p: state.Pass, found: dict[str, str]) -> None:
    """Record the conflicts in the SecretConflict condition (Ready follows from the pass's decision)."""
    # Consent missing is the one conflict a third party resolves (the Secret's owner): its own reason.
    if all(names.TRUST_TARGET_ANNOTATION in why for why in found.values()):
        p.set_condition(names.SECRET_CONFLICT, "True", "ConsentRequired", message(found))
    else:
        p.set_condition(names.SECRET_CONFLICT, "True", "SecretClaimed", message(found))
    # The other claimant renaming its Secret wakes nobody here: look again soon.
    p.requeue_after = min(p.requeue_after or RECHECK_SECONDS, RECHECK_SECONDS)


def clear(p: state.Pass) -> None:
    p.drop_condition(names.SECRET_CONFLICT)


def upkeep(p: state.Pass) -> None:
    """Keep the marks of ownership right on the Secrets this object's status records.

    A Secret adopted from a user, or written by a release that did not stamp roles, gets its owner and
    role; a change of ``deletionPolicy`` adds or removes the owner reference. Only the metadata is
    patched, and only when something is wrong, so an idle pass sends nothing.
    """
    mark_keys(p)
    if p.spec.bundle is not None and p.spec.bundle_secret_name not in p.disputed:
        bundle = p.view.secret(p.resource.namespace, p.spec.bundle_secret_name)
        if bundle is not None and not _marked(p, bundle, "bundle"):
            p.write_secret(bundle.name, role="bundle", basis=bundle, type=bundle.type, data=bundle.data)


def mark_keys(p: state.Pass, *, only_ours: bool = False) -> None:
    """The key Secrets status records carry their owner, their role and what status knows of incidents.

    The incident marks (``domain.incidents``) are what a re-created object adopts back: a compromised
    key stays compromised, a handled emergency stays handled. Containment writes them once trust is
    taken away; a crash in between is repaired here, on the next pass. ``only_ours``: only Secrets
    already stamped as this object's in that role (containment may run before the ownership check
    of the key Secrets, and must never write a Secret that is not its own).
    """
    assert p.last is not None
    recorded: list[tuple[str, incidents.Role, secrets.SecretData | None, str | None]] = [
        (p.spec.secret_name, "key", p.current_raw, p.status.current.fingerprint if p.status.current else None),
        (p.spec.next_secret_name, "next", p.next_raw, p.status.next.fingerprint if p.status.next else None),
    ]
    observed = {"key": p.last.current_secret.fingerprint, "next": p.last.next_secret.fingerprint}
    for name, role, raw, fingerprint in recorded:
        if name in p.disputed or raw is None or fingerprint is None or observed[role] != fingerprint:
            continue
        if only_ours and ownership.holder(name, raw.labels, raw.annotations) != ownership.Holder(
            True, p.resource.name, role
        ):
            continue
        wanted = incidents.marks(p.status, role)
        if _marked(p, raw, role) and incidents.marked(raw.annotations, wanted):
            continue
        p.write_secret(name, role=role, basis=raw, type=raw.type, data=raw.data, annotations=wanted)


def _marked(p: state.Pass, secret: secrets.SecretData, role: ownership.Role) -> bool:
    seen = ownership.holder(secret.name, secret.labels, secret.annotations)
    owned = p.resource.uid in secret.owner_uids
    return (
        seen == ownership.Holder(True, p.resource.name, role)
        and secret.annotations.get(names.OWNER_ANNOTATION) == p.resource.name
        and owned == (p.spec.deletion_policy == "Delete")
    )

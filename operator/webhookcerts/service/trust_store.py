"""The shared trust store: one Secret written as the union of what every WebhookCertificate naming it trusts.

The union is taken from the view's index of WebhookCertificates by trust Secret, so a write costs
what those objects contribute (two, when sandbox and live share one), not a LIST of the namespace.
Revoked fingerprints are the union of every status and of the trust Secret's own audit annotation, so
a retired certificate never returns even when a neighbour's status is read stale.

The trust Secret's version is taken before the statuses: a neighbour that records new status and
writes the store in between makes this write fail with a conflict, and the retry sees its status.
"""

from __future__ import annotations

import logging

from webhookcerts.domain import models, names, trust
from webhookcerts.kube import secrets
from webhookcerts.service import consumers, state, view

logger = logging.getLogger(__name__)

CONFLICT_RETRIES = 5


def write(
    ctx: state.Context,
    seen: view.View,
    namespace: str,
    secret_name: str,
    *,
    mine: tuple[str, models.WebhookCertificateSpec, models.WebhookCertificateStatus] | None = None,
) -> str:
    """Bring the trust Secret to the union of its WebhookCertificates; the hash of its content.

    ``mine`` is the caller's in-memory status, fresher than the view while a pass is under way.
    """
    for attempt in range(CONFLICT_RETRIES):
        existing = state.read_secret(ctx, seen, namespace, secret_name, authoritative=False)
        pems: list[str] = []
        revoked: set[str] = set()
        for entry in seen.naming_trust(namespace, secret_name):
            if mine is not None and entry.name == mine[0]:
                continue
            if entry.spec is None or entry.status is None:
                continue
            pems.extend(trust.trusted_certificates(entry.status, entry.spec))
            revoked.update(entry.status.revoked_fingerprints)
        if mine is not None:
            pems.extend(trust.trusted_certificates(mine[2], mine[1]))
            revoked.update(mine[2].revoked_fingerprints)
        if existing is not None:
            revoked.update(f for f in existing.annotations.get(names.REVOKED_ANNOTATION, "").split(",") if f)
        data = trust.assemble(pems, revoked)
        hash_ = trust.trust_hash(data)
        try:
            written = secrets.write(
                ctx.clients,
                namespace,
                secret_name,
                type=secrets.OPAQUE,
                data={names.TRUST_KEY: data},
                annotations={
                    names.TRUST_HASH_ANNOTATION: hash_,
                    names.REVOKED_ANNOTATION: ",".join(sorted(revoked)),
                },
                existing=existing,
                # An existing Secret may hold the endpoint's own keys beside ca.crt: they are not ours.
                only_keys=True,
            )
        except Exception as exc:
            if secrets.is_conflict(exc) and attempt < CONFLICT_RETRIES - 1:
                # The view's copy is behind: read the Secret once, then decide again.
                fresh = secrets.read(ctx.clients, namespace, secret_name)
                if fresh is not None:
                    seen.put_secret(namespace, fresh)
                continue
            raise
        if written is not None:
            seen.put_secret(namespace, written)
            if ctx.trust_changed is not None:
                ctx.trust_changed(namespace, secret_name)
        return hash_
    raise AssertionError("unreachable")


def sync(p: state.Pass) -> None:
    """Write the pass's trust Secret and, when its content changed for them, nudge the consumers."""
    hash_ = write(
        p.ctx,
        p.view,
        p.resource.namespace,
        p.spec.trust.secret_name,
        mine=(p.resource.name, p.spec, p.status),
    )
    p.trust_hash = hash_
    if p.status.trust is None or p.status.trust.hash != hash_:
        p.update(trust={"secret_name": p.spec.trust.secret_name, "hash": hash_})
    if not p.spec.consumers:
        if p.status.consumers:
            p.status.consumers = []
        return
    if consumers.announced(p.spec.consumers, p.status.consumers, hash_):
        # Every consumer already carries this hash: listing pods again would cost API calls for nothing.
        return
    statuses, patched = consumers.nudge(
        p.ctx.clients, p.resource.namespace, p.spec.consumers, hash_, p.status.consumers, p.now
    )
    p.status.consumers = statuses
    p.ctx.metrics.trust_reloaded(p.resource.namespace, p.resource.name, p.spec.environment, len(patched))
    if patched:
        p.event("Normal", "TrustReloadRequested", f"trust store {hash_[:12]} announced to {', '.join(patched)}")

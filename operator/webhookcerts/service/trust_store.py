"""The shared trust store: one Secret written as the union of what every WebhookCertificate naming it trusts.

The union is taken from the view's index of WebhookCertificates by trust Secret, so a write costs
what those objects contribute (two, when sandbox and live share one), not a LIST of the namespace.
Revoked fingerprints are the union of every status and of the trust Secret's own audit annotation, so
a retired certificate never returns even when a neighbour's status is read stale.

The trust Secret's version is taken before the statuses: a neighbour that records new status and
writes the store in between makes this write fail with a conflict, and the retry sees its status.

Each trust Secret also records which object contributed which fingerprints (``webhookcerts.io/sources``)
and whether they outlive it (``deletionPolicy``). That is what a write needs to know of objects that no
longer name it: one deleted under ``Retain`` stays trusted, one whose ``spec.trust.secretName`` moved
is taken out, and after an emergency every store that lists the object is rewritten.
"""

from __future__ import annotations

import logging

from webhookcerts.domain import models, names, trust
from webhookcerts.kube import secrets
from webhookcerts.service import consumers, state, view

logger = logging.getLogger(__name__)

CONFLICT_RETRIES = 5


def _union(
    ctx: state.Context,
    seen: view.View,
    namespace: str,
    existing: secrets.SecretData | None,
    contributors: dict[str, tuple[models.WebhookCertificateSpec, models.WebhookCertificateStatus]],
) -> tuple[bytes, set[str], dict[str, trust.Source]]:
    """The store's content, its revoked fingerprints and where each certificate came from.

    A certificate stays only while some status records it, with two exceptions that keep the
    provider's certificate trusted through a delete and re-create: an object gone under
    ``deletionPolicy: Retain`` keeps what it had (until it expires), and an object of that name that
    records no current certificate yet (re-created, about to adopt its key) keeps it too. An object
    that names another trust Secret now takes its certificates out of this one; its revoked
    fingerprints still apply here. Revoked always wins.
    """
    listed = trust.parse_sources(existing.annotations.get(names.SOURCES_ANNOTATION, "")) if existing else {}
    held = trust.certificates_by_fingerprint(existing.data.get(names.TRUST_KEY, b"")) if existing else {}
    now = ctx.clock.now()
    revoked: set[str] = set()
    if existing is not None:
        revoked.update(f for f in existing.annotations.get(names.REVOKED_ANNOTATION, "").split(",") if f)
    offered: dict[str, tuple[list[str | bytes], bool]] = {}
    for name, (spec, status) in contributors.items():
        revoked.update(status.revoked_fingerprints)
        pems: list[str | bytes] = list(trust.trusted_certificates(status, spec))
        if status.current is None and name in listed:
            pems.extend(held[fp][0] for fp in listed[name].fingerprints if fp in held)
        offered[name] = (pems, spec.deletion_policy == "Retain")
    for name, source in listed.items():
        if name in contributors:
            continue
        entry = seen.certificate(namespace, name)
        if entry is not None:
            if entry.status is not None:
                revoked.update(entry.status.revoked_fingerprints)
            continue
        if source.retain:
            offered[name] = ([held[fp][0] for fp in source.fingerprints if fp in held and held[fp][1] > now], True)
    data = trust.assemble([pem for pems, _ in offered.values() for pem in pems], revoked)
    kept = set(trust.fingerprints_of([data]))
    sources = {
        name: trust.Source(tuple(sorted(set(trust.fingerprints_of(pems)) & kept)), retain)
        for name, (pems, retain) in offered.items()
    }
    return data, revoked, sources


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
        contributors = {
            entry.name: (entry.spec, entry.status)
            for entry in seen.naming_trust(namespace, secret_name)
            if entry.spec is not None and entry.status is not None
        }
        if mine is not None:
            contributors[mine[0]] = (mine[1], mine[2])
        if existing is None and not contributors:
            # Nobody names it and it is gone: nothing to take out, and nothing to create.
            return trust.trust_hash(trust.PLACEHOLDER_PEM)
        data, revoked, sources = _union(ctx, seen, namespace, existing, contributors)
        hash_ = trust.trust_hash(data)
        try:
            written = secrets.write(
                ctx.clients,
                namespace,
                secret_name,
                type=secrets.OPAQUE,
                data={names.TRUST_KEY: data},
                labels={names.ROLE_LABEL: "trust"},
                annotations={
                    names.TRUST_HASH_ANNOTATION: hash_,
                    names.REVOKED_ANNOTATION: ",".join(sorted(revoked)),
                    names.SOURCES_ANNOTATION: trust.render_sources(sources),
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


def sweep(p: state.Pass) -> None:
    """Rewrite every other trust Secret this object ever put a certificate into (after an emergency).

    Found by their sources annotation: a trust Secret used before ``spec.trust.secretName`` moved
    loses the compromised certificate too, and its revoked annotation keeps it out.
    """
    ns = p.resource.namespace
    for secret in p.view.trust_secrets(ns):
        if secret.name == p.spec.trust.secret_name:
            continue
        if p.resource.name in trust.parse_sources(secret.annotations.get(names.SOURCES_ANNOTATION, "")):
            write(p.ctx, p.view, ns, secret.name)


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
    before = p.status.trust.secret_name if p.status.trust is not None else None
    if before is not None and before != p.spec.trust.secret_name:
        # spec.trust.secretName moved: the Secret used before no longer lists this object's certificates.
        write(p.ctx, p.view, p.resource.namespace, before)
    if p.status.trust is None or p.status.trust.hash != hash_ or before != p.spec.trust.secret_name:
        p.update(trust={"secret_name": p.spec.trust.secret_name, "hash": hash_})
    if not p.spec.consumers:
        if p.status.consumers:
            p.status.consumers = []
        return
    if consumers.announced(p.spec.consumers, p.status.consumers, hash_):
        # Every consumer already carries this hash: listing pods again would cost API calls for nothing.
        return
    statuses, patched = consumers.nudge(
        p.ctx.clients,
        p.resource.namespace,
        p.spec.trust.secret_name,
        p.spec.consumers,
        hash_,
        p.status.consumers,
        p.now,
    )
    p.status.consumers = statuses
    p.ctx.metrics.trust_reloaded(p.resource.namespace, p.resource.name, p.spec.environment, len(patched))
    if patched:
        p.event("Normal", "TrustReloadRequested", f"trust store {hash_[:12]} announced to {', '.join(patched)}")

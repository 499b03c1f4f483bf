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

import dataclasses
import logging

from webhookcerts.domain import models, names, pki, trust
from webhookcerts.kube import events, secrets
from webhookcerts.service import consumers, state, trust_formats, view

logger = logging.getLogger(__name__)

CONFLICT_RETRIES = 5
# The API server refuses a Secret over 1 MiB (data, keys and metadata together); some room is left
# for the metadata. About 500 RSA-4096 certificates.
SECRET_LIMIT = 1024 * 1024 - 32 * 1024
# All annotations of an object together may hold 256 KiB; the revoked list keeps well inside it.
REVOKED_ANNOTATION_MAX = 128 * 1024


@dataclasses.dataclass(frozen=True)
class Written:
    """What a trust write did: the hash of the content the Secret now holds, and what held it back."""

    hash: str
    # Objects naming the store that could not be read: their certificates were kept as the store held them.
    unreadable: tuple[str, ...] = ()
    # Why the new content was not written (the old one stays), e.g. it would pass the Secret size limit.
    refused: str | None = None
    # Why the PKCS#12/JKS truststores could not be written (ca.crt was).
    formats: str | None = None


@dataclasses.dataclass
class _Union:
    data: bytes
    revoked: set[str]
    recorded_revoked: set[str]
    sources: dict[str, trust.Source]
    unreadable: list[str]


def _union(
    ctx: state.Context,
    seen: view.View,
    namespace: str,
    existing: secrets.SecretData | None,
    contributors: dict[str, tuple[models.WebhookCertificateSpec, models.WebhookCertificateStatus]],
    unreadable_names: list[str],
) -> _Union:
    """The store's content, its revoked fingerprints and where each certificate came from.

    A certificate stays only while some status records it, with exceptions that keep the provider's
    certificate trusted when its object cannot speak for it: an object gone under ``deletionPolicy:
    Retain`` keeps what it had (until it expires); one of that name that records no current
    certificate yet (re-created, about to adopt its key) keeps it too; and one that cannot be read (a
    status or spec of another schema version, a damaged certificate) keeps exactly what the store held
    for it: the store fails closed, never dropping a certificate because a neighbour is unreadable,
    and never blocking a revocation either. An object that names another trust Secret now takes its
    certificates out of this one; its revoked fingerprints still apply here. Revoked always wins.
    """
    listed = trust.parse_sources(existing.annotations.get(names.SOURCES_ANNOTATION, "")) if existing else {}
    held = trust.certificates_by_fingerprint(existing.data.get(names.TRUST_KEY, b"")) if existing else {}
    now = ctx.clock.now()
    revoked: set[str] = set()
    if existing is not None:
        revoked.update(f for f in existing.annotations.get(names.REVOKED_ANNOTATION, "").split(",") if f)
    recorded: set[str] = set()
    offered: dict[str, tuple[list[str | bytes], bool]] = {}
    unreadable: list[str] = []

    def as_held(name: str) -> list[str | bytes]:
        if name in listed:
            return [held[fp][0] for fp in listed[name].fingerprints if fp in held]
        # A store written before sources were recorded: every certificate no known source claims.
        claimed = {fp for source in listed.values() for fp in source.fingerprints}
        return [pem for fp, (pem, _) in held.items() if fp not in claimed]

    for name, (spec, status) in contributors.items():
        recorded.update(status.revoked_fingerprints)
        try:
            pems: list[str | bytes] = list(trust.trusted_certificates(status, spec))
        except pki.InvalidKeyMaterial as exc:
            unreadable.append(f"{name} ({exc})")
            offered[name] = (as_held(name), listed[name].retain if name in listed else True)
            continue
        if status.current is None and name in listed:
            pems.extend(as_held(name))
        offered[name] = (pems, spec.deletion_policy == "Retain")
    for name in unreadable_names:
        entry = seen.certificate(namespace, name)
        unreadable.append(f"{name} ({entry.problem if entry is not None else 'unreadable'})")
        offered[name] = (as_held(name), listed[name].retain if name in listed else True)
    for name, source in listed.items():
        if name in offered:
            continue
        entry = seen.certificate(namespace, name)
        if entry is not None:
            if entry.status is not None:
                recorded.update(entry.status.revoked_fingerprints)
            continue
        if source.retain:
            offered[name] = ([held[fp][0] for fp in source.fingerprints if fp in held and held[fp][1] > now], True)
    revoked |= recorded
    data = trust.assemble([pem for pems, _ in offered.values() for pem in pems], revoked)
    kept = set(trust.fingerprints_of([data]))
    sources = {
        name: trust.Source(tuple(sorted(set(trust.fingerprints_of(pems)) & kept)), retain)
        for name, (pems, retain) in offered.items()
    }
    return _Union(data, revoked, recorded, sources, unreadable)


def _revoked_annotation(union: _Union) -> str:
    """The audit list of revoked fingerprints, bounded: past the bound it keeps those a status records.

    What is left out can still never return: a certificate comes into the store only from a status
    (which keeps its own revoked list) or from a source this store listed, and revoked ones are never
    listed.
    """
    text = ",".join(sorted(union.revoked))
    if len(text) <= REVOKED_ANNOTATION_MAX:
        return text
    return ",".join(sorted(union.recorded_revoked))[:REVOKED_ANNOTATION_MAX].rsplit(",", 1)[0]


def write(
    ctx: state.Context,
    seen: view.View,
    namespace: str,
    secret_name: str,
    *,
    mine: tuple[str, models.WebhookCertificateSpec, models.WebhookCertificateStatus] | None = None,
) -> Written:
    """Bring the trust Secret to the union of its WebhookCertificates.

    ``mine`` is the caller's in-memory status, fresher than the view while a pass is under way.
    """
    for attempt in range(CONFLICT_RETRIES):
        existing = state.read_secret(ctx, seen, namespace, secret_name, authoritative=False)
        contributors: dict[str, tuple[models.WebhookCertificateSpec, models.WebhookCertificateStatus]] = {}
        unreadable_names: list[str] = []
        for entry in seen.naming_trust(namespace, secret_name):
            if entry.spec is not None and entry.status is not None:
                contributors[entry.name] = (entry.spec, entry.status)
            elif mine is None or entry.name != mine[0]:
                unreadable_names.append(entry.name)
        if mine is not None:
            contributors[mine[0]] = (mine[1], mine[2])
        if existing is None and not contributors and not unreadable_names:
            # Nobody names it and it is gone: nothing to take out, and nothing to create.
            return Written(trust.trust_hash(trust.PLACEHOLDER_PEM))
        union = _union(ctx, seen, namespace, existing, contributors, unreadable_names)
        hash_ = trust.trust_hash(union.data)
        old = existing.data.get(names.TRUST_KEY, b"") if existing is not None else b""
        others = sum(len(k) + len(v) for k, v in existing.data.items() if k != names.TRUST_KEY) if existing else 0
        if others + len(union.data) > SECRET_LIMIT and len(union.data) > len(old):
            # Smaller content (a revocation) always goes through; larger content past the limit never.
            return Written(
                trust.trust_hash(old),
                tuple(union.unreadable),
                f"trust Secret {secret_name} would hold {len(trust.fingerprints_of([union.data]))} certificates "
                f"({(others + len(union.data)) // 1024} KiB), more than a Secret can (1 MiB): split the "
                "WebhookCertificates naming it over several trust Secrets; its content is left as it was",
            )
        wanted = trust_formats.targets((n, spec) for n, (spec, _) in contributors.items())
        extra, extra_annotations, formats_problem = trust_formats.encode(
            ctx, namespace, secret_name, wanted, union.data, hash_, existing
        )
        edited = (
            existing is not None
            and names.TRUST_HASH_ANNOTATION in existing.annotations
            and trust.trust_hash(old) != existing.annotations[names.TRUST_HASH_ANNOTATION]
        )
        try:
            written = secrets.write(
                ctx.clients,
                namespace,
                secret_name,
                type=secrets.OPAQUE,
                data={names.TRUST_KEY: union.data, **extra},
                labels={names.ROLE_LABEL: "trust"},
                annotations={
                    names.TRUST_HASH_ANNOTATION: hash_,
                    names.REVOKED_ANNOTATION: _revoked_annotation(union),
                    names.SOURCES_ANNOTATION: trust.render_sources(union.sources),
                    **extra_annotations,
                    **trust_formats.config_maps_annotation(wanted, existing),
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
            if edited:
                message = f"ca.crt of trust Secret {secret_name} was edited by hand; restored from the statuses"
                logger.warning("%s/%s: TrustStoreRestored: %s", namespace, secret_name, message)
                events.record(
                    ctx.clients,
                    namespace,
                    secret_name,
                    written.uid,
                    type="Warning",
                    reason="TrustStoreRestored",
                    message=message,
                    kind="Secret",
                    api_version="v1",
                )
            if ctx.trust_changed is not None:
                ctx.trust_changed(namespace, secret_name)
        trust_formats.write_config_maps(
            ctx, namespace, wanted, union.data, extra, hash_, changed=written is not None, before=existing
        )
        return Written(hash_, tuple(union.unreadable), formats=formats_problem)
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
    if p.spec.trust.secret_name in p.disputed:
        # Not a trust store of ours (another object's key, say): nothing of ours is in it to revoke.
        # The Secret used before a move still is, and so is every store the sweep finds.
        _moved_from(p)
        return
    written = write(
        p.ctx,
        p.view,
        p.resource.namespace,
        p.spec.trust.secret_name,
        mine=(p.resource.name, p.spec, p.status),
    )
    hash_ = written.hash
    p.trust_hash = hash_
    if written.refused is not None:
        p.set_condition(names.TRUST_STORE_INCOMPLETE, "True", "TrustStoreTooLarge", written.refused)
    elif written.unreadable:
        p.set_condition(
            names.TRUST_STORE_INCOMPLETE,
            "True",
            "UnreadableNeighbour",
            f"trust Secret {p.spec.trust.secret_name} is shared with WebhookCertificates that cannot be read: "
            f"{'; '.join(written.unreadable)}; the certificates they had in it are kept as they were until "
            "they are fixed",
        )
    elif written.formats is not None:
        p.set_condition(names.TRUST_STORE_INCOMPLETE, "True", "TruststoreNotWritten", written.formats)
    else:
        p.drop_condition(names.TRUST_STORE_INCOMPLETE)
    before = _moved_from(p)
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


def _moved_from(p: state.Pass) -> str | None:
    """After ``spec.trust.secretName`` moved, the Secret used before no longer lists this object's
    certificates: it is rewritten without them. The name status records, returned."""
    before = p.status.trust.secret_name if p.status.trust is not None else None
    if before is not None and before != p.spec.trust.secret_name:
        write(p.ctx, p.view, p.resource.namespace, before)
    return before

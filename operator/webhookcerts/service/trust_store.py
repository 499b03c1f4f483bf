"""The shared trust store: one Secret written as the union of what every WebhookCertificate naming it trusts.

The union is taken from the view's index of WebhookCertificates by trust Secret, so a write costs
what those objects contribute (two, when sandbox and live share one), not a LIST of the namespace.
Revoked fingerprints are the union of every status and of the trust Secret's own audit annotation, so
a retired certificate never returns even when a neighbour's status is read stale.

The trust Secret's version is taken before the statuses: a neighbour that records new status and
writes the store in between makes this write fail with a conflict, and the retry sees its status.

Each trust Secret also records which object contributed which fingerprints (``webhookcerts.io/sources``)
and whether they outlive it (``deletionPolicy``). That is what a write needs to know of objects that no
longer name it: one deleted under ``Retain`` stays trusted (while its key Secret holds the certificate:
the annotation alone is never enough, see ``trust_union``), one whose ``spec.trust.secretName`` moved
is taken out. Each object's status records every trust Secret it wrote, with the truststore keys and
ConfigMaps it asked for there (``status.trust.stores``, written only by the operator): after an
emergency each of them is rewritten, and a truststore key or ConfigMap no longer asked for is emptied.

Every form (ca.crt, the truststores, the ConfigMap copies) holds a subset of what ca.crt holds: a
truststore that cannot be re-encoded is removed (``trust_formats``), and past the Secret size limit
a revocation is still written, leaving out only what was not trusted before.
"""

from __future__ import annotations

import dataclasses
import logging

from webhookcerts.domain import models, names, ownership, trust
from webhookcerts.kube import events, secrets
from webhookcerts.service import consumers, state, trust_formats, trust_union, view

logger = logging.getLogger(__name__)

CONFLICT_RETRIES = 5
# The API server refuses a Secret over 1 MiB (data, keys and metadata together); some room is left
# for the metadata. About 500 RSA-4096 certificates with no truststore, a third of that with both.
SECRET_LIMIT = 1024 * 1024 - 32 * 1024
# How many trust Secrets a status remembers having written (the oldest is forgotten first).
STORES_MAX = 32


Mine = tuple[str, models.WebhookCertificateSpec, models.WebhookCertificateStatus]


@dataclasses.dataclass(frozen=True)
class Written:
    """What a trust write did: the hash of the content the Secret now holds, and what held it back."""

    hash: str
    # Objects naming the store that could not be read: their certificates were kept as the store held them.
    unreadable: tuple[str, ...] = ()
    # Why certificates not trusted before were left out (revocations were written): the size limit.
    refused: str | None = None
    # Why the PKCS#12/JKS truststores could not be written (ca.crt was).
    formats: str | None = None
    # ConfigMaps of someone else's not taken over for want of their owner's consent, and how to give it.
    not_consented: str | None = None


def _recorded(
    seen: view.View, namespace: str, secret_name: str, mine: Mine | None
) -> tuple[set[str], set[str], set[str]]:
    """What the statuses say was asked for in this trust Secret: truststore keys and ConfigMaps; and the
    ConfigMaps another trust Secret is copied to now (that Secret's to write, not this one's to empty)."""
    # Every object of the namespace, from what the view keeps of each (never a parse per object), and
    # the caller's own from its in-memory models.
    facts = [
        (entry.stores, entry.trust_secret, entry.config_map)
        for entry in seen.certificates()
        if entry.namespace == namespace and (mine is None or entry.name != mine[0])
    ]
    if mine is not None:
        stores, config_map = view.trust_facts(mine[1], mine[2])
        facts.append((stores, mine[1].trust.secret_name, config_map))
    keys: set[str] = set()
    config_maps: set[str] = set()
    elsewhere: set[str] = set()
    for stores, trust_secret, config_map in facts:
        for store, store_keys, store_config_maps in stores:
            if store == secret_name:
                keys.update(store_keys)
                config_maps.update(store_config_maps)
        if trust_secret is not None and trust_secret != secret_name and config_map is not None:
            elsewhere.add(config_map)
    return keys, config_maps, elsewhere


def _size(existing: secrets.SecretData | None, data: bytes, encoded: trust_formats.Encoded) -> int:
    held = existing.data if existing is not None else {}
    result = {k: v for k, v in held.items() if k not in encoded.remove}
    result.update({names.TRUST_KEY: data, **encoded.data})
    return sum(len(k) + len(v) for k, v in result.items())


def write(
    ctx: state.Context,
    seen: view.View,
    namespace: str,
    secret_name: str,
    *,
    mine: Mine | None = None,
) -> Written:
    """Bring the trust Secret, its truststores and its ConfigMap copies to the union of its WebhookCertificates.

    ``mine`` is the caller's in-memory status, fresher than the view while a pass is under way.
    """
    for attempt in range(CONFLICT_RETRIES):
        existing = state.read_secret(ctx, seen, namespace, secret_name, authoritative=False)
        contributors: trust_union.Contributors = {}
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
        if (
            existing is not None
            and names.TRUST_KEY not in existing.data
            and ownership.holder(secret_name, existing.labels, existing.annotations).role in ("key", "next", "bundle")
        ):
            # The name now holds key material of the operator's and no trust store (a store used before was
            # deleted and the name taken): the sweep of an old name must not clobber it. One that holds a
            # ca.crt is a trust store whatever its labels say (relabelled by hand): it is written.
            return Written(trust.trust_hash(trust.PLACEHOLDER_PEM))
        union = trust_union.union(ctx, seen, namespace, existing, contributors, unreadable_names)
        wanted = trust_formats.targets((n, spec) for n, (spec, _) in contributors.items())
        keys, config_maps, elsewhere = _recorded(seen, namespace, secret_name, mine)
        data = union.data
        encoded = trust_formats.encode(
            ctx, namespace, secret_name, wanted, data, trust.trust_hash(data), existing, keys
        )
        old = existing.data.get(names.TRUST_KEY, b"") if existing is not None else b""
        refused = None
        size = _size(existing, data, encoded)
        if size > SECRET_LIMIT:
            # Past the limit, what was not trusted before stays untrusted; a revocation still goes through.
            before = trust.certificates_by_fingerprint(old)
            now_held = trust.certificates_by_fingerprint(data)
            limited = trust.assemble([pem for fp, (pem, _) in now_held.items() if fp in before])
            if limited != data:
                refused = (
                    f"trust Secret {secret_name} would hold {len(now_held)} certificates ({size // 1024} KiB), more "
                    "than a Secret can (1 MiB): split the WebhookCertificates naming it over several trust "
                    f"Secrets; the {len(set(now_held) - set(before))} certificates it did not trust before are "
                    "left out (revocations are written)"
                )
                data = limited
                encoded = trust_formats.encode(
                    ctx, namespace, secret_name, wanted, data, trust.trust_hash(data), existing, keys
                )
        hash_ = trust.trust_hash(data)
        restored = _restored(existing, old, union, encoded)
        try:
            written = secrets.write(
                ctx.clients,
                namespace,
                secret_name,
                type=secrets.OPAQUE,
                data={names.TRUST_KEY: data, **encoded.data},
                labels={names.ROLE_LABEL: "trust"},
                annotations={
                    names.TRUST_HASH_ANNOTATION: hash_,
                    names.REVOKED_ANNOTATION: trust_union.revoked_annotation(union),
                    names.SOURCES_ANNOTATION: trust.render_sources(union.sources(data)),
                    **encoded.annotations,
                    **trust_formats.config_maps_annotation(wanted, existing),
                },
                existing=existing,
                # An existing Secret may hold the endpoint's own keys beside ca.crt: they are not ours.
                only_keys=True,
                # Truststores that no longer hold what ca.crt holds, or are no longer asked for.
                remove=encoded.remove,
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
            if restored:
                message = f"trust Secret {secret_name} was edited by hand ({'; '.join(restored)}); restored"
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
        naming: dict[str, set[str]] = {}
        for name, (spec, _) in contributors.items():
            if spec.trust.config_map is not None:
                naming.setdefault(spec.trust.config_map.name, set()).add(name)
        not_taken = trust_formats.write_config_maps(
            ctx,
            namespace,
            wanted,
            data,
            encoded,
            hash_,
            changed=written is not None,
            before=existing,
            recorded=config_maps,
            elsewhere=elsewhere,
            naming=naming,
        )
        return Written(hash_, tuple(union.unreadable), refused, encoded.problem, "; ".join(not_taken) or None)
    raise AssertionError("unreachable")


def _restored(
    existing: secrets.SecretData | None, old: bytes, union: trust_union.Union, encoded: trust_formats.Encoded
) -> list[str]:
    """What of the trust Secret was found edited by hand: each is put back by this write, with an Event."""
    found: list[str] = []
    recorded_hash = existing.annotations.get(names.TRUST_HASH_ANNOTATION) if existing is not None else None
    if recorded_hash is not None and trust.trust_hash(old) != recorded_hash:
        found.append("ca.crt restored from the statuses")
    for name, fingerprints in sorted(union.unvouched.items()):
        found.append(
            f"its sources annotation lists {name}, which does not exist and has no key Secret holding "
            f"{', '.join(fp[:16] for fp in fingerprints)}: removed"
        )
    if encoded.restored:
        found.append(f"{', '.join(encoded.restored)} held other certificates than ca.crt: rewritten")
    return found


def sweep(p: state.Pass) -> None:
    """Rewrite every other trust Secret this object ever wrote (after an emergency).

    Found first by the status's record of the trust Secrets it wrote (which only the operator writes),
    then by their sources annotation (which a store's editor can change): a trust Secret used before
    ``spec.trust.secretName`` moved loses the compromised certificate too, in every form, and its
    revoked annotation keeps it out.
    """
    ns = p.resource.namespace
    recorded = {record.secret_name for record in p.status.trust.stores} if p.status.trust is not None else set()
    listed = {
        secret.name
        for secret in p.view.trust_secrets(ns)
        if p.resource.name in trust.parse_sources(secret.annotations.get(names.SOURCES_ANNOTATION, ""))
    }
    failed: Exception | None = None
    # Each store on its own: one that cannot be written (immutable, refused) must not keep the others
    # trusting the certificate. A store only its own annotation names (anyone who may edit it can add
    # the name) is tried, never waited for: it must not block the replacement for good.
    for name in sorted((recorded | listed) - {p.spec.trust.secret_name}):
        try:
            write(p.ctx, p.view, ns, name)
        except Exception as exc:
            logger.warning(
                "%s/%s: trust Secret %s could not be rewritten after the emergency: %s",
                ns,
                p.resource.name,
                name,
                type(exc).__name__,
            )
            if name in recorded and failed is None:
                failed = exc
    if failed is not None:
        raise failed


def _stores(p: state.Pass) -> list[models.TrustStoreRecord]:
    """The status's record of the trust Secrets written, with what this pass asked of the present one."""
    trust_spec = p.spec.trust
    records = list(p.status.trust.stores) if p.status.trust is not None else []
    before = p.status.trust.secret_name if p.status.trust is not None else None
    if before is not None and all(r.secret_name != before for r in records):
        # Recorded by a version that kept no list: the Secret used before is known all the same.
        records.append(models.TrustStoreRecord(secret_name=before))
    formats = trust_spec.additional_formats
    keys = [s.key for s in (formats.pkcs12, formats.jks) if s is not None] if formats is not None else []
    config_maps = [trust_spec.config_map.name] if trust_spec.config_map is not None else []
    present = next((r for r in records if r.secret_name == trust_spec.secret_name), None)
    if present is None:
        present = models.TrustStoreRecord(secret_name=trust_spec.secret_name)
        records.insert(0, present)
    updated = models.TrustStoreRecord(
        secret_name=present.secret_name,
        keys=sorted({*present.keys, *keys}),
        config_maps=sorted({*present.config_maps, *config_maps}),
    )
    records = [updated if r is present else r for r in records]
    return records[:STORES_MAX]


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
    elif written.not_consented is not None:
        p.set_condition(names.TRUST_STORE_INCOMPLETE, "True", "ConsentRequired", written.not_consented)
    elif written.formats is not None:
        p.set_condition(names.TRUST_STORE_INCOMPLETE, "True", "TruststoreNotWritten", written.formats)
    else:
        p.drop_condition(names.TRUST_STORE_INCOMPLETE)
    _moved_from(p)
    recorded = models.TrustStatus(secret_name=p.spec.trust.secret_name, hash=hash_, stores=_stores(p))
    if p.status.trust != recorded:
        p.update(trust=recorded.model_dump())
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

"""What one trust Secret should hold: the union of what the WebhookCertificates naming it trust.

A certificate stays only while some status records it, with exceptions that keep the provider's
certificate trusted when its object cannot speak for it. The trust Secret's own bookkeeping (its
``webhookcerts.io/sources`` annotation) says which object put which certificate there; it is a hint,
never enough on its own: anyone who can edit the Secret can edit it. So an entry for an object that is
gone (deleted under ``deletionPolicy: Retain``) keeps a certificate only while a key Secret the
operator wrote for that object (its labels and owner annotation) still holds it: under ``Retain`` the
key Secret outlives the object, and a certificate added by hand with a made-up entry has none.
"""

from __future__ import annotations

import dataclasses

from webhookcerts.domain import models, names, pki, trust
from webhookcerts.kube import secrets
from webhookcerts.service import state, view

# All annotations of an object together may hold 256 KiB; the revoked list keeps well inside it.
REVOKED_ANNOTATION_MAX = 128 * 1024

Contributors = dict[str, tuple[models.WebhookCertificateSpec, models.WebhookCertificateStatus]]


@dataclasses.dataclass
class Union:
    data: bytes
    revoked: set[str]
    recorded_revoked: set[str]
    # What each object offers the store, and whether it stays once that object is gone.
    offered: dict[str, tuple[list[str | bytes], bool]]
    unreadable: list[str]
    # Certificates the store held under a sources entry nothing vouches for (a forged one): dropped.
    unvouched: dict[str, list[str]]

    def sources(self, data: bytes) -> dict[str, trust.Source]:
        """The sources annotation for ``data`` (the union, or what the size limit left of it)."""
        kept = set(trust.fingerprints_of([data]))
        return {
            name: trust.Source(tuple(sorted(set(trust.fingerprints_of(pems)) & kept)), retain)
            for name, (pems, retain) in self.offered.items()
        }


def retained_key_certificates(seen: view.View, namespace: str, owner: str) -> set[str]:
    """The fingerprints the key Secrets the operator wrote for ``owner`` hold (all that outlive it)."""
    found: set[str] = set()
    for secret in seen.namespace_secrets(namespace):
        if (
            secret.labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY
            and secret.labels.get(names.ROLE_LABEL) in ("key", "next")
            and secret.annotations.get(names.OWNER_ANNOTATION) == owner
            and names.TLS_CERT in secret.data
        ):
            try:
                found.add(pki.inspect(secret.data[names.TLS_CERT]).fingerprint)
            except pki.InvalidKeyMaterial:
                continue
    return found


def union(
    ctx: state.Context,
    seen: view.View,
    namespace: str,
    existing: secrets.SecretData | None,
    contributors: Contributors,
    unreadable_names: list[str],
) -> Union:
    """The store's content, its revoked fingerprints and where each certificate came from.

    An object gone under ``deletionPolicy: Retain`` keeps what it had (until it expires); one of that
    name that records no current certificate yet (re-created, about to adopt its key) keeps it too;
    and one that cannot be read (a status or spec of another schema version, a damaged certificate)
    keeps exactly what the store held for it. Each of these is kept on the store's word, so only while
    a key Secret of that object holds the certificate. The store fails closed: it never drops a
    neighbour's certificate because that neighbour is unreadable, and never blocks a revocation either.
    An object that names another trust Secret now takes its certificates out of this one; its revoked
    fingerprints still apply here. Revoked always wins.
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
    unvouched: dict[str, list[str]] = {}

    def vouched(name: str, fingerprints: list[str]) -> list[str]:
        """Those of ``fingerprints`` a key Secret of ``name`` holds; the others are noted as unvouched."""
        keys = retained_key_certificates(seen, namespace, name)
        dropped = [fp for fp in fingerprints if fp not in keys]
        if dropped:
            unvouched[name] = dropped
        return [fp for fp in fingerprints if fp in keys]

    def as_held(name: str) -> list[str | bytes]:
        # Kept on the store's word for an object that cannot say it itself: its key Secret must agree.
        if name in listed:
            return [held[fp][0] for fp in vouched(name, [fp for fp in listed[name].fingerprints if fp in held])]
        # A store written before sources were recorded: every certificate no known source claims.
        claimed = {fp for source in listed.values() for fp in source.fingerprints}
        return [held[fp][0] for fp in vouched(name, [fp for fp in held if fp not in claimed])]

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
        if not source.retain:
            continue
        kept = vouched(name, [fp for fp in source.fingerprints if fp in held])
        offered[name] = ([held[fp][0] for fp in kept if held[fp][1] > now], True)
    revoked |= recorded
    data = trust.assemble([pem for pems, _ in offered.values() for pem in pems], revoked)
    return Union(data, revoked, recorded, offered, unreadable, unvouched)


def revoked_annotation(union: Union) -> str:
    """The audit list of revoked fingerprints, bounded: past the bound it keeps those a status records.

    What is left out can still never return: a certificate comes into the store only from a status
    (which keeps its own revoked list) or from a source this store listed, and revoked ones are never
    listed.
    """
    text = ",".join(sorted(union.revoked))
    if len(text) <= REVOKED_ANNOTATION_MAX:
        return text
    return ",".join(sorted(union.recorded_revoked))[:REVOKED_ANNOTATION_MAX].rsplit(",", 1)[0]

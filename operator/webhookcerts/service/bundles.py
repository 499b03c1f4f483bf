"""The password-protected bundles to submit to the provider: PKCS#12 and PEM pairs in one Secret.

A bundle holds the current certificate (unless compromised) and a pending next, as status records
them: each taken from its key Secret only when that Secret holds the recorded certificate, so a stale
or foreign key is never packaged. An object that is not Ready leaves its bundle as it is (a Secret
gone missing must not make the bundle drop a certificate the provider may still need). It is rebuilt when
those certificates change or when the password Secret changes (cert-manager #3450): the bundle
Secret records the password Secret's uid and resourceVersion with the fingerprints it was built from.
The password Secret belongs to the user and is not watched, so an unchanged bundle reads it at most
once per ``bundle_recheck_seconds``: idle passes cost no API call.
"""

from __future__ import annotations

import hashlib
import time

from webhookcerts.domain import conditions, models, names, pki, policy
from webhookcerts.kube import secrets
from webhookcerts.service.state import Pass

PASSWORD_RETRY = 15.0


def _sources(p: Pass) -> list[tuple[pki.Role, str, secrets.SecretData]]:
    """The key Secrets worth submitting: the recorded current one (unless compromised) and a pending next."""
    assert p.last is not None
    current, pending = p.status.current, p.status.next
    candidates: list[
        tuple[pki.Role, models.CertificateRecord | None, policy.SecretObservation, secrets.SecretData | None]
    ] = [
        (
            "current",
            current if current is not None and not current.compromised_by else None,
            p.last.current_secret,
            p.current_raw,
        ),
        ("next", pending, p.last.next_secret, p.next_raw),
    ]
    return [
        (role, seen.info.fingerprint, raw)
        for role, record, seen, raw in candidates
        if record is not None
        and seen.info is not None
        and raw is not None
        and seen.info.fingerprint == record.fingerprint
    ]


def sync(p: Pass) -> None:
    assert p.spec.bundle is not None
    ready = conditions.get(p.status.conditions, names.READY)
    if ready is None or ready.status != "True":
        return
    ns, name = p.resource.namespace, p.spec.bundle_secret_name
    sources = _sources(p)
    fingerprints = tuple(fp for _, fp, _ in sources)
    existing = p.view.secret(ns, name)
    checked = p.ctx.bundle_checks.get((ns, p.resource.name))
    if (
        existing is not None
        and checked is not None
        and checked[0] == fingerprints
        and time.monotonic() - checked[1] < p.ctx.bundle_recheck_seconds
        and p.status.bundle is not None
    ):
        return
    ref = p.spec.bundle.password_secret_ref
    password_secret = secrets.read(p.ctx.clients, ns, ref.name)
    if password_secret is None or not password_secret.data.get(ref.key):
        if password_secret is None:
            what, reason = f"Secret {ref.name} does not exist", "PasswordSecretNotFound"
        elif ref.key not in password_secret.data:
            what, reason = f"Secret {ref.name} has no key {ref.key!r}", "PasswordSecretNotFound"
        else:
            what, reason = f"the password in Secret {ref.name} (key {ref.key!r}) is empty", "PasswordEmpty"
        p.set_condition(
            names.BUNDLE_READY,
            "False",
            reason,
            f"{what}: put the bundle password there; no bundle is written without one",
        )
        p.ctx.bundle_checks.pop((ns, p.resource.name), None)
        # The password Secret is not watched: look again soon, as a user is likely creating it now.
        p.requeue_after = min(p.requeue_after or PASSWORD_RETRY, PASSWORD_RETRY)
        return
    password = password_secret.data[ref.key]
    source_id = hashlib.sha256(
        "/".join([password_secret.uid, password_secret.resource_version, *fingerprints]).encode()
    ).hexdigest()
    if existing is not None and existing.annotations.get(names.BUNDLE_SOURCE_ANNOTATION) == source_id:
        files = sorted(existing.data)
    else:
        data: dict[str, bytes] = {}
        for role, _, secret in sources:
            data.update(
                pki.bundle_files(
                    p.spec.environment,
                    p.resource.name,
                    secret.data[names.TLS_KEY],
                    secret.data[names.TLS_CERT],
                    password,
                    role,
                )
            )
        p.write_secret(
            name,
            role="bundle",
            basis=existing,
            type=secrets.OPAQUE,
            data=data,
            annotations={names.BUNDLE_SOURCE_ANNOTATION: source_id},
        )
        files = sorted(data)
        p.event(
            "Normal",
            "BundleWritten",
            f"password-protected bundle for {p.spec.environment} written to Secret {name}: {', '.join(files)}",
        )
    p.ctx.bundle_checks[(ns, p.resource.name)] = (fingerprints, time.monotonic())
    p.update(bundle={"secret_name": name, "files": files})
    p.set_condition(names.BUNDLE_READY, "True", "BundleWritten", f"Secret {name} holds {len(files)} files")

"""The password-protected bundles to submit to the provider: PKCS#12 and PEM pairs in one Secret.

A bundle holds the files of the current certificate (unless compromised) and of a pending next, as
status records them, whatever the object's readiness: after an emergency the current key Secret is
often the thing that is gone or damaged, and the replacement's files are exactly what the user needs.
Each certificate's files are written from its key Secret only when that Secret holds the recorded
certificate, so a stale or foreign key is never packaged. When it does not (missing, corrupt,
replaced), the files already in the bundle for that certificate are kept as they are, if their
certificate is the recorded one: a Secret gone missing must not make the bundle drop a certificate the
provider may still need. Files of anything else (a compromised current, a certificate retired at
cut-over) leave the bundle, even while the password Secret is missing, as removing needs no password.

It is rebuilt when those certificates change or when the password Secret changes (cert-manager #3450):
the bundle Secret records the password Secret's uid and resourceVersion with the fingerprints it was
built from. Kept files cannot be encrypted again, so they are opened with the password of now, and
``BundleReady`` says when they need the earlier one. The password Secret belongs to the user and is
not watched, so an unchanged bundle reads it at most once per ``bundle_recheck_seconds``: idle passes
cost no API call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

from webhookcerts.domain import models, names, pki, policy
from webhookcerts.kube import secrets
from webhookcerts.service.state import Pass

PASSWORD_RETRY = 15.0
# What the bundle Secret records as its source once files were removed without a password to build with.
WITHDRAWN = "withdrawn"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One certificate the bundle should hold, and where its files come from."""

    role: pki.Role
    record: models.CertificateRecord
    key_secret: str
    # The key Secret, when it holds the recorded certificate: the files are written from it.
    secret: secrets.SecretData | None
    # Otherwise the files already in the bundle for this certificate, when they hold it.
    kept: dict[str, bytes]

    @property
    def source(self) -> str | None:
        """Where the files of this certificate come from: what an idle pass compares with the last one."""
        if self.secret is not None:
            return self.record.fingerprint
        return f"{self.record.fingerprint}+kept" if self.kept else None


def _kept(p: Pass, existing: secrets.SecretData | None, record: models.CertificateRecord) -> dict[str, bytes]:
    """The three files of ``record`` already in the bundle, when they are all there and hold it."""
    if existing is None:
        return {}
    stem = pki.bundle_stem(p.spec.environment, p.resource.name, record.serial)
    files = {f"{stem}{suffix}": existing.data.get(f"{stem}{suffix}", b"") for suffix in pki.BUNDLE_SUFFIXES}
    if not all(files.values()):
        return {}
    try:
        held = pki.inspect(files[f"{stem}.crt.pem"])
    except pki.InvalidKeyMaterial:
        return {}
    return files if held.fingerprint == record.fingerprint else {}


def _entries(p: Pass, existing: secrets.SecretData | None) -> list[Entry]:
    """The recorded current certificate (unless compromised) and a pending next, with their sources."""
    assert p.last is not None
    current, pending = p.status.current, p.status.next
    candidates: list[
        tuple[pki.Role, models.CertificateRecord | None, str, policy.SecretObservation, secrets.SecretData | None]
    ] = [
        (
            "current",
            current if current is not None and not current.compromised_by else None,
            p.spec.secret_name,
            p.last.current_secret,
            p.current_raw,
        ),
        ("next", pending, p.spec.next_secret_name, p.last.next_secret, p.next_raw),
    ]
    entries = []
    for role, record, key_secret, seen, raw in candidates:
        if record is None:
            continue
        holds = raw is not None and seen.info is not None and seen.info.fingerprint == record.fingerprint
        entries.append(
            Entry(
                role,
                record,
                key_secret,
                raw if holds else None,
                {} if holds else _kept(p, existing, record),
            )
        )
    return entries


def sync(p: Pass) -> None:
    assert p.spec.bundle is not None
    if p.status.current is None and p.status.next is None:
        return  # nothing issued yet
    ns, name = p.resource.namespace, p.spec.bundle_secret_name
    existing = p.view.secret(ns, name)
    entries = _entries(p, existing)
    sources = tuple(source for source in (e.source for e in entries) if source is not None)
    checked = p.ctx.bundle_checks.get((ns, p.resource.name))
    if (
        existing is not None
        and checked is not None
        and checked[0] == sources
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
        _withdraw(p, existing, entries)
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
    # Kept files were encrypted with the password of their day: check that they open with today's,
    # and that their key is their certificate's (the bundle Secret is writable by more than us).
    opens = {
        e.record.serial: pki.encrypted_key_matches(
            _suffixed(e.kept, ".key.enc.pem"), _suffixed(e.kept, ".crt.pem"), password
        )
        for e in entries
        if e.kept
    }
    usable = [e for e in entries if e.secret is not None or (e.kept and opens[e.record.serial] is not False)]
    # Kept files that open with this password are what a build from their Secret would give: a key
    # Secret going missing (or coming back) rewrites nothing. Stale ones are marked, so the bundle is
    # built again once their Secret is back.
    built_from = [
        e.record.fingerprint + ("+stale" if e.secret is None and opens[e.record.serial] is None else "") for e in usable
    ]
    source_id = hashlib.sha256(
        "/".join([password_secret.uid, password_secret.resource_version, *built_from]).encode()
    ).hexdigest()
    if existing is not None and existing.annotations.get(names.BUNDLE_SOURCE_ANNOTATION) == source_id:
        files = sorted(existing.data)
    else:
        data: dict[str, bytes] = {}
        for e in usable:
            if e.secret is None:
                data.update(e.kept)
                continue
            data.update(
                pki.bundle_files(
                    p.spec.environment,
                    p.resource.name,
                    e.secret.data[names.TLS_KEY],
                    e.secret.data[names.TLS_CERT],
                    password,
                    e.role,
                )
            )
        files = sorted(data)
        if existing is not None or data:
            p.write_secret(
                name,
                role="bundle",
                basis=existing,
                type=secrets.OPAQUE,
                data=data,
                annotations={names.BUNDLE_SOURCE_ANNOTATION: source_id},
            )
            p.event(
                "Normal",
                "BundleWritten",
                f"password-protected bundle for {p.spec.environment} written to Secret {name}: "
                f"{', '.join(files) or 'no files'}",
            )
    p.ctx.bundle_checks[(ns, p.resource.name)] = (sources, time.monotonic())
    # No Secret, and nothing to put in one: status must not list files of a bundle that is gone.
    p.update(bundle={"secret_name": name, "files": files} if existing is not None or files else None)
    _report(p, name, entries, usable, opens)


def _suffixed(files: dict[str, bytes], suffix: str) -> bytes:
    return next(content for file_name, content in files.items() if file_name.endswith(suffix))


def _withdraw(p: Pass, existing: secrets.SecretData | None, entries: list[Entry]) -> None:
    """Without a password nothing is built, but the files of what the bundle must no longer offer go."""
    if existing is None:
        return
    wanted = {
        f"{pki.bundle_stem(p.spec.environment, p.resource.name, e.record.serial)}{suffix}"
        for e in entries
        for suffix in pki.BUNDLE_SUFFIXES
    }
    data = {file_name: content for file_name, content in existing.data.items() if file_name in wanted}
    if data == existing.data:
        return
    gone = sorted(set(existing.data) - set(data))
    p.write_secret(
        existing.name,
        role="bundle",
        basis=existing,
        type=secrets.OPAQUE,
        data=data,
        annotations={names.BUNDLE_SOURCE_ANNOTATION: WITHDRAWN},
    )
    p.event("Normal", "BundleWritten", f"removed from Secret {existing.name}, no longer to submit: {', '.join(gone)}")
    p.update(bundle={"secret_name": existing.name, "files": sorted(data)})


def _report(p: Pass, name: str, entries: list[Entry], usable: list[Entry], opens: dict[str, bool | None]) -> None:
    """BundleReady: True only when every certificate to submit has its files, opening with the password."""
    current = p.status.current
    missing = [e for e in entries if e not in usable]
    stale = [e for e in usable if e.secret is None and opens.get(e.record.serial) is None]
    count = len(p.status.bundle.files) if p.status.bundle is not None else 0
    if not entries and current is not None and current.compromised_by:
        p.set_condition(
            names.BUNDLE_READY,
            "False",
            "NothingToSubmit",
            f"serial {current.serial} is compromised (incident {current.compromised_by}): its files were "
            "withdrawn; the replacement's follow once it is issued",
        )
    elif missing:
        p.set_condition(
            names.BUNDLE_READY,
            "False",
            "KeySecretUnavailable",
            "; ".join(
                f"Secret {e.key_secret} does not hold the recorded {e.role} certificate (serial {e.record.serial}): "
                f"its files are not in Secret {name} until it does"
                for e in missing
            ),
        )
    elif stale:
        p.set_condition(
            names.BUNDLE_READY,
            "False",
            "KeptWithEarlierPassword",
            "; ".join(
                f"the files of serial {e.record.serial} are kept as written before (Secret {e.key_secret} does not "
                "hold its key now) and open only with the password of then"
                for e in stale
            ),
        )
    else:
        kept = "".join(
            f"; the files of serial {e.record.serial} are kept as written before (Secret {e.key_secret} does not "
            "hold its key now)"
            for e in usable
            if e.secret is None
        )
        p.set_condition(names.BUNDLE_READY, "True", "BundleWritten", f"Secret {name} holds {count} files{kept}")

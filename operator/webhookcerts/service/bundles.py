"""The bundles to submit to the provider, in one Secret: password-protected, sealed, or both.

For each certificate: its PEM (public, always), with a password the PKCS#12 and the encrypted PEM key,
and for each of ``spec.bundle.recipients`` the PKCS#12 sealed to that public key (``recipients``,
``domain.sealing``). Every file's name starts with the certificate's stem, so what is said below of
"the files" of a certificate holds for all of them alike: written, kept and withdrawn together.

A bundle holds the files of the current certificate (unless compromised) and of a pending next, as
status records them, whatever the object's readiness: after an emergency the current key Secret is
often the thing that is gone or damaged, and the replacement's files are exactly what the user needs.
Each certificate's files are written from its key Secret only when that Secret holds the recorded
certificate, so a stale or foreign key is never packaged. When it does not (missing, corrupt,
replaced), the files already in the bundle for that certificate are kept as they are, if their
certificate is the recorded one: a Secret gone missing must not make the bundle drop a certificate the
provider may still need. Files of anything else (a compromised current, a certificate retired at
cut-over) leave the bundle, even while the password Secret is missing, as removing needs no password.

It is rebuilt when those certificates change, when the password Secret changes (cert-manager #3450) or
when a recipient's key does: the bundle Secret records the password Secret's uid and resourceVersion
and the recipients' fingerprints with the fingerprints it was built from (sealing is randomized, so an
unchanged source must write nothing). Kept files cannot be encrypted again, so they are opened with
the password of now, and ``BundleReady`` says when they need the earlier one. The password Secret
belongs to the user and is not watched, so an unchanged bundle reads it at most once per
``bundle_recheck_seconds``: idle passes cost no API call. The recipients' ConfigMaps and Secrets are
read on the same terms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

from webhookcerts.domain import models, names, pki, policy, sealing
from webhookcerts.kube import secrets
from webhookcerts.service import recipients
from webhookcerts.service.state import Pass

PASSWORD_RETRY = 15.0
CERT_SUFFIX = ".crt.pem"
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


def _sealed_names(p: Pass, stem: str) -> set[str]:
    """The sealed files the recipients of the spec give a certificate, whether or not their keys read now."""
    assert p.spec.bundle is not None
    return {sealing.file_name(stem, r.name, r.format) for r in p.spec.bundle.recipients}


def _wanted(p: Pass, stem: str) -> set[str]:
    """Every file the spec offers for one certificate: its certificate, the password trio, the sealed files."""
    assert p.spec.bundle is not None
    password = {f"{stem}{suffix}" for suffix in pki.BUNDLE_SUFFIXES} if p.spec.bundle.password_secret_ref else set()
    return {f"{stem}{CERT_SUFFIX}"} | password | _sealed_names(p, stem)


def _kept(p: Pass, existing: secrets.SecretData | None, record: models.CertificateRecord) -> dict[str, bytes]:
    """The files of ``record`` already in the bundle, when its certificate file holds it.

    The password trio only when all three are there (and the spec still asks for a password), and the
    files sealed to the spec's recipients; nothing when neither is there: a certificate alone is no
    bundle. A sealed file cannot be opened here, so it is vouched for by the certificate beside it.
    """
    if existing is None:
        return {}
    stem = pki.bundle_stem(p.spec.environment, p.resource.name, record.serial)
    try:
        held = pki.inspect(existing.data.get(f"{stem}{CERT_SUFFIX}", b""))
    except pki.InvalidKeyMaterial:
        return {}
    if held.fingerprint != record.fingerprint:
        return {}
    assert p.spec.bundle is not None
    files: dict[str, bytes] = {}
    if p.spec.bundle.password_secret_ref is not None:
        trio = {f"{stem}{suffix}": existing.data.get(f"{stem}{suffix}", b"") for suffix in pki.BUNDLE_SUFFIXES}
        if all(trio.values()):
            files.update(trio)
    files.update({n: existing.data[n] for n in _sealed_names(p, stem) if existing.data.get(n)})
    if not files:
        return {}
    files[f"{stem}{CERT_SUFFIX}"] = existing.data[f"{stem}{CERT_SUFFIX}"]
    return files


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
    password, password_problem, password_source = _password(p)
    reads = recipients.read(p)
    sealers = [r.recipient for r in reads if r.recipient is not None]
    if password is None and not sealers:
        _withdraw(p, existing, entries)
        reason, message = password_problem or next((r.reason, r.problem) for r in reads if r.problem and r.reason)
        p.set_condition(
            names.BUNDLE_READY, "False", reason, f"{message}; no bundle is written without a way to seal it"
        )
        p.ctx.bundle_checks.pop((ns, p.resource.name), None)
        # Neither is watched: look again soon, as a user is likely creating it now.
        p.requeue_after = min(p.requeue_after or PASSWORD_RETRY, PASSWORD_RETRY)
        return
    # Kept files were encrypted with the password of their day: check that they open with today's,
    # and that their key is their certificate's (the bundle Secret is writable by more than us).
    opens = {
        e.record.serial: pki.encrypted_key_matches(
            _suffixed(e.kept, ".key.enc.pem"), _suffixed(e.kept, CERT_SUFFIX), password
        )
        if password is not None and any(n.endswith(".key.enc.pem") for n in e.kept)
        else None
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
    # Sealing draws fresh randomness: the same inputs must give the same id, or every pass rewrites.
    parts = [*password_source, *([recipients.source_digest(reads)] if reads else [])]
    source_id = hashlib.sha256("/".join([*parts, *built_from]).encode()).hexdigest()
    if existing is not None and existing.annotations.get(names.BUNDLE_SOURCE_ANNOTATION) == source_id:
        files = sorted(existing.data)
    else:
        data: dict[str, bytes] = {}
        for e in usable:
            data.update(e.kept if e.secret is None else _build(p, existing, e, password, sealers))
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
                f"bundle for {p.spec.environment} written to Secret {name}: {', '.join(files) or 'no files'}",
            )
    p.ctx.bundle_checks[(ns, p.resource.name)] = (sources, time.monotonic())
    # No Secret, and nothing to put in one: status must not list files of a bundle that is gone.
    p.update(bundle={"secret_name": name, "files": files} if existing is not None or files else None)
    _report(p, name, entries, usable, opens, password_problem, reads)
    recipients.report_expiry(p, reads, [e.record for e in usable])


def _password(p: Pass) -> tuple[bytes | None, tuple[str, str] | None, list[str]]:
    """The bundle password, or why there is none; and what a rebuild compares (the Secret's version)."""
    assert p.spec.bundle is not None
    ref = p.spec.bundle.password_secret_ref
    if ref is None:
        return None, None, []
    found = secrets.read(p.ctx.clients, p.resource.namespace, ref.name)
    if found is not None and found.data.get(ref.key):
        return found.data[ref.key], None, [found.uid, found.resource_version]
    if found is None:
        what, reason = f"Secret {ref.name} does not exist", "PasswordSecretNotFound"
    elif ref.key not in found.data:
        what, reason = f"Secret {ref.name} has no key {ref.key!r}", "PasswordSecretNotFound"
    else:
        what, reason = f"the password in Secret {ref.name} (key {ref.key!r}) is empty", "PasswordEmpty"
    problem = f"{what}: put the bundle password there; no password-protected file is written without one"
    return None, (reason, problem), ["no-password"]


def _build(
    p: Pass,
    existing: secrets.SecretData | None,
    e: Entry,
    password: bytes | None,
    sealers: list[sealing.Recipient],
) -> dict[str, bytes]:
    """One certificate's files from its key Secret: the password trio, or its certificate, and each sealed file.

    What cannot be written now (no password, a recipient whose key does not read) is carried over from
    the bundle when it is there for this very certificate: a problem on the user's side loses nothing.
    """
    assert e.secret is not None
    key_pem, cert_pem = e.secret.data[names.TLS_KEY], e.secret.data[names.TLS_CERT]
    stem = pki.bundle_stem(p.spec.environment, p.resource.name, e.record.serial)
    data = dict(_kept(p, existing, e.record))
    if password is not None:
        data.update(pki.bundle_files(p.spec.environment, p.resource.name, key_pem, cert_pem, password, e.role))
    else:
        data[f"{stem}{CERT_SUFFIX}"] = pki.check_key_pair(key_pem, cert_pem).pem.encode()
    if sealers:
        plaintext = sealing.content(stem, key_pem, cert_pem)
        for recipient in sealers:
            data[sealing.file_name(stem, recipient.name, recipient.format)] = sealing.seal(recipient, plaintext)
    return data


def _suffixed(files: dict[str, bytes], suffix: str) -> bytes:
    return next(content for file_name, content in files.items() if file_name.endswith(suffix))


def _withdraw(p: Pass, existing: secrets.SecretData | None, entries: list[Entry]) -> None:
    """With nothing to build with nothing is built, but the files of what the bundle must no longer offer go."""
    if existing is None:
        return
    wanted = set().union(
        *(_wanted(p, pki.bundle_stem(p.spec.environment, p.resource.name, e.record.serial)) for e in entries)
    )
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


def _report(
    p: Pass,
    name: str,
    entries: list[Entry],
    usable: list[Entry],
    opens: dict[str, bool | None],
    password_problem: tuple[str, str] | None,
    reads: list[recipients.Read],
) -> None:
    """BundleReady: True only when every certificate to submit has all its files, each opening as it should."""
    current = p.status.current
    # A kept certificate lacks what was added since its key Secret went (a recipient, a password).
    gaps = {e.record.serial: _lacking(p, e, password_problem is None, reads) for e in usable if e.secret is None}
    missing = [e for e in entries if e not in usable or gaps.get(e.record.serial)]
    stale = [e for e in usable if e.secret is None and opens.get(e.record.serial) is None and _has_password(e)]
    count = len(p.status.bundle.files) if p.status.bundle is not None else 0
    refused = [r for r in reads if r.problem is not None and r.reason is not None]
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
                f"{_which(gaps.get(e.record.serial))} not in Secret {name} until it does"
                for e in missing
            ),
        )
    elif password_problem is not None:
        reason, message = password_problem
        p.set_condition(names.BUNDLE_READY, "False", reason, f"{message}; the sealed files are written")
    elif refused:
        p.set_condition(
            names.BUNDLE_READY,
            "False",
            refused[0].reason or "RecipientKeyInvalid",
            "; ".join(r.problem or "" for r in refused) + "; the other files are written, and files already "
            "sealed to it are kept",
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


def _lacking(p: Pass, e: Entry, with_password: bool, reads: list[recipients.Read]) -> list[str]:
    """The files a kept certificate should have by the spec of now and does not."""
    stem = pki.bundle_stem(p.spec.environment, p.resource.name, e.record.serial)
    wanted = {sealing.file_name(stem, r.spec.name, r.spec.format) for r in reads if r.recipient is not None}
    if with_password and p.spec.bundle is not None and p.spec.bundle.password_secret_ref is not None:
        wanted |= {f"{stem}{suffix}" for suffix in pki.BUNDLE_SUFFIXES}
    return sorted(wanted - set(e.kept))


def _which(lacking: list[str] | None) -> str:
    return f"{', '.join(lacking)} are" if lacking else "its files are"


def _has_password(e: Entry) -> bool:
    return any(file_name.endswith(".key.enc.pem") for file_name in e.kept)

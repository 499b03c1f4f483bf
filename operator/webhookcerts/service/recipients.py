"""The provider's public keys a bundle is sealed to (``spec.bundle.recipients``), read and checked.

Admission can check a recipient's shape (a DNS label, cms or openpgp, exactly one of configMapRef and
secretRef) but not its key: that lives in a ConfigMap or Secret of the user's, which may not exist yet
and may change at any time. So the key is read here, when a bundle is built, and checked by
``domain.sealing``; a recipient that cannot be used becomes ``BundleReady=False`` with the reason, and
costs nothing else: the password files and every other recipient's files are written, and files
already sealed to it for a certificate still offered are kept. Like the password Secret, these are not
watched: an unchanged bundle reads them once per ``bundle_recheck_seconds``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

from webhookcerts.domain import models, names, sealing
from webhookcerts.kube import configmaps, secrets
from webhookcerts.service.state import Pass

# The condition saying a recipient's key expires before a certificate sealed to it does.
EXPIRES_BEFORE_CERTIFICATE = "ExpiresBeforeCertificate"


@dataclasses.dataclass(frozen=True)
class Read:
    """One recipient as this pass found it: a key to seal to, or why there is none."""

    spec: models.BundleRecipient
    recipient: sealing.Recipient | None
    reason: str | None
    problem: str | None

    @property
    def source(self) -> str:
        """What a rebuild compares: the key's fingerprint, or the reason there is none."""
        if self.recipient is not None:
            return f"{self.spec.name}:{self.spec.format}:{self.recipient.fingerprint}"
        return f"{self.spec.name}:{self.reason}"


def read(p: Pass) -> list[Read]:
    assert p.spec.bundle is not None
    return [_read_one(p, spec) for spec in p.spec.bundle.recipients]


def _read_one(p: Pass, spec: models.BundleRecipient) -> Read:
    ns = p.resource.namespace
    if spec.secret_ref is not None:
        ref, kind = spec.secret_ref, "Secret"
        found = secrets.read(p.ctx.clients, ns, ref.name)
        data = None if found is None else found.data.get(ref.key)
        exists = found is not None
    else:
        assert spec.config_map_ref is not None
        ref, kind = spec.config_map_ref, "ConfigMap"
        held = configmaps.read(p.ctx.clients, ns, ref.name)
        exists = held is not None
        data = None
        if held is not None:
            text = held.data.get(ref.key)
            data = text.encode() if text is not None else held.binary.get(ref.key)
    where = f"recipient {spec.name} ({spec.format}, {kind} {ref.name} key {ref.key!r})"
    if not exists or not data:
        what = "does not exist" if not exists else "has no such key, or it is empty"
        return Read(
            spec,
            None,
            "RecipientKeyNotFound",
            f"{where}: the {kind} {what}; put the provider's public key there",
        )
    try:
        recipient = sealing.load(spec.name, spec.format, data, p.now)
    except sealing.RecipientRefused as exc:
        return Read(spec, None, "RecipientKeyInvalid", f"{where} {exc.reason}: {exc}")
    return Read(spec, recipient, None, None)


def sources(reads: list[Read]) -> list[str]:
    return [r.source for r in reads]


def source_digest(reads: list[Read]) -> str:
    return hashlib.sha256("/".join(sources(reads)).encode()).hexdigest()


def report_expiry(p: Pass, reads: list[Read], records: list[models.CertificateRecord]) -> None:
    """A Warning condition when a recipient's key expires before a certificate sealed to it."""
    if not records:
        return
    last = max(r.not_after for r in records)
    soon = [
        (r.spec.name, r.recipient.not_after)
        for r in reads
        if r.recipient is not None and r.recipient.not_after is not None and r.recipient.not_after < last
    ]
    if not soon:
        p.drop_condition(names.RECIPIENT_KEY_EXPIRING)
        return
    p.set_condition(
        names.RECIPIENT_KEY_EXPIRING,
        "True",
        EXPIRES_BEFORE_CERTIFICATE,
        "; ".join(
            f"recipient {name}'s key expires at {_iso(when)}, before the certificate sealed to it "
            f"(valid until {_iso(last)}): ask the provider for its next key and add it as a recipient"
            for name, when in soon
        ),
    )


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""The endpoint's trust store: a pure function from what each WebhookCertificate trusts to ``ca.crt`` bytes.

Several WebhookCertificates may share one trust Secret, and each reconcile rewrites it. If the bytes
depended on the order of a list call or of the PEMs, every reconcile would change the Secret and roll
the consumers for nothing. So the content is canonical: each certificate re-encoded, duplicates and
revoked ones dropped, sorted by fingerprint. Same input, same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhookcerts.domain import models, pki

KEY = "ca.crt"


def _certificates(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise pki.InvalidKeyMaterial("SecretCorrupted", "a trusted certificate is not readable PEM") from None


# What the store holds when it trusts nobody (an emergency contained before its replacement exists, the
# last WebhookCertificate naming it deleted). An empty file is refused as unusable by nginx, by the
# reference receiver and by most TLS servers, which then keep trusting what they trusted before: the
# compromised certificate. This one parses everywhere and admits no client: it expired on 2000-01-02
# and its (ECDSA P-256) key was thrown away when it was made.
PLACEHOLDER_PEM = b"""-----BEGIN CERTIFICATE-----
MIIBtzCCAV2gAwIBAgIBATAKBggqhkjOPQQDAjBcMRUwEwYDVQQKDAx3ZWJob29r
Y2VydHMxQzBBBgNVBAMMOndlYmhvb2tjZXJ0cyBwbGFjZWhvbGRlcjogbm8gY2xp
ZW50IGNlcnRpZmljYXRlIGlzIHRydXN0ZWQwHhcNMDAwMTAxMDAwMDAwWhcNMDAw
MTAyMDAwMDAwWjBcMRUwEwYDVQQKDAx3ZWJob29rY2VydHMxQzBBBgNVBAMMOndl
Ymhvb2tjZXJ0cyBwbGFjZWhvbGRlcjogbm8gY2xpZW50IGNlcnRpZmljYXRlIGlz
IHRydXN0ZWQwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATmlsWr+33ZWTWI+UEa
B51DKVLxc9hY9oY/NLMcFMjIEqRVZv+heQIVv1FkMtJJTFuBuVcFg1w5LDYF3Vf6
cr+7oxAwDjAMBgNVHRMBAf8EAjAAMAoGCCqGSM49BAMCA0gAMEUCIQDtKjhQXpHn
gOqLYi5jH704b3piHiei28KtjX/zMOi/7AIgZSzKWdjQb2BkVQ9Q9Y6EGCdWxoaM
Gh3ElYPcA4epzH0=
-----END CERTIFICATE-----
"""
PLACEHOLDER_FINGERPRINT = pki.fingerprint(x509.load_pem_x509_certificate(PLACEHOLDER_PEM))


def assemble(certificate_pems: Iterable[str | bytes], revoked: Iterable[str] = ()) -> bytes:
    """Concatenate the canonical PEM of every certificate, each once, none revoked, sorted by fingerprint;
    the placeholder when none is left."""
    dropped = {pki.normalize_fingerprint(f) for f in revoked}
    by_fingerprint: dict[str, bytes] = {}
    for pem in certificate_pems:
        for cert in _certificates(pem):
            fp = pki.fingerprint(cert)
            if fp not in dropped and fp != PLACEHOLDER_FINGERPRINT:
                by_fingerprint[fp] = cert.public_bytes(serialization.Encoding.PEM)
    if not by_fingerprint:
        return PLACEHOLDER_PEM
    return b"".join(by_fingerprint[fp] for fp in sorted(by_fingerprint))


def trust_hash(data: bytes) -> str:
    """The value of the ``webhookcerts.io/trust-hash`` annotation: consumers roll when it changes."""
    return hashlib.sha256(data).hexdigest()


def trusted_certificates(status: models.WebhookCertificateStatus, spec: models.WebhookCertificateSpec) -> list[str]:
    """The PEMs one WebhookCertificate asks the endpoint to accept now.

    Active: current. Rotating: current and next, so deliveries with either succeed during the overlap.
    Compromised: next only under ``RevokeImmediately``; a retired or revoked fingerprint never returns.
    """
    revoked = {pki.normalize_fingerprint(f) for f in status.revoked_fingerprints}
    records: list[models.CertificateRecord] = []
    current = status.current
    if current is not None and not (
        current.compromised_by is not None and spec.emergency_policy == "RevokeImmediately"
    ):
        records.append(current)
    if status.next is not None:
        records.append(status.next)
    trusted = []
    for record in records:
        # The record's own fingerprint and the one of the PEM it carries: a hand-edited status must not
        # smuggle a revoked certificate back in under a different label.
        actual = {pki.fingerprint(cert) for cert in _certificates(record.certificate)}
        if pki.normalize_fingerprint(record.fingerprint) in revoked or actual & revoked:
            continue
        trusted.append(record.certificate)
    return trusted


# --- where each certificate of a store came from -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """What one WebhookCertificate put into a trust store, and whether it stays once that object is gone."""

    fingerprints: tuple[str, ...]
    retain: bool


def parse_sources(text: str) -> dict[str, Source]:
    """The ``webhookcerts.io/sources`` annotation; an unreadable one (edited by hand) reads as empty."""
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    found: dict[str, Source] = {}
    for name, entry in raw.items():
        if isinstance(entry, dict) and isinstance(entry.get("fingerprints"), list):
            fps = tuple(str(f) for f in entry["fingerprints"])
            found[str(name)] = Source(fps, bool(entry.get("retain", True)))
    return found


def render_sources(sources: dict[str, Source]) -> str:
    # Canonical, like the store itself: the same sources never rewrite the Secret.
    return json.dumps(
        {
            n: {"fingerprints": sorted(s.fingerprints), "retain": s.retain}
            for n, s in sorted(sources.items())
            if s.fingerprints
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def certificates_by_fingerprint(data: bytes) -> dict[str, tuple[bytes, datetime.datetime]]:
    """The certificates a store holds, by fingerprint, with their expiry; the placeholder left out.

    A store edited into something unreadable holds nothing worth keeping: it reads as empty (its next
    write restores it from the statuses), never as an error that would block that write.
    """
    if not data.strip():
        return {}
    try:
        certificates = _certificates(data)
    except pki.InvalidKeyMaterial:
        return {}
    found: dict[str, tuple[bytes, datetime.datetime]] = {}
    for cert in certificates:
        fp = pki.fingerprint(cert)
        if fp != PLACEHOLDER_FINGERPRINT:
            found[fp] = (cert.public_bytes(serialization.Encoding.PEM), cert.not_valid_after_utc)
    return found


def fingerprints_of(pems: Iterable[str | bytes]) -> list[str]:
    return [pki.fingerprint(cert) for pem in pems for cert in _certificates(pem)]

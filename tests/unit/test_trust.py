"""The trust store is a pure function: same certificates in, same bytes out, revoked ones never."""

from __future__ import annotations

import datetime
import hashlib
import itertools
import pathlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhookcerts.domain import models, pki, trust

NOW = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)


def _certificate(name: str) -> str:
    # Trust assembly does not care about the key type; EC keys keep these tests fast.
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def certs() -> list[str]:
    return [_certificate(f"cert-{i}") for i in range(3)]


def _fingerprint(pem: str) -> str:
    return pki.fingerprint(x509.load_pem_x509_certificate(pem.encode()))


def _listed(data: bytes) -> list[str]:
    return [pki.fingerprint(c) for c in x509.load_pem_x509_certificates(data)]


def test_every_order_gives_the_same_bytes(certs: list[str]) -> None:
    outputs = {trust.assemble(order) for order in itertools.permutations(certs)}
    assert len(outputs) == 1
    (data,) = outputs
    assert _listed(data) == sorted(_fingerprint(c) for c in certs)


def test_formatting_of_the_input_does_not_change_the_output(certs: list[str]) -> None:
    canonical = trust.assemble(certs)
    messy: list[str | bytes] = [
        certs[0].replace("\n", "\r\n"),
        "a note before the PEM\n" + certs[1] + "\n\n",
        certs[2].encode(),
    ]
    assert trust.assemble(messy) == canonical


def test_duplicates_appear_once(certs: list[str]) -> None:
    assert trust.assemble([certs[0], certs[1], certs[0], certs[1]]) == trust.assemble(certs[:2])


def test_one_input_may_hold_several_certificates(certs: list[str]) -> None:
    assert trust.assemble(["".join(certs)]) == trust.assemble(certs)


def test_revoked_fingerprints_are_dropped_in_either_notation(certs: list[str]) -> None:
    revoked = _fingerprint(certs[1])
    colon_form = ":".join(revoked[i : i + 2] for i in range(0, len(revoked), 2)).upper()
    for notation in (revoked, colon_form):
        data = trust.assemble(certs, [notation])
        assert revoked not in _listed(data)
        assert len(_listed(data)) == 2


def test_a_store_that_trusts_nobody_holds_only_the_placeholder(certs: list[str], tmp_path: pathlib.Path) -> None:
    # Never an empty file: servers refuse to load one and keep trusting what they trusted before.
    assert trust.assemble([]) == trust.PLACEHOLDER_PEM
    assert trust.assemble(certs[:1], [_fingerprint(certs[0])]) == trust.PLACEHOLDER_PEM
    # The placeholder never joins real certificates, even when a status carries it.
    assert trust.PLACEHOLDER_FINGERPRINT not in _listed(trust.assemble([*certs, trust.PLACEHOLDER_PEM.decode()]))
    # openssl loads it as a trust store, and it admits no client: it expired long ago.
    store = tmp_path / "ca.crt"
    store.write_bytes(trust.assemble([]))
    placeholder = tmp_path / "placeholder.crt"
    placeholder.write_bytes(trust.PLACEHOLDER_PEM)
    done = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(store), str(placeholder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "certificate has expired" in done.stdout + done.stderr


def test_unreadable_input_is_refused() -> None:
    with pytest.raises(pki.InvalidKeyMaterial, match="not readable"):
        trust.assemble(["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])


def test_trust_hash_is_the_sha256_of_the_bytes(certs: list[str]) -> None:
    assert trust.trust_hash(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    data = trust.assemble(certs)
    assert trust.trust_hash(data) == hashlib.sha256(data).hexdigest()
    assert trust.trust_hash(data) != trust.trust_hash(trust.assemble(certs[:2]))


def test_openssl_reads_every_certificate_in_the_output(certs: list[str], tmp_path: pathlib.Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(trust.assemble(certs))
    result = subprocess.run(
        ["openssl", "crl2pkcs7", "-nocrl", "-certfile", str(bundle)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(
        ["openssl", "pkcs7", "-print_certs", "-noout"], input=result.stdout, capture_output=True, text=True, timeout=60
    )
    assert sorted(line for line in listing.stdout.splitlines() if line.startswith("subject=")) == [
        "subject=CN = cert-0",
        "subject=CN = cert-1",
        "subject=CN = cert-2",
    ]


# --- what one WebhookCertificate contributes -------------------------------------------------------


def _spec(policy: models.EmergencyPolicy = "RevokeImmediately") -> models.WebhookCertificateSpec:
    return models.WebhookCertificateSpec.model_validate(
        {
            "environment": "live",
            "subject": {"commonName": "acme"},
            "secretName": "acme",
            "trust": {"secretName": "acme-trust"},
            "emergencyPolicy": policy,
        }
    )


def _record(pem: str, revision: int, compromised_by: str | None = None) -> dict[str, object]:
    info = pki.inspect(pem)
    return {
        "serial": info.serial,
        "fingerprint": info.fingerprint,
        "notBefore": info.not_before,
        "notAfter": info.not_after,
        "certificate": pem,
        "secretName": "acme" if revision == 1 else "acme-next",
        "revision": revision,
        "compromisedBy": compromised_by,
    }


def _status(
    current: str | None,
    next_pem: str | None = None,
    *,
    compromised: bool = False,
    revoked: tuple[str, ...] = (),
) -> models.WebhookCertificateStatus:
    status: dict[str, object] = {"revokedFingerprints": list(revoked)}
    if current is not None:
        status["current"] = _record(current, 1, "INC-1" if compromised else None)
    if next_pem is not None:
        status["next"] = {
            **_record(next_pem, 2),
            "reason": "Emergency" if compromised else "Planned",
            "issuedAt": NOW,
        }
    return models.WebhookCertificateStatus.model_validate(status)


def test_issuing_trusts_nothing(certs: list[str]) -> None:
    assert trust.trusted_certificates(_status(None), _spec()) == []


def test_active_trusts_the_current_certificate(certs: list[str]) -> None:
    assert trust.trusted_certificates(_status(certs[0]), _spec()) == [certs[0]]


def test_rotating_trusts_current_and_next(certs: list[str]) -> None:
    assert trust.trusted_certificates(_status(certs[0], certs[1]), _spec()) == [certs[0], certs[1]]


def test_compromised_with_revoke_immediately_trusts_only_next(certs: list[str]) -> None:
    status = _status(certs[0], certs[1], compromised=True)
    assert trust.trusted_certificates(status, _spec("RevokeImmediately")) == [certs[1]]


def test_compromised_with_keep_until_cutover_trusts_both(certs: list[str]) -> None:
    status = _status(certs[0], certs[1], compromised=True)
    assert trust.trusted_certificates(status, _spec("KeepUntilCutover")) == [certs[0], certs[1]]


def test_a_revoked_fingerprint_never_returns(certs: list[str]) -> None:
    status = _status(certs[0], certs[1], revoked=(_fingerprint(certs[0]),))
    assert trust.trusted_certificates(status, _spec("KeepUntilCutover")) == [certs[1]]


def test_a_record_cannot_relabel_a_revoked_certificate(certs: list[str]) -> None:
    status = _status(certs[0], revoked=(_fingerprint(certs[0]),))
    assert status.current is not None
    relabelled = status.model_copy(update={"current": status.current.model_copy(update={"fingerprint": "00" * 32})})
    assert trust.trusted_certificates(relabelled, _spec()) == []


def test_several_resources_sharing_one_store_give_the_union(certs: list[str]) -> None:
    sandbox_like = trust.trusted_certificates(_status(certs[0], certs[1]), _spec())
    other = trust.trusted_certificates(_status(certs[2]), _spec())
    union = trust.assemble([*other, *sandbox_like])
    assert union == trust.assemble([*sandbox_like, *other])
    assert sorted(_listed(union)) == sorted(_fingerprint(c) for c in certs)

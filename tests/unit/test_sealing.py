"""Sealed bundles judged by the provider's tools, and the catalogue of recipient keys refused.

``openssl cms -decrypt`` with the provider's key and ``gpg --decrypt`` in the provider's own keyring
must yield the PKCS#12 whose key is ours and whose certificate is ours; any other key must open
nothing. Each kind of bad recipient key (garbage, a private key by mistake, RSA-2048, expired, the other
format, nothing that can encrypt) is refused with its reason and a message naming what is wrong, never
quoting the key; a good key of each format passes under the same clock (the positive control).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import pysequoia
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests import provider_keys
from webhookcerts.domain import models, pki, sealing

# Certificates are made around this instant and checked at it: nothing depends on today's date.
NOW = datetime.datetime(2031, 5, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def ours() -> pki.KeyPair:
    return pki.new_key_pair(models.Subject(common_name="hooks.example.com"), NOW, datetime.timedelta(days=365))


@pytest.fixture(scope="module")
def provider() -> Iterator[provider_keys.Gpg]:
    yield from provider_keys.gpg_home()


@pytest.fixture(scope="module")
def stranger() -> Iterator[provider_keys.Gpg]:
    yield from provider_keys.gpg_home()


@pytest.fixture(scope="module")
def cms_provider() -> tuple[bytes, bytes]:
    return provider_keys.x509_recipient(NOW)


def _opened_pkcs12(plaintext: bytes, workdir: pathlib.Path) -> tuple[bytes, bytes]:
    """The key and certificate openssl finds in a password-less PKCS#12 (the provider's next step)."""
    path = workdir / "opened.p12"
    path.write_bytes(plaintext)
    done = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-nodes", "-passin", "pass:"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    text = done.stdout.decode()
    key = text[text.index("-----BEGIN PRIVATE KEY-----") : text.index("-----END PRIVATE KEY-----") + 25]
    cert = text[text.index("-----BEGIN CERTIFICATE-----") : text.index("-----END CERTIFICATE-----") + 25]
    return key.encode(), cert.encode()


def _public(key_pem: bytes) -> bytes:
    return (
        serialization.load_pem_private_key(key_pem, None)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _assert_ours(plaintext: bytes, ours: pki.KeyPair, workdir: pathlib.Path) -> None:
    key, cert = _opened_pkcs12(plaintext, workdir)
    assert pki.inspect(cert).fingerprint == pki.inspect(ours.cert_pem).fingerprint
    assert _public(key) == _public(ours.key_pem)


def test_a_cms_bundle_opens_with_openssl_and_the_recipients_key_only(
    ours: pki.KeyPair, cms_provider: tuple[bytes, bytes], tmp_path: pathlib.Path
) -> None:
    provider_key, provider_cert = cms_provider
    recipient = sealing.load("upvest-live", "cms", provider_cert, NOW)
    sealed = tmp_path / sealing.file_name("live-hooks-01", "upvest-live", "cms")
    assert sealed.name == "live-hooks-01.upvest-live.p7m"
    sealed.write_bytes(sealing.seal(recipient, sealing.content("live-hooks-01", ours.key_pem, ours.cert_pem)))

    opened = provider_keys.cms_decrypt(sealed, provider_key, tmp_path)
    assert opened.returncode == 0, opened.stderr.decode(errors="replace")
    _assert_ours(opened.stdout, ours, tmp_path)
    printed = subprocess.run(
        ["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(sealed)], capture_output=True, timeout=60
    ).stdout.decode()
    assert "aes-256-cbc" in printed and "rsaEncryption" in printed

    other_key, _ = provider_keys.x509_recipient(NOW)
    wrong = provider_keys.cms_decrypt(sealed, other_key, tmp_path)
    assert wrong.returncode != 0 and b"PRIVATE KEY" not in wrong.stdout and not wrong.stdout.startswith(b"0")


@pytest.mark.parametrize("algorithm", ["rsa3072", "ed25519"])
def test_an_openpgp_bundle_opens_with_gpg_and_the_recipients_key_only(
    ours: pki.KeyPair,
    provider: provider_keys.Gpg,
    stranger: provider_keys.Gpg,
    tmp_path: pathlib.Path,
    algorithm: str,
) -> None:
    public = provider.generate(f"intake-{algorithm}@provider.example", algorithm)
    stranger.generate(f"intake-{algorithm}@stranger.example", algorithm)
    recipient = sealing.load("upvest-pgp", "openpgp", public, NOW)
    sealed = tmp_path / sealing.file_name("live-hooks-01", "upvest-pgp", "openpgp")
    assert sealed.name == "live-hooks-01.upvest-pgp.pgp"
    sealed.write_bytes(sealing.seal(recipient, sealing.content("live-hooks-01", ours.key_pem, ours.cert_pem)))

    opened = provider.decrypt(sealed)
    assert opened.returncode == 0, opened.stderr.decode(errors="replace")
    _assert_ours(opened.stdout, ours, tmp_path)

    wrong = stranger.decrypt(sealed)
    assert wrong.returncode != 0 and not wrong.stdout
    assert b"No secret key" in wrong.stderr or b"no secret key" in wrong.stderr.lower()


# --- the catalogue of keys refused -------------------------------------------------------------------

Case = Callable[[provider_keys.Gpg], tuple[sealing.Format, bytes, datetime.datetime]]


def _cms_cert(**kwargs: object) -> Case:
    return lambda _: ("cms", provider_keys.x509_recipient(NOW, **kwargs)[1], NOW)  # type: ignore[arg-type]


def _expired_openpgp(gpg: provider_keys.Gpg) -> tuple[sealing.Format, bytes, datetime.datetime]:
    public = gpg.generate("expiring@provider.example", "ed25519", expires="1y")
    expiration = pysequoia.Cert.from_bytes(public).expiration
    assert expiration is not None
    return "openpgp", public, expiration + datetime.timedelta(days=1)


def _secret_key(gpg: provider_keys.Gpg) -> bytes:
    gpg.generate("secret@provider.example", "ed25519")
    return gpg.secret_key("secret@provider.example")


CATALOGUE: dict[str, tuple[Case, sealing.Reason, str]] = {
    "cms: garbage": (lambda _: ("cms", b"hello, this is not a key", NOW), "NotAPublicKey", "not an X.509 certificate"),
    "cms: a private key by mistake": (
        lambda _: ("cms", provider_keys.x509_recipient(NOW)[0], NOW),
        "PrivateKey",
        "holds a private key",
    ),
    "cms: RSA-2048": (_cms_cert(bits=2048), "WeakKey", "RSA-2048 key: at least 3072 bits are required"),
    "cms: expired": (
        _cms_cert(starts=datetime.timedelta(days=-30), valid_for=datetime.timedelta(days=29)),
        "Expired",
        "the certificate expired at 2031-04-30T12:00:00Z",
    ),
    "cms: not yet valid": (_cms_cert(starts=datetime.timedelta(days=1)), "NotYetValid", "valid only from"),
    "cms: an EC certificate": (
        _cms_cert(curve=ec.SECP256R1()),
        "UnsupportedKey",
        "EC (secp256r1) key: CMS key transport needs an RSA key",
    ),
    "cms: an OpenPGP key": (
        lambda gpg: ("cms", gpg.generate("wrongformat@provider.example", "ed25519"), NOW),
        "WrongFormat",
        "set format: openpgp",
    ),
    "openpgp: garbage": (lambda _: ("openpgp", b"\x99\x01garbage", NOW), "NotAPublicKey", "not an OpenPGP public key"),
    "openpgp: a secret key by mistake": (
        lambda gpg: ("openpgp", _secret_key(gpg), NOW),
        "PrivateKey",
        "private key",
    ),
    "openpgp: RSA-2048": (
        lambda gpg: ("openpgp", gpg.generate("weak@provider.example", "rsa2048"), NOW),
        "WeakKey",
        "RSA-2048 key: at least 3072 bits are required",
    ),
    "openpgp: expired": (_expired_openpgp, "Expired", "expired at"),
    "openpgp: no encryption subkey": (
        lambda gpg: ("openpgp", gpg.generate_signing_only("signonly@provider.example"), NOW),
        "UnsupportedKey",
        "has no valid encryption subkey",
    ),
    "openpgp: an X.509 certificate": (
        lambda _: ("openpgp", provider_keys.x509_recipient(NOW)[1], NOW),
        "WrongFormat",
        "set format: cms",
    ),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_a_bad_recipient_key_is_refused_with_its_reason(provider: provider_keys.Gpg, case: str) -> None:
    make, reason, message = CATALOGUE[case]
    format, data, now = make(provider)
    with pytest.raises(sealing.RecipientRefused) as refused:
        sealing.load("upvest", format, data, now)
    assert refused.value.reason == reason
    assert message in str(refused.value)
    # Never the key itself, nor any line of it, in what is reported.
    assert not any(len(line) > 16 and line in str(refused.value).encode() for line in data.splitlines())


def test_good_keys_of_both_formats_pass_under_the_same_clock(
    provider: provider_keys.Gpg, cms_provider: tuple[bytes, bytes]
) -> None:
    # The positive control of the catalogue: the same checks at the same instant accept these.
    cms = sealing.load("a", "cms", cms_provider[1], NOW)
    assert cms.not_after is not None and cms.not_after > NOW
    assert sealing.load("b", "cms", cms_provider[1].decode().replace("\n", "\r\n").encode(), NOW).format == "cms"
    der = x509.load_pem_x509_certificate(cms_provider[1]).public_bytes(serialization.Encoding.DER)
    assert sealing.load("c", "cms", der, NOW).fingerprint
    pgp = sealing.load("d", "openpgp", provider.generate("good@provider.example", "rsa3072"), NOW)
    assert pgp.format == "openpgp" and pgp.not_after is None
    public = provider.generate("expiring-later@provider.example", "ed25519", expires="1y")
    expiration = pysequoia.Cert.from_bytes(public).expiration
    assert expiration is not None
    assert sealing.load("e", "openpgp", public, expiration - datetime.timedelta(days=1)).not_after == expiration


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ({}, "bundle needs passwordSecretRef, recipients, or both"),
        ({"recipients": [{"name": "a", "format": "cms"}]}, "set exactly one of configMapRef and secretRef"),
        (
            {
                "recipients": [
                    {"name": "a", "format": "cms", "secretRef": {"name": "k", "key": "c"}},
                    {"name": "a", "format": "openpgp", "secretRef": {"name": "k", "key": "p"}},
                ]
            },
            "each name may appear once",
        ),
    ],
)
def test_the_model_refuses_what_admission_refuses(bundle: dict[str, object], message: str) -> None:
    # For objects stored before a CEL rule existed: the operator parses no spec admission would refuse.
    with pytest.raises(ValueError, match=message):
        models.BundleSpec.model_validate(bundle)
    ok = models.BundleSpec.model_validate(
        {"recipients": [{"name": "a", "format": "cms", "secretRef": {"name": "k", "key": "c"}}]}
    )
    assert ok.password_secret_ref is None


def test_the_operator_loads_pysequoia_only_for_an_openpgp_recipient() -> None:
    # A fresh interpreter: this one has imported pysequoia above. The operator's modules alone must not.
    code = (
        "import sys\n"
        "import webhookcerts.cli.run, webhookcerts.handlers.operator, webhookcerts.service.engine\n"
        "import webhookcerts.service.bundles, webhookcerts.service.recipients\n"
        "print('pysequoia' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(sealing.__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "False", done.stderr

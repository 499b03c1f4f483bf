"""Bundles sealed to the provider's public key: CMS EnvelopedData or an OpenPGP message.

A password bundle is only as safe as the channel the password travels by, and the password Secret sits
beside the key. Sealed to a key only the provider holds, the file needs no second channel: the
provider opens it with ``openssl cms -decrypt`` (CMS, RFC 5652, AES-256-CBC, RSA key transport) or
``gpg --decrypt`` (OpenPGP). What is sealed is the PKCS#12 the password bundle carries (key and
certificate, friendly name the file stem), without a password of its own: the envelope is the
protection, and a second secret to send along is what sealing removes.

OpenPGP is written by Sequoia (``pysequoia``): maintained, a wheel with no system library, and no
``gpg`` binary or keyring in the operator's image. CMS is written by ``cryptography``.

A recipient's key comes from a Secret or ConfigMap anyone with write access there can change, so each
is checked before use and refused with a reason that says what it is and what was expected: not a
public key of the stated format, a private key by mistake, RSA under 3072 bits, legacy DSA/ElGamal,
expired, revoked, or with nothing that can encrypt. Error texts never quote the input.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import warnings
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

if TYPE_CHECKING:
    import pysequoia

# pysequoia is imported where an OpenPGP recipient is read or sealed to, not with this module: an
# operator with no OpenPGP recipient never loads it (a few MB of resident memory, docs/benchmarks.md).

Format = Literal["cms", "openpgp"]
SUFFIXES: dict[Format, str] = {"cms": ".p7m", "openpgp": ".pgp"}
MIN_RSA_BITS = 3072
# The longest recipient name the CRD allows: it is part of a Secret data key (at most 253 characters).
NAME_MAX = 32
LONGEST_SUFFIX = f".{'x' * NAME_MAX}.p7m"

Reason = Literal[
    "NotAPublicKey", "WrongFormat", "PrivateKey", "WeakKey", "UnsupportedKey", "Expired", "NotYetValid", "Revoked"
]


class RecipientRefused(ValueError):
    """A recipient key that cannot be sealed to; ``reason`` is the condition reason to report."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclasses.dataclass(frozen=True)
class Recipient:
    """A checked public key of the provider's, ready to seal to."""

    name: str
    format: Format
    # SHA-256 of the X.509 certificate, or the OpenPGP fingerprint: which key a sealed file is for.
    fingerprint: str
    not_after: datetime.datetime | None
    _key: x509.Certificate | pysequoia.Cert = dataclasses.field(repr=False, compare=False)


def file_name(stem: str, recipient: str, format: Format) -> str:
    """``<stem>.<recipient>.p7m`` or ``.pgp``: beside the password bundle's files of the same certificate."""
    return f"{stem}.{recipient}{SUFFIXES[format]}"


def load(name: str, format: Format, data: bytes, now: datetime.datetime) -> Recipient:
    """The recipient ``name``'s key, checked; RecipientRefused says why it cannot be used."""
    if b"PRIVATE KEY" in data:
        raise RecipientRefused(
            "PrivateKey",
            "holds a private key: put the provider's public key there (never a private key, which the provider "
            "must keep to itself), and treat the private key that was there as exposed",
        )
    if format == "cms":
        return _load_cms(name, data, now)
    return _load_openpgp(name, data, now)


def _load_cms(name: str, data: bytes, now: datetime.datetime) -> Recipient:
    if b"-----BEGIN PGP" in data:
        raise RecipientRefused("WrongFormat", "is an OpenPGP key, not an X.509 certificate: set format: openpgp")
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        if b"PUBLIC KEY" in data:
            raise RecipientRefused(
                "NotAPublicKey",
                "is a bare public key: format cms needs the provider's X.509 certificate (PEM or DER) that holds it",
            ) from None
        raise RecipientRefused("NotAPublicKey", "is not an X.509 certificate (PEM or DER)") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise RecipientRefused(
            "UnsupportedKey",
            f"the certificate holds {_key_kind(key)} key: CMS key transport needs an RSA key of at least "
            f"{MIN_RSA_BITS} bits (or use format openpgp)",
        )
    if key.key_size < MIN_RSA_BITS:
        raise RecipientRefused(
            "WeakKey", f"the certificate holds an RSA-{key.key_size} key: at least {MIN_RSA_BITS} bits are required"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_encipherment:
        raise RecipientRefused(
            "UnsupportedKey", "the certificate's key usage does not allow keyEncipherment: it cannot receive a bundle"
        )
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not_after <= now:
        raise RecipientRefused(
            "Expired", f"the certificate expired at {_iso(not_after)}: ask the provider for its new one"
        )
    if not_before > now:
        raise RecipientRefused("NotYetValid", f"the certificate is valid only from {_iso(not_before)}")
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return Recipient(name, "cms", fingerprint, not_after, cert)


def _load_openpgp(name: str, data: bytes, now: datetime.datetime) -> Recipient:
    import pysequoia
    from pysequoia import packet

    if b"-----BEGIN CERTIFICATE" in data or b"PUBLIC KEY-----" in data:
        raise RecipientRefused("WrongFormat", "is an X.509 certificate or key, not an OpenPGP key: set format: cms")
    try:
        cert = pysequoia.Cert.from_bytes(data)
    except Exception:
        raise RecipientRefused("NotAPublicKey", "is not an OpenPGP public key (armored or binary)") from None
    with warnings.catch_warnings():
        # pysequoia steers key holders to Tsk; asking a Cert whether it carries secrets is what we mean.
        warnings.simplefilter("ignore", DeprecationWarning)
        has_secrets = cert.has_secret_keys
    if has_secrets:
        raise RecipientRefused(
            "PrivateKey",
            "holds an OpenPGP private (secret) key: put the provider's public key there "
            "(gpg --export, not --export-secret-keys)",
        )
    if cert.is_revoked:
        raise RecipientRefused(
            "Revoked", f"OpenPGP key {cert.fingerprint} is revoked: ask the provider for its new one"
        )
    expires = cert.expiration
    if expires is not None and expires <= now:
        raise RecipientRefused(
            "Expired", f"OpenPGP key {cert.fingerprint} expired at {_iso(expires)}: ask the provider to extend it"
        )
    for found in packet.PacketPile.from_bytes(bytes(cert)):
        if found.tag not in (packet.Tag.PublicKey, packet.Tag.PublicSubkey):
            continue
        algorithm = found.key_algorithm
        if algorithm in (packet.PublicKeyAlgorithm.DSA, packet.PublicKeyAlgorithm.ElGamalEncrypt):
            raise RecipientRefused("WeakKey", f"OpenPGP key {cert.fingerprint} has a legacy {algorithm!r} key")
        if algorithm in (
            packet.PublicKeyAlgorithm.RSAEncryptSign,
            packet.PublicKeyAlgorithm.RSAEncrypt,
            packet.PublicKeyAlgorithm.RSASign,
        ):
            bits = _rsa_bits(found.body)
            if bits < MIN_RSA_BITS:
                raise RecipientRefused(
                    "WeakKey",
                    f"OpenPGP key {cert.fingerprint} has an RSA-{bits} key: at least {MIN_RSA_BITS} bits are required",
                )
    try:
        pysequoia.encrypt(b"", [cert], armor=False)
    except Exception:
        raise RecipientRefused(
            "UnsupportedKey", f"OpenPGP key {cert.fingerprint} has no valid encryption subkey"
        ) from None
    return Recipient(name, "openpgp", cert.fingerprint, expires, cert)


def _rsa_bits(body: bytes) -> int:
    """The modulus size from a key packet: after version, creation time and algorithm (and v6's length)."""
    offset = 6 if body[0] == 4 else 10
    return int.from_bytes(body[offset : offset + 2], "big")


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC ({key.curve.name})"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "an EdDSA"
    if isinstance(key, dsa.DSAPublicKey):
        return "a DSA"
    return "a non-RSA"


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def content(friendly_name: str, key_pem: bytes, cert_pem: bytes) -> bytes:
    """What is sealed: a PKCS#12 of the key and certificate, with no password of its own."""
    key = serialization.load_pem_private_key(key_pem, password=None, unsafe_skip_rsa_key_validation=True)
    cert = x509.load_pem_x509_certificate(cert_pem)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("unsupported key type for a bundle")
    return pkcs12.serialize_key_and_certificates(friendly_name.encode(), key, cert, None, serialization.NoEncryption())


def seal(recipient: Recipient, plaintext: bytes) -> bytes:
    """``plaintext`` encrypted to ``recipient``: DER CMS EnvelopedData, or a binary OpenPGP message."""
    key = recipient._key
    if isinstance(key, x509.Certificate):
        return (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(plaintext)
            .set_content_encryption_algorithm(algorithms.AES256)
            .add_recipient(key)
            .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
    import pysequoia

    return pysequoia.encrypt(plaintext, [key], armor=False)

"""The client certificate the provider presents, and the password-protected bundles that carry it there.

The provider asks for an RSA-4096 key and a certificate signed with SHA-256 that the client made
itself; the endpoint then trusts exactly that certificate. Everything here is pure (keys and bytes in,
keys and bytes out) so the operator, the CLI and the tests share one definition of "a good key pair".

Private keys never leave this module as text: ``KeyPair`` hides them from ``repr`` and every error
names what is wrong, never the bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import os
import re
from typing import Literal

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf import pbkdf2
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import oid

from webhookcerts.domain import models

KEY_SIZE = 4096
PUBLIC_EXPONENT = 65537
# Clocks of the provider and the endpoint drift; a certificate valid from "now" is rejected by a peer a
# few seconds behind.
BACKDATE = datetime.timedelta(minutes=5)
# OWASP's 2023 figure for PBKDF2-HMAC-SHA256; the bundles travel by e-mail and upload forms.
KDF_ROUNDS = 600_000

Role = Literal["current", "next"]
Reason = Literal["SecretCorrupted", "KeyMismatch"]


class InvalidKeyMaterial(ValueError):
    """A key or certificate that cannot serve; ``reason`` is the condition reason to report."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """An unencrypted PEM key and its certificate, as stored in the key Secrets."""

    key_pem: bytes = dataclasses.field(repr=False)
    cert_pem: bytes

    def __repr__(self) -> str:
        # The dataclass repr would print the certificate too; a short form keeps logs readable.
        return f"KeyPair(cert_sha256={fingerprint(x509.load_pem_x509_certificate(self.cert_pem))}, key=<hidden>)"


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    """The public facts about a certificate that status records and file names use."""

    serial: str
    fingerprint: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    pem: str


def generate_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_SIZE)


def _name(subject: models.Subject) -> x509.Name:
    attributes = []
    if subject.country:
        attributes.append(x509.NameAttribute(oid.NameOID.COUNTRY_NAME, subject.country))
    if subject.organization:
        attributes.append(x509.NameAttribute(oid.NameOID.ORGANIZATION_NAME, subject.organization))
    if subject.organizational_unit:
        attributes.append(x509.NameAttribute(oid.NameOID.ORGANIZATIONAL_UNIT_NAME, subject.organizational_unit))
    attributes.append(x509.NameAttribute(oid.NameOID.COMMON_NAME, subject.common_name))
    return x509.Name(attributes)


def issue_certificate(
    key: rsa.RSAPrivateKey, subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta
) -> x509.Certificate:
    """A self-signed TLS client certificate for ``key``, valid from a little before ``now``."""
    if now.tzinfo is None:
        raise ValueError("issue_certificate needs a timezone-aware time")
    # X.509 stores whole seconds; dropping the fraction here keeps status, renewal maths and the
    # certificate itself in agreement.
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    name = _name(subject)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + duration)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        # Its own key identifier as the authority's: during a rotation the trust store holds two
        # self-signed certificates with one subject, and OpenSSL (nginx, HAProxy) looks a trust anchor
        # up by subject, then by this identifier. Without it, it picks one of the two and refuses the
        # other ("self-signed certificate"): the overlap would lose deliveries.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_key_pair(subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> KeyPair:
    key = generate_private_key()
    cert = issue_certificate(key, subject, now, duration)
    return KeyPair(key_pem=_key_pem(key), cert_pem=cert.public_bytes(serialization.Encoding.PEM))


def fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER encoding, the form status and revocation lists use."""
    return cert.fingerprint(hashes.SHA256()).hex()


def sha1_fingerprint(cert_pem: bytes | str) -> str:
    """Lower-case hex SHA-1 of the DER encoding: what nginx and HAProxy log for a client certificate.

    Never used to decide trust (SHA-256 is), only to recognise a certificate in a server's access log.
    """
    return _load_certificate(cert_pem).fingerprint(hashes.SHA1()).hex()  # noqa: S303 - a log key, not trust


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD:...`` as openssl prints it, and the plain lower-case form."""
    return re.sub(r"[^0-9a-f]", "", text.lower())


def serial_hex(cert: x509.Certificate) -> str:
    text = f"{cert.serial_number:X}"
    return text if len(text) % 2 == 0 else "0" + text


def _load_certificate(cert_pem: bytes | str) -> x509.Certificate:
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        return x509.load_pem_x509_certificate(data)
    except (ValueError, TypeError):
        # Not chained: the parser's message may quote the input.
        raise InvalidKeyMaterial("SecretCorrupted", "the certificate is not a readable PEM certificate") from None


def _utc(value: datetime.datetime) -> datetime.datetime:
    return value.astimezone(datetime.UTC)


def inspect(cert_pem: bytes | str) -> CertificateInfo:
    cert = _load_certificate(cert_pem)
    return CertificateInfo(
        serial=serial_hex(cert),
        fingerprint=fingerprint(cert),
        not_before=_utc(cert.not_valid_before_utc),
        not_after=_utc(cert.not_valid_after_utc),
        pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def _load_rsa_key(key_pem: bytes) -> rsa.RSAPrivateKey:
    # OpenSSL's full RSA key check costs about 0.3 s for a 4096-bit key, on every reconcile and before an
    # emergency rotation can start; ``check_key_pair`` proves the key works with one signature instead.
    try:
        key = serialization.load_pem_private_key(key_pem, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, crypto_exceptions.UnsupportedAlgorithm):
        raise InvalidKeyMaterial("SecretCorrupted", "the private key is not a readable, unencrypted PEM key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKeyMaterial("SecretCorrupted", f"the private key is not RSA (found {type(key).__name__})")
    if key.key_size != KEY_SIZE:
        raise InvalidKeyMaterial("SecretCorrupted", f"the private key has {key.key_size} bits, not {KEY_SIZE}")
    return key


def check_key_pair(key_pem: bytes, cert_pem: bytes) -> CertificateInfo:
    """Prove that a stored key and certificate belong together and are of the kind the provider takes."""
    key = _load_rsa_key(key_pem)
    info = inspect(cert_pem)
    cert_key = x509.load_pem_x509_certificate(info.pem.encode()).public_key()
    if not isinstance(cert_key, rsa.RSAPublicKey) or cert_key.public_numbers() != key.public_key().public_numbers():
        raise InvalidKeyMaterial(
            "KeyMismatch", f"the private key does not belong to the certificate with serial {info.serial}"
        )
    # Damage to the private parts leaves the public numbers intact: a signature the certificate's key
    # verifies proves the key can really sign (a few milliseconds, against 0.3 s for a full key check).
    try:
        signature = key.sign(_PROBE, asym_padding.PKCS1v15(), hashes.SHA256())
        cert_key.verify(signature, _PROBE, asym_padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, crypto_exceptions.InvalidSignature):
        raise InvalidKeyMaterial("SecretCorrupted", "the private key is damaged: it cannot sign") from None
    return info


_PROBE = b"webhookcerts key check"


def pkcs12_bundle(key_pem: bytes, cert_pem: bytes, password: bytes, friendly_name: str) -> bytes:
    """PKCS#12 with AES-256-CBC under PBKDF2-HMAC-SHA256 and a SHA-256 MAC, never legacy RC2 or 3DES."""
    if not password:
        raise ValueError("a PKCS#12 bundle needs a non-empty password")
    key = _load_rsa_key(key_pem)
    cert = _load_certificate(cert_pem)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(friendly_name.encode(), key, cert, None, encryption)


# --- PKCS#8 with PBES2 --------------------------------------------------------------------------------
# cryptography's BestAvailableEncryption writes PBES2 with AES-256-CBC but only 2,048 PBKDF2 rounds, and
# it offers no way to raise them for PKCS#8. The structure is small (RFC 8018), so it is written here
# with the same 600,000 rounds as the PKCS#12 file; openssl and cryptography both read it.

_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_HMAC_SHA256 = "1.2.840.113549.2.9"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


def _der(tag: int, body: bytes) -> bytes:
    length = len(body)
    if length < 0x80:
        return bytes([tag, length]) + body
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _sequence(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _octets(value: bytes) -> bytes:
    return _der(0x04, value)


def _integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _der(0x06, bytes(body))


_NULL = b"\x05\x00"


def encrypted_key_pem(key_pem: bytes, password: bytes, *, rounds: int = KDF_ROUNDS) -> bytes:
    """The key as PKCS#8 ``ENCRYPTED PRIVATE KEY``: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC."""
    if not password:
        raise ValueError("an encrypted key needs a non-empty password")
    key = _load_rsa_key(key_pem)
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(16), os.urandom(16)
    kdf = pbkdf2.PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=rounds)
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    encryptor = Cipher(algorithms.AES(kdf.derive(password)), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    algorithm = _sequence(
        _oid(_OID_PBES2),
        _sequence(
            _sequence(
                _oid(_OID_PBKDF2),
                _sequence(_octets(salt), _integer(rounds), _sequence(_oid(_OID_HMAC_SHA256), _NULL)),
            ),
            _sequence(_oid(_OID_AES256_CBC), _octets(iv)),
        ),
    )
    der = _sequence(algorithm, _octets(ciphertext))
    body = base64.b64encode(der)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + b"\n".join(lines) + b"\n-----END ENCRYPTED PRIVATE KEY-----\n"


# --- bundles ------------------------------------------------------------------------------------------

# The files of one certificate; ``bundle_files`` writes them.
BUNDLE_SUFFIXES = (".p12", ".crt.pem", ".key.enc.pem")
# A sealed file ends in `.<recipient>.p7m` or `.pgp`, the recipient a DNS label of at most 32 characters.
SEALED_SUFFIX_MAX = len(".") + 32 + len(".p7m")
# Each file is a key of the bundle Secret's data: at most 253 characters of [-._a-zA-Z0-9].
DATA_KEY_MAX = 253
NAME_HASH_LENGTH = 8


def bundle_stem(environment: str, resource_name: str, serial: str) -> str:
    """``{environment}-{resource_name}-{serial}``: what a bundle's file names start with.

    A WebhookCertificate's name may have 253 characters, too many for a Secret data key once the
    environment, serial and suffix are added. Then the name part is cut and followed by the first
    8 hex of the full name's SHA-256, so the names stay deterministic and two long names that start
    alike stay apart. Environment and serial are always whole: they say which file is which.
    Names that fit are unchanged.
    """
    room = DATA_KEY_MAX - max(SEALED_SUFFIX_MAX, *(len(suffix) for suffix in BUNDLE_SUFFIXES))
    stem = f"{environment}-{resource_name}-{serial}"
    if len(stem) <= room:
        return stem
    digest = hashlib.sha256(resource_name.encode()).hexdigest()[:NAME_HASH_LENGTH]
    keep = room - len(f"{environment}--{digest}-{serial}")
    part = resource_name[: max(keep, 0)].rstrip("-.")
    stem = f"{environment}-{part}-{digest}-{serial}" if part else f"{environment}-{digest}-{serial}"
    if len(stem) > room:
        # Only a serial far beyond RFC 5280's 20 octets gets here.
        raise ValueError(f"serial {serial[:16]}... is too long for a bundle file name")
    return stem


def bundle_files(
    environment: str, resource_name: str, key_pem: bytes, cert_pem: bytes, password: bytes, role: Role
) -> dict[str, bytes]:
    """The files a client submits to the provider for one environment, named so they cannot be mixed up.

    ``role`` (current or next) is checked but kept out of the names on purpose: a next certificate
    becomes the current one at cut-over, and a file name must not turn into a lie. The serial says
    which certificate a file holds.
    """
    if role not in ("current", "next"):
        raise ValueError(f"role must be 'current' or 'next', not {role!r}")
    info = check_key_pair(key_pem, cert_pem)
    stem = bundle_stem(environment, resource_name, info.serial)
    return {
        f"{stem}.p12": pkcs12_bundle(key_pem, info.pem.encode(), password, stem),
        f"{stem}.crt.pem": info.pem.encode(),
        f"{stem}.key.enc.pem": encrypted_key_pem(key_pem, password),
    }


def encrypted_key_matches(key_enc_pem: bytes, cert_pem: bytes, password: bytes) -> bool | None:
    """Whether a bundle's encrypted key belongs to its certificate; None when ``password`` does not open it.

    None too when either file is unreadable. For files kept in a bundle while their key Secret cannot be
    read: they cannot be written again, so whether they open with the password of now is known only by
    opening them.
    """
    try:
        key = serialization.load_pem_private_key(key_enc_pem, password=password, unsafe_skip_rsa_key_validation=True)
        cert_key = _load_certificate(cert_pem).public_key()
    except (ValueError, TypeError, crypto_exceptions.UnsupportedAlgorithm):
        return None
    # Decrypted, the key is compared and dropped: nothing of it is kept or returned.
    if not isinstance(key, rsa.RSAPrivateKey) or not isinstance(cert_key, rsa.RSAPublicKey):
        return False
    return key.public_key().public_numbers() == cert_key.public_numbers()

"""The trust store in the shapes servers read: PKCS#12 and JKS truststores from the PEM ``ca.crt``.

nginx, Envoy, Go and Python read the PEM bundle as it is. The JVM wants a keystore: a PKCS#12 file
(the JDK's default keystore type since 9) or, for old JVMs, a JKS one. Both hold every certificate of
the bundle as a *trusted certificate entry*, once, under a deterministic alias: the lower-case hex
SHA-256 fingerprint of its DER (the form ``status`` and the revocation lists use), so two certificates
never share an alias. The JDK looks entries up case-insensitively, and when two PKCS#12 bags carry the
same friendly name it silently keeps one of them; unique lower-case aliases avoid both pitfalls.

PKCS#12 for the JDK: a certificate bag is a trusted entry only when it carries Oracle's
trusted-key-usage attribute (2.16.840.1.113894.746875.1.1 = anyExtendedKeyUsage). Without it the JDK
lists the store as empty, which is what ``openssl pkcs12 -export -nokeys`` (before OpenSSL 3.2's
``-jdktrust``) produces: a truststore that trusts nobody. ``cryptography``'s
``serialize_java_truststore`` writes that attribute on every bag. The certificates are encrypted with
PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and the file is authenticated by an HMAC-SHA256 MAC, the
JDK's own defaults since 8u301/11.0.12; those algorithms are spelled out here rather than left to
``BestAvailableEncryption``, whose choice may change with the library. An empty password writes the
certificates unencrypted (the MAC then uses the empty password): a JVM given no truststore password
still reads the trusted entries, as with trust-manager's password-less PKCS#12 bundles. The password
must be ASCII: the JDK's PBES2 key derivation refuses anything else (JKS takes any password).

**The PKCS#12 bytes change with every encoding**: the MAC salt, the PBKDF2 salt and the AES IV are
random each time, as they must be. Comparing two encodings tells nothing, and re-encoding an unchanged
set would rewrite the file, and reload the server, for nothing. Callers re-encode only when the set of
certificates changed, comparing the PEM (or ``certificates_of``), never the encoded bytes.

JKS is deterministic: the same set of certificates, in any order, with the same password, gives the
same bytes. Entries are sorted by fingerprint and their "creation date" is the certificate's notBefore
(never the current time). The layout (``sun.security.provider.JavaKeyStore``): magic 0xFEEDFEED,
version 2, the entry count, then per entry tag 2 (trustedCertEntry), the alias and the certificate type
``X.509`` as Java ``writeUTF`` strings, the date in milliseconds since the epoch, the DER with its
length; last, SHA-1 over the password as UTF-16BE, the ASCII words ``Mighty Aphrodite`` and everything
before it. That digest is an integrity check, not encryption: a JKS file is readable without the
password, as trust stores may be; the password only lets the JVM detect tampering.

The placeholder certificate (``trust.PLACEHOLDER_PEM``: expired, "trust nobody") is a certificate like
any other here: a store that holds only it admits no client, which is what it means.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import datetime
import hashlib
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12 as _pkcs12

FORMATS = ("pem", "pkcs12", "jks")
JKS_MAGIC = 0xFEEDFEED
JKS_VERSION = 2
JKS_TRUSTED_CERT = 2
JKS_PRIVATE_KEY = 1
_JKS_WHITENER = b"Mighty Aphrodite"
_PKCS12_ITERATIONS = 10_000  # the JDK's own default for both the PBKDF2 and the MAC
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class TrustStoreError(ValueError):
    """A bundle with no readable certificate, or a store that cannot be read (wrong password, damaged)."""


def _load_bundle(pem_bundle: bytes) -> list[x509.Certificate]:
    """Each certificate of the bundle once, sorted by fingerprint."""
    try:
        certs = x509.load_pem_x509_certificates(pem_bundle)
    except ValueError:
        raise TrustStoreError("the bundle holds no readable PEM certificate") from None
    by_fingerprint = {_alias(cert): cert for cert in certs}
    return [by_fingerprint[alias] for alias in sorted(by_fingerprint)]


def _alias(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def pkcs12(pem_bundle: bytes, password: str) -> bytes:
    """A PKCS#12 truststore, every certificate of ``pem_bundle`` a JDK trusted certificate entry.

    Not deterministic (random salts and IV): re-encode only when the certificates changed.
    """
    if not password.isascii():
        # The JDK derives PBES2 keys through PBEKeySpec, which refuses anything else: keytool fails
        # with "Password is not ASCII" on a store another tool wrote happily.
        raise TrustStoreError("the JDK reads PKCS#12 only with an ASCII password (JKS takes any)")
    certs = _load_bundle(pem_bundle)
    encryption: serialization.KeySerializationEncryption
    if password:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(_PKCS12_ITERATIONS)
            .key_cert_algorithm(_pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password.encode())
        )
    else:
        encryption = serialization.NoEncryption()
    bags = [_pkcs12.PKCS12Certificate(cert, _alias(cert).encode()) for cert in certs]
    return _pkcs12.serialize_java_truststore(bags, encryption)


def _java_utf(text: str) -> bytes:
    # Java's writeUTF is "modified UTF-8"; the aliases and "X.509" are ASCII, where it is plain UTF-8.
    data = text.encode("ascii")
    return struct.pack(">H", len(data)) + data


def _jks_digest(password: str, body: bytes) -> bytes:
    return hashlib.sha1(password.encode("utf-16-be") + _JKS_WHITENER + body, usedforsecurity=False).digest()


def _milliseconds(moment: datetime.datetime) -> int:
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


def jks(pem_bundle: bytes, password: str) -> bytes:
    """A JKS keystore with one trustedCertEntry per certificate of ``pem_bundle``; deterministic."""
    certs = _load_bundle(pem_bundle)
    body = bytearray(struct.pack(">III", JKS_MAGIC, JKS_VERSION, len(certs)))
    for cert in certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        body += struct.pack(">I", JKS_TRUSTED_CERT)
        body += _java_utf(_alias(cert))
        body += struct.pack(">q", _milliseconds(cert.not_valid_before_utc))
        body += _java_utf("X.509")
        body += struct.pack(">I", len(der)) + der
    return bytes(body) + _jks_digest(password, bytes(body))


def encode(pem_bundle: bytes, format: str, password: str) -> bytes:
    """``pem_bundle`` as ``format`` (one of ``FORMATS``); ``pem`` is the canonical PEM of each certificate."""
    if format == "pkcs12":
        return pkcs12(pem_bundle, password)
    if format == "jks":
        return jks(pem_bundle, password)
    if format == "pem":
        return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in _load_bundle(pem_bundle))
    raise TrustStoreError(f"unknown trust store format {format!r} (expected one of {', '.join(FORMATS)})")


def certificates_of(data: bytes, format: str, password: str) -> list[bytes]:
    """The DER of every certificate a store holds, in the store's order; TrustStoreError if unreadable.

    For PKCS#12 and JKS the password is checked (the MAC, the JKS digest): a wrong one is an error.
    """
    if format == "pem":
        return [cert.public_bytes(serialization.Encoding.DER) for cert in _load_bundle(data)]
    if format == "pkcs12":
        try:
            store = _pkcs12.load_pkcs12(data, password.encode() if password else None)
        except ValueError as exc:
            raise TrustStoreError(f"unreadable PKCS#12 (wrong password or damaged): {exc}") from None
        bags = ([store.cert] if store.cert is not None else []) + list(store.additional_certs)
        return [bag.certificate.public_bytes(serialization.Encoding.DER) for bag in bags]
    if format == "jks":
        return _jks_certificates(data, password)
    raise TrustStoreError(f"unknown trust store format {format!r} (expected one of {', '.join(FORMATS)})")


def _jks_certificates(data: bytes, password: str) -> list[bytes]:
    if len(data) < 12 + 20:
        raise TrustStoreError("not a JKS keystore (too short)")
    body, digest = data[:-20], data[-20:]
    magic, version, count = struct.unpack_from(">III", body)
    if magic != JKS_MAGIC or version not in (1, 2):
        raise TrustStoreError("not a JKS keystore (bad magic or version)")
    if _jks_digest(password, body) != digest:
        raise TrustStoreError("JKS integrity check failed (wrong password or damaged)")
    offset = 12
    found: list[bytes] = []

    def take(n: int) -> bytes:
        nonlocal offset
        if offset + n > len(body):
            raise TrustStoreError("truncated JKS keystore")
        chunk = body[offset : offset + n]
        offset += n
        return chunk

    def utf() -> bytes:
        (length,) = struct.unpack(">H", take(2))
        return take(length)

    def certificate() -> bytes:
        if version == 2:
            utf()  # the certificate type
        (length,) = struct.unpack(">I", take(4))
        return take(length)

    for _ in range(count):
        (tag,) = struct.unpack(">I", take(4))
        utf()  # alias
        take(8)  # date
        if tag == JKS_TRUSTED_CERT:
            found.append(certificate())
        elif tag == JKS_PRIVATE_KEY:
            (key_length,) = struct.unpack(">I", take(4))
            take(key_length)
            (chain,) = struct.unpack(">I", take(4))
            for _ in range(chain):
                certificate()  # a key's chain: not trusted certificates
        else:
            raise TrustStoreError(f"unknown JKS entry tag {tag}")
    return found

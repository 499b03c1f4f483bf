"""Throw-away keys and certificates for the receiver and simulator tests: a server CA, clients, strangers,
the provider's message-signing keys.

RSA 2048 keeps the fixtures quick; the product's 4096-bit keys change nothing the tests look at. The
self-signed clients come from the operator's own ``issue_certificate``, so the receiver is tested with
the certificate profile the operator issues. The benchmarks take their serving certificates from here.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import os
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import oid

from webhookcerts.domain import models
from webhookcerts.domain import pki as domain_pki


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclasses.dataclass(frozen=True)
class Pair:
    """A certificate and key written as PEM files, plus what the tests compare against."""

    name: str
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_path: pathlib.Path
    key_path: pathlib.Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def p12(self, directory: pathlib.Path, password: bytes) -> pathlib.Path:
        path = directory / f"{self.name}.p12"
        path.write_bytes(
            pkcs12.serialize_key_and_certificates(
                self.name.encode(), self.key, self.cert, None, serialization.BestAvailableEncryption(password)
            )
        )
        return path


def write_pem_files(
    directory: pathlib.Path, name: str, key_pem: bytes, cert_pem: bytes
) -> tuple[pathlib.Path, pathlib.Path]:
    """``<name>.crt`` and ``<name>.key`` (mode 0600 from the start), as curl and openssl take them."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    return cert_path, key_path


def _write(directory: pathlib.Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Pair:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_path, key_path = write_pem_files(directory, name, key_pem, cert.public_bytes(serialization.Encoding.PEM))
    return Pair(name, cert, key, cert_path, key_path)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, cn)])


def _validity(*, expired: bool) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        return now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey, *, expired: bool
) -> x509.CertificateBuilder:
    not_before, not_after = _validity(expired=expired)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def self_signed_client(directory: pathlib.Path, name: str, *, expired: bool = False) -> Pair:
    """A client certificate as the operator issues it: self-signed, not a CA, no keyCertSign, clientAuth
    (only the key is smaller)."""
    key = _key()
    not_before, not_after = _validity(expired=expired)
    # issue_certificate backdates by its own BACKDATE: start from the moment that yields ``not_before``.
    issued_at = not_before + domain_pki.BACKDATE
    cert = domain_pki.issue_certificate(key, models.Subject(common_name=name), issued_at, not_after - issued_at)
    return _write(directory, name, cert, key)


def ca(directory: pathlib.Path, name: str) -> Pair:
    key = _key()
    cert = (
        _builder(_name(name), _name(name), key, expired=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(directory, name, cert, key)


def issued(directory: pathlib.Path, name: str, issuer: Pair, *, server: bool = False, expired: bool = False) -> Pair:
    """A leaf signed by ``issuer``: a serving certificate for 127.0.0.1/localhost, or a client one."""
    key = _key()
    builder = _builder(_name(name), issuer.cert.subject, key, expired=expired).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return _write(directory, name, builder.sign(issuer.key, hashes.SHA256()), key)


def signing_key(directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """A P-256 key for HTTP message signatures: (``<name>.key``, PKCS#8; ``<name>.pub``, its public key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@dataclasses.dataclass(frozen=True)
class Pki:
    directory: pathlib.Path
    server_ca: Pair
    server: Pair
    alpha: Pair  # trusted at first
    beta: Pair  # trusted after the swap
    stranger: Pair  # never trusted
    expired: Pair  # listed in the trust store, but past notAfter
    client_ca: Pair  # a CA in the trust store
    ca_issued: Pair  # a client leaf from that CA
    ca_issued_expired: Pair


def make(directory: pathlib.Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    server_ca = ca(directory, "server-ca")
    client_ca = ca(directory, "client-ca")
    return Pki(
        directory=directory,
        server_ca=server_ca,
        server=issued(directory, "server", server_ca, server=True),
        alpha=self_signed_client(directory, "alpha"),
        beta=self_signed_client(directory, "beta"),
        stranger=self_signed_client(directory, "stranger"),
        expired=self_signed_client(directory, "expired", expired=True),
        client_ca=client_ca,
        ca_issued=issued(directory, "ca-issued", client_ca),
        ca_issued_expired=issued(directory, "ca-issued-expired", client_ca, expired=True),
    )

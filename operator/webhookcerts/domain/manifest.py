"""The plain-text manifest sent with a bundle, for the provider to compare with what it installed.

Signed by nobody on purpose: it carries nothing secret and proves nothing by itself. It lets the
provider check, after opening a bundle, that the certificate it installed is the one the client meant
(environment, object, serial, SHA-256 of the certificate and of its public key, validity), and lets
the client say which files carry it. The file list is in ``sha256sum`` form, so ``sha256sum -c``
checks a directory of exported files against it. Only public data goes in: certificate digests and
file digests, never a key, a password or a file's content.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

TIME = "%Y-%m-%dT%H:%M:%SZ"


def file_name(stem: str) -> str:
    return f"{stem}.manifest.txt"


def spki_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo: what ``openssl pkey -pubin -outform DER | sha256sum`` prints."""
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def render(
    *, environment: str, namespace: str, name: str, role: str, cert_pem: bytes, files: Mapping[str, bytes]
) -> str:
    """The manifest of one certificate's exported ``files`` (names and contents as written)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    lines = [
        "# webhookcerts bundle manifest: plain text, signed by nobody; send it with the bundle.",
        "# Compare with what you installed:",
        "#   openssl x509 -in CERT -noout -serial -fingerprint -sha256 -dates",
        "#   openssl x509 -in CERT -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum",
        "#   sha256sum -c (the files section below)",
        f"environment: {environment}",
        f"object: {namespace}/{name}",
        f"role: {role}",
        f"serial: {_serial(cert)}",
        f"subject: {cert.subject.rfc4514_string()}",
        f"certificate-sha256: {_colons(cert.fingerprint(hashes.SHA256()).hex())}",
        f"public-key-sha256: {_colons(spki_sha256(cert))}",
        f"not-before: {_utc(cert.not_valid_before_utc)}",
        f"not-after: {_utc(cert.not_valid_after_utc)}",
        "files:",
        *(f"{hashlib.sha256(content).hexdigest()}  {file}" for file, content in sorted(files.items())),
    ]
    return "\n".join(lines) + "\n"


def _serial(cert: x509.Certificate) -> str:
    text = f"{cert.serial_number:X}"
    return text if len(text) % 2 == 0 else "0" + text


def _colons(hex_digest: str) -> str:
    """``AB:CD:...``, as openssl prints a fingerprint, so the two compare by eye."""
    upper = hex_digest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def _utc(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime(TIME)

"""The provider's side of sealed bundles: its keys, and the tools it opens a bundle with.

The judges are what a provider runs: ``openssl cms -decrypt`` with its key, and ``gpg --decrypt`` with a
keyring of its own (a throwaway GNUPGHOME, its agent stopped afterwards). Keys are made here, not read
from fixtures on disk, with validity relative to a time the test passes in, never today's date.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def x509_recipient(
    now: datetime.datetime,
    *,
    bits: int = 3072,
    valid_for: datetime.timedelta = datetime.timedelta(days=3650),
    starts: datetime.timedelta = datetime.timedelta(days=-1),
    curve: ec.EllipticCurve | None = None,
) -> tuple[bytes, bytes]:
    """A provider's key and self-signed certificate (PEM), valid from ``now + starts`` for ``valid_for``."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(curve) if curve is not None else rsa.generate_private_key(65537, bits)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provider bundle intake")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + starts)
        .not_valid_after(now + starts + valid_for)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def cms_decrypt(sealed: pathlib.Path, key_pem: bytes, workdir: pathlib.Path) -> subprocess.CompletedProcess[bytes]:
    """What the provider runs: ``openssl cms -decrypt -inform DER -in FILE -inkey KEY -binary``."""
    key_file = workdir / f"{sealed.name}.provider.key"
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    return subprocess.run(
        ["openssl", "cms", "-decrypt", "-inform", "DER", "-in", str(sealed), "-inkey", str(key_file), "-binary"],
        capture_output=True,
        timeout=120,
    )


class Gpg:
    """A provider's own GnuPG keyring, in a throwaway home."""

    def __init__(self) -> None:
        # Short, under /tmp: the agent's socket path must fit a sun_path.
        self.home = pathlib.Path(tempfile.mkdtemp(prefix="gpg-"))
        self.home.chmod(0o700)

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        return subprocess.run(
            ["gpg", "--batch", "--quiet", "--no-tty", *args], capture_output=True, input=input, env=env, timeout=300
        )

    def ok(self, *args: str, input: bytes | None = None) -> bytes:
        done = self.run(*args, input=input)
        assert done.returncode == 0, f"gpg {' '.join(args)}: {done.stderr.decode(errors='replace')}"
        return done.stdout

    def generate(self, uid: str, algorithm: str = "rsa3072", expires: str = "never") -> bytes:
        """A key with an encryption subkey, no passphrase; its armored public key."""
        secret = ("--pinentry-mode", "loopback", "--passphrase", "")
        self.ok(*secret, "--quick-gen-key", uid, algorithm, "cert,sign", expires)
        fingerprint = next(
            line.split(":")[9]
            for line in self.ok("--with-colons", "--list-keys", uid).decode().splitlines()
            if line.startswith("fpr:")
        )
        subkey = "cv25519" if algorithm in ("ed25519", "future-default") else algorithm
        self.ok(*secret, "--quick-add-key", fingerprint, subkey, "encr", expires)
        return self.ok("--armor", "--export", uid)

    def generate_signing_only(self, uid: str) -> bytes:
        self.ok(
            "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "rsa3072", "cert,sign", "never"
        )
        return self.ok("--armor", "--export", uid)

    def secret_key(self, uid: str) -> bytes:
        return self.ok("--pinentry-mode", "loopback", "--passphrase", "", "--armor", "--export-secret-keys", uid)

    def decrypt(self, sealed: pathlib.Path) -> subprocess.CompletedProcess[bytes]:
        """What the provider runs: ``gpg --decrypt FILE``."""
        return self.run("--decrypt", str(sealed))

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.home, ignore_errors=True)


def gpg_home() -> Iterator[Gpg]:
    """A fixture body: one throwaway keyring, its agent stopped at the end."""
    gpg = Gpg()
    try:
        yield gpg
    finally:
        gpg.close()

"""PKCS#12 and JKS truststores, checked by the tools that read them: the JDK's keytool and openssl.

keytool is the reference: it is the JDK's own ``KeyStore`` code, so an entry it lists as
``trustedCertEntry`` is one a JVM trusts, and a store it lists as empty is one a JVM trusts nobody with.
"""

from __future__ import annotations

import datetime
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12

from tests import whc
from webhookcerts.domain import trust, truststores

KEYTOOL = shutil.which("keytool")
OPENSSL = shutil.which("openssl")
needs_keytool = pytest.mark.skipif(KEYTOOL is None, reason="keytool (a JDK) is not installed: nothing reads the stores")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
STORE_TYPES = {"pkcs12": "PKCS12", "jks": "JKS"}
# Oracle's trusted-key-usage attribute (2.16.840.1.113894.746875.1.1) with the value
# SET { anyExtendedKeyUsage (2.5.29.37.0) }, DER-encoded as it sits in each certificate bag.
ORACLE_TRUSTED_ANY_EKU = bytes.fromhex("060c6086480186f966adca7b0101" + "3106" + "0604551d2500")


def _certificate(cn: str, key: Any) -> bytes:
    return whc.self_signed_pem(cn, key, datetime.datetime(2024, 5, 17, 12, 0, tzinfo=datetime.UTC))


@pytest.fixture(scope="module")
def pems() -> list[bytes]:
    """Three client certificates (EC and RSA) and the placeholder, which a store holds like any other."""
    return [
        _certificate("client-a", ec.generate_private_key(ec.SECP256R1())),
        _certificate("client-b", ec.generate_private_key(ec.SECP384R1())),
        _certificate("client-c", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        trust.PLACEHOLDER_PEM,
    ]


@pytest.fixture(scope="module")
def bundle(pems: list[bytes]) -> bytes:
    return b"".join(pems)


def keytool_fingerprint(pem: bytes) -> str:
    """SHA-256 of the DER as keytool prints it: upper-case hex pairs joined by colons."""
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def keytool_list(path: pathlib.Path, password: str, store_type: str) -> subprocess.CompletedProcess[str]:
    assert KEYTOOL is not None
    argv = [KEYTOOL, "-J-Duser.language=en", "-J-Duser.country=US", "-list", "-v", "-keystore", str(path)]
    return subprocess.run(
        [*argv, "-storepass", password, "-storetype", store_type],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def keytool_entries(path: pathlib.Path, password: str, store_type: str) -> list[dict[str, str]]:
    """Each entry keytool lists: its alias, type, SHA-256 fingerprint and creation date."""
    listed = keytool_list(path, password, store_type)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    count = re.search(r"Your keystore contains (\d+) entr", listed.stdout)
    assert count is not None, listed.stdout
    entries = []
    for block in listed.stdout.split("Alias name: ")[1:]:
        fields = {"alias": block.splitlines()[0].strip()}
        for label, key in (("Entry type", "type"), ("SHA256", "sha256"), ("Creation date", "created")):
            found = re.search(rf"^\s*{label}: (.+)$", block, re.MULTILINE)
            fields[key] = found.group(1).strip() if found else ""
        entries.append(fields)
    assert len(entries) == int(count.group(1))
    return entries


def write(tmp_path: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@needs_keytool
@pytest.mark.parametrize("fmt", ["pkcs12", "jks"])
@pytest.mark.parametrize("password", ["changeit", "s3cret with spaces & 'quotes'"])
def test_keytool_lists_every_certificate_as_a_trusted_entry(
    tmp_path: pathlib.Path, pems: list[bytes], bundle: bytes, fmt: str, password: str
) -> None:
    store = write(tmp_path, f"store.{fmt}", truststores.encode(bundle, fmt, password))

    entries = keytool_entries(store, password, STORE_TYPES[fmt])

    assert len(entries) == len(pems)
    assert {e["type"] for e in entries} == {"trustedCertEntry"}
    assert sorted(e["sha256"] for e in entries) == sorted(keytool_fingerprint(p) for p in pems)
    # Aliases are the lower-case fingerprints: unique, stable, and what the JDK would lower-case anyway.
    assert sorted(e["alias"] for e in entries) == sorted(e["sha256"].replace(":", "").lower() for e in entries)


@needs_keytool
@pytest.mark.parametrize("fmt", ["pkcs12", "jks"])
def test_a_wrong_password_is_refused(tmp_path: pathlib.Path, bundle: bytes, fmt: str) -> None:
    data = truststores.encode(bundle, fmt, "changeit")
    store = write(tmp_path, f"store.{fmt}", data)

    listed = keytool_list(store, "not-the-password", STORE_TYPES[fmt])

    assert listed.returncode != 0
    assert re.search(r"password was incorrect|tampered", listed.stdout + listed.stderr), listed.stdout
    with pytest.raises(truststores.TrustStoreError):
        truststores.certificates_of(data, fmt, "not-the-password")


@needs_openssl
def test_openssl_lists_the_pkcs12_certificates_each_with_the_jdk_trust_attribute(
    tmp_path: pathlib.Path, pems: list[bytes], bundle: bytes
) -> None:
    assert OPENSSL is not None
    store = write(tmp_path, "store.p12", truststores.pkcs12(bundle, "changeit"))

    shown = subprocess.run(
        [OPENSSL, "pkcs12", "-in", str(store), "-passin", "pass:changeit", "-nokeys", "-info"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    listed = x509.load_pem_x509_certificates(shown.stdout.encode())
    assert sorted(c.fingerprint(hashes.SHA256()) for c in listed) == sorted(
        x509.load_pem_x509_certificate(p).fingerprint(hashes.SHA256()) for p in pems
    )
    assert shown.stdout.count("2.16.840.1.113894.746875.1.1") == len(pems)  # openssl 3.0 prints the OID only
    assert "PBES2, PBKDF2, AES-256-CBC" in shown.stderr
    assert "MAC: sha256" in shown.stderr
    wrong = subprocess.run(
        [OPENSSL, "pkcs12", "-in", str(store), "-passin", "pass:wrong", "-nokeys"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode != 0


def test_each_pkcs12_bag_says_trusted_for_any_extended_key_usage(pems: list[bytes], bundle: bytes) -> None:
    # Without a password the bags are not encrypted, so the attribute's value can be seen in the DER.
    assert truststores.pkcs12(bundle, "").count(ORACLE_TRUSTED_ANY_EKU) == len(pems)


@needs_keytool
def test_jks_takes_any_password_pkcs12_only_ascii(tmp_path: pathlib.Path, pems: list[bytes], bundle: bytes) -> None:
    # keytool fails on a PKCS#12 with a non-ASCII password ("Password is not ASCII", from the JDK's
    # PBEKeySpec) however correct: refused when writing instead of producing an unreadable store.
    password = "s3cr\u00e9t"
    store = write(tmp_path, "store.jks", truststores.jks(bundle, password))

    assert len(keytool_entries(store, password, "JKS")) == len(pems)
    with pytest.raises(truststores.TrustStoreError, match="ASCII"):
        truststores.pkcs12(bundle, password)


@needs_keytool
def test_a_pkcs12_without_password_is_read_by_the_jdk(tmp_path: pathlib.Path, pems: list[bytes], bundle: bytes) -> None:
    store = write(tmp_path, "store.p12", truststores.pkcs12(bundle, ""))

    entries = keytool_entries(store, "", "PKCS12")

    assert [e["type"] for e in entries] == ["trustedCertEntry"] * len(pems)


@needs_keytool
def test_without_the_attribute_the_jdk_trusts_nobody(tmp_path: pathlib.Path, bundle: bytes) -> None:
    # What `openssl pkcs12 -export -nokeys` (or serialize_key_and_certificates) makes: plain certificate
    # bags. openssl lists them; the JDK lists an empty store. This is why pkcs12() uses the Java form.
    certs = x509.load_pem_x509_certificates(bundle)
    plain = crypto_pkcs12.serialize_key_and_certificates(
        None, None, None, certs, serialization.BestAvailableEncryption(b"changeit")
    )
    store = write(tmp_path, "plain.p12", plain)

    assert keytool_entries(store, "changeit", "PKCS12") == []


@needs_keytool
def test_the_jks_creation_date_is_the_certificate_not_before(tmp_path: pathlib.Path) -> None:
    store = write(tmp_path, "store.jks", truststores.jks(trust.PLACEHOLDER_PEM, "changeit"))

    (entry,) = keytool_entries(store, "changeit", "JKS")

    assert entry["created"] == "Jan 1, 2000"


def test_the_same_certificates_give_the_same_jks_bytes(pems: list[bytes], bundle: bytes) -> None:
    shuffled_with_duplicates = b"".join([pems[2], pems[0], pems[3], pems[1], pems[0]])

    first = truststores.jks(bundle, "changeit")

    assert truststores.jks(bundle, "changeit") == first
    assert truststores.jks(shuffled_with_duplicates, "changeit") == first
    assert truststores.jks(bundle, "other") != first  # the digest covers the password
    assert truststores.jks(b"".join(pems[:3]), "changeit") != first
    assert first[:8] == bytes.fromhex("feedfeed00000002")


def test_pkcs12_bytes_differ_every_time_but_hold_the_same_certificates(bundle: bytes) -> None:
    # Random salts and IV: why callers compare the certificates, never the encoded bytes.
    one, two = truststores.pkcs12(bundle, "changeit"), truststores.pkcs12(bundle, "changeit")

    assert one != two
    assert truststores.certificates_of(one, "pkcs12", "changeit") == truststores.certificates_of(
        two, "pkcs12", "changeit"
    )


@pytest.mark.parametrize("fmt", ["pem", "pkcs12", "jks"])
def test_round_trip(pems: list[bytes], bundle: bytes, fmt: str) -> None:
    password = "" if fmt == "pem" else "changeit"
    expected = sorted(x509.load_pem_x509_certificate(p).public_bytes(serialization.Encoding.DER) for p in pems)

    assert sorted(truststores.certificates_of(truststores.encode(bundle, fmt, password), fmt, password)) == expected


@pytest.mark.parametrize("fmt", ["pkcs12", "jks"])
@pytest.mark.parametrize(
    "bad", [b"", b"not pem at all", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"]
)
def test_a_bundle_without_certificates_is_refused(fmt: str, bad: bytes) -> None:
    with pytest.raises(truststores.TrustStoreError):
        truststores.encode(bad, fmt, "changeit")


@pytest.mark.parametrize(
    "damaged",
    [b"", b"\xfe\xed\xfe\xed", bytes.fromhex("cafebabe00000002") + b"\0" * 30],
)
def test_a_damaged_jks_is_refused(damaged: bytes) -> None:
    with pytest.raises(truststores.TrustStoreError):
        truststores.certificates_of(damaged, "jks", "changeit")


def test_a_jks_with_a_flipped_bit_is_refused(bundle: bytes) -> None:
    data = bytearray(truststores.jks(bundle, "changeit"))
    data[40] ^= 1
    with pytest.raises(truststores.TrustStoreError, match="integrity"):
        truststores.certificates_of(bytes(data), "jks", "changeit")


def test_an_unknown_format_is_refused(bundle: bytes) -> None:
    with pytest.raises(truststores.TrustStoreError, match="unknown"):
        truststores.encode(bundle, "bks", "changeit")

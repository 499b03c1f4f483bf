"""The client certificate and its bundles, checked with cryptography and with the real openssl CLI."""

from __future__ import annotations

import datetime
import hashlib
import os
import pathlib
import re
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import oid

from webhookcerts.domain import clock, models, pki

NOW = datetime.datetime(2026, 3, 1, 9, 30, 15, 250_000, tzinfo=datetime.UTC)
YEAR = datetime.timedelta(hours=8760)
SUBJECT = models.Subject(
    common_name="acme-webhooks", organization="Acme GmbH", organizational_unit="Payments", country="DE"
)
PASSWORD = b"correct horse battery staple"


@pytest.fixture(scope="module")
def pair() -> pki.KeyPair:
    return pki.new_key_pair(SUBJECT, clock.FakeClock(NOW).now(), YEAR)


@pytest.fixture(scope="module")
def other_pair() -> pki.KeyPair:
    return pki.new_key_pair(models.Subject(common_name="someone-else"), NOW, YEAR)


@pytest.fixture(scope="module")
def cert(pair: pki.KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


@pytest.fixture(scope="module")
def key(pair: pki.KeyPair) -> rsa.RSAPrivateKey:
    loaded = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


@pytest.fixture(scope="module")
def files(pair: pki.KeyPair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    directory = tmp_path_factory.mktemp("bundle")
    written = {}
    for name, data in pki.bundle_files("sandbox", "acme", pair.key_pem, pair.cert_pem, PASSWORD, "current").items():
        (directory / name).write_bytes(data)
        written[name] = directory / name
    return written


# openssl verifies against the test's own clock, never the machine's: the certificates were issued at
# NOW, and a test may not start failing on the day they would have expired.
AT_TEST_TIME = ("-attime", str(int((NOW + datetime.timedelta(days=1)).timestamp())))


def _openssl(*args: str, password: bytes = PASSWORD) -> subprocess.CompletedProcess[str]:
    # The password goes through the environment, not the command line that `ps` shows.
    env = {**os.environ, "BUNDLE_PASSWORD": password.decode()}
    return subprocess.run(["openssl", *args], capture_output=True, text=True, env=env, timeout=120)


# --- the key and the certificate --------------------------------------------------------------------


def test_the_key_is_rsa_4096_with_the_usual_exponent(key: rsa.RSAPrivateKey) -> None:
    assert key.key_size == 4096
    assert key.public_key().public_numbers().e == 65537


def test_the_certificate_is_self_signed_with_sha256_rsa(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    assert cert.signature_algorithm_oid == oid.SignatureAlgorithmOID.RSA_WITH_SHA256
    assert cert.issuer == cert.subject
    assert cert.version == x509.Version.v3
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.public_numbers() == key.public_key().public_numbers()
    assert cert.signature_hash_algorithm is not None
    public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)


def test_the_subject_carries_every_given_attribute(cert: x509.Certificate) -> None:
    assert cert.subject.rfc4514_string() == "CN=acme-webhooks,OU=Payments,O=Acme GmbH,C=DE"


def test_a_subject_with_only_a_common_name() -> None:
    key = pki.generate_private_key()
    cert = pki.issue_certificate(key, models.Subject(common_name="only-cn"), NOW, YEAR)
    assert cert.subject.rfc4514_string() == "CN=only-cn"


def test_validity_is_backdated_for_clock_skew_and_lasts_the_duration(cert: x509.Certificate) -> None:
    whole_second = NOW.replace(microsecond=0)
    assert cert.not_valid_before_utc == whole_second - datetime.timedelta(minutes=5)
    assert cert.not_valid_after_utc == whole_second + YEAR


def test_the_extensions_make_it_a_client_certificate_and_nothing_more(cert: x509.Certificate) -> None:
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    assert not usage.value.content_commitment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    # Self-signed: the authority key identifier is its own, so OpenSSL tells two same-subject anchors apart.
    akid = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert akid.value.key_identifier == ski.value.digest


def test_serials_are_random_and_large(key: rsa.RSAPrivateKey) -> None:
    serials = {pki.issue_certificate(key, SUBJECT, NOW, YEAR).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(s.bit_length() > 64 for s in serials)


def test_a_naive_time_is_refused(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.issue_certificate(key, SUBJECT, datetime.datetime(2026, 1, 1), YEAR)


def test_fingerprint_and_serial_formats(cert: x509.Certificate) -> None:
    assert pki.fingerprint(cert) == cert.fingerprint(hashes.SHA256()).hex()
    assert re.fullmatch(r"[0-9a-f]{64}", pki.fingerprint(cert))
    serial = pki.serial_hex(cert)
    assert re.fullmatch(r"([0-9A-F]{2})+", serial)
    assert int(serial, 16) == cert.serial_number


def test_serial_hex_pads_to_whole_bytes(key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "x")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .not_valid_before(NOW)
        .not_valid_after(NOW + YEAR)
    )
    assert pki.serial_hex(builder.serial_number(0xABC).sign(key, hashes.SHA256())) == "0ABC"
    assert pki.serial_hex(builder.serial_number(0x1ABC).sign(key, hashes.SHA256())) == "1ABC"


def test_inspect_reports_utc_times_and_the_canonical_pem(pair: pki.KeyPair, cert: x509.Certificate) -> None:
    info = pki.inspect(pair.cert_pem)
    assert info.serial == pki.serial_hex(cert)
    assert info.fingerprint == pki.fingerprint(cert)
    assert info.not_before == NOW.replace(microsecond=0) - datetime.timedelta(minutes=5)
    assert info.not_after == NOW.replace(microsecond=0) + YEAR
    assert info.not_after.utcoffset() == datetime.timedelta(0)
    assert info.pem.encode() == pair.cert_pem
    # Extra text around the PEM (as some tools write it) yields the same facts.
    assert pki.inspect(b"subject=...\n" + pair.cert_pem) == info


def test_key_pair_repr_never_shows_the_key(pair: pki.KeyPair) -> None:
    body = pair.key_pem.decode().splitlines()[1]
    for text in (repr(pair), str(pair), f"{pair!r}"):
        assert "PRIVATE KEY" not in text
        assert body not in text
        assert "hidden" in text


# --- checking stored key material -------------------------------------------------------------------


def test_check_key_pair_accepts_a_matching_pair(pair: pki.KeyPair) -> None:
    assert pki.check_key_pair(pair.key_pem, pair.cert_pem) == pki.inspect(pair.cert_pem)


def _assert_refused(key_pem: bytes, cert_pem: bytes, reason: str, secret: bytes) -> None:
    with pytest.raises(pki.InvalidKeyMaterial) as caught:
        pki.check_key_pair(key_pem, cert_pem)
    assert caught.value.reason == reason
    assert caught.value.__cause__ is None
    text = str(caught.value)
    assert "PRIVATE KEY" not in text
    for line in secret.decode(errors="replace").splitlines()[1:-1]:
        assert line not in text


def test_a_key_from_another_pair_is_a_mismatch(pair: pki.KeyPair, other_pair: pki.KeyPair) -> None:
    _assert_refused(other_pair.key_pem, pair.cert_pem, "KeyMismatch", other_pair.key_pem)


def test_an_unreadable_key_is_corrupted(pair: pki.KeyPair) -> None:
    truncated = pair.key_pem[: len(pair.key_pem) // 2] + b"\n-----END PRIVATE KEY-----\n"
    _assert_refused(truncated, pair.cert_pem, "SecretCorrupted", truncated)
    _assert_refused(b"", pair.cert_pem, "SecretCorrupted", b"")


def test_an_encrypted_key_is_not_a_usable_stored_key(pair: pki.KeyPair) -> None:
    encrypted = pki.encrypted_key_pem(pair.key_pem, PASSWORD, rounds=1000)
    _assert_refused(encrypted, pair.cert_pem, "SecretCorrupted", encrypted)


def test_an_unreadable_certificate_is_corrupted(pair: pki.KeyPair) -> None:
    _assert_refused(
        pair.key_pem, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "SecretCorrupted", pair.key_pem
    )


def test_a_key_of_the_wrong_kind_is_corrupted(pair: pki.KeyPair) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    small_pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _assert_refused(small_pem, pair.cert_pem, "SecretCorrupted", small_pem)
    curve = ec.generate_private_key(ec.SECP256R1())
    curve_pem = curve.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _assert_refused(curve_pem, pair.cert_pem, "SecretCorrupted", curve_pem)


# --- bundles ------------------------------------------------------------------------------------------


def test_bundle_files_are_named_by_environment_resource_and_serial(
    pair: pki.KeyPair, files: dict[str, pathlib.Path]
) -> None:
    serial = pki.inspect(pair.cert_pem).serial
    stem = f"sandbox-acme-{serial}"
    assert sorted(files) == sorted([f"{stem}.p12", f"{stem}.crt.pem", f"{stem}.key.enc.pem"])
    assert files[f"{stem}.crt.pem"].read_bytes() == pair.cert_pem


def test_the_role_is_checked_but_kept_out_of_the_names(pair: pki.KeyPair) -> None:
    with pytest.raises(ValueError, match="role"):
        pki.bundle_files("live", "acme", pair.key_pem, pair.cert_pem, PASSWORD, "old")  # type: ignore[arg-type]


def test_bundles_refuse_an_empty_password(pair: pki.KeyPair) -> None:
    with pytest.raises(ValueError, match="password"):
        pki.pkcs12_bundle(pair.key_pem, pair.cert_pem, b"", "x")
    with pytest.raises(ValueError, match="password"):
        pki.encrypted_key_pem(pair.key_pem, b"")


def _one(files: dict[str, pathlib.Path], suffix: str) -> pathlib.Path:
    (path,) = [p for name, p in files.items() if name.endswith(suffix)]
    return path


def test_the_pkcs12_bundle_opens_with_its_password_and_carries_the_friendly_name(
    pair: pki.KeyPair, files: dict[str, pathlib.Path]
) -> None:
    p12 = _one(files, ".p12")
    loaded = pkcs12.load_pkcs12(p12.read_bytes(), PASSWORD)
    assert loaded.cert is not None
    assert loaded.cert.certificate.public_bytes(serialization.Encoding.PEM) == pair.cert_pem
    assert loaded.cert.friendly_name == p12.name.removesuffix(".p12").encode()
    assert loaded.key is not None
    assert (
        loaded.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        == pair.key_pem
    )
    with pytest.raises(ValueError, match="Invalid password"):
        pkcs12.load_pkcs12(p12.read_bytes(), b"wrong")


def test_the_encrypted_key_opens_with_its_password_only(pair: pki.KeyPair, files: dict[str, pathlib.Path]) -> None:
    data = _one(files, ".key.enc.pem").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(data, password=PASSWORD)
    assert (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        == pair.key_pem
    )
    with pytest.raises(ValueError, match="Incorrect password"):
        serialization.load_pem_private_key(data, password=b"wrong")


def test_two_encryptions_of_one_key_differ(pair: pki.KeyPair) -> None:
    # A fresh salt and IV each time: equal ciphertexts would reveal equal keys across bundles.
    assert pki.encrypted_key_pem(pair.key_pem, PASSWORD, rounds=1000) != pki.encrypted_key_pem(
        pair.key_pem, PASSWORD, rounds=1000
    )


# --- interop with openssl -----------------------------------------------------------------------------


def test_openssl_reads_the_certificate(files: dict[str, pathlib.Path]) -> None:
    result = _openssl("x509", "-in", str(_one(files, ".crt.pem")), "-noout", "-text")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Signature Algorithm: sha256WithRSAEncryption" in text
    assert "Public-Key: (4096 bit)" in text
    assert re.search(r"X509v3 Basic Constraints: critical\s+CA:FALSE", text)
    assert re.search(r"X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment\n", text)
    assert re.search(r"X509v3 Extended Key Usage:\s+TLS Web Client Authentication\n", text)


def test_openssl_verify_accepts_the_certificate_as_its_own_trust_store(files: dict[str, pathlib.Path]) -> None:
    cert = str(_one(files, ".crt.pem"))
    # The endpoint's ca.crt lists the certificate itself; -x509_strict and the client purpose are what
    # a TLS server checks when it validates a client certificate.
    result = _openssl("verify", *AT_TEST_TIME, "-x509_strict", "-purpose", "sslclient", "-CAfile", cert, cert)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{cert}: OK"


def test_openssl_verify_refuses_a_certificate_the_trust_store_does_not_list(
    files: dict[str, pathlib.Path], other_pair: pki.KeyPair, tmp_path: pathlib.Path
) -> None:
    other = tmp_path / "other.crt"
    other.write_bytes(other_pair.cert_pem)
    trusted = str(_one(files, ".crt.pem"))
    result = _openssl("verify", *AT_TEST_TIME, "-purpose", "sslclient", "-CAfile", trusted, str(other))
    assert result.returncode != 0
    # Refused for not being listed, not for the time: the certificates are valid at the test's clock.
    assert "self-signed certificate" in result.stderr + result.stdout


def test_openssl_pkcs12_info_shows_modern_encryption(files: dict[str, pathlib.Path]) -> None:
    result = _openssl("pkcs12", "-info", "-noout", "-in", str(_one(files, ".p12")), "-passin", "env:BUNDLE_PASSWORD")
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    assert "MAC: sha256" in report
    modern = "PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256"
    assert f"Shrouded Keybag: {modern}" in report
    assert f"PKCS7 Encrypted data: {modern}" in report
    assert "RC2" not in report
    assert "3DES" not in report


def test_openssl_pkcs12_refuses_a_wrong_password(files: dict[str, pathlib.Path]) -> None:
    result = _openssl(
        "pkcs12",
        "-info",
        "-noout",
        "-in",
        str(_one(files, ".p12")),
        "-passin",
        "env:BUNDLE_PASSWORD",
        password=b"wrong",
    )
    assert result.returncode != 0
    assert "verify error" in result.stderr.lower()


def test_openssl_pkey_opens_the_encrypted_key_and_it_matches_the_certificate(
    files: dict[str, pathlib.Path],
) -> None:
    key_file = str(_one(files, ".key.enc.pem"))
    from_key = _openssl("pkey", "-in", key_file, "-passin", "env:BUNDLE_PASSWORD", "-pubout")
    assert from_key.returncode == 0, from_key.stderr
    from_cert = _openssl("x509", "-in", str(_one(files, ".crt.pem")), "-noout", "-pubkey")
    assert from_cert.returncode == 0, from_cert.stderr
    assert from_key.stdout == from_cert.stdout


def test_openssl_pkey_refuses_a_wrong_password(files: dict[str, pathlib.Path]) -> None:
    result = _openssl(
        "pkey", "-in", str(_one(files, ".key.enc.pem")), "-passin", "env:BUNDLE_PASSWORD", "-noout", password=b"wrong"
    )
    assert result.returncode != 0
    assert "bad decrypt" in result.stderr


def test_the_encrypted_key_uses_pbes2_pbkdf2_sha256_aes256_with_600000_rounds(
    files: dict[str, pathlib.Path],
) -> None:
    result = _openssl("asn1parse", "-in", str(_one(files, ".key.enc.pem")))
    assert result.returncode == 0, result.stderr
    objects = re.findall(r"OBJECT\s+:(\S+)", result.stdout)
    assert objects == ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"]
    (rounds,) = re.findall(r"INTEGER\s+:([0-9A-F]+)", result.stdout)
    assert int(rounds, 16) == 600_000


def test_a_key_damaged_in_its_private_parts_is_corrupted_not_accepted(
    pair: pki.KeyPair, key: rsa.RSAPrivateKey
) -> None:
    # Same public numbers as the certificate, wrong private exponents (OpenSSL falls back from a bad CRT
    # result to d, so both are damaged): only a real signature tells.
    numbers = key.private_numbers()
    damaged = rsa.RSAPrivateNumbers(
        p=numbers.p,
        q=numbers.q,
        d=numbers.d + 2,
        dmp1=numbers.dmp1 + 2,
        dmq1=numbers.dmq1,
        iqmp=numbers.iqmp,
        public_numbers=numbers.public_numbers,
    ).private_key(unsafe_skip_rsa_key_validation=True)
    damaged_pem = damaged.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(pki.InvalidKeyMaterial) as raised:
        pki.check_key_pair(damaged_pem, pair.cert_pem)
    assert raised.value.reason == "SecretCorrupted"


# --- bundle file names for any name the API server accepts ---------------------------------------------

# metadata.name is a DNS subdomain of up to 253 characters; the environment a DNS label of up to 63.
LONG_NAME = ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 60, "e" * 9])
LONG_ENVIRONMENT = "e" * 63
# The longest serial a certificate of ours has (159 random bits, padded to whole bytes).
LONG_SERIAL = "7F" * 20
DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _assert_data_keys(keys: list[str]) -> None:
    for key in keys:
        assert DATA_KEY.fullmatch(key) and len(key) <= 253 and key not in (".", ".."), key


def test_bundle_files_of_a_253_character_name_are_valid_secret_data_keys(pair: pki.KeyPair) -> None:
    assert len(LONG_NAME) == 253
    serial = pki.inspect(pair.cert_pem).serial
    written = pki.bundle_files(LONG_ENVIRONMENT, LONG_NAME, pair.key_pem, pair.cert_pem, PASSWORD, "current")
    _assert_data_keys(list(written))
    stem = pki.bundle_stem(LONG_ENVIRONMENT, LONG_NAME, serial)
    assert sorted(written) == sorted([f"{stem}.p12", f"{stem}.crt.pem", f"{stem}.key.enc.pem"])
    # Environment and serial stay whole: they tell the files apart; the name is cut and hashed.
    digest = hashlib.sha256(LONG_NAME.encode()).hexdigest()[:8]
    assert stem.startswith(f"{LONG_ENVIRONMENT}-{LONG_NAME[:100]}") and stem.endswith(f"-{digest}-{serial}")
    assert written[f"{stem}.crt.pem"] == pair.cert_pem


def test_long_bundle_stems_fit_for_every_environment_and_serial_length() -> None:
    for environment in ("a", "sandbox", LONG_ENVIRONMENT):
        for serial in ("01", "0A1B2C3D", LONG_SERIAL):
            stem = pki.bundle_stem(environment, LONG_NAME, serial)
            sealed = f"{stem}.{'r' * 32}.p7m"  # the longest sealed file name a recipient can give
            _assert_data_keys([f"{stem}{suffix}" for suffix in pki.BUNDLE_SUFFIXES] + [sealed])
            # As much of the name as fits is kept (less a separator the cut may end on).
            assert 252 <= len(sealed) <= 253
            assert stem.startswith(f"{environment}-a") and stem.endswith(f"-{serial}")


def test_long_bundle_stems_are_deterministic_and_keep_two_names_apart() -> None:
    assert pki.bundle_stem("live", LONG_NAME, LONG_SERIAL) == pki.bundle_stem("live", LONG_NAME, LONG_SERIAL)
    # Two names that share their first 54 characters, and two that differ only past the part kept.
    for other in (LONG_NAME[:54] + "x" * 199, LONG_NAME[:-1] + "f"):
        assert len(other) == 253
        assert pki.bundle_stem("live", other, LONG_SERIAL) != pki.bundle_stem("live", LONG_NAME, LONG_SERIAL)


def test_bundle_stems_that_fit_are_unchanged_and_a_cut_never_ends_on_a_separator() -> None:
    room = 253 - pki.SEALED_SUFFIX_MAX  # the longest file name is a sealed one
    fits = "n" * (room - len("live--01"))
    assert pki.bundle_stem("live", fits, "01") == f"live-{fits}-01"
    assert pki.bundle_stem("live", "acme", "01") == "live-acme-01"
    too_long = fits + "n"
    assert pki.bundle_stem("live", too_long, "01") != f"live-{too_long}-01"
    # A cut that lands after a '.' or '-' drops it rather than writing '.-' or '--' into the name.
    for separator in ".", "-":
        name = "n" * (room - len("live--01-12345678") - 1) + separator + "m" * 20
        stem = pki.bundle_stem("live", name, "01")
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        assert stem == f"live-{name[: name.index(separator)]}-{digest}-01"

"""Password-protected bundles, reconciled in-process against the real API server, opened by real openssl.

The bundle Secret is what the client submits to the provider: for the current certificate and, during
a rotation, the next one, a PKCS#12 file and the PEM pair with the key encrypted as PKCS#8. The tests
check what openssl says about those files (algorithms, iterations, friendly name), that the password
opens them and a wrong one does not, that they follow password changes and cut-overs, and that without
a password no unencrypted key appears anywhere but in the key Secrets themselves.
"""

from __future__ import annotations

import base64
import datetime
import pathlib
import re
from typing import Any

import kubernetes
import pytest

from tests import whc
from webhookcerts.domain import clock, models, names, pki
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secrets
from webhookcerts.service import reconcile

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
NAME = "hooks"
BUNDLE = f"{NAME}-tls-bundle"
SUFFIXES = (".p12", ".crt.pem", ".key.enc.pem")


class Bundles:
    """One WebhookCertificate with a bundle, reconciled by hand under a fake clock."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.api = whc.Api(api_client, namespace)
        self.fake = clock.FakeClock(datetime.datetime.now(datetime.UTC).replace(microsecond=0))
        self.ctx = reconcile.Context(kube_client.Clients(api_client), clock=self.fake)

    def create(self, **spec: Any) -> None:
        self.api.create(NAME, environment="live", bundle={"passwordSecretRef": {"name": "pw"}}, **spec)

    def run(self, rounds: int = 2) -> models.WebhookCertificateStatus:
        for _ in range(rounds):
            reconcile.reconcile(self.ctx, self.api.get(NAME))
        return self.api.status(NAME)

    def set_password(self, password: str, key: str = "password") -> None:
        body = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="pw"), string_data={key: password}
        )
        if self.api.secret("pw") is None:
            self.api.core.create_namespaced_secret(self.api.namespace, body)
        else:
            self.api.core.replace_namespaced_secret("pw", self.api.namespace, body)

    def files(self) -> dict[str, bytes]:
        return self.api.secret(BUNDLE) or {}

    def write_files(self, directory: pathlib.Path) -> None:
        for file_name, content in self.files().items():
            (directory / file_name).write_bytes(content)

    def resource_version(self) -> str:
        secret = secrets.read(self.ctx.clients, self.api.namespace, BUNDLE)
        assert secret is not None
        return secret.resource_version

    def condition(self, type: str) -> models.Condition | None:
        return self.api.condition(NAME, type)


@pytest.fixture
def bundles(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> Bundles:
    return Bundles(api_client, namespace)


def expected_names(serials: list[str]) -> set[str]:
    return {f"live-{NAME}-{serial}{suffix}" for serial in serials for suffix in SUFFIXES}


def openssl_ok(*args: str) -> bytes:
    done = whc.openssl(*args)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr.decode(errors='replace')}"
    return done.stdout


def public_key_of_certificate(cert: pathlib.Path) -> bytes:
    return openssl_ok("x509", "-in", str(cert), "-noout", "-pubkey")


def public_key_of_key(key_pem: bytes, *passin: str) -> bytes:
    done = whc.openssl("pkey", "-pubout", *passin, input=key_pem)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def key_lines(key_pem: bytes) -> list[bytes]:
    """The base64 lines of a PEM key: any one of them appearing elsewhere would be a leak."""
    return [line for line in key_pem.splitlines() if line and not line.startswith(b"-----")]


def assert_no_plain_key_outside_key_secrets(api: whc.Api) -> None:
    """No Secret but the ``kubernetes.io/tls`` key Secrets holds a private key in the clear."""
    key_secrets = [s for s in api.core.list_namespaced_secret(api.namespace).items if s.type == secrets.TLS]
    plain_keys = [base64.b64decode(s.data[names.TLS_KEY]) for s in key_secrets]
    assert plain_keys, "expected at least one key Secret to compare against"
    for secret in api.core.list_namespaced_secret(api.namespace).items:
        if secret.type == secrets.TLS:
            continue
        for key, value in (secret.data or {}).items():
            content = base64.b64decode(value)
            where = f"Secret {secret.metadata.name} key {key}"
            assert not re.search(rb"-----BEGIN (RSA |EC )?PRIVATE KEY-----", content), where
            for plain in plain_keys:
                assert not any(line in content for line in key_lines(plain)), where
    status_text = str(api.get(NAME))
    for plain in plain_keys:
        assert not any(line.decode() in status_text for line in key_lines(plain))


def test_without_a_password_no_bundle_is_written_and_no_key_leaves_its_secret(bundles: Bundles) -> None:
    bundles.create()
    status = bundles.run()
    assert status.current is not None and status.stage == "Active"
    condition = bundles.condition(names.BUNDLE_READY)
    assert condition is not None and (condition.status, condition.reason) == ("False", "PasswordSecretNotFound")
    assert "pw" in condition.message
    assert bundles.api.secret(BUNDLE) is None
    assert status.bundle is None
    assert_no_plain_key_outside_key_secrets(bundles.api)

    # A password Secret under the wrong key is no password either.
    bundles.set_password(PASSWORD, key="passphrase")
    bundles.run()
    condition = bundles.condition(names.BUNDLE_READY)
    assert condition is not None and (condition.status, condition.reason) == ("False", "PasswordSecretNotFound")
    assert "'password'" in condition.message
    assert bundles.api.secret(BUNDLE) is None
    assert_no_plain_key_outside_key_secrets(bundles.api)

    # Once the password arrives, the bundle follows without any other change.
    bundles.set_password(PASSWORD)
    status = bundles.run()
    assert status.current is not None
    assert set(bundles.files()) == expected_names([status.current.serial])
    condition = bundles.condition(names.BUNDLE_READY)
    assert condition is not None and condition.status == "True"
    assert_no_plain_key_outside_key_secrets(bundles.api)


def test_bundle_files_open_with_openssl_and_only_with_the_password(bundles: Bundles, tmp_path: pathlib.Path) -> None:
    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None
    serial = status.current.serial
    stem = f"live-{NAME}-{serial}"
    assert set(bundles.files()) == expected_names([serial])
    assert status.bundle == models.BundleStatus(secret_name=BUNDLE, files=sorted(expected_names([serial])))
    assert bundles.api.secret_object(BUNDLE).type == "Opaque"
    bundles.write_files(tmp_path)
    p12, cert, enc_key = (tmp_path / f"{stem}{suffix}" for suffix in SUFFIXES)
    passin = f"pass:{PASSWORD}"

    # The certificate is the current one.
    assert pki.inspect(cert.read_bytes()).fingerprint == status.current.fingerprint
    expected_public = public_key_of_certificate(cert)

    # PKCS#12: modern algorithms at 600,000 rounds, the friendly name, the key of the current certificate.
    shown = whc.openssl("pkcs12", "-info", "-in", str(p12), "-passin", passin, "-noout")
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    info = shown.stderr.decode()  # openssl writes -info to stderr
    assert "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256" in info
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256" in info
    assert "MAC: sha256" in info
    assert not re.search(r"RC2|3DES|DES-EDE|pbeWithSHA1", info)
    dump = openssl_ok("pkcs12", "-in", str(p12), "-passin", passin, "-nodes").decode()
    assert f"friendlyName: {stem}" in dump
    extracted_key = re.search(r"-----BEGIN PRIVATE KEY-----.*?-----END PRIVATE KEY-----\n", dump, re.S)
    assert extracted_key is not None
    assert public_key_of_key(extracted_key.group(0).encode()) == expected_public
    extracted_cert = pki.inspect(
        re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", dump, re.S)[0]
    )
    assert extracted_cert.fingerprint == status.current.fingerprint
    wrong = whc.openssl("pkcs12", "-in", str(p12), "-passin", "pass:wrong", "-nodes")
    assert wrong.returncode != 0 and b"PRIVATE KEY" not in wrong.stdout

    # PKCS#8: encrypted on disk, opened by openssl with the password, refused without it.
    text = enc_key.read_bytes()
    assert text.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    parsed = openssl_ok("asn1parse", "-in", str(enc_key)).decode()
    assert "PBES2" in parsed and "PBKDF2" in parsed and "aes-256-cbc" in parsed and "hmacWithSHA256" in parsed
    assert re.search(r"INTEGER\s+:0*927C0\n", parsed)  # 600,000 PBKDF2 rounds, printed in hex
    assert public_key_of_key(text, "-passin", passin) == expected_public
    assert whc.openssl("pkey", "-in", str(enc_key), "-passin", "pass:wrong", "-noout").returncode != 0
    assert whc.openssl("pkey", "-in", str(enc_key), "-passin", "pass:", "-noout").returncode != 0
    assert_no_plain_key_outside_key_secrets(bundles.api)


def test_bundles_follow_rotation_password_changes_and_cutover(bundles: Bundles, tmp_path: pathlib.Path) -> None:
    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None and status.renewal_time is not None
    old = status.current

    # Planned rotation: both certificates have their files, each pair matching.
    bundles.fake.set(status.renewal_time)
    status = bundles.run()
    assert status.stage == "Rotating" and status.next is not None
    new = status.next
    assert set(bundles.files()) == expected_names([old.serial, new.serial])
    bundles.write_files(tmp_path)
    for record in (old, new):
        stem = tmp_path / f"live-{NAME}-{record.serial}"
        key = pathlib.Path(f"{stem}.key.enc.pem").read_bytes()
        assert public_key_of_key(key, "-passin", f"pass:{PASSWORD}") == public_key_of_certificate(
            pathlib.Path(f"{stem}.crt.pem")
        )
        openssl_ok("pkcs12", "-in", f"{stem}.p12", "-passin", f"pass:{PASSWORD}", "-noout")

    # Reconciling again with nothing changed rewrites nothing.
    version = bundles.resource_version()
    bundles.run()
    assert bundles.resource_version() == version

    # A new password: every file is regenerated and opens only with it (cert-manager issue #3450).
    before = bundles.files()
    bundles.set_password("a brand new password")
    bundles.run()
    after = bundles.files()
    assert set(after) == set(before)
    for file_name in after:
        if file_name.endswith(".crt.pem"):
            assert after[file_name] == before[file_name]
        else:
            assert after[file_name] != before[file_name], file_name
    again = tmp_path / "again"
    again.mkdir()
    bundles.write_files(again)
    for record in (old, new):
        stem = again / f"live-{NAME}-{record.serial}"
        for password, opens in (("a brand new password", True), (PASSWORD, False)):
            p12 = whc.openssl("pkcs12", "-in", f"{stem}.p12", "-passin", f"pass:{password}", "-noout")
            pem = whc.openssl("pkey", "-in", f"{stem}.key.enc.pem", "-passin", f"pass:{password}", "-noout")
            assert (p12.returncode == 0, pem.returncode == 0) == (opens, opens), (record.serial, password)

    # Cut-over: only the new current's files remain.
    bundles.api.cutover(NAME, new.serial)
    status = bundles.run()
    assert status.current is not None and status.current.fingerprint == new.fingerprint
    assert set(bundles.files()) == expected_names([new.serial])
    assert status.bundle is not None and status.bundle.files == sorted(expected_names([new.serial]))
    assert_no_plain_key_outside_key_secrets(bundles.api)


def test_a_compromised_certificate_is_left_out_of_the_bundle(bundles: Bundles, tmp_path: pathlib.Path) -> None:
    # Submitting a compromised key again would undo the emergency: only the replacement is offered.
    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None
    old = status.current
    bundles.api.emergency(NAME, "INC-77")
    status = bundles.run()
    assert status.stage == "Compromised" and status.next is not None
    assert set(bundles.files()) == expected_names([status.next.serial])
    assert not any(old.serial in file_name for file_name in bundles.files())
    bundles.write_files(tmp_path)
    stem = tmp_path / f"live-{NAME}-{status.next.serial}"
    key = pathlib.Path(f"{stem}.key.enc.pem").read_bytes()
    assert public_key_of_key(key, "-passin", f"pass:{PASSWORD}") == public_key_of_certificate(
        pathlib.Path(f"{stem}.crt.pem")
    )

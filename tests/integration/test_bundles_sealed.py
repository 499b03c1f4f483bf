"""Bundles sealed to the provider's public keys, reconciled in-process, opened by the provider's tools.

One WebhookCertificate (``test_bundles``' fake-clock harness) seals its certificate to a CMS recipient
(X.509 certificate from a ConfigMap) and an OpenPGP recipient (armored key from a Secret), with no
password. ``openssl cms -decrypt`` and ``gpg --decrypt`` in the provider's keyring yield the PKCS#12
of the key Secret's key and the recorded certificate; a stranger's key opens neither. Through a planned
rotation and an emergency, the compromised certificates' sealed files leave the bundle at containment
and ``webhookcerts export`` refuses them, while the replacement exports with its manifest. A recipient
whose key turns bad is a condition with its reason and costs no file.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import pathlib
import stat
import subprocess
from collections.abc import Iterator

import kubernetes
import pytest

from tests import provider_keys
from tests.integration.test_bundles import NAME, Bundles, assert_no_plain_key_outside_key_secrets, bundles
from tests.integration.test_bundles import key_lines as plain_key_lines
from tests.integration.test_cli import Cli, cli, failed, ok
from tests.unit import test_sealing
from webhookcerts.domain import models, names, pki

pytestmark = pytest.mark.integration

__all__ = ["bundles", "cli"]  # the fixtures, imported for this module's tests

CMS = {"name": "upvest-live", "format": "cms", "configMapRef": {"name": "upvest-public", "key": "tls.crt"}}
PGP = {"name": "upvest-pgp", "format": "openpgp", "secretRef": {"name": "upvest-pgp", "key": "key.asc"}}


@pytest.fixture(scope="module")
def provider() -> Iterator[provider_keys.Gpg]:
    yield from provider_keys.gpg_home()


@pytest.fixture(scope="module")
def stranger() -> Iterator[provider_keys.Gpg]:
    yield from provider_keys.gpg_home()


def _put_configmap(b: Bundles, name: str, data: dict[str, str]) -> None:
    body = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name=name), data=data)
    try:
        b.api.core.replace_namespaced_config_map(name, b.api.namespace, body)
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise
        b.api.core.create_namespaced_config_map(b.api.namespace, body)


def _put_secret(b: Bundles, name: str, data: dict[str, bytes]) -> None:
    body = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name=name), string_data={k: v.decode() for k, v in data.items()}
    )
    if b.api.secret(name) is None:
        b.api.core.create_namespaced_secret(b.api.namespace, body)
    else:
        b.api.core.replace_namespaced_secret(name, b.api.namespace, body)


def _sealed_names(serial: str) -> set[str]:
    stem = f"live-{NAME}-{serial}"
    return {f"{stem}.crt.pem", f"{stem}.upvest-live.p7m", f"{stem}.upvest-pgp.pgp"}


def _judge(
    b: Bundles,
    record: models.CertificateRecord,
    key_secret: str,
    directory: pathlib.Path,
    cms_key: bytes,
    provider: provider_keys.Gpg,
    stranger: provider_keys.Gpg,
) -> None:
    """Both sealed files of ``record`` open with the provider's keys, to the key Secret's key and the record."""
    stem = directory / f"live-{NAME}-{record.serial}"
    key_pem = (b.api.secret(key_secret) or {})[names.TLS_KEY]
    for opened in (
        provider_keys.cms_decrypt(pathlib.Path(f"{stem}.upvest-live.p7m"), cms_key, directory),
        provider.decrypt(pathlib.Path(f"{stem}.upvest-pgp.pgp")),
    ):
        assert opened.returncode == 0, opened.stderr.decode(errors="replace")
        key, cert = test_sealing._opened_pkcs12(opened.stdout, directory)
        assert pki.inspect(cert).fingerprint == record.fingerprint
        assert test_sealing._public(key) == test_sealing._public(key_pem)
    other_key, _ = provider_keys.x509_recipient(b.fake.now())
    assert provider_keys.cms_decrypt(pathlib.Path(f"{stem}.upvest-live.p7m"), other_key, directory).returncode != 0
    assert stranger.decrypt(pathlib.Path(f"{stem}.upvest-pgp.pgp")).returncode != 0


def test_sealed_files_open_for_the_provider_follow_rotation_and_leave_at_containment(
    bundles: Bundles,
    provider: provider_keys.Gpg,
    stranger: provider_keys.Gpg,
    cli: Cli,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    b = bundles
    cms_key, cms_cert = provider_keys.x509_recipient(b.fake.now())
    _put_configmap(b, "upvest-public", {"tls.crt": cms_cert.decode()})
    _put_secret(b, "upvest-pgp", {"key.asc": provider.generate("intake@provider.example", "ed25519")})
    stranger.generate("intake@stranger.example", "ed25519")
    b.api.create(NAME, environment="live", bundle={"recipients": [CMS, PGP]})
    status = b.run()
    assert status.current is not None and status.renewal_time is not None
    old = status.current
    assert set(b.files()) == _sealed_names(old.serial)
    ready = b.condition(names.BUNDLE_READY)
    assert ready is not None and ready.status == "True", ready
    first = tmp_path / "first"
    first.mkdir()
    b.write_files(first)
    _judge(b, old, "hooks-tls", first, cms_key, provider, stranger)

    # Sealing is randomized: an unchanged source must write nothing.
    version = b.resource_version()
    b.run()
    assert b.resource_version() == version

    # A planned rotation: both certificates' sealed files, the next's opening to the next key.
    b.fake.set(status.renewal_time)
    status = b.run()
    assert status.stage == "Rotating" and status.next is not None
    planned = status.next
    assert set(b.files()) == _sealed_names(old.serial) | _sealed_names(planned.serial)

    # The emergency: at the containment pass the compromised current's files and the discarded next's go.
    b.api.emergency(NAME, "INC-9")
    status = b.run(rounds=1)
    assert status.stage == "Compromised" and status.next is not None
    fresh = status.next
    assert fresh.serial != planned.serial
    assert not any(old.serial in f or planned.serial in f for f in b.files()), sorted(b.files())
    status = b.run()
    assert set(b.files()) == _sealed_names(fresh.serial)

    # export refuses the compromised certificate, and writes the replacement with its manifest.
    refused = failed(cli("export", NAME, "--out", str(tmp_path / "refused")))
    assert f"serial {old.serial} of {NAME} is compromised (incident INC-9)" in refused
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "next"
    said = ok(cli("export", NAME, "--next", "--out", str(out)))
    stem = f"live-{NAME}-{fresh.serial}"
    exported = {path.name: path for path in out.iterdir()}
    assert set(exported) == _sealed_names(fresh.serial) | {f"{stem}.manifest.txt"}
    for path in exported.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    _judge(b, fresh, "hooks-tls-next", out, cms_key, provider, stranger)
    assert "password" not in said

    # The manifest: what the provider compares with what it installed; --print-manifest shows the same.
    text = exported[f"{stem}.manifest.txt"].read_text()
    printed = ok(cli("export", NAME, "--next", "--print-manifest"))
    assert printed == text
    cert_pem = exported[f"{stem}.crt.pem"].read_bytes()
    assert f"serial: {fresh.serial}\n" in text and f"object: {b.api.namespace}/{NAME}\n" in text
    assert "environment: live\n" in text and "role: next\n" in text
    assert f"certificate-sha256: {_colons(fresh.fingerprint)}\n" in text
    # The provider's own computation, as the manifest's header tells it.
    public_pem = subprocess.run(
        ["openssl", "x509", "-noout", "-pubkey"], input=cert_pem, capture_output=True, check=True, timeout=60
    ).stdout
    spki = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"], input=public_pem, capture_output=True, check=True, timeout=60
    ).stdout
    assert f"public-key-sha256: {_colons(hashlib.sha256(spki).hexdigest())}\n" in text
    assert f"not-after: {fresh.not_after.strftime('%Y-%m-%dT%H:%M:%SZ')}\n" in text
    for file_name in _sealed_names(fresh.serial):
        assert f"  {file_name}\n" in text
    # sha256sum -c checks the exported files against it (the lines that are not file lines are skipped).
    checked = subprocess.run(["sha256sum", "-c", f"{stem}.manifest.txt"], cwd=out, capture_output=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout.decode().count(": OK") == 3, checked

    # No private key anywhere but in the key Secrets: not in Secrets, status, Events, logs, manifest.
    assert_no_plain_key_outside_key_secrets(b.api)
    lines = [
        line.decode()
        for secret in ("hooks-tls", "hooks-tls-next")
        for line in plain_key_lines((b.api.secret(secret) or {}).get(names.TLS_KEY, b""))
    ]
    assert lines, "expected key lines to look for"
    events = " ".join(e.message or "" for e in b.api.events(NAME))
    assert "BundleWritten" in {e.reason for e in b.api.events(NAME)}  # the positive control: Events were read
    assert caplog.records  # and so were logs
    for line in lines:
        assert line not in events and line not in caplog.text and line not in text and line not in printed


def test_a_recipient_key_turning_bad_is_a_condition_with_its_reason_and_loses_no_file(
    bundles: Bundles, provider: provider_keys.Gpg, tmp_path: pathlib.Path
) -> None:
    b = bundles
    now = b.fake.now()
    _, cms_cert = provider_keys.x509_recipient(now)
    good_pgp = provider.generate("keeps@provider.example", "ed25519")
    _put_configmap(b, "upvest-public", {"tls.crt": cms_cert.decode()})
    _put_secret(b, "upvest-pgp", {"key.asc": good_pgp})
    b.set_password("correct horse battery staple")
    b.api.create(NAME, environment="live", bundle={"passwordSecretRef": {"name": "pw"}, "recipients": [CMS, PGP]})
    status = b.run()
    assert status.current is not None
    stem = f"live-{NAME}-{status.current.serial}"
    everything = _sealed_names(status.current.serial) | {f"{stem}.p12", f"{stem}.key.enc.pem"}
    assert set(b.files()) == everything
    ready = b.condition(names.BUNDLE_READY)
    assert ready is not None and ready.status == "True"
    before = b.files()

    weak = provider.generate("weak@provider.example", "rsa2048")
    provider.generate("secret@provider.example", "ed25519")
    secret = provider.secret_key("secret@provider.example")
    catalogue = {
        "garbage": (b"not a key at all", "RecipientKeyInvalid", "NotAPublicKey: is not an OpenPGP public key"),
        "a private key by mistake": (secret, "RecipientKeyInvalid", "PrivateKey: holds a private key"),
        "RSA-2048": (weak, "RecipientKeyInvalid", "WeakKey: OpenPGP key"),
        "an X.509 certificate": (cms_cert, "RecipientKeyInvalid", "WrongFormat: is an X.509 certificate"),
    }
    for case, (data, reason, why) in catalogue.items():
        _put_secret(b, "upvest-pgp", {"key.asc": data})
        b.run()
        ready = b.condition(names.BUNDLE_READY)
        assert ready is not None and (ready.status, ready.reason) == ("False", reason), (case, ready)
        assert "recipient upvest-pgp (openpgp, Secret upvest-pgp key 'key.asc')" in ready.message, case
        assert why in ready.message, (case, ready.message)
        # Nothing lost: the password files, the other recipient's file, and the file sealed to the old key
        # (as it was: it cannot be sealed again without a key).
        assert set(b.files()) == everything, case
        assert b.files()[f"{stem}.upvest-pgp.pgp"] == before[f"{stem}.upvest-pgp.pgp"], case

    b.api.core.delete_namespaced_secret("upvest-pgp", b.api.namespace)
    b.run()
    ready = b.condition(names.BUNDLE_READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "RecipientKeyNotFound")
    assert set(b.files()) == everything
    assert b.files()[f"{stem}.upvest-pgp.pgp"] == before[f"{stem}.upvest-pgp.pgp"]
    assert b.api.events(NAME, "RecipientKeyNotFound")  # BundleReady=False is a Warning Event

    # An expired recipient certificate is refused the same way, at the fake clock's now.
    _put_secret(b, "upvest-pgp", {"key.asc": good_pgp})
    _, expired = provider_keys.x509_recipient(now, starts=pki_days(-30), valid_for=pki_days(29))
    _put_configmap(b, "upvest-public", {"tls.crt": expired.decode()})
    b.run()
    ready = b.condition(names.BUNDLE_READY)
    assert (
        ready is not None
        and ready.reason == "RecipientKeyInvalid"
        and "Expired: the certificate expired" in (ready.message)
    )
    assert set(b.files()) == everything

    # A key that is good but expires before the certificate sealed to it: written, and a Warning.
    _, short = provider_keys.x509_recipient(now, valid_for=pki_days(30))
    _put_configmap(b, "upvest-public", {"tls.crt": short.decode()})
    b.run()
    ready = b.condition(names.BUNDLE_READY)
    assert ready is not None and ready.status == "True", ready
    expiring = b.condition(names.RECIPIENT_KEY_EXPIRING)
    assert expiring is not None and (expiring.status, expiring.reason) == ("True", "ExpiresBeforeCertificate")
    assert "recipient upvest-live's key expires at" in expiring.message
    warned = b.api.events(NAME, "ExpiresBeforeCertificate")
    assert warned and warned[0].type == "Warning"
    after = b.files()
    assert after[f"{stem}.upvest-live.p7m"] != before[f"{stem}.upvest-live.p7m"]  # sealed to the new key
    assert set(after) == everything

    # Back to a long-lived key: the warning goes (the positive control saw it come).
    _put_configmap(b, "upvest-public", {"tls.crt": cms_cert.decode()})
    b.run()
    assert b.condition(names.RECIPIENT_KEY_EXPIRING) is None
    assert_no_plain_key_outside_key_secrets(b.api)

    # A recipient added while the key Secret is gone: the kept files stay, and the one that cannot be
    # sealed without the key is named, not silently missing.
    b.api.core.delete_namespaced_secret("hooks-tls", b.api.namespace)
    _put_configmap(b, "other-public", {"tls.crt": provider_keys.x509_recipient(now)[1].decode()})
    other = {"name": "other", "format": "cms", "configMapRef": {"name": "other-public", "key": "tls.crt"}}
    b.api.custom.patch_namespaced_custom_object(
        models.GROUP,
        models.VERSION,
        b.api.namespace,
        models.PLURAL,
        NAME,
        {"spec": {"bundle": {"recipients": [CMS, PGP, other]}}},
    )
    b.run()
    assert set(b.files()) == everything
    ready = b.condition(names.BUNDLE_READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "KeySecretUnavailable"), ready
    assert f"{stem}.other.p7m are not in Secret {NAME}-tls-bundle" in ready.message


def _colons(hex_digest: str) -> str:
    """As openssl prints a fingerprint: ``AB:CD:...``."""
    return ":".join(hex_digest.upper()[i : i + 2] for i in range(0, len(hex_digest), 2))


def pki_days(days: int) -> datetime.timedelta:
    return datetime.timedelta(days=days)

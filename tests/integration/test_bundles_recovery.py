"""Bundles of an object that is not Ready: the replacement's files appear, the compromised ones go.

After an emergency the current key Secret is often the very thing that is gone or damaged, so the
object is not Ready; the replacement's bundle must still be written (it is what the user submits to
the provider), the compromised certificate's files must leave the bundle, and ``export`` must refuse
the compromised certificate and name the ``--next`` command instead. A current certificate that is
not compromised keeps its files while its Secret cannot be read: the provider may still use it.
Reconciled in-process (as in test_bundles.py), against the real API server; the CLI runs as users run it.
"""

from __future__ import annotations

import base64
import pathlib
import re
import shlex
import subprocess

import kubernetes
import pytest

from tests.integration import test_cli
from tests.integration.test_bundles import BUNDLE, NAME, PASSWORD, Bundles, expected_names, openssl_ok
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, names, pki

pytestmark = pytest.mark.integration

KEY_SECRET = f"{NAME}-tls"


@pytest.fixture
def bundles(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> Bundles:
    return Bundles(api_client, namespace)


def break_current_secret(bundles: Bundles, how: str) -> None:
    if how == "deleted":
        bundles.api.core.delete_namespaced_secret(KEY_SECRET, bundles.api.namespace)
    else:
        # Damaged in place: the certificate is still there, the key is not a key any more.
        bundles.api.core.patch_namespaced_secret(
            KEY_SECRET, bundles.api.namespace, {"stringData": {names.TLS_KEY: "not a key"}}
        )


def not_ready(bundles: Bundles) -> models.Condition:
    ready = bundles.condition(names.READY)
    assert ready is not None and ready.status == "False", ready
    return ready


def p12_certificate(p12: bytes, tmp_path: pathlib.Path, password: str = PASSWORD) -> str:
    """The fingerprint of the certificate a PKCS#12 file holds, opened by openssl with the password."""
    path = tmp_path / "check.p12"
    path.write_bytes(p12)
    dump = openssl_ok("pkcs12", "-in", str(path), "-passin", f"pass:{password}", "-nokeys").decode()
    found = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", dump, re.S)
    assert found is not None, dump
    return pki.inspect(found.group(0)).fingerprint


@pytest.mark.parametrize("how", ["deleted", "corrupted"])
def test_after_an_emergency_with_the_current_secret_broken_the_replacement_gets_its_bundle(
    bundles: Bundles, tmp_path: pathlib.Path, how: str
) -> None:
    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None
    old = status.current
    assert set(bundles.files()) == expected_names([old.serial])

    # Not Ready, nothing compromised yet: the current certificate's files stay (the provider uses them).
    break_current_secret(bundles, how)
    bundles.run()
    not_ready(bundles)
    assert set(bundles.files()) == expected_names([old.serial])

    bundles.api.emergency(NAME, "INC-31")
    status = bundles.run()
    assert status.stage == "Compromised" and status.next is not None and status.next.reason == "Emergency"
    new = status.next
    assert not_ready(bundles).reason in ("SecretDoesNotExist", "SecretCorrupted")
    files = bundles.files()
    assert set(files) == expected_names([new.serial]), "the replacement's files, and only them"
    stem = f"live-{NAME}-{new.serial}"
    assert p12_certificate(files[f"{stem}.p12"], tmp_path) == new.fingerprint
    assert pki.inspect(files[f"{stem}.crt.pem"]).fingerprint == new.fingerprint
    assert status.bundle is not None and status.bundle.files == sorted(expected_names([new.serial]))
    written = bundles.condition(names.BUNDLE_READY)
    assert written is not None and written.status == "True", written

    # Nothing changed: nothing is rewritten.
    version = bundles.resource_version()
    bundles.run()
    assert bundles.resource_version() == version


def test_a_current_whose_secret_is_gone_keeps_its_files_beside_a_planned_next(
    bundles: Bundles, tmp_path: pathlib.Path
) -> None:
    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None and status.renewal_time is not None
    old = status.current
    bundles.fake.set(status.renewal_time)
    status = bundles.run()
    assert status.stage == "Rotating" and status.next is not None
    new = status.next
    before = bundles.files()
    assert set(before) == expected_names([old.serial, new.serial])

    key_secret = bundles.api.secret(KEY_SECRET)
    assert key_secret is not None
    break_current_secret(bundles, "deleted")
    bundles.run()
    not_ready(bundles)
    assert bundles.files() == before, "kept byte for byte"
    written = bundles.condition(names.BUNDLE_READY)
    assert written is not None and written.status == "True", written
    assert f"serial {old.serial} are kept" in written.message

    # A new password: the next's files follow it; the kept ones cannot, and BundleReady says so.
    bundles.set_password("a brand new password")
    bundles.run()
    files = bundles.files()
    assert set(files) == expected_names([old.serial, new.serial])
    assert p12_certificate(files[f"live-{NAME}-{new.serial}.p12"], tmp_path, "a brand new password") == new.fingerprint
    assert p12_certificate(files[f"live-{NAME}-{old.serial}.p12"], tmp_path) == old.fingerprint
    stale = bundles.condition(names.BUNDLE_READY)
    assert stale is not None and (stale.status, stale.reason) == ("False", "KeptWithEarlierPassword"), stale
    assert old.serial in stale.message

    # The key Secret restored: the current's files are written again, with the password of now.
    bundles.api.core.create_namespaced_secret(
        bundles.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=KEY_SECRET),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode() for k, v in key_secret.items()},
        ),
    )
    bundles.run()
    files = bundles.files()
    assert p12_certificate(files[f"live-{NAME}-{old.serial}.p12"], tmp_path, "a brand new password") == old.fingerprint
    written = bundles.condition(names.BUNDLE_READY)
    assert written is not None and (written.status, written.reason) == ("True", "BundleWritten"), written
    assert "kept" not in written.message


def test_without_a_password_the_compromised_files_still_leave_the_bundle(
    bundles: Bundles, tmp_path: pathlib.Path
) -> None:
    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None
    old = status.current
    assert set(bundles.files()) == expected_names([old.serial])

    bundles.api.core.delete_namespaced_secret("pw", bundles.api.namespace)
    break_current_secret(bundles, "deleted")
    bundles.api.emergency(NAME, "INC-32")
    status = bundles.run()
    assert status.next is not None
    assert bundles.files() == {}, "nothing of the compromised certificate is left to submit"
    condition = bundles.condition(names.BUNDLE_READY)
    assert condition is not None and (condition.status, condition.reason) == ("False", "PasswordSecretNotFound")

    bundles.set_password(PASSWORD)
    status = bundles.run()
    assert status.next is not None
    files = bundles.files()
    assert set(files) == expected_names([status.next.serial])
    assert p12_certificate(files[f"live-{NAME}-{status.next.serial}.p12"], tmp_path) == status.next.fingerprint


def test_a_bundle_deleted_while_the_current_secret_is_gone_says_what_is_missing(bundles: Bundles) -> None:
    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None
    written = bundles.condition(names.BUNDLE_READY)
    assert written is not None and written.status == "True"

    break_current_secret(bundles, "deleted")
    bundles.api.core.delete_namespaced_secret(BUNDLE, bundles.api.namespace)
    status = bundles.run()
    not_ready(bundles)
    # Nothing to build the files from and nothing to keep: no empty bundle, and status lists none.
    assert bundles.api.secret(BUNDLE) is None
    assert status.bundle is None
    missing = bundles.condition(names.BUNDLE_READY)
    assert missing is not None and (missing.status, missing.reason) == ("False", "KeySecretUnavailable"), missing
    assert f"Secret {KEY_SECRET}" in missing.message and status.current.serial in missing.message


# --- export ----------------------------------------------------------------------------------------


def test_export_refuses_the_compromised_certificate_and_names_the_next_command(
    bundles: Bundles, cluster: devcluster.DevCluster, tmp_path: pathlib.Path
) -> None:
    def export(*args: str) -> subprocess.CompletedProcess[str]:
        kubeconfig = str(cluster.kubeconfig)
        return test_cli.webhookcerts("export", NAME, *args, "--kubeconfig", kubeconfig, "-n", bundles.api.namespace)

    bundles.set_password(PASSWORD)
    bundles.create()
    status = bundles.run()
    assert status.current is not None
    old = status.current
    # The positive control: before the emergency, export without --next hands out the current files.
    before = tmp_path / "before"
    test_cli.ok(export("--out", str(before)))
    assert {p.name for p in before.iterdir()} == expected_names([old.serial]) | {
        f"live-{NAME}-{old.serial}.manifest.txt"
    }
    compromised_files = bundles.files()

    break_current_secret(bundles, "deleted")
    bundles.api.emergency(NAME, "INC-33")
    status = bundles.run()
    assert status.next is not None
    new = status.next

    out = tmp_path / "out dir"
    refused = test_cli.failed(export("--out", str(out)))
    command = f"webhookcerts export {NAME} -n {bundles.api.namespace} --next --out {shlex.quote(str(out))}"
    assert f"serial {old.serial} of {NAME} is compromised (incident INC-33)" in refused, refused
    assert command in refused, refused
    assert not out.exists()

    test_cli.ok(export("--next", "--out", str(out)))
    assert {p.name for p in out.iterdir()} == expected_names([new.serial]) | {f"live-{NAME}-{new.serial}.manifest.txt"}
    stem = out / f"live-{NAME}-{new.serial}"
    assert p12_certificate(pathlib.Path(f"{stem}.p12").read_bytes(), tmp_path) == new.fingerprint

    # A bundle Secret still holding the compromised files (written by hand, or by an older operator):
    # export refuses all the same.
    bundles.api.core.patch_namespaced_secret(
        BUNDLE,
        bundles.api.namespace,
        {"data": {k: base64.b64encode(v).decode() for k, v in compromised_files.items()}},
    )
    assert set(bundles.files()) == expected_names([old.serial, new.serial])
    again = tmp_path / "again"
    assert command.replace(shlex.quote(str(out)), str(again)) in test_cli.failed(export("--out", str(again)))
    assert not again.exists()

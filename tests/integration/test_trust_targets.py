"""Trust targets: the trust store as a ConfigMap too, and PKCS#12 and JKS truststores beside ca.crt.

In-process against the real API server with a fake clock; the truststores are read back with the
JDK's own ``keytool``, as a Java server would load them.
"""

from __future__ import annotations

import base64
import pathlib
import re
import shutil
import subprocess

import kubernetes
import pytest

from tests import whc
from tests.integration.test_service import Harness, active, condition, harness, rotating
from webhookcerts.domain import names

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests

FORMATS = {
    "configMap": {"name": "webhook-trust"},
    "additionalFormats": {
        "pkcs12": {"key": "truststore.p12"},
        "jks": {"key": "truststore.jks"},
        "passwordSecretRef": {"name": "truststore-password"},
    },
}


def _password(h: Harness, value: bytes = b"changeit") -> None:
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="truststore-password"),
            data={"password": base64.b64encode(value).decode()},
        ),
    )


def keytool_fingerprints(path: pathlib.Path, store_type: str, password: str = "changeit") -> set[str]:
    """The SHA-256 fingerprints of the trustedCertEntry entries keytool lists (lower-case hex)."""
    keytool = shutil.which("keytool")
    assert keytool, "the JDK's keytool is needed (make setup installs the JDK)"
    out = subprocess.run(
        [keytool, "-list", "-v", "-keystore", str(path), "-storetype", store_type, "-storepass", password],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entries = out.count("Entry type: trustedCertEntry")
    found = {m.replace(":", "").lower() for m in re.findall(r"SHA256: ([0-9A-F:]+)", out)}
    assert entries == len(found), out
    return found


def test_a_configmap_and_truststores_hold_what_ca_crt_holds_through_a_rotation(
    harness: Harness, tmp_path: pathlib.Path
) -> None:
    h = harness
    _password(h)
    status = rotating(h, "java", trust={"secretName": "webhook-trust", **FORMATS})
    assert status.current is not None and status.next is not None
    wanted = {status.current.fingerprint, status.next.fingerprint}
    held = h.api.secret("webhook-trust") or {}
    assert whc.fingerprints_in(held[names.TRUST_KEY]) == wanted
    for key, store_type in (("truststore.p12", "PKCS12"), ("truststore.jks", "JKS")):
        path = tmp_path / key
        path.write_bytes(held[key])
        assert keytool_fingerprints(path, store_type) == wanted, key
    config_map = h.api.core.read_namespaced_config_map("webhook-trust", h.api.namespace)
    assert config_map.data[names.TRUST_KEY] == held[names.TRUST_KEY].decode()
    assert base64.b64decode(config_map.binary_data["truststore.jks"]) == held["truststore.jks"]
    assert condition(h.status("java"), names.TRUST_STORE_INCOMPLETE) is None

    # An idle pass re-encodes nothing (a new PKCS#12 salt would reload every Java server for nothing).
    version = h.resource_version("webhook-trust")
    h.settle("java")
    assert h.resource_version("webhook-trust") == version

    # The emergency's containment reaches every shape.
    h.api.emergency("java", "INC-4")
    h.settle("java")
    after = h.status("java")
    assert after.next is not None
    held = h.api.secret("webhook-trust") or {}
    for key, store_type in (("truststore.p12", "PKCS12"), ("truststore.jks", "JKS")):
        path = tmp_path / f"after-{key}"
        path.write_bytes(held[key])
        assert keytool_fingerprints(path, store_type) == {after.next.fingerprint}, key
    config_map = h.api.core.read_namespaced_config_map("webhook-trust", h.api.namespace)
    assert whc.fingerprints_in(config_map.data[names.TRUST_KEY].encode()) == {after.next.fingerprint}


def test_without_the_truststore_password_ca_crt_is_written_and_the_condition_says_why(harness: Harness) -> None:
    h = harness
    current = active(h, "nopass", trust={"secretName": "webhook-trust", **FORMATS})
    assert h.api.trusted_fingerprints() == {current.fingerprint}
    held = h.api.secret("webhook-trust") or {}
    assert "truststore.p12" not in held and "truststore.jks" not in held
    incomplete = condition(h.status("nopass"), names.TRUST_STORE_INCOMPLETE)
    assert incomplete is not None and incomplete.reason == "TruststoreNotWritten"
    assert "truststore-password" in incomplete.message
    _password(h)
    h.settle("nopass")
    held = h.api.secret("webhook-trust") or {}
    assert "truststore.p12" in held and "truststore.jks" in held
    assert condition(h.status("nopass"), names.TRUST_STORE_INCOMPLETE) is None


def test_objects_sharing_a_store_must_agree_on_its_password(harness: Harness) -> None:
    h = harness
    _password(h)
    active(h, "left", trust={"secretName": "webhook-trust", **FORMATS})
    other = {**FORMATS["additionalFormats"], "passwordSecretRef": {"name": "another-password"}}
    active(h, "right", trust={"secretName": "webhook-trust", "additionalFormats": other})
    incomplete = condition(h.status("right"), names.TRUST_STORE_INCOMPLETE)
    assert incomplete is not None and "different truststore passwords" in incomplete.message
    assert "left" in incomplete.message and "right" in incomplete.message


def test_a_configmap_no_longer_named_keeps_no_certificate(harness: Harness) -> None:
    h = harness
    current = active(h, "moving", trust={"secretName": "webhook-trust", "configMap": {"name": "old-trust"}})
    old = h.api.core.read_namespaced_config_map("old-trust", h.api.namespace)
    assert whc.fingerprints_in(old.data[names.TRUST_KEY].encode()) == {current.fingerprint}
    h.api.custom.patch_namespaced_custom_object(
        "webhookcerts.io",
        "v1alpha1",
        h.api.namespace,
        "webhookcertificates",
        "moving",
        {"spec": {"trust": {"configMap": {"name": "new-trust"}}}},
    )
    h.settle("moving")
    new = h.api.core.read_namespaced_config_map("new-trust", h.api.namespace)
    assert whc.fingerprints_in(new.data[names.TRUST_KEY].encode()) == {current.fingerprint}
    old = h.api.core.read_namespaced_config_map("old-trust", h.api.namespace)
    assert whc.fingerprints_in(old.data[names.TRUST_KEY].encode()) == set()

"""The truststores (PKCS#12, JKS) and the ConfigMap copy never hold a certificate ca.crt does not.

Each case is one way a form used to keep a revoked certificate after ca.crt dropped it: the password
Secret missing, co-tenants naming different passwords, ``spec.trust.secretName`` moved, the formats
removed or their key renamed, a ConfigMap no longer named, a truststore edited by hand. In-process
against the real API server with a fake clock; the truststores are read back with the JDK's keytool.
"""

from __future__ import annotations

import base64
import dataclasses
import pathlib
from typing import Any

import pytest

from tests import whc
from tests.integration.test_service import Harness, active, condition, harness
from tests.integration.test_trust_targets import FORMATS, _password, keytool_fingerprints
from webhookcerts.domain import models, names, truststores
from webhookcerts.service import reconcile

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests

STORE_KEYS = {"truststore.p12": "PKCS12", "truststore.jks": "JKS"}


def _patch_spec(h: Harness, name: str, spec: dict[str, Any]) -> None:
    h.api.custom.patch_namespaced_custom_object(
        models.GROUP, models.VERSION, h.api.namespace, models.PLURAL, name, {"spec": spec}
    )


def forms(
    h: Harness, tmp_path: pathlib.Path, secret_name: str = "webhook-trust", password: str = "changeit"
) -> dict[str, set[str]]:
    """What each form of a trust Secret trusts: ca.crt, and every truststore key keytool can list."""
    held = h.api.secret(secret_name) or {}
    found = {names.TRUST_KEY: whc.fingerprints_in(held.get(names.TRUST_KEY, b""))}
    for key, blob in held.items():
        if key in (names.TRUST_KEY, "tls.crt", "tls.key"):
            continue
        path = tmp_path / f"{secret_name}-{key}"
        path.write_bytes(blob)
        found[key] = keytool_fingerprints(path, "JKS" if key.endswith(".jks") else "PKCS12", password)
    return found


def config_map_forms(h: Harness, name: str, password: str = "changeit") -> dict[str, set[str]]:
    """What each form of a ConfigMap copy trusts (our own reader for the binary keys)."""
    config_map = h.api.core.read_namespaced_config_map(name, h.api.namespace)
    found = {names.TRUST_KEY: whc.fingerprints_in((config_map.data or {}).get(names.TRUST_KEY, "").encode())}
    for key, text in (config_map.binary_data or {}).items():
        blob = base64.b64decode(text)
        ders = truststores.certificates_of(blob, "jks" if key.endswith(".jks") else "pkcs12", password)
        found[key] = {whc.fingerprints_in(_pem(der)).pop() for der in ders}
    return found


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n").encode()


def assert_subsets(found: dict[str, set[str]]) -> None:
    """The invariant: every form trusts a subset of what ca.crt trusts."""
    for key, fingerprints in found.items():
        assert fingerprints <= found[names.TRUST_KEY], f"{key} trusts {fingerprints - found[names.TRUST_KEY]}"


def _with_forms(h: Harness, tmp_path: pathlib.Path, name: str, **trust: Any) -> models.CertificateRecord:
    """An object Active with both truststores written, checked (the positive control of each test)."""
    current = active(h, name, trust={"secretName": "webhook-trust", **FORMATS, **trust})
    held = forms(h, tmp_path)
    assert held == {names.TRUST_KEY: {current.fingerprint}, **{k: {current.fingerprint} for k in STORE_KEYS}}
    return current


def test_password_deleted_then_emergency_leaves_no_truststore_trusting_the_compromised(
    harness: Harness, tmp_path: pathlib.Path
) -> None:
    h = harness
    _password(h)
    current = _with_forms(h, tmp_path, "java")
    assert set(config_map_forms(h, "webhook-trust")) == {names.TRUST_KEY, *STORE_KEYS}
    h.api.core.delete_namespaced_secret("truststore-password", h.api.namespace)
    h.api.emergency("java", "INC-1")
    h.settle("java")
    held = forms(h, tmp_path)
    assert current.fingerprint not in held[names.TRUST_KEY]
    # Not re-encodable without the password: removed, never left holding the compromised certificate.
    assert set(held) == {names.TRUST_KEY}
    assert set(config_map_forms(h, "webhook-trust")) == {names.TRUST_KEY}
    incomplete = condition(h.status("java"), names.TRUST_STORE_INCOMPLETE)
    assert incomplete is not None and incomplete.reason == "TruststoreNotWritten"
    assert "truststore-password" in incomplete.message and "removed" in incomplete.message
    # The password back: the truststores return, holding what ca.crt holds.
    _password(h)
    h.settle("java")
    held = forms(h, tmp_path)
    assert set(held) == {names.TRUST_KEY, *STORE_KEYS}
    assert_subsets(held)
    assert all(fps == held[names.TRUST_KEY] for fps in held.values())


def test_a_co_tenant_naming_another_password_removes_the_truststores(harness: Harness, tmp_path: pathlib.Path) -> None:
    h = harness
    _password(h)
    left = _with_forms(h, tmp_path, "left")
    other = {**FORMATS["additionalFormats"], "passwordSecretRef": {"name": "another-password"}}
    right = active(h, "right", trust={"secretName": "webhook-trust", "additionalFormats": other})
    h.settle("left")
    h.api.emergency("left", "INC-2")
    h.settle("left")
    held = forms(h, tmp_path)
    assert held[names.TRUST_KEY] >= {right.fingerprint} and left.fingerprint not in held[names.TRUST_KEY]
    assert set(held) == {names.TRUST_KEY}, "truststores written for another set than ca.crt"
    incomplete = condition(h.status("left"), names.TRUST_STORE_INCOMPLETE)
    assert incomplete is not None and "different truststore passwords" in incomplete.message
    assert "removed" in incomplete.message


def test_after_the_trust_secret_moved_the_old_one_keeps_no_form_of_its_certificate(
    harness: Harness, tmp_path: pathlib.Path
) -> None:
    h = harness
    _password(h)
    mover = _with_forms(h, tmp_path, "mover")
    stay = active(h, "stay")  # a neighbour that stays, without truststores of its own
    assert forms(h, tmp_path)[names.TRUST_KEY] == {mover.fingerprint, stay.fingerprint}
    _patch_spec(h, "mover", {"trust": {"secretName": "new-trust"}})
    h.settle("mover")
    h.api.emergency("mover", "INC-3")
    h.settle("mover")
    old = forms(h, tmp_path)
    assert old == {names.TRUST_KEY: {stay.fingerprint}}
    new = forms(h, tmp_path, "new-trust")
    assert mover.fingerprint not in set().union(*new.values())
    assert_subsets(new)
    # Both trust Secrets are in the status's record, which the emergency sweep reads.
    recorded = h.status("mover").trust
    assert recorded is not None
    assert {r.secret_name for r in recorded.stores} == {"webhook-trust", "new-trust"}


def test_truststores_no_longer_asked_for_are_removed(harness: Harness, tmp_path: pathlib.Path) -> None:
    h = harness
    _password(h)
    current = _with_forms(h, tmp_path, "dropping")
    _patch_spec(h, "dropping", {"trust": {"additionalFormats": None}})
    h.settle("dropping")
    assert forms(h, tmp_path) == {names.TRUST_KEY: {current.fingerprint}}
    assert config_map_forms(h, "webhook-trust") == {names.TRUST_KEY: {current.fingerprint}}


def test_a_renamed_truststore_key_leaves_no_copy_under_the_old_name(harness: Harness, tmp_path: pathlib.Path) -> None:
    h = harness
    _password(h)
    current = _with_forms(h, tmp_path, "renaming")
    # The Secret's own record of its keys edited away: the status still knows which keys were written.
    h.api.core.patch_namespaced_secret(
        "webhook-trust", h.api.namespace, {"metadata": {"annotations": {"webhookcerts.io/truststore-keys": None}}}
    )
    renamed = {**FORMATS["additionalFormats"], "pkcs12": {"key": "client-trust.p12"}}
    _patch_spec(h, "renaming", {"trust": {"additionalFormats": renamed}})
    h.settle("renaming")
    wanted = {current.fingerprint}
    assert forms(h, tmp_path) == {names.TRUST_KEY: wanted, "client-trust.p12": wanted, "truststore.jks": wanted}
    assert config_map_forms(h, "webhook-trust") == {
        names.TRUST_KEY: wanted,
        "client-trust.p12": wanted,
        "truststore.jks": wanted,
    }


def test_a_configmap_no_longer_named_keeps_neither_certificate_nor_truststore(
    harness: Harness, tmp_path: pathlib.Path
) -> None:
    h = harness
    _password(h)
    current = _with_forms(h, tmp_path, "moving")
    wanted = {current.fingerprint}
    assert config_map_forms(h, "webhook-trust") == {names.TRUST_KEY: wanted, **{k: wanted for k in STORE_KEYS}}
    _patch_spec(h, "moving", {"trust": {"configMap": {"name": "new-trust"}}})
    h.settle("moving")
    assert config_map_forms(h, "webhook-trust") == {names.TRUST_KEY: set()}
    assert config_map_forms(h, "new-trust") == {names.TRUST_KEY: wanted, **{k: wanted for k in STORE_KEYS}}


@pytest.mark.parametrize("recheck", [0, 3600], ids=["every-pass", "hourly"])
def test_a_hand_edited_truststore_is_rewritten_with_an_event(
    harness: Harness, tmp_path: pathlib.Path, recheck: int
) -> None:
    h = harness
    # Hourly: the password is not due to be read again; the edit itself (its new bytes) has it read.
    h.ctx = dataclasses.replace(h.ctx, bundle_recheck_seconds=recheck)
    _password(h)
    current = _with_forms(h, tmp_path, "edited")
    held = h.api.secret("webhook-trust") or {}
    stranger = whc.self_signed_pem("stranger.example.com")
    both = held[names.TRUST_KEY] + stranger
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        h.api.namespace,
        {
            "data": {
                "truststore.p12": base64.b64encode(truststores.pkcs12(both, "changeit")).decode(),
                "truststore.jks": base64.b64encode(truststores.jks(both, "changeit")).decode(),
            }
        },
    )
    edited = forms(h, tmp_path)
    assert edited["truststore.p12"] == edited["truststore.jks"] == {current.fingerprint} | whc.fingerprints_in(stranger)
    # What the engine does when it sees the trust Secret change.
    ns = h.api.namespace
    reconcile.sync_trust(h.ctx, reconcile.snapshot(h.ctx, ns), ns, "webhook-trust")
    assert forms(h, tmp_path) == {
        names.TRUST_KEY: {current.fingerprint},
        **{k: {current.fingerprint} for k in STORE_KEYS},
    }
    events = h.api.core.list_namespaced_event(h.api.namespace, field_selector="involvedObject.name=webhook-trust")
    restored = [e for e in events.items if e.reason == "TrustStoreRestored"]
    assert len(restored) == 1 and "truststore.p12" in restored[0].message and "truststore.jks" in restored[0].message


def test_the_emergency_sweep_finds_an_old_trust_secret_by_the_status_record(
    harness: Harness, tmp_path: pathlib.Path
) -> None:
    h = harness
    mover = active(h, "mover")
    _patch_spec(h, "mover", {"trust": {"secretName": "new-trust"}})
    h.settle("mover")
    assert forms(h, tmp_path) == {names.TRUST_KEY: set()}
    # The old Secret holds the certificate again and lists nobody (a write lost, a backup restored):
    # nothing but the status's record still connects it with the object.
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        h.api.namespace,
        {
            "metadata": {"annotations": {names.SOURCES_ANNOTATION: None, names.TRUST_HASH_ANNOTATION: None}},
            "data": {names.TRUST_KEY: base64.b64encode(mover.certificate.encode()).decode()},
        },
    )
    assert forms(h, tmp_path) == {names.TRUST_KEY: {mover.fingerprint}}
    h.api.emergency("mover", "INC-5")
    h.run("mover")
    assert forms(h, tmp_path) == {names.TRUST_KEY: set()}


def test_a_password_the_jdk_cannot_use_keeps_no_stale_truststore(harness: Harness, tmp_path: pathlib.Path) -> None:
    h = harness
    _password(h)
    current = _with_forms(h, tmp_path, "java")
    h.api.core.patch_namespaced_secret(
        "truststore-password", h.api.namespace, {"data": {"password": base64.b64encode("pässwort".encode()).decode()}}
    )
    h.settle("java")
    # Still exactly what ca.crt holds: kept, and the condition says why nothing new can be written.
    assert forms(h, tmp_path) == {
        names.TRUST_KEY: {current.fingerprint},
        **{k: {current.fingerprint} for k in STORE_KEYS},
    }
    incomplete = condition(h.status("java"), names.TRUST_STORE_INCOMPLETE)
    assert incomplete is not None and incomplete.reason == "TruststoreNotWritten" and "ASCII" in incomplete.message
    h.api.emergency("java", "INC-6")
    h.settle("java")
    held = forms(h, tmp_path)
    assert set(held) == {names.TRUST_KEY} and current.fingerprint not in held[names.TRUST_KEY]

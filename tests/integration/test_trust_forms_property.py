"""A property over random sequences: no trust form anywhere ever trusts a revoked certificate.

Two WebhookCertificates go through emergencies, planned rotations, cut-overs and delete-and-re-create
(as `kubectl replace --force` does, with or without the annotations) while their trust Secrets move,
their truststore formats and ConfigMaps change and the truststore password Secret comes and goes. After
every step, each trust Secret and ConfigMap ever named is read in every form (ca.crt, the PKCS#12 and
JKS truststores, the ConfigMap's ca.crt and binaryData): none holds a fingerprint any status ever
revoked (a revoked fingerprint never returns, across re-creation too), and none holds a certificate its
own ca.crt does not.

Keys come from a small pool of RSA-4096 keys made once (the operator accepts no other size; a fresh key
per certificate would make each example take minutes); each certificate is new all the same.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import itertools
from typing import Any

import kubernetes
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import whc
from tests.integration.test_service import Harness, harness
from webhookcerts.domain import models, names, pki, trust, truststores
from webhookcerts.service import reconcile

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests

PASSWORDS = {"pw-one": "changeit", "pw-two": "another"}
_POOL: list[rsa.RSAPrivateKey] = []
_EXAMPLES = itertools.count()


@dataclasses.dataclass
class PooledKeygen:
    """A new certificate each call, on one of a few keys made once for the whole module."""

    size: int = 3
    calls: int = 0

    def __call__(self, subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> pki.KeyPair:
        while len(_POOL) < self.size:
            _POOL.append(pki.generate_private_key())
        key = _POOL[self.calls % self.size]
        self.calls += 1
        cert = pki.issue_certificate(key, subject, now, duration)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pki.KeyPair(key_pem=key_pem, cert_pem=cert.public_bytes(serialization.Encoding.PEM))


OBJECTS = ("a", "b")
Step = tuple[str, str, int]
STEPS = st.tuples(
    st.sampled_from(["emergency", "rotate", "cutover", "formats", "config-map", "move", "password", "recreate"]),
    st.sampled_from(OBJECTS),
    st.integers(min_value=0, max_value=3),
)


def _formats(variant: int, run: str) -> dict[str, Any] | None:
    ref = {"name": f"pw-one-{run}"}
    return [
        None,
        {"pkcs12": {"key": "truststore.p12"}, "jks": {"key": "truststore.jks"}, "passwordSecretRef": ref},
        {"pkcs12": {"key": "renamed.p12"}, "passwordSecretRef": ref},
        {"jks": {"key": "truststore.jks"}, "passwordSecretRef": {"name": f"pw-two-{run}"}},
    ][variant]


class Run:
    def __init__(self, h: Harness) -> None:
        self.h = h
        self.id = str(next(_EXAMPLES))
        self.incidents = itertools.count()
        self.secrets = {f"{obj}-trust-{i}-{self.id}" for obj in ("s",) for i in (1, 2)}
        self.config_maps: set[str] = set()
        self.objects = {obj: f"{obj}-{self.id}" for obj in OBJECTS}
        # Every fingerprint any status ever revoked: none may come back, whatever is re-created.
        self.revoked: set[str] = set()

    def name(self, obj: str) -> str:
        return self.objects[obj]

    def patch(self, obj: str, spec: dict[str, Any]) -> None:
        self.h.api.custom.patch_namespaced_custom_object(
            models.GROUP, models.VERSION, self.h.api.namespace, models.PLURAL, self.name(obj), {"spec": spec}
        )

    def password(self, secret: str, present: bool) -> None:
        name, ns = f"{secret}-{self.id}", self.h.api.namespace
        try:
            if present:
                value = base64.b64encode(PASSWORDS[secret].encode()).decode()
                body = kubernetes.client.V1Secret(
                    metadata=kubernetes.client.V1ObjectMeta(name=name), data={"password": value}
                )
                self.h.api.core.create_namespaced_secret(ns, body)
            else:
                self.h.api.core.delete_namespaced_secret(name, ns)
        except kubernetes.client.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def step(self, action: str, obj: str, variant: int) -> None:
        h, name = self.h, self.name(obj)
        if action == "emergency":
            h.api.emergency(name, f"INC-{self.id}-{next(self.incidents)}")
        elif action == "rotate":
            renewal = h.status(name).renewal_time
            if renewal is not None and renewal > h.fake.now():
                h.fake.set(renewal)
        elif action == "cutover":
            pending = h.status(name).next
            if pending is not None:
                h.api.cutover(name, pending.serial)
        elif action == "formats":
            self.patch(obj, {"trust": {"additionalFormats": _formats(variant, self.id)}})
        elif action == "config-map":
            config_map = None if variant == 0 else f"cm-{obj}-{variant % 2}-{self.id}"
            if config_map is not None:
                self.config_maps.add(config_map)
            self.patch(obj, {"trust": {"configMap": {"name": config_map} if config_map else None}})
        elif action == "move":
            self.patch(obj, {"trust": {"secretName": f"s-trust-{variant % 2 + 1}-{self.id}"}})
        elif action == "password":
            self.password("pw-one" if variant < 2 else "pw-two", present=variant % 2 == 0)
        elif action == "recreate":
            self.recreate(name, keep_annotations=variant % 2 == 0)
        for other in OBJECTS:
            h.settle(self.name(other))

    def recreate(self, name: str, *, keep_annotations: bool) -> None:
        """Delete, let the trust Secrets follow (the engine's deletion watch), check, create again."""
        h, ns = self.h, self.h.api.namespace
        body = h.api.get(name)
        h.api.custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, ns, models.PLURAL, name)
        seen = reconcile.snapshot(h.ctx, ns)
        for secret in sorted(self.secrets):
            reconcile.sync_trust(h.ctx, seen, ns, secret)
        self.check(gone=name)
        manifest = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "metadata": {
                "name": name,
                "annotations": (body["metadata"].get("annotations") or {}) if keep_annotations else {},
            },
            "spec": body["spec"],
        }
        h.api.custom.create_namespaced_custom_object(models.GROUP, models.VERSION, ns, models.PLURAL, manifest)

    def check(self, gone: str | None = None) -> None:
        for obj in OBJECTS:
            if self.name(obj) == gone:
                continue
            status = self.h.status(self.name(obj))
            self.revoked.update(pki.normalize_fingerprint(f) for f in status.revoked_fingerprints)
        revoked = self.revoked
        for secret in sorted(self.secrets):
            held = self.h.api.secret(secret)
            if held is not None:
                _check_forms(f"Secret {secret}", held, revoked)
        for config_map in sorted(self.config_maps):
            try:
                found = self.h.api.core.read_namespaced_config_map(config_map, self.h.api.namespace)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            held = {k: v.encode() for k, v in (found.data or {}).items()}
            held.update({k: base64.b64decode(v) for k, v in (found.binary_data or {}).items()})
            _check_forms(f"ConfigMap {config_map}", held, revoked)


def _fingerprints(key: str, blob: bytes) -> set[str]:
    if key == names.TRUST_KEY:
        return whc.fingerprints_in(blob)
    form = "jks" if blob[:4] == b"\xfe\xed\xfe\xed" else "pkcs12"
    for password in PASSWORDS.values():
        try:
            held = {hashlib.sha256(der).hexdigest() for der in truststores.certificates_of(blob, form, password)}
            # The trust-nobody placeholder of an empty store, as ca.crt is read (whc.fingerprints_in).
            return held - {trust.PLACEHOLDER_FINGERPRINT}
        except truststores.TrustStoreError:
            continue
    raise AssertionError(f"{key} cannot be read with any password the test used")


def _check_forms(where: str, held: dict[str, bytes], revoked: set[str]) -> None:
    pem = _fingerprints(names.TRUST_KEY, held.get(names.TRUST_KEY, b""))
    for key, blob in held.items():
        found = _fingerprints(key, blob)
        assert not found & revoked, f"{where} {key} trusts revoked {sorted(found & revoked)}"
        assert found <= pem, f"{where} {key} trusts {sorted(found - pem)}, which its ca.crt does not"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEPS, min_size=4, max_size=9))
# Always tried, whatever the random draw: re-creation after an emergency, with and without the annotation.
@example(
    steps=[
        ("emergency", "a", 0),
        ("recreate", "a", 0),
        ("cutover", "a", 0),
        ("emergency", "b", 1),
        ("recreate", "b", 1),
    ]
)
@pytest.mark.long
def test_no_trust_form_ever_trusts_a_revoked_certificate(harness: Harness, steps: list[Step]) -> None:
    h = harness
    h.ctx = dataclasses.replace(h.ctx, keygen=PooledKeygen())
    run = Run(h)
    run.password("pw-one", present=True)
    for obj in OBJECTS:
        h.create(run.name(obj), trust={"secretName": f"s-trust-1-{run.id}", "additionalFormats": _formats(1, run.id)})
        h.settle(run.name(obj))
    run.check()
    for action, obj, variant in steps:
        run.step(action, obj, variant)
        run.check()

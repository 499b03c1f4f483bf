"""Test helpers for WebhookCertificates on a real API server: create, read, annotate, inspect Secrets.

The benchmarks (benchmarks/harness.py) drive their WebhookCertificates with these too.
"""

from __future__ import annotations

import base64
import datetime
import pathlib
import subprocess
from typing import Any

import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webhookcerts.domain import models, names, pki, trust


def api_client(kubeconfig: pathlib.Path) -> kubernetes.client.ApiClient:
    """A client with the credentials of ``kubeconfig``, leaving the process-wide default alone."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "environment": "sandbox",
        "subject": {"commonName": f"{name}.webhooks.example.com", "organization": "Example"},
        "secretName": f"{name}-tls",
        "trust": {"secretName": "webhook-trust"},
    }
    body_spec.update(spec)
    return {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": models.KIND,
        "metadata": {"name": name},
        "spec": body_spec,
    }


class Api:
    """Thin wrappers that keep the tests about behaviour, not client plumbing."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, manifest(name, **spec)
        )
        return obj

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, name
        )
        return obj

    def status(self, name: str) -> models.WebhookCertificateStatus:
        return models.WebhookCertificateStatus.model_validate(self.get(name).get("status") or {})

    def annotate(self, name: str, **annotations: str | None) -> None:
        self.custom.patch_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            self.namespace,
            models.PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
        )

    def patch_spec(self, name: str, **spec: Any) -> None:
        """A merge patch of the spec (``renewBefore`` close to ``duration`` makes the planned rotation due
        at once: the operator reconciles the change, so a test starts it when it is ready for it)."""
        self.custom.patch_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, name, {"spec": spec}
        )

    def emergency(self, name: str, reference: str) -> None:
        self.annotate(name, **{names.EMERGENCY_ANNOTATION: reference})

    def cutover(self, name: str, serial: str) -> None:
        self.annotate(name, **{names.CUTOVER_ANNOTATION: serial})

    def secret(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def secret_object(self, name: str) -> kubernetes.client.V1Secret:
        return self.core.read_namespaced_secret(name, self.namespace)

    def trusted_fingerprints(self, trust_secret: str = "webhook-trust") -> set[str]:
        data = self.secret(trust_secret) or {}
        return fingerprints_in(data.get(names.TRUST_KEY, b""))

    def events(self, name: str, reason: str | None = None) -> list[kubernetes.client.CoreV1Event]:
        items = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}").items
        return [e for e in items if reason is None or e.reason == reason]

    def condition(self, name: str, type: str) -> models.Condition | None:
        return next((c for c in self.status(name).conditions if c.type == type), None)


def fingerprints_in(pem_bundle: bytes) -> set[str]:
    """The client certificates a trust bundle admits (the placeholder of an empty store admits none)."""
    if not pem_bundle.strip():
        return set()
    return {pki.fingerprint(c) for c in x509.load_pem_x509_certificates(pem_bundle)} - {trust.PLACEHOLDER_FINGERPRINT}


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], capture_output=True, input=input, timeout=60)


def key_fragments(api: Api, *secret_names: str) -> list[str]:
    """Recognisable runs of each key Secret's private key: a line of its PEM body, and a run of the
    base64 of the whole PEM (how it would appear in a dumped Secret)."""
    fragments: list[str] = []
    for name in secret_names:
        key = (api.secret(name) or {}).get("tls.key", b"")
        if key:
            fragments.append(key.decode().splitlines()[5])
            fragments.append(base64.b64encode(key).decode()[120:180])
    return fragments


def assert_no_key_material(places: dict[str, str], fragments: list[str]) -> None:
    """No PEM private-key marker and no run of any key in any of ``places`` (logs, Events, status, CLI)."""
    assert fragments, "no key to look for"
    for where, text in places.items():
        assert "PRIVATE KEY-----" not in text, where
        for fragment in fragments:
            assert fragment not in text, where


def assert_secrets_hygienic(api: Api) -> None:
    """Every Secret the operator wrote carries its labels, and no unencrypted key lives outside a key Secret."""
    for secret in api.core.list_namespaced_secret(api.namespace).items:
        labels = secret.metadata.labels or {}
        name = secret.metadata.name
        ours = labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY
        if ours:
            assert labels.get(names.ROLE_LABEL) in ("key", "next", "bundle", "trust"), name
        for key, value in (secret.data or {}).items():
            plain = base64.b64decode(value)
            if b"-----BEGIN PRIVATE KEY-----" in plain or b"-----BEGIN RSA PRIVATE KEY-----" in plain:
                assert ours and labels.get(names.ROLE_LABEL) in ("key", "next"), f"{name}/{key}"
                assert secret.type == "kubernetes.io/tls" and key == "tls.key", f"{name}/{key}"


def self_signed_pem(
    common_name: str,
    key: Any = None,
    start: datetime.datetime = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
) -> bytes:
    """A self-signed certificate valid ten years from ``start`` (an EC P-256 key unless one is given):
    a client certificate for trust-store tests, fixed in time so no test depends on today's date."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)

"""Test helpers for WebhookCertificates on a real API server: create, read, annotate, inspect Secrets.

The benchmarks (benchmarks/harness.py) drive their WebhookCertificates with these too.
"""

from __future__ import annotations

import base64
import pathlib
import subprocess
from typing import Any

import kubernetes
from cryptography import x509

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

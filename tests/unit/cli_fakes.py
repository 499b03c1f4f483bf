"""A cluster for the CLI's unit tests: the ``cli_support`` calls answered from dicts, and recorded.

The verbs reach the API only through ``cli_support`` (a layer contract), so replacing its functions is
enough to run a verb end to end without an API server; ``connects`` records how each invocation asked
to connect, which is what the option-placement tests check.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from webhookcerts.domain import models
from webhookcerts.kube import cli_support
from webhookcerts.kube import secrets as kube_secrets

CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PRIVATE_KEY = (
    b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
)


def record(serial: str, **extra: Any) -> dict[str, Any]:
    return {
        "serial": serial,
        "fingerprint": serial.lower() * (64 // len(serial)),
        "notBefore": "2026-01-01T00:00:00Z",
        "notAfter": "2026-04-01T00:00:00Z",
        "certificate": CERTIFICATE,
        "secretName": f"key-{serial.lower()}",
        "revision": 1,
        **extra,
    }


def whc(name: str, namespace: str = "webhooks", *, pending: bool = False) -> dict[str, Any]:
    """A WebhookCertificate as the API returns it, managed fields and all."""
    status: dict[str, Any] = {
        "stage": "Rotating" if pending else "Active",
        "revision": 2 if pending else 1,
        "current": record("AA01"),
        "renewalTime": "2026-03-01T00:00:00Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Issued",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    if pending:
        status["next"] = record("BB02", reason="Planned", issuedAt="2026-03-01T00:00:00Z")
    return {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": models.KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "managedFields": [{"manager": "webhookcerts", "operation": "Update"}],
        },
        "spec": {
            "environment": "live",
            "subject": {"commonName": f"{name}.example.com"},
            "secretName": f"{name}-tls",
            "trust": {"secretName": "webhook-trust"},
        },
        "status": status,
    }


@dataclasses.dataclass
class FakeCluster:
    objects: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    secrets: dict[tuple[str, str], kube_secrets.SecretData] = dataclasses.field(default_factory=dict)
    # (kubeconfig, context, namespace) as each invocation asked for them.
    connects: list[tuple[str | None, str | None, str | None]] = dataclasses.field(default_factory=list)
    secrets_read: list[str] = dataclasses.field(default_factory=list)
    annotated: list[tuple[str, dict[str, str | None]]] = dataclasses.field(default_factory=list)

    def add(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[meta["namespace"], meta["name"]] = obj

    def add_key_secret(self, namespace: str, name: str) -> None:
        data = {"tls.key": PRIVATE_KEY, "tls.crt": CERTIFICATE.encode()}
        secret = kube_secrets.SecretData(name, "kubernetes.io/tls", data, {}, {}, "1", f"s-{name}")
        self.secrets[namespace, name] = secret

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
        monkeypatch.setattr(cli_support, "connect", self.connect)
        monkeypatch.setattr(cli_support, "get", self.get)
        monkeypatch.setattr(cli_support, "list_objects", self.list_objects)
        monkeypatch.setattr(cli_support, "read_secret", self.read_secret)
        monkeypatch.setattr(cli_support, "annotate", self.annotate)
        return self

    def connect(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> cli_support.Session:
        self.connects.append((kubeconfig, context, namespace))
        return cli_support.Session(clients=None, namespace=namespace or "default")  # type: ignore[arg-type]

    def get(self, session: cli_support.Session, name: str) -> dict[str, Any]:
        try:
            return self.objects[session.namespace, name]
        except KeyError:
            raise cli_support.CommandError(
                f"{cli_support.KIND} {name} not found in namespace {session.namespace}"
            ) from None

    def list_objects(self, session: cli_support.Session, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
        return [o for (ns, _), o in self.objects.items() if all_namespaces or ns == session.namespace]

    def read_secret(self, session: cli_support.Session, name: str) -> kube_secrets.SecretData:
        self.secrets_read.append(name)
        try:
            return self.secrets[session.namespace, name]
        except KeyError:
            raise cli_support.CommandError(f"Secret {name} not found in namespace {session.namespace}") from None

    def annotate(self, session: cli_support.Session, name: str, annotations: dict[str, str | None]) -> None:
        self.get(session, name)
        self.annotated.append((name, annotations))

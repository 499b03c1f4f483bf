"""Many WebhookCertificates in one namespace, for the benchmarks that measure the operator among them.

Two ways to get there. ``create_all`` applies N objects at once and lets the operator issue every first
key: the scale benchmark times exactly that. ``create_adopted`` writes each object's key Secret first
(one RSA-4096 key, a certificate of its own per object, made here in seconds) and the operator adopts
them without generating a key: the emergency benchmark needs N objects present, in the view and the
watches as issued ones are, not seven minutes of key generation before every run.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import pathlib
from collections.abc import Callable
from typing import Any

import kubernetes
from cryptography.hazmat.primitives import serialization
from tests import processes

from benchmarks import harness
from webhookcerts.domain import models, names, pki

CERT_PREFIX = "c"
PARALLEL = 8


def name_of(i: int) -> str:
    return f"{CERT_PREFIX}-{i:04d}"


def spec_of(i: int) -> dict[str, Any]:
    """Sandbox and live in pairs sharing one trust Secret."""
    return {"environment": "sandbox" if i % 2 == 0 else "live", "trust": {"secretName": f"trust-{i // 2:04d}"}}


def create_all(handle: harness.Cluster, n: int, first: int = 0) -> None:
    def one(i: int) -> None:
        handle.create(name_of(i), **spec_of(i))

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, range(first, first + n)))


def create_adopted(handle: harness.Cluster, n: int, first: int = 0) -> None:
    """N objects whose key Secrets exist before them: the operator adopts each, generating no key."""
    key = pki.generate_private_key()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    now = datetime.datetime.now(datetime.UTC)

    def one(i: int) -> None:
        name = name_of(i)
        subject = models.Subject.model_validate({"commonName": f"{name}.webhooks.example.com"})
        # A year, as the spec's duration: adopted objects must not be due for renewal (renewBefore 2160h).
        cert = pki.issue_certificate(key, subject, now, datetime.timedelta(days=365))
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        data = {names.TLS_KEY: key_pem, names.TLS_CERT: cert_pem}
        handle.core.create_namespaced_secret(
            handle.namespace,
            kubernetes.client.V1Secret(
                metadata=kubernetes.client.V1ObjectMeta(name=f"{name}-tls"),
                type="kubernetes.io/tls",
                data={k: base64.b64encode(v).decode() for k, v in data.items()},
            ),
        )
        handle.create(name, **spec_of(i))

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, range(first, first + n)))


def listing(handle: harness.Cluster) -> list[dict[str, Any]]:
    result = handle.custom.list_namespaced_custom_object(models.GROUP, models.VERSION, handle.namespace, models.PLURAL)
    items: list[dict[str, Any]] = result["items"]
    return items


def ready_count(items: list[dict[str, Any]]) -> int:
    count = 0
    for item in items:
        for condition in (item.get("status") or {}).get("conditions") or []:
            if condition.get("type") == names.READY and condition.get("status") == "True":
                count += 1
    return count


def wait_ready(
    handle: harness.Cluster, n: int, alive: Callable[[], None], *, timeout: float, log: pathlib.Path | None = None
) -> None:
    """Until n objects are Ready; ``alive`` raises when the operator has exited. Polled every 2 s: a
    LIST of a thousand objects is megabytes, and decoding it takes a good part of a core."""

    def done() -> bool:
        alive()
        return ready_count(listing(handle)) >= n

    try:
        processes.wait_for(done, timeout=timeout, what=f"{n} WebhookCertificates Ready", interval=2.0)
    except processes.TimedOut as exc:
        tail = log.read_text(errors="replace")[-2000:] if log is not None else ""
        raise harness.BenchmarkError(f"{exc}\n{tail}") from None

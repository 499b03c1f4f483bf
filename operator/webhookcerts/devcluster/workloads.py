"""The reference receiver as a Deployment on the local node, as docs/receiver.md tells users to run it.

The demo, the pod-reload benchmark and the end-to-end tests deploy the same one: the project's image
running ``webhookcerts receiver``, its serving pair and the trust Secret mounted as directories (never
``subPath``: a subPath mount is never updated), on the host's network because the local node has no
pod network, on a loopback port the container declares so that the scheduler keeps a second pod off
it. ``Recreate``: a replaced pod can listen only once the old one has gone.
"""

from __future__ import annotations

from typing import Any

TRUST_MOUNT = "/trust"
TLS_MOUNT = "/tls"


def receiver_deployment(
    app: str, image: str, port: int, *, trust_secret: str, tls_secret: str, namespace: str | None = None
) -> dict[str, Any]:
    """A one-replica Deployment of the receiver, its pods labelled ``app=<app>``."""
    command = ["webhookcerts", "receiver", "--cert", f"{TLS_MOUNT}/tls.crt", "--key", f"{TLS_MOUNT}/tls.key"]
    command += ["--trust-dir", TRUST_MOUNT, "--host", "127.0.0.1", "--port", str(port)]
    container = {
        "name": "receiver",
        "image": image,
        "command": command,
        "ports": [{"containerPort": port}],
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
            {"name": "trust", "mountPath": TRUST_MOUNT, "readOnly": True},
        ],
    }
    metadata: dict[str, str] = {"name": app, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "hostNetwork": True,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [
                        {"name": "tls", "secret": {"secretName": tls_secret}},
                        {"name": "trust", "secret": {"secretName": trust_secret}},
                    ],
                },
            },
        },
    }

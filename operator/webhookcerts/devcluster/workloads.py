"""The reference receiver as a Deployment on the local node, as docs/receiver.md tells users to run it.

The demo, the pod-reload benchmark and the end-to-end tests deploy the same one: the project's image
running ``webhookcerts receiver``, its serving pair and the trust Secret mounted as directories (never
``subPath``: a subPath mount is never updated), on the host's network because the local node has no
pod network, on a loopback port the container declares so that the scheduler keeps a second pod off
it. ``Recreate``: a replaced pod can listen only once the old one has gone.

With ``sidecar`` the trust directory is an ``emptyDir`` kept in step with the trust Secret by
trust-sync in a native sidecar (an init container with ``restartPolicy: Always``), as docs/receiver.md
shows it: the kubelet has no part in bringing a change, and its startup probe holds the receiver back
until the first ``ca.crt`` is there.

With ``signature_keys`` the receiver requires the provider's webhook signatures (its "v6" scheme, named
although it is the default, so that the manifest says what it checks): the provider's public keys come
from that Secret, one ``<keyid>.pem`` per data key, mounted as a key directory. The provider adds a key
there before it signs with it and removes the old one after, and the receiver rereads the directory, so
a roll of the provider's signing key needs no restart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

TRUST_MOUNT = "/trust"
TLS_MOUNT = "/tls"
SIGNATURE_KEYS_MOUNT = "/signature-keys"
SIGNATURE_SCHEME = "provider-v6"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"


@dataclasses.dataclass(frozen=True)
class Sidecar:
    """trust-sync beside the receiver: the account it reads the Secret as, and the env that points an
    in-cluster client at the API server (``DevCluster.pod_api_env()`` on the local node)."""

    namespace: str
    service_account: str
    env: list[dict[str, str]]


def trust_sync_sidecar(image: str, trust_secret: str, sidecar: Sidecar) -> dict[str, Any]:
    return {
        "name": "trust-sync",
        "image": image,
        "restartPolicy": "Always",
        "command": ["webhookcerts", "trust-sync", "--secret", f"{sidecar.namespace}/{trust_secret}"],
        "args": ["--dir", TRUST_MOUNT, "--key", "ca.crt"],
        "env": sidecar.env,
        "startupProbe": {
            "exec": {"command": ["test", "-s", f"{TRUST_MOUNT}/ca.crt"]},
            "periodSeconds": 1,
            "failureThreshold": 120,
        },
        "volumeMounts": [{"name": "trust", "mountPath": TRUST_MOUNT}],
    }


def receiver_deployment(
    app: str,
    image: str,
    port: int,
    *,
    trust_secret: str,
    tls_secret: str,
    namespace: str | None = None,
    sidecar: Sidecar | None = None,
    signature_keys: str | None = None,
) -> dict[str, Any]:
    """A one-replica Deployment of the receiver, its pods labelled ``app=<app>``; with ``signature_keys``
    (a Secret of the provider's public keys) it requires the provider's signature on every delivery."""
    command = ["webhookcerts", "receiver", "--cert", f"{TLS_MOUNT}/tls.crt", "--key", f"{TLS_MOUNT}/tls.key"]
    command += ["--trust-dir", TRUST_MOUNT, "--host", "127.0.0.1", "--port", str(port)]
    mounts = [
        {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
        {"name": "trust", "mountPath": TRUST_MOUNT, "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = []
    if signature_keys is not None:
        command += ["--signature-key", SIGNATURE_KEYS_MOUNT, "--signature-scheme", SIGNATURE_SCHEME]
        mounts.append({"name": "signature-keys", "mountPath": SIGNATURE_KEYS_MOUNT, "readOnly": True})
        volumes.append({"name": "signature-keys", "secret": {"secretName": signature_keys}})
    container = {
        "name": "receiver",
        "image": image,
        "command": command,
        "ports": [{"containerPort": port}],
        "volumeMounts": mounts,
    }
    metadata: dict[str, str] = {"name": app, **({"namespace": namespace} if namespace else {})}
    trust_volume: dict[str, Any] = {"name": "trust", "secret": {"secretName": trust_secret}}
    pod: dict[str, Any] = {"automountServiceAccountToken": False}
    if sidecar is not None:
        trust_volume = {"name": "trust", "emptyDir": {}}
        pod = {
            "serviceAccountName": sidecar.service_account,
            "initContainers": [trust_sync_sidecar(image, trust_secret, sidecar)],
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "strategy": {"type": "Recreate"},
            "template": {
                # `kubectl logs POD` shows the receiver's log, also beside a sidecar.
                "metadata": {"labels": {"app": app}, "annotations": {DEFAULT_CONTAINER: "receiver"}},
                "spec": {
                    "hostNetwork": True,
                    "terminationGracePeriodSeconds": 5,
                    **pod,
                    "containers": [container],
                    "volumes": [{"name": "tls", "secret": {"secretName": tls_secret}}, trust_volume, *volumes],
                },
            },
        },
    }

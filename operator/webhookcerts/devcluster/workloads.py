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

With ``reporting`` the receiver writes its pod's PresentationReport (issue 24: which certificate the
provider presents, so that the operator can cut over when the provider has switched): the pod runs as
a ServiceAccount allowed to write reports (``reporter_rbac``), learns its own name, namespace and uid
from the downward API (the report is named after the pod and owned by it), and its token is mounted
(projected by the kubelet, so that it carries the pod's name and uid for the admission policy).
``log_reader_deployment`` is the other kind of reporter: trust-sync beside a server that runs on the
host (nginx, HAProxy), keeping the server's trust directory and reading its access log, both on a
hostPath.
"""

from __future__ import annotations

import dataclasses
from typing import Any

TRUST_MOUNT = "/trust"
TLS_MOUNT = "/tls"
SIGNATURE_KEYS_MOUNT = "/signature-keys"
SIGNATURE_SCHEME = "provider-v6"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
# What a reporter may do with reports: the chart's ClusterRole <fullname>-reporter says the same.
REPORTS_RULE = {
    "apiGroups": ["webhookcerts.io"],
    "resources": ["presentationreports"],
    "verbs": ["create", "get", "update", "patch"],
}


@dataclasses.dataclass(frozen=True)
class Sidecar:
    """trust-sync beside the receiver: the account it reads the Secret as, and the env that points an
    in-cluster client at the API server (``DevCluster.pod_api_env()`` on the local node)."""

    namespace: str
    service_account: str
    env: list[dict[str, str]]


@dataclasses.dataclass(frozen=True)
class Reporting:
    """A reporter's account (see ``reporter_rbac``), the env that points it at the API server
    (``DevCluster.pod_api_env()``), and how often it sends a heartbeat (None: the reporter's default)."""

    service_account: str
    env: list[dict[str, str]]
    interval: float | None = None

    def args(self) -> list[str]:
        return [] if self.interval is None else ["--report-interval", f"{self.interval:g}"]


def pod_identity_env() -> list[dict[str, Any]]:
    """POD_NAME, POD_NAMESPACE and POD_UID from the downward API: whose report a reporter writes."""
    fields = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_UID": "metadata.uid"}
    return [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in fields.items()]


def reporter_rbac(
    namespace: str, account: str, *, cluster_role: str | None = None, trust_secret: str | None = None
) -> list[dict[str, Any]]:
    """The ServiceAccount of a reporter and what it may do: write reports, through the chart's
    ClusterRole ``cluster_role`` when the chart is installed, else a Role of its own that grants the
    same; with ``trust_secret``, also read that one Secret (trust-sync keeping a trust directory)."""
    rules: list[dict[str, Any]] = [] if cluster_role else [REPORTS_RULE]
    if trust_secret is not None:
        rules.append(
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [trust_secret],
             "verbs": ["get", "list", "watch"]}
        )  # fmt: skip
    meta = {"name": account, "namespace": namespace}
    subjects = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}]
    rbac = "rbac.authorization.k8s.io"
    if rules:
        objects += [
            {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": meta, "rules": rules},
            {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": meta, "subjects": subjects,
             "roleRef": {"apiGroup": rbac, "kind": "Role", "name": account}},
        ]  # fmt: skip
    if cluster_role:
        objects.append(
            {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding",
             "metadata": {**meta, "name": f"{account}-reporter"}, "subjects": subjects,
             "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": cluster_role}}
        )  # fmt: skip
    return objects


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
    reporting: Reporting | None = None,
) -> dict[str, Any]:
    """A one-replica Deployment of the receiver, its pods labelled ``app=<app>``; with ``signature_keys``
    (a Secret of the provider's public keys) it requires the provider's signature on every delivery;
    with ``reporting`` it reports what it sees (a pod has one account: the sidecar's, if both)."""
    if sidecar is not None and reporting is not None and sidecar.service_account != reporting.service_account:
        raise ValueError("the sidecar and the reporter run in one pod: give them one ServiceAccount")
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
    container: dict[str, Any] = {
        "name": "receiver",
        "image": image,
        "command": command,
        "ports": [{"containerPort": port}],
        "volumeMounts": mounts,
    }
    if reporting is not None:
        container["command"] = [*command, "--report-trust-secret", trust_secret, *reporting.args()]
        container["env"] = [*reporting.env, *pod_identity_env()]
    metadata: dict[str, str] = {"name": app, **({"namespace": namespace} if namespace else {})}
    trust_volume: dict[str, Any] = {"name": "trust", "secret": {"secretName": trust_secret}}
    pod: dict[str, Any] = {"automountServiceAccountToken": False}
    if reporting is not None:
        # The token mounted (the kubelet projects one bound to the pod) is the reporter's credential.
        pod = {"serviceAccountName": reporting.service_account}
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


def log_reader_deployment(
    app: str,
    image: str,
    *,
    trust_secret: str,
    namespace: str,
    host_dir: str,
    access_log: str,
    log_format: str,
    reporting: Reporting,
) -> dict[str, Any]:
    """trust-sync for a server on the host (docs/receivers/): it keeps ``<host_dir>/trust`` in step with
    the trust Secret for the server and reports what the server's access log (a path under
    ``host_dir``) says it saw. ``host_dir`` is mounted at the same path, so both name the same files;
    ``reporting.service_account`` needs ``reporter_rbac(..., trust_secret=...)``."""
    command = ["webhookcerts", "trust-sync", "--secret", f"{namespace}/{trust_secret}"]
    command += ["--dir", f"{host_dir}/trust", "--key", "ca.crt"]
    command += ["--access-log", access_log, "--access-log-format", log_format, *reporting.args()]
    container = {
        "name": "trust-sync",
        "image": image,
        "command": command,
        "env": [*reporting.env, *pod_identity_env()],
        "volumeMounts": [{"name": "host", "mountPath": host_dir}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "hostNetwork": True,
                    "terminationGracePeriodSeconds": 5,
                    "serviceAccountName": reporting.service_account,
                    "containers": [container],
                    "volumes": [{"name": "host", "hostPath": {"path": host_dir, "type": "Directory"}}],
                },
            },
        },
    }

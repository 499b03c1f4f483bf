"""trust-sync beside a real nginx and a real HAProxy reports what their access logs say, into the pod's report.

The API server is real, the Pod is an API object only (no node here): what matters is that the report is
named after it, owned by it, and counts each certificate the server saw by the SHA-1 the server logged,
accepted and refused, without the request that carried no certificate. nginx writes a log file that
does not exist yet when trust-sync starts (read from its start when it appears), or sends it to
trust-sync's loopback syslog port; HAProxy sends its log there, as docs/receivers/haproxy.md says,
refused handshakes included. The
report also names the trust Secret and the trust hash of the version trust-sync last wrote, and follows
the Secret to the next one.
"""

from __future__ import annotations

import base64
import os
import pathlib
import socket
import sys
import uuid
from typing import Any

import kubernetes
import pytest

from tests import conftest, logging_servers, processes
from tests import servers as launchers
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, names, reports

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def trust_secret(pem: bytes, trust_hash: str) -> kubernetes.client.V1Secret:
    return kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="trust", annotations={names.TRUST_HASH_ANNOTATION: trust_hash}),
        data={"ca.crt": base64.b64encode(pem).decode()},
    )


def pod(core_v1: kubernetes.client.CoreV1Api, namespace: str) -> kubernetes.client.V1Pod:
    """A Pod object for the report to be named after and owned by (no node runs it)."""
    body = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name=f"endpoint-{uuid.uuid4().hex[:6]}"),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="server", image="nginx")]),
    )
    created: kubernetes.client.V1Pod = core_v1.create_namespaced_pod(namespace, body)
    return created


def report(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    try:
        found: dict[str, Any] = custom.get_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, reports.PLURAL, name
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def counts(found: dict[str, Any] | None) -> dict[str, tuple[int, int]]:
    """(accepted, refused) by SHA-1."""
    entries = (found or {}).get("spec", {}).get("certificates", [])
    return {e["sha1"]: (e["accepted"], e["refused"]) for e in entries}


@pytest.mark.parametrize(("server", "via"), [("nginx", "file"), ("nginx", "syslog"), ("haproxy", "syslog")])
def test_trust_sync_reports_what_the_server_logged(
    server: str,
    via: str,
    cluster: devcluster.DevCluster,
    crd_installed: None,
    api_client: kubernetes.client.ApiClient,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
    workspace: launchers.Workspace,
    tmp_path: pathlib.Path,
) -> None:
    pki = workspace.material.pki
    core_v1.create_namespaced_secret(namespace, trust_secret(pki.alpha.cert_pem, "hash-1"))
    endpoint = pod(core_v1, namespace)
    directory = tmp_path / "trust"
    # nginx creates its log file when it starts, after trust-sync; a syslog target sends to trust-sync's port.
    source = str(tmp_path / "nginx" / "access.log") if via == "file" else f"udp://127.0.0.1:{free_udp_port()}"
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PYTHONPATH": str(REPO / "operator"),
        "POD_NAME": endpoint.metadata.name,
        "POD_NAMESPACE": namespace,
        "POD_UID": endpoint.metadata.uid,
    }
    argv = [sys.executable, "-m", "webhookcerts", "trust-sync", "--secret", f"{namespace}/trust"]
    argv += ["--dir", str(directory), "--access-log", source, "--access-log-format", server]
    argv += ["--report-interval", "1"]
    sync = workspace.spawn("trust-sync", argv, env=env)
    # The reader is ready before the server starts: nginx's log seen missing (so read from its start when
    # it appears), trust-sync's UDP port bound (HAProxy's datagrams are not queued for a later listener).
    ready = '"access_log_unavailable"' if via == "file" else '"access_log_listening"'
    processes.wait_for(
        lambda: ready in workspace.logs["trust-sync"].read_text() or sync.poll() is not None,
        timeout=60,
        what="the log reader",
    )
    processes.wait_for(lambda: (directory / "ca.crt").exists() or sync.poll() is not None, timeout=60, what="ca.crt")
    assert sync.poll() is None

    if server == "nginx":
        target = None if via == "file" else f"syslog:server={source.removeprefix('udp://')},nohostname"
        launched = logging_servers.start_nginx(workspace, directory / "ca.crt", access_log=target)
    else:
        launched = logging_servers.start_haproxy(
            workspace, directory / "ca.crt", log_target=source.removeprefix("udp://")
        )
    refused = 400 if server == "nginx" else 0
    assert logging_servers.present(launched, pki.alpha) == 200
    assert logging_servers.present(launched, pki.stranger) == refused
    assert logging_servers.present(launched, None) == refused
    assert logging_servers.present(launched, pki.alpha) == 200

    alpha, stranger = logging_servers.sha1(pki.alpha), logging_servers.sha1(pki.stranger)
    expected = {alpha: (2, 0), stranger: (0, 1)}
    # The second acceptance of alpha came last: once it is counted, so is every line before it.
    assert conftest.poll(lambda: counts(report(api_client, namespace, endpoint.metadata.name)) == expected, 60), counts(
        report(api_client, namespace, endpoint.metadata.name)
    )
    found = report(api_client, namespace, endpoint.metadata.name)
    assert found is not None
    assert found["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": endpoint.metadata.name, "uid": endpoint.metadata.uid}
    ]
    spec = found["spec"]
    assert (spec["reporter"], spec["trustSecretName"], spec["trustHash"]) == (server, "trust", "hash-1")
    assert all(set(e) >= {"sha1", "firstSeen", "lastSeen"} and "sha256" not in e for e in spec["certificates"])

    # The next version of the trust store: the report follows it once trust-sync has written it.
    core_v1.replace_namespaced_secret(
        "trust", namespace, trust_secret(pki.alpha.cert_pem + pki.beta.cert_pem, "hash-2")
    )
    assert conftest.poll(
        lambda: (report(api_client, namespace, endpoint.metadata.name) or {})["spec"].get("trustHash") == "hash-2", 60
    )
    assert (directory / "ca.crt").read_bytes() == pki.alpha.cert_pem + pki.beta.cert_pem

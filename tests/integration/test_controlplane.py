"""Proof that the local control plane is a real Kubernetes API: storage, watches, CEL admission, RBAC."""

from __future__ import annotations

import base64
import json
import threading
import time

import kubernetes
import pytest

from tests import conftest
from webhookcerts.devcluster import cluster as devcluster

pytestmark = pytest.mark.integration

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.webhookcerts.io
spec:
  group: test.webhookcerts.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                min: {type: integer}
                max: {type: integer}
              x-kubernetes-validations:
                - rule: self.min < self.max
                  message: min must be below max
"""


def test_kubectl_reports_the_pinned_server_version(kubectl: conftest.KubectlRunner) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert version["serverVersion"]["minor"] == "37"


def test_secret_create_read_and_watch(core_v1: kubernetes.client.CoreV1Api, namespace: str) -> None:
    seen: list[tuple[str, str]] = []
    # List, then watch from the list's resourceVersion (as informers do): the watch gets every change
    # made after the list, whenever its stream actually starts, so nothing here races the thread.
    version = core_v1.list_namespaced_secret(namespace).metadata.resource_version

    def watch() -> None:
        watcher = kubernetes.watch.Watch()
        stream = watcher.stream(core_v1.list_namespaced_secret, namespace, resource_version=version, timeout_seconds=30)
        for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "MODIFIED":
                watcher.stop()

    body = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="probe"),
        data={"value": base64.b64encode(b"one").decode()},
    )
    core_v1.create_namespaced_secret(namespace, body)
    read = core_v1.read_namespaced_secret("probe", namespace)
    assert base64.b64decode(read.data["value"]) == b"one"
    core_v1.patch_namespaced_secret("probe", namespace, {"data": {"value": base64.b64encode(b"two").decode()}})
    # The watch starts after both changes were made, and still sees them.
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), f"the watch never saw the change; it saw {seen}"
    assert seen[:2] == [("ADDED", "probe"), ("MODIFIED", "probe")], seen


def test_cel_rule_rejects_a_bad_object_with_the_servers_message(
    kubectl: conftest.KubectlRunner, namespace: str
) -> None:
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.test.webhookcerts.io", "--timeout=60s")
    good = "apiVersion: test.webhookcerts.io/v1\nkind: Widget\nmetadata: {name: good}\nspec: {min: 1, max: 2}\n"
    bad = "apiVersion: test.webhookcerts.io/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {min: 3, max: 2}\n"
    # The CRD's schema takes a moment to reach the handler after Established: retry the good one.
    deadline = time.monotonic() + 30
    while kubectl("apply", "-n", namespace, "-f", "-", input=good, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the Widget CRD never started serving"
        time.sleep(0.5)
    rejected = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert rejected.returncode != 0
    assert 'The Widget "bad" is invalid' in rejected.stderr
    assert "min must be below max" in rejected.stderr


def test_service_account_token_is_denied_until_bound(
    cluster: devcluster.DevCluster, kubectl: conftest.KubectlRunner, namespace: str
) -> None:
    kubectl("create", "serviceaccount", "probe", "-n", namespace)
    token = kubectl("create", "token", "probe", "-n", namespace).stdout.strip()
    # A kubeconfig-free invocation, so the admin's client certificate is not sent beside the token.
    as_probe = (
        "--kubeconfig=/dev/null",
        f"--server={cluster.apiserver_url}",
        f"--certificate-authority={cluster.directory / 'pki' / 'ca.crt'}",
        f"--token={token}",
        "-n",
        namespace,
    )

    denied = kubectl("get", "secrets", *as_probe, check=False)
    assert denied.returncode != 0
    assert f'User "system:serviceaccount:{namespace}:probe" cannot list resource "secrets"' in denied.stderr

    kubectl("create", "role", "read-secrets", "--verb=list,get", "--resource=secrets", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "probe",
        "--role=read-secrets",
        f"--serviceaccount={namespace}:probe",
        "-n",
        namespace,
    )
    deadline = time.monotonic() + 30
    while (allowed := kubectl("get", "secrets", *as_probe, check=False)).returncode != 0:
        assert time.monotonic() < deadline, allowed.stderr
        time.sleep(0.2)


def test_a_live_cluster_directory_is_refused(cluster: devcluster.DevCluster) -> None:
    with pytest.raises(devcluster.DevClusterError, match="already runs"):
        devcluster.DevCluster(cluster.directory).up()

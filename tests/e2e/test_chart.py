"""The chart on the local node: `helm install --wait`, the operator in its pod, upgrade and uninstall.

The operator runs in the project's image, in the pod the chart describes, as the chart's ServiceAccount:
a planned rotation, a cut-over and an emergency rotation complete, so the chart's RBAC is enough in
the form users deploy it. Its metrics are scraped with curl from the pod's port (the node's network),
its logs are JSON lines, a `helm upgrade` with a changed value replaces the pod and the new one carries
on, and `helm uninstall` leaves the CRD, the WebhookCertificates and their key Secrets in place.

The node's cluster runs kube-controller-manager, so the uninstall is checked where garbage collection
could take something with the release: a `deletionPolicy: Delete` object's Secrets (owned by it) are
there too, and the check waits for the collector to have removed an object owned by the release's
Deployment before it looks.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests import conftest, whc
from webhookcerts.devcluster import base
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import names

pytestmark = pytest.mark.e2e

CHART = conftest.REPO / "charts" / "webhookcerts"
RELEASE = "wc"
DEPLOYMENT = f"{RELEASE}-webhookcerts"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"


def devcluster_values(cluster: devcluster.DevCluster, path: pathlib.Path, metrics_port: int, health_port: int) -> str:
    """The values `devcluster up` wrote for this cluster (the image tag, the API server's port), with free
    host ports: the session's other tests may hold the fixed ones."""
    values: dict[str, Any] = yaml.safe_load(cluster.chart_values.read_text())
    values["metrics"]["port"] = metrics_port
    values["operator"]["healthPort"] = health_port
    path.write_text(yaml.safe_dump(values))
    return str(path)


def operator_pod(kubectl: conftest.KubectlRunner, namespace: str) -> dict[str, Any]:
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", SELECTOR, "-o", "json").stdout)["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = running[0]
    return pod


@pytest.mark.long
def test_the_chart_runs_the_operator_in_its_pod(
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    node_namespace: str,
    bin_dir: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    # helm waits up to 5 minutes itself (--wait --timeout=5m).
    helm = conftest.HelmRunner(bin_dir / "helm", node_cluster.kubeconfig, timeout=600)
    kubectl = node_kubectl
    metrics_port, health_port = base.free_port(), base.free_port()
    values = devcluster_values(node_cluster, tmp_path / "values.yaml", metrics_port, health_port)
    helm("lint", "--strict", str(CHART), "-f", values)
    helm("install", RELEASE, str(CHART), "-n", node_namespace, "-f", values, "--wait", "--timeout=5m")
    # Every namespace watched: the operator's rights as a ClusterRole (the upgrade below narrows them).
    assert kubectl("get", "clusterrole", DEPLOYMENT, check=False).returncode == 0

    # The pod as the chart describes it: the chart's ServiceAccount, non-root, a read-only root.
    pod = operator_pod(kubectl, node_namespace)
    assert pod["spec"]["serviceAccountName"] == DEPLOYMENT
    name = pod["metadata"]["name"]
    assert kubectl("exec", "-n", node_namespace, name, "--", "id", "-u").stdout.strip() == "10001"
    refused = kubectl("exec", "-n", node_namespace, name, "--", "touch", "/opt/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr

    api = whc.Api(whc.api_client(node_cluster.kubeconfig), node_namespace)
    labels = {"name": "upvest-live", "namespace": node_namespace, "environment": "live"}
    try:
        api.create("upvest-live", environment="live", duration="1h", renewBefore="30m")
        # Its Secrets carry owner references (to it): what the garbage collector acts on.
        api.create("upvest-sandbox", deletionPolicy="Delete")
        conftest.wait_for(lambda: api.status("upvest-live").current, timeout=180, what="the first certificate")
        # The planned rotation made due now; then not due again, so the cut-over's certificate stays put.
        api.patch_spec("upvest-live", renewBefore="59m59s")
        rotating = conftest.wait_for(
            lambda: (s := api.status("upvest-live")).next is not None and s, timeout=180, what="a planned rotation"
        )
        api.patch_spec("upvest-live", renewBefore="30m")
        assert rotating.next is not None and rotating.next.reason == "Planned"
        api.cutover("upvest-live", rotating.next.serial)
        conftest.wait_for(
            lambda: (c := api.status("upvest-live").current) is not None and c.serial == rotating.next.serial,
            timeout=120,
            what="the cut-over",
        )
        api.emergency("upvest-live", "INC-7")
        compromised = conftest.wait_for(
            lambda: (s := api.status("upvest-live")).stage == "Compromised" and s.next is not None and s,
            timeout=120,
            what="the emergency",
        )
        assert compromised.next is not None
        assert api.events("upvest-live", "EmergencyRotation") and not api.events("upvest-live", "Forbidden")

        scraped = conftest.scrape(metrics_port)
        assert scraped[("webhookcerts_rotations_total", frozenset({**labels, "reason": "emergency"}.items()))] == 1
        assert scraped[("webhookcerts_cutovers_total", frozenset(labels.items()))] == 1
        assert scraped[("webhookcerts_certificate_compromised", frozenset(labels.items()))] == 1
        logs = kubectl("logs", "-n", node_namespace, name).stdout
        lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
        assert any("EmergencyRotation" in line["message"] for line in lines)
        # Secret hygiene: no key in the pod's log, the Events, status or kubectl's view of the object.
        whc.assert_no_key_material(
            {
                "operator log": logs,
                "events": " ".join(e.message or "" for e in api.events("upvest-live")),
                "status": json.dumps(api.get("upvest-live").get("status")),
                "kubectl describe": kubectl("describe", "whc", "upvest-live", "-n", node_namespace).stdout,
                **plugin_output(node_cluster, node_namespace, tmp_path / "export"),
            },
            whc.key_fragments(api, "upvest-live-tls", "upvest-live-tls-next"),
        )
        whc.assert_secrets_hygienic(api)

        # Upgrade with changed values: a new pod (Recreate), text logs, and the other RBAC shape (one
        # watched namespace: Roles instead of ClusterRoles); it carries on under it: cut over.
        helm(
            "upgrade", RELEASE, str(CHART), "-n", node_namespace, "--reuse-values",
            "--set", "operator.logFormat=text", "--set", f"watchNamespaces={{{node_namespace}}}",
            "--wait", "--timeout=5m",
        )  # fmt: skip
        # The namespaced shape: the Role named like the release, and no ClusterRole of that name any more.
        assert kubectl("get", "role", DEPLOYMENT, "-n", node_namespace, check=False).returncode == 0
        assert kubectl("get", "clusterrole", DEPLOYMENT, check=False).returncode != 0
        conftest.wait_for(
            lambda: (p := operator_pod_or_none(kubectl, node_namespace)) and p["metadata"]["name"] != name,
            timeout=180,
            what="the upgraded pod",
        )
        upgraded = operator_pod(kubectl, node_namespace)
        assert "--log-format=text" in upgraded["spec"]["containers"][0]["args"]
        api.cutover("upvest-live", compromised.next.serial)
        after = conftest.wait_for(
            lambda: (
                (s := api.status("upvest-live")).current is not None
                and s.current.serial == compromised.next.serial
                and s
            ),
            timeout=120,
            what="the cut-over by the upgraded operator",
        )
        assert after.current is not None and not after.current.compromised_by
        text_logs = kubectl("logs", "-n", node_namespace, upgraded["metadata"]["name"]).stdout
        assert "CutOver" in text_logs and not text_logs.lstrip().startswith("{")

        # Uninstall: the operator goes, the CRD, the WebhookCertificates and their Secrets stay, also
        # once the garbage collector has acted on the release's deletion (the sentinel it owns is gone).
        sandbox = conftest.wait_for(lambda: api.status("upvest-sandbox").current, what="upvest-sandbox's certificate")
        kept_before = {n: api.secret_object(n).metadata.uid for n in secrets_of(api, "upvest-live", "upvest-sandbox")}
        assert api.secret_object(sandbox.secret_name).metadata.owner_references, "Delete sets owner references"
        sentinel = gc_sentinel(kubectl, node_namespace)
        helm("uninstall", RELEASE, "-n", node_namespace, "--wait", "--timeout=5m")
        conftest.wait_for(
            lambda: kubectl("get", "configmap", sentinel, "-n", node_namespace, check=False).returncode != 0,
            timeout=180,
            what="the garbage collector to remove what the release's Deployment owned",
        )
        conftest.wait_for(
            lambda: (
                not json.loads(kubectl("get", "pods", "-n", node_namespace, "-l", SELECTOR, "-o", "json").stdout)[
                    "items"
                ]
            ),
            timeout=120,
            what="the operator pod to go",
        )
        kubectl("get", "crd", "webhookcertificates.webhookcerts.io")
        assert api.status("upvest-live").current == after.current
        kept = api.secret(after.current.secret_name) or {}
        assert names.TLS_KEY in kept
        kept_after = {n: api.secret_object(n).metadata.uid for n in kept_before if api.secret(n) is not None}
        assert kept_after == kept_before
        assert api.status("upvest-sandbox").current == sandbox
    finally:
        shown = kubectl("logs", "-n", node_namespace, "-l", SELECTOR, "--tail=300", check=False)
        print(f"--- operator pod log ---\n{shown.stdout}{shown.stderr}")
        # Whatever happened, nothing of the release outlives the test (a no-op after the uninstall above).
        helm("uninstall", RELEASE, "-n", node_namespace, "--wait", "--timeout=2m", "--ignore-not-found", check=False)
        # The kept objects carry Kopf's finalizer: without an operator the namespace could never go.
        for kept_name in ("upvest-live", "upvest-sandbox"):
            kubectl(
                "patch", "whc", kept_name, "-n", node_namespace, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False,
            )  # fmt: skip


def plugin_output(cluster: devcluster.DevCluster, namespace: str, out: pathlib.Path) -> dict[str, str]:
    """What the CLI prints (stdout and stderr, errors included) for the verbs that read the object and
    its Secrets: none may carry key material; only the files ``export`` writes hold the (encrypted) key."""
    env = {**os.environ, "PYTHONPATH": str(conftest.REPO / "operator")}
    found = {}
    for verb in (
        ["status", "-o", "wide"],
        ["status", "-o", "json"],
        ["history", "upvest-live"],
        ["export", "upvest-live", "--out", str(out)],  # refused: the compromised bundle was withdrawn
        ["export", "upvest-live", "--next", "--out", str(out)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "webhookcerts", *verb, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        found[f"webhookcerts {' '.join(verb[:3])}"] = done.stdout + done.stderr
    return found


def secrets_of(api: whc.Api, *objects: str) -> list[str]:
    """The key, bundle and trust Secrets the objects' status and spec name (those that exist)."""
    found = {"webhook-trust"}
    for name in objects:
        spec = api.get(name)["spec"]
        found.add(spec["secretName"])
        if spec.get("bundle", {}).get("secretName"):
            found.add(spec["bundle"]["secretName"])
        current = api.status(name).current
        if current is not None:
            found.add(current.secret_name)
    return sorted(n for n in found if api.secret(n) is not None)


def gc_sentinel(kubectl: conftest.KubectlRunner, namespace: str) -> str:
    """A ConfigMap owned by the release's Deployment: gone once the garbage collector has processed the
    Deployment's deletion, which is when anything else wrongly owned by the release would be gone too."""
    deployment = json.loads(kubectl("get", "deployment", DEPLOYMENT, "-n", namespace, "-o", "json").stdout)
    name = "gc-sentinel"
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT, "uid": deployment["metadata"]["uid"]}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": [owner]}}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    return name


def operator_pod_or_none(kubectl: conftest.KubectlRunner, namespace: str) -> dict[str, Any] | None:
    try:
        return operator_pod(kubectl, namespace)
    except AssertionError:
        return None

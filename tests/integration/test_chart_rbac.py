"""The chart's RBAC is enough, and each rule in it is needed: the operator run under the chart's ServiceAccount.

No node is needed: the chart goes into an API-only cluster (`helm install`, or `helm template` and
`kubectl apply` of its RBAC), the operator runs as a subprocess with a token of the chart's
ServiceAccount, and the test drives a planned rotation, a cut-over and an emergency rotation to their
end, scraping the operator's metrics with curl as it goes. Then one rule at a time is taken away and
the operation that needs it fails with a condition, an Event and a log line that name it.
`helm upgrade` and `helm uninstall` are checked here too, as far as an API server alone can show them.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from tests import conftest, whc
from webhookcerts.devcluster import base
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import names

pytestmark = pytest.mark.integration

CHART = conftest.REPO / "charts" / "webhookcerts"
RELEASE_NAMESPACE = "webhookcerts"
# What the chart's RBAC templates produce; the rest (Deployment, Service, CRDs) is not needed here.
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.fixture
def fresh_cluster(tmp_path: pathlib.Path, bin_dir: pathlib.Path) -> Iterator[devcluster.DevCluster]:
    """An API-only cluster of the test's own: a cluster-wide operator sees no other test's objects there."""
    dev = devcluster.DevCluster(tmp_path / "cluster", tie_to_parent=True)
    dev.up(node=False)
    try:
        yield dev
    finally:
        dev.down()


def series(scraped: conftest.Scraped, metric: str, **labels: str) -> float | None:
    return scraped.get((metric, frozenset(labels.items())))


def consumers(api: kubernetes.client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """A Pod (Hot reload) and a Deployment (Rollout) for the operator to nudge: pods and apps rights in use."""
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    container = {"name": "receiver", "image": "receiver:never-runs"}
    core.create_namespaced_pod(
        namespace,
        {"metadata": {"name": "receiver", "labels": {"app": "receiver"}}, "spec": {"containers": [container]}},
    )
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "legacy"},
            "spec": {
                "selector": {"matchLabels": {"app": "legacy"}},
                "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [container]}},
            },
        },
    )
    return [
        {"selector": {"matchLabels": {"app": "receiver"}}, "reload": "Hot"},
        {"selector": {"matchLabels": {"app": "legacy"}}, "reload": "Rollout"},
    ]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a --log-format json log, parsed; a line that is not JSON fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- the whole lifecycle under the chart's ClusterRole ------------------------------------------


def test_the_operator_runs_the_lifecycle_with_the_charts_rbac(
    fresh_cluster: devcluster.DevCluster, bin_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    helm = conftest.HelmRunner(bin_dir / "helm", fresh_cluster.kubeconfig)
    kubectl = conftest.KubectlRunner(bin_dir / "kubectl", fresh_cluster.kubeconfig)
    # The chart as users install it: CRD, ServiceAccount, ClusterRoles (its pods cannot run without a node).
    helm("install", "wc", str(CHART), "-n", RELEASE_NAMESPACE, "--create-namespace")
    kubectl("wait", "--for=condition=Established", "crd/webhookcertificates.webhookcerts.io", "--timeout=60s")
    api_client = whc.api_client(fresh_cluster.kubeconfig)
    kubectl("create", "namespace", "payments")
    api = whc.Api(api_client, "payments")
    consumer_spec = consumers(api_client, "payments")

    kubeconfig = conftest.token_kubeconfig(
        kubectl, fresh_cluster, "wc-webhookcerts", RELEASE_NAMESPACE, tmp_path / "sa", duration="2h"
    )
    # The account may list Secrets (the operator's watch is narrowed by its label selector), never
    # change anything cluster-scoped.
    assert kubectl("create", "namespace", "x", f"--kubeconfig={kubeconfig}", check=False).returncode != 0
    port = base.free_port()
    operator = conftest.OperatorProcess(
        kubeconfig,
        None,  # every namespace, as the chart runs it by default
        tmp_path / "operator.log",
        ["--metrics-port", str(port), "--log-format", "json"],
    )
    operator.start()
    try:
        api.create(
            "upvest-sandbox",
            environment="sandbox",
            duration="1h",
            renewBefore="59m50s",
            consumers=consumer_spec,
        )

        # Issue, then the planned rotation once renewal time is reached.
        status = conftest.wait_for(
            lambda: (s := api.status("upvest-sandbox")).next is not None and s.next.reason == "Planned" and s,
            timeout=120,
            what="a planned rotation",
        )
        assert status.current is not None and status.next is not None
        both = {status.current.fingerprint, status.next.fingerprint}
        conftest.wait_for(lambda: api.trusted_fingerprints() == both, what="both certificates trusted")
        # The consumers were told (the status records the trust hash before the nudge goes out).
        core, apps = kubernetes.client.CoreV1Api(api_client), kubernetes.client.AppsV1Api(api_client)

        def nudged() -> bool:
            trust = api.status("upvest-sandbox").trust
            pod = core.read_namespaced_pod("receiver", "payments").metadata.annotations or {}
            template = apps.read_namespaced_deployment("legacy", "payments").spec.template.metadata
            if trust is None:
                return False
            annotation = names.consumer_annotation(trust.secret_name)
            return pod.get(annotation) == trust.hash == (template.annotations or {}).get(annotation)

        conftest.wait_for(nudged, what="the pod and the Deployment to carry the trust hash")

        # Cut-over to the next certificate: the old key Secret is deleted.
        next_serial = status.next.serial
        api.cutover("upvest-sandbox", next_serial)
        conftest.wait_for(
            lambda: (c := api.status("upvest-sandbox").current) is not None and c.serial == next_serial,
            what="the cut-over",
        )
        assert any(h.serial == status.current.serial for h in api.status("upvest-sandbox").history)

        # Emergency: the current certificate is treated as compromised at once.
        api.emergency("upvest-sandbox", "INC-42")
        after = conftest.wait_for(
            lambda: (s := api.status("upvest-sandbox")).stage == "Compromised" and s.next is not None and s,
            what="the emergency rotation",
        )
        assert after.last_emergency_rotation is not None and after.last_emergency_rotation.reference == "INC-42"
        assert after.current is not None and after.next is not None
        conftest.wait_for(
            lambda: api.trusted_fingerprints() == {after.next.fingerprint}, what="only the new certificate trusted"
        )

        # An Event follows the trust write it reports: give the last one a moment.
        reasons = ("Issued", "Renewing", "CutOver", "EmergencyRotation", "TrustReloadRequested")
        conftest.wait_for(
            lambda: all(api.events("upvest-sandbox", r) for r in reasons), what=f"the Events {', '.join(reasons)}"
        )
        assert not api.events("upvest-sandbox", "Forbidden")

        # The metrics tell the same story.
        labels = {"name": "upvest-sandbox", "namespace": "payments", "environment": "sandbox"}
        scraped = conftest.scrape(port)
        assert (series(scraped, "webhookcerts_rotations_total", **labels, reason="planned") or 0) >= 1
        assert series(scraped, "webhookcerts_rotations_total", **labels, reason="emergency") == 1
        assert series(scraped, "webhookcerts_cutovers_total", **labels) == 1
        assert (series(scraped, "webhookcerts_trust_reloads_total", **labels) or 0) >= 2
        assert series(scraped, "webhookcerts_certificate_compromised", **labels) == 1
        assert series(scraped, "webhookcerts_certificate_stage", **labels, stage="Compromised") == 1
        assert series(scraped, "webhookcerts_certificate_ready_status", **labels, condition="True") == 1
        assert series(scraped, "webhookcerts_certificate_expiration_timestamp_seconds", **labels) == (
            after.current.not_after.timestamp()
        )
        assert series(scraped, "webhookcerts_next_certificate_issued_timestamp_seconds", **labels) is not None
        assert series(scraped, "webhookcerts_reconcile_errors_total", **labels) == 0

        # Deleted: Kopf removes its finalizer (a patch the chart grants) and the object's series go.
        kubectl("delete", "whc", "upvest-sandbox", "-n", "payments", "--timeout=60s")
        conftest.wait_for(
            lambda: not any(("name", "upvest-sandbox") in key[1] for key in conftest.scrape(port)),
            what="the deleted object's series to go",
        )
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.logs()[-20000:]}")

    logs = json_lines(operator.logs())
    assert any(line.get("object", {}).get("name") == "upvest-sandbox" for line in logs)
    assert all({"message", "severity", "timestamp"} <= line.keys() for line in logs)
    # Kopf's debug lines carry whole objects, whose serials, uids and resourceVersions may hold "403";
    # a refusal shows as the operator's "API 403" or the API server's "Forbidden".
    assert not [line for line in logs if re.search(r"API 403|Forbidden|forbidden:", line["message"])]


# --- one rule less ------------------------------------------------------------------------------


def restricted_rbac(
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    drop: tuple[str, str],
) -> str:
    """Apply the chart's RBAC for watching ``namespace``, minus one (resource, verb); the ServiceAccount's name."""
    release = f"neg-{uuid.uuid4().hex[:6]}"
    watch = f"watchNamespaces={{{namespace}}}"
    rendered = subprocess.run(
        [str(bin_dir / "helm"), "template", release, str(CHART), "-n", namespace, "--set", watch],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
    resource, verb = drop
    removed = 0
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            if resource in rule["resources"] and verb in rule["verbs"]:
                assert rule["resources"] == [resource], "split the rule before dropping one verb of it"
                rule["verbs"].remove(verb)
                removed += 1
        # A rule left without verbs is invalid: it goes entirely.
        role["rules"] = [rule for rule in role["rules"] if rule["verbs"]]
    assert removed == 1, f"the chart has no rule granting {verb} on {resource}"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    (account,) = (d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    return str(account)


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


def forbidden_operator(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    tmp_path: pathlib.Path,
    drop: tuple[str, str],
) -> conftest.OperatorProcess:
    account = restricted_rbac(bin_dir, kubectl, namespace, drop)
    kubeconfig = conftest.token_kubeconfig(kubectl, cluster, account, namespace, tmp_path / "sa", duration="2h")
    # Watching one namespace, as the chart runs it with watchNamespaces.
    return conftest.OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log")


def test_without_delete_on_secrets_the_cutover_says_forbidden(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    crd_installed: None,
    namespace: str,
    api: whc.Api,
    tmp_path: pathlib.Path,
) -> None:
    operator = forbidden_operator(cluster, bin_dir, kubectl, namespace, tmp_path, ("secrets", "delete"))
    operator.start()
    try:
        api.create("cut", duration="1h", renewBefore="59m50s")
        # Issuing and the planned rotation need no delete: they work under the namespaced Role.
        status = conftest.wait_for(
            lambda: (s := api.status("cut")).next is not None and s, timeout=120, what="a planned rotation"
        )
        assert status.next is not None
        api.cutover("cut", status.next.serial)

        ready = conftest.wait_for(
            lambda: (c := api.condition("cut", names.READY)) is not None and c.reason == "Forbidden" and c,
            what="Ready=False, Forbidden",
        )
        assert ready.status == "False"
        assert 'cannot delete resource "secrets"' in ready.message
        assert f"system:serviceaccount:{namespace}:" in ready.message
        (event,) = api.events("cut", "Forbidden")
        assert event.type == "Warning" and 'cannot delete resource "secrets"' in event.message
        assert 'Forbidden: secrets "cut-tls-next" is forbidden' in operator.logs()
        # The cut-over itself was recorded before the delete: the provider's certificate is the new one.
        current = api.status("cut").current
        assert current is not None and current.serial == status.next.serial
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.logs()[-20000:]}")


def test_without_patch_on_status_the_first_issue_says_forbidden(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    crd_installed: None,
    namespace: str,
    api: whc.Api,
    tmp_path: pathlib.Path,
) -> None:
    operator = forbidden_operator(
        cluster, bin_dir, kubectl, namespace, tmp_path, ("webhookcertificates/status", "patch")
    )
    operator.start()
    try:
        api.create("first")
        # Status cannot be written, so the report goes out as a Warning Event and a log line.
        event = conftest.wait_for(lambda: next(iter(api.events("first", "Forbidden")), None), what="a Forbidden Event")
        assert event.type == "Warning"
        assert 'cannot patch resource "webhookcertificates/status"' in event.message
        refusal = re.compile(r'first: Forbidden: .* cannot patch resource "webhookcertificates/status"')
        conftest.wait_for(
            lambda: refusal.search(operator.logs()),
            what="the refusal in the log",
        )
        assert api.status("first").current is None
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.logs()[-20000:]}")


# --- upgrade and uninstall ----------------------------------------------------------------------


def test_upgrade_applies_a_changed_value_and_uninstall_keeps_crd_and_secrets(
    fresh_cluster: devcluster.DevCluster, bin_dir: pathlib.Path
) -> None:
    helm = conftest.HelmRunner(bin_dir / "helm", fresh_cluster.kubeconfig)
    kubectl = conftest.KubectlRunner(bin_dir / "kubectl", fresh_cluster.kubeconfig)
    helm("install", "wc", str(CHART), "-n", RELEASE_NAMESPACE, "--create-namespace")

    def args() -> list[str]:
        out = kubectl("get", "deployment", "wc-webhookcerts", "-n", RELEASE_NAMESPACE, "-o", "json").stdout
        result: list[str] = json.loads(out)["spec"]["template"]["spec"]["containers"][0]["args"]
        return result

    assert "--log-format=json" in args()
    helm("upgrade", "wc", str(CHART), "-n", RELEASE_NAMESPACE, "--reuse-values", "--set", "operator.logFormat=text")
    assert "--log-format=text" in args()
    assert json.loads(helm("status", "wc", "-n", RELEASE_NAMESPACE, "-o", "json").stdout)["version"] == 2

    # What the operator leaves behind: a WebhookCertificate and its key Secret, owned by it.
    kubectl("wait", "--for=condition=Established", "crd/webhookcertificates.webhookcerts.io", "--timeout=60s")
    api_client = whc.api_client(fresh_cluster.kubeconfig)
    kubectl("create", "namespace", "payments")
    api = whc.Api(api_client, "payments")
    uid = api.create("kept")["metadata"]["uid"]
    owner = {"apiVersion": "webhookcerts.io/v1alpha1", "kind": "WebhookCertificate", "name": "kept", "uid": uid}
    kubernetes.client.CoreV1Api(api_client).create_namespaced_secret(
        "payments",
        {"metadata": {"name": "kept-tls", "ownerReferences": [owner]}, "type": "Opaque", "data": {}},
    )

    helm("uninstall", "wc", "-n", RELEASE_NAMESPACE, "--wait")
    assert kubectl("get", "deployment", "wc-webhookcerts", "-n", RELEASE_NAMESPACE, check=False).returncode != 0
    assert kubectl("get", "clusterrole", "wc-webhookcerts", check=False).returncode != 0
    kubectl("get", "crd", "webhookcertificates.webhookcerts.io")
    assert api.get("kept")["metadata"]["uid"] == uid
    assert api.secret("kept-tls") is not None


def test_uninstall_without_keep_deletes_the_crd_and_every_webhookcertificate(
    fresh_cluster: devcluster.DevCluster, bin_dir: pathlib.Path
) -> None:
    """The other side of crds.keep, which the README warns about: the keep test above can fail."""
    helm = conftest.HelmRunner(bin_dir / "helm", fresh_cluster.kubeconfig)
    kubectl = conftest.KubectlRunner(bin_dir / "kubectl", fresh_cluster.kubeconfig)
    helm("install", "wc", str(CHART), "-n", RELEASE_NAMESPACE, "--create-namespace", "--set", "crds.keep=false")
    kubectl("wait", "--for=condition=Established", "crd/webhookcertificates.webhookcerts.io", "--timeout=60s")
    kubectl("create", "namespace", "payments")
    whc.Api(whc.api_client(fresh_cluster.kubeconfig), "payments").create("gone")

    helm("uninstall", "wc", "-n", RELEASE_NAMESPACE, "--wait")
    conftest.wait_for(
        lambda: kubectl("get", "crd", "webhookcertificates.webhookcerts.io", check=False).returncode != 0,
        what="the CRD to be deleted",
    )

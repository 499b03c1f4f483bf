"""A reporter's token may write its own pod's PresentationReport and nothing else: the chart's
reporter ClusterRole (bound by `reporters.serviceAccounts`) and its `<fullname>-reports` admission
policy, applied to the session's API server, met with a token bound to a Pod.

No node runs: a Pod object is enough for the API server to bind a token to it (TokenRequest with a
bound object, what the kubelet's projected token is), and such a token carries the pod's name and uid
in its user info, which the policy compares with the report's name and its ownerReference. RBAC keeps
the token to reports in its own namespace; the policy keeps it to its own report.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests import conftest, whc
from tests.integration import test_chart_rbac
from tests.integration.test_admission_policy import POLICY, refusal
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models

pytestmark = pytest.mark.integration

ACCOUNT = "reporter"
PLURAL = "presentationreports"
TIMEOUT = 120


def report(name: str, owners: list[tuple[str, str]]) -> dict[str, Any]:
    """A PresentationReport named ``name`` owned by the Pods ``owners`` (name, uid)."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": "PresentationReport",
        "metadata": {
            "name": name,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": n, "uid": u} for n, u in owners],
        },
        "spec": {
            "trustSecretName": "webhook-trust",
            "reporter": "receiver",
            "startTime": now,
            "heartbeatTime": now,
            "heartbeatIntervalSeconds": 30,
        },
    }


def pod(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> str:
    """A Pod object running the reporter's ServiceAccount (never scheduled: no node); its uid."""
    body = {
        "metadata": {"name": name},
        "spec": {"serviceAccountName": ACCOUNT, "containers": [{"name": "receiver", "image": "receiver:never-runs"}]},
    }
    uid: str = core.create_namespaced_pod(namespace, body).metadata.uid
    return uid


@pytest.fixture
def other_namespace(core_v1: kubernetes.client.CoreV1Api) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core_v1.create_namespace({"metadata": {"name": name}})
    yield name
    core_v1.delete_namespace(name)


def apply_reporter_rbac_and_policy(
    bin_dir: pathlib.Path, kubectl: conftest.KubectlRunner, namespace: str, *others: str
) -> str:
    """The chart's reporter ClusterRole, its RoleBinding for ``namespace``/reporter, and the reports policy;
    the ClusterRole's name.

    The policy's binding is narrowed to ``namespace`` and ``others``: as the chart ships it, it holds
    every ServiceAccount in the cluster, and the session's API server is shared with tests whose
    reporters write with tokens bound to no pod (tests/integration/test_receiver_reports.py)."""
    accounts = json.dumps([{"namespace": namespace, "name": ACCOUNT}])
    docs = test_chart_rbac.render_watching(
        bin_dir, namespace, "rep", "--set-json", f"reporters.serviceAccounts={accounts}"
    )
    policy_kinds = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    wanted = [
        d
        for d in docs
        if (d["kind"] in policy_kinds and d["metadata"]["name"].endswith("-reports"))
        or (d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-reporter"))
        or (d["kind"] == "RoleBinding" and d["roleRef"]["name"].endswith("-reporter"))
    ]
    assert len(wanted) == 4, [(d["kind"], d["metadata"]["name"]) for d in wanted]
    (binding,) = (d for d in wanted if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert "matchResources" not in binding["spec"]  # every namespace, as shipped
    names_in = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace, *others]}
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchExpressions": [names_in]}}
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": wanted}))
    (role,) = (d["metadata"]["name"] for d in wanted if d["kind"] == "ClusterRole")
    return str(role)


def test_a_reporter_writes_its_own_pods_report_and_nothing_else(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    crd_installed: None,
    namespace: str,
    other_namespace: str,
    api_client: kubernetes.client.ApiClient,
    tmp_path: pathlib.Path,
) -> None:
    admin = kubernetes.client.CoreV1Api(api_client)
    admin.create_namespaced_service_account(namespace, {"metadata": {"name": ACCOUNT}})
    uid_a, uid_b = pod(admin, namespace, "receiver-a"), pod(admin, namespace, "receiver-b")
    role = apply_reporter_rbac_and_policy(bin_dir, kubectl, namespace, other_namespace)

    kubeconfig = conftest.token_kubeconfig(
        kubectl, cluster, ACCOUNT, namespace, tmp_path / "bound", bound_pod=("receiver-a", uid_a)
    )
    # The token carries pod A's claims, which the policy reads.
    whoami = json.loads(kubectl("auth", "whoami", "-o", "json", f"--kubeconfig={kubeconfig}").stdout)
    info = whoami["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{namespace}:{ACCOUNT}"
    assert info["extra"]["authentication.kubernetes.io/pod-name"] == ["receiver-a"]
    assert info["extra"]["authentication.kubernetes.io/pod-uid"] == [uid_a]

    client = whc.api_client(kubeconfig)
    custom = kubernetes.client.CustomObjectsApi(client)
    admin_custom = kubernetes.client.CustomObjectsApi(api_client)

    def create(body: dict[str, Any], ns: str = namespace) -> Callable[[], object]:
        return lambda: custom.create_namespaced_custom_object(models.GROUP, models.VERSION, ns, PLURAL, body)

    # RBAC and the policy take effect once the API server's informers have them: until pod B's report
    # is refused by the policy (a 403 meanwhile is RBAC not there yet; one that lands is removed).
    def in_force() -> bool:
        message = refusal(create(report("receiver-b", [("receiver-b", uid_b)])))
        if message is None:
            admin_custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, namespace, PLURAL, "receiver-b")
        return message is not None and POLICY in message

    conftest.wait_for(in_force, timeout=TIMEOUT, what="the reporter's RoleBinding and the reports policy in force")

    refused_by_policy = {
        "B's report": (create(report("receiver-b", [("receiver-b", uid_b)])), "named after the pod"),
        "a report named A owned by B": (create(report("receiver-a", [("receiver-b", uid_b)])), "exactly one owner"),
        "a report named A owned by A of another uid": (
            create(report("receiver-a", [("receiver-a", str(uuid.uuid4()))])),
            "exactly one owner",
        ),
        "a report named A owned by A and B": (
            create(report("receiver-a", [("receiver-a", uid_a), ("receiver-b", uid_b)])),
            "exactly one owner",
        ),
        "a report named A without an owner": (create(report("receiver-a", [])), "exactly one owner"),
    }
    for what, (call, says) in refused_by_policy.items():
        message = refusal(call)
        assert message is not None and POLICY in message and says in message, f"{what}: {message}"

    # The positive control: its own report, created and rewritten (each heartbeat is an update).
    assert refusal(create(report("receiver-a", [("receiver-a", uid_a)]))) is None
    heartbeat = {"spec": {"heartbeatTime": "2030-01-01T00:00:00Z"}}
    assert (
        refusal(
            lambda: custom.patch_namespaced_custom_object(
                models.GROUP, models.VERSION, namespace, PLURAL, "receiver-a", heartbeat
            )
        )
        is None
    )
    # Rewriting its own report to another owner is refused like creating one.
    owner_b = {
        "metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "receiver-b", "uid": uid_b}]}
    }
    message = refusal(
        lambda: custom.patch_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, PLURAL, "receiver-a", owner_b
        )
    )
    assert message is not None and POLICY in message and "exactly one owner" in message
    kept = admin_custom.get_namespaced_custom_object(models.GROUP, models.VERSION, namespace, PLURAL, "receiver-a")
    assert [o["uid"] for o in kept["metadata"]["ownerReferences"]] == [uid_a]
    assert kept["spec"]["heartbeatTime"] == "2030-01-01T00:00:00Z"

    # Anything else is not the reporter's to write: RBAC refuses it before any policy is asked.
    core = kubernetes.client.CoreV1Api(client)
    forbidden_by_rbac = {
        "a Secret": lambda: core.create_namespaced_secret(
            namespace, {"metadata": {"name": "stolen"}, "type": "Opaque"}
        ),
        "a WebhookCertificate": lambda: custom.create_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, models.PLURAL, whc.manifest("forged")
        ),
        "another namespace's report": create(report("receiver-a", [("receiver-a", uid_a)]), other_namespace),
        "its own report deleted": lambda: custom.delete_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, PLURAL, "receiver-a"
        ),
    }
    for what, call in forbidden_by_rbac.items():
        message = refusal(call)
        assert message is not None and "forbidden" in message and POLICY not in message, f"{what}: {message}"

    # A ClusterRoleBinding (a shortcut a user may take) lets RBAC allow every namespace: the policy still
    # holds the token to its pod's own.
    rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)
    everywhere = f"{namespace}-reporter-everywhere"
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": everywhere},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
        }
    )
    try:
        elsewhere = create(report("receiver-a", [("receiver-a", uid_a)]), other_namespace)

        def refused_by_the_policy() -> bool:
            message = refusal(elsewhere)
            assert message is not None, "a report written in another namespace"
            return POLICY in message  # a 403 from RBAC until the binding is in force

        conftest.wait_for(refused_by_the_policy, timeout=TIMEOUT, what="the ClusterRoleBinding in force")
        message = refusal(elsewhere)
        assert message is not None and f"in its own namespace, {namespace}, not {other_namespace}" in message
    finally:
        rbac.delete_cluster_role_binding(everywhere)


def test_a_token_bound_to_no_pod_writes_no_report(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    crd_installed: None,
    namespace: str,
    api_client: kubernetes.client.ApiClient,
    tmp_path: pathlib.Path,
) -> None:
    """A plain ServiceAccount token (a TokenRequest without a bound object) names no pod: refused, whatever
    the report says. Without the policy (the positive control of the wait) RBAC alone would let it in."""
    admin = kubernetes.client.CoreV1Api(api_client)
    admin.create_namespaced_service_account(namespace, {"metadata": {"name": ACCOUNT}})
    uid_a = pod(admin, namespace, "receiver-a")
    apply_reporter_rbac_and_policy(bin_dir, kubectl, namespace)
    kubeconfig = conftest.token_kubeconfig(kubectl, cluster, ACCOUNT, namespace, tmp_path / "unbound")
    whoami = json.loads(kubectl("auth", "whoami", "-o", "json", f"--kubeconfig={kubeconfig}").stdout)
    assert "authentication.kubernetes.io/pod-name" not in (whoami["status"]["userInfo"].get("extra") or {})
    custom = kubernetes.client.CustomObjectsApi(whc.api_client(kubeconfig))
    admin_custom = kubernetes.client.CustomObjectsApi(api_client)
    body = report("receiver-a", [("receiver-a", uid_a)])

    def refused_by_the_policy() -> bool:
        message = refusal(
            lambda: custom.create_namespaced_custom_object(models.GROUP, models.VERSION, namespace, PLURAL, body)
        )
        if message is None:
            admin_custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, namespace, PLURAL, "receiver-a")
        return message is not None and POLICY in message and "names no pod" in message

    conftest.wait_for(
        refused_by_the_policy, timeout=TIMEOUT, what="a report from an unbound token refused by the policy"
    )

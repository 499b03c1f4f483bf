"""Least privilege the API server enforces: the chart's ValidatingAdmissionPolicies, as the operator's token meets them.

RBAC grants "patch pods" or "update secrets" whole: with the chart's RBAC alone the operator's token
could run any image (a pod template is a command line) or rewrite anyone's Secret. The chart's
policies hold that one ServiceAccount to what the operator does. Here the chart's RBAC and policies
(`helm template` for one watched namespace, consumers on) are applied to the session's API server,
which has the admission plugins on; then, with a token of the chart's ServiceAccount:

- direct writes the operator never makes are refused by the policy, and the ones it makes pass;
- the operator's own passes (in process, the test harness's fake clock, the account's credentials)
  take an ingress Secret over only once its owner consents, keep its tls.crt and tls.key, annotate the
  consumers, and go through an emergency and a cut-over without one write refused.
"""

from __future__ import annotations

import base64
import datetime
import json
import pathlib
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from tests import conftest, whc
from tests.integration import test_chart_rbac, test_service
from tests.integration.test_service import Harness, condition
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import clock, models, names, pki
from webhookcerts.kube import client as kube_client
from webhookcerts.service import reconcile

pytestmark = pytest.mark.integration

APPLIED = {"ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
TIMEOUT = 120
POLICY = "ValidatingAdmissionPolicy"


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def apply_chart(bin_dir: pathlib.Path, kubectl: conftest.KubectlRunner, namespace: str) -> list[dict[str, Any]]:
    """The chart's RBAC and admission policies for watching ``namespace`` with consumers on; what was applied."""
    # The reporters' policy holds every ServiceAccount, not the operator's: left out of the session's
    # shared API server (tests/integration/test_reporter_privileges.py applies it to its namespaces).
    docs = [
        d
        for d in test_chart_rbac.render_watching(bin_dir, namespace, "vap")
        if d["kind"] in APPLIED and not d["metadata"]["name"].endswith("-reports")
    ]
    assert {d["kind"] for d in docs} == APPLIED
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    return docs


def refusal(call: Callable[[], object]) -> str | None:
    """The API server's message when ``call`` is refused (422 from a policy, 403 from RBAC); None when allowed."""
    try:
        call()
    except kubernetes.client.ApiException as exc:
        if exc.status not in (403, 422):
            raise
        message: str = json.loads(exc.body)["message"]
        return message
    return None


@pytest.fixture
def account(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    api_client: kubernetes.client.ApiClient,
    tmp_path: pathlib.Path,
) -> kubernetes.client.ApiClient:
    """A client with the chart's ServiceAccount's token, once the policies are in force for it."""
    docs = apply_chart(bin_dir, kubectl, namespace)
    (name,) = (d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    client = whc.api_client(conftest.token_kubeconfig(kubectl, cluster, name, namespace, tmp_path / "sa"))
    # A policy is in force once the API server's informer has it: until a write it refuses is refused
    # by it, on a canary of the test's own (a label that may land while the policy is not yet there).
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "canary"}})
    labelled = {"metadata": {"name": "canary", "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY}}}
    core.create_namespaced_secret(namespace, {**labelled, "type": "Opaque"})
    mine = kubernetes.client.CoreV1Api(client)

    def in_force() -> bool:
        message = refusal(lambda: mine.delete_namespaced_secret("canary", namespace))
        assert message is None or POLICY in message, message
        if message is None:  # deleted before the policy was there: a new canary
            core.create_namespaced_secret(namespace, {**labelled, "type": "Opaque"})
        return message is not None

    conftest.wait_for(in_force, timeout=TIMEOUT, what="the Secret policy in force")
    return client


def consumers(core: kubernetes.client.CoreV1Api, apps: kubernetes.client.AppsV1Api, namespace: str) -> None:
    container = {"name": "receiver", "image": "receiver:1"}
    pod = {"metadata": {"name": "receiver", "labels": {"app": "receiver"}}, "spec": {"containers": [container]}}
    core.create_namespaced_pod(namespace, pod)
    template = {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [container]}}
    spec = {"selector": {"matchLabels": {"app": "legacy"}}, "template": template}
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "legacy"}, "spec": spec})


def test_the_operators_token_may_annotate_consumers_and_change_nothing_else(
    account: kubernetes.client.ApiClient, api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    consumers(kubernetes.client.CoreV1Api(api_client), kubernetes.client.AppsV1Api(api_client), namespace)
    core, apps = kubernetes.client.CoreV1Api(account), kubernetes.client.AppsV1Api(account)
    annotation = names.consumer_annotation("webhook-trust")
    image = [{"op": "replace", "path": "/spec/containers/0/image", "value": "attacker/miner:1"}]
    template_image = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "attacker/miner:1"}]
    refused = {
        "the pod's image": lambda: core.patch_namespaced_pod("receiver", namespace, image),
        "another annotation": lambda: core.patch_namespaced_pod(
            "receiver", namespace, {"metadata": {"annotations": {"other": "x"}}}
        ),
        "a label": lambda: core.patch_namespaced_pod("receiver", namespace, {"metadata": {"labels": {"app": "x"}}}),
        "the template's image": lambda: apps.patch_namespaced_deployment("legacy", namespace, template_image),
        "the replicas": lambda: apps.patch_namespaced_deployment("legacy", namespace, {"spec": {"replicas": 9}}),
    }
    for what, call in refused.items():
        message = refusal(call)
        assert message is not None and POLICY in message, f"{what}: {message}"
    assert kubernetes.client.CoreV1Api(api_client).read_namespaced_pod("receiver", namespace).spec.containers[
        0
    ].image == ("receiver:1")
    # What the operator does is allowed: the trust-hash annotation, on the pod and on the pod template.
    assert refusal(lambda: core.patch_namespaced_pod("receiver", namespace, whc_annotation(annotation))) is None
    template = {"spec": {"template": whc_annotation(annotation)}}
    assert refusal(lambda: apps.patch_namespaced_deployment("legacy", namespace, template)) is None


def whc_annotation(annotation: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {annotation: "0" * 64}}}


def test_the_operators_token_writes_only_secrets_labelled_as_its_own(
    account: kubernetes.client.ApiClient, api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    admin, core = kubernetes.client.CoreV1Api(api_client), kubernetes.client.CoreV1Api(account)
    admin.create_namespaced_secret(namespace, {"metadata": {"name": "theirs"}, "data": {"password": b64(b"x")}})
    ours = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.ROLE_LABEL: "key"}
    token = {
        "metadata": {"name": "token", "labels": ours, "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token",
    }
    refused = {
        "a patch of a Secret without the label": lambda: core.patch_namespaced_secret(
            "theirs", namespace, {"data": {"password": b64(b"y")}}
        ),
        "the label put on it": lambda: core.patch_namespaced_secret(
            "theirs", namespace, {"metadata": {"labels": ours}}
        ),
        "its deletion": lambda: core.delete_namespaced_secret("theirs", namespace),
        "a Secret created without the label": lambda: core.create_namespaced_secret(
            namespace, {"metadata": {"name": "new"}, "type": "Opaque"}
        ),
        # A token of any ServiceAccount in the namespace, filled in by the token controller.
        "a service-account token": lambda: core.create_namespaced_secret(namespace, token),
    }
    for what, call in refused.items():
        message = refusal(call)
        assert message is not None and POLICY in message, f"{what}: {message}"
    assert admin.read_namespaced_secret("theirs", namespace).data == {"password": b64(b"x")}
    # The positive control: a Secret of its own it creates, rewrites and deletes.
    body = {"metadata": {"name": "mine", "labels": ours}, "type": "Opaque", "data": {"tls.key": b64(b"1")}}
    assert refusal(lambda: core.create_namespaced_secret(namespace, body)) is None
    assert refusal(lambda: core.patch_namespaced_secret("mine", namespace, {"data": {"tls.key": b64(b"2")}})) is None
    assert refusal(lambda: core.delete_namespaced_secret("mine", namespace)) is None


def harness_as(
    account: kubernetes.client.ApiClient, api_client: kubernetes.client.ApiClient, namespace: str
) -> Harness:
    """The operator's passes with the account's credentials; the test reads and annotates as admin."""
    fake = clock.FakeClock(datetime.datetime.now(datetime.UTC).replace(microsecond=0))
    keygen = test_service.CountingKeygen()
    ctx = reconcile.Context(kube_client.Clients(account), clock=fake, keygen=keygen)
    return Harness(whc.Api(api_client, namespace), ctx, fake, keygen)


def test_the_operators_other_writes_pass_the_policy(
    account: kubernetes.client.ApiClient, api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None
) -> None:
    """A key made by hand adopted, truststores and a ConfigMap copy, a bundle, an emergency and its cut-over."""
    h = harness_as(account, api_client, namespace)
    admin = kubernetes.client.CoreV1Api(api_client)
    pair = pki.new_key_pair(models.Subject(common_name="adopt.example.com"), h.fake.now(), datetime.timedelta(days=365))
    admin.create_namespaced_secret(namespace, test_service._tls_secret("adopt-tls", pair.key_pem, pair.cert_pem))
    for name in ("truststore-password", "bundle-password"):
        admin.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": {"password": b64(b"changeit")}})
    formats = {
        "pkcs12": {"key": "truststore.p12"},
        "jks": {"key": "truststore.jks"},
        "passwordSecretRef": {"name": "truststore-password"},
    }
    h.create(
        "adopt",
        trust={"secretName": "adopt-trust", "configMap": {"name": "adopt-ca"}, "additionalFormats": formats},
        bundle={"passwordSecretRef": {"name": "bundle-password"}},
    )
    h.settle("adopt")
    status = h.status("adopt")
    assert h.keygen.calls == 0 and status.current is not None
    assert status.current.fingerprint == pki.inspect(pair.cert_pem).fingerprint
    held = h.api.secret("adopt-trust") or {}
    assert {"ca.crt", "truststore.p12", "truststore.jks"} <= held.keys()
    assert condition(status, names.TRUST_STORE_INCOMPLETE) is None
    bundle = condition(status, names.BUNDLE_READY)
    assert bundle is not None and bundle.status == "True", bundle
    h.api.emergency("adopt", "INC-23")
    h.settle("adopt")
    after = h.status("adopt")
    assert after.next is not None
    assert h.api.trusted_fingerprints("adopt-trust") == {after.next.fingerprint}
    h.api.cutover("adopt", after.next.serial)
    h.settle("adopt")
    done = h.status("adopt")
    assert done.current is not None and done.current.serial == after.next.serial
    ready = condition(done, names.READY)
    assert ready is not None and ready.status == "True", ready
    assert not h.api.events("adopt", "Forbidden")


def test_the_operator_under_the_policy_takes_an_ingress_secret_over_only_with_consent(
    account: kubernetes.client.ApiClient, api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None
) -> None:
    admin = kubernetes.client.CoreV1Api(api_client)
    consumers(admin, kubernetes.client.AppsV1Api(api_client), namespace)
    h = harness_as(account, api_client, namespace)
    subject = models.Subject(common_name="endpoint.example.com")
    server = pki.new_key_pair(subject, h.fake.now(), datetime.timedelta(days=9))
    theirs = {"tls.crt": server.cert_pem, "tls.key": server.key_pem}
    data = {k: b64(v) for k, v in theirs.items()}
    admin.create_namespaced_secret(
        namespace, {"metadata": {"name": "ingress-tls"}, "type": "kubernetes.io/tls", "data": data}
    )
    h.create(
        "endpoint",
        trust={"secretName": "ingress-tls"},
        consumers=[
            {"selector": {"matchLabels": {"app": "receiver"}}, "reload": "Hot"},
            {"selector": {"matchLabels": {"app": "legacy"}}, "reload": "Rollout"},
        ],
    )
    h.settle("endpoint")
    status = h.status("endpoint")
    assert status.current is not None  # the key Secret: created under the policy
    conflict = condition(status, names.SECRET_CONFLICT)
    assert conflict is not None and conflict.reason == "ConsentRequired"
    assert f"kubectl annotate secret ingress-tls {names.TRUST_TARGET_ANNOTATION}=endpoint" in conflict.message
    assert h.api.secret("ingress-tls") == theirs

    admin.patch_namespaced_secret(
        "ingress-tls", namespace, {"metadata": {"annotations": {names.TRUST_TARGET_ANNOTATION: "endpoint"}}}
    )
    h.settle("endpoint")
    status = h.status("endpoint")
    ready = condition(status, names.READY)
    assert ready is not None and ready.status == "True", ready
    held = h.api.secret("ingress-tls") or {}
    assert {k: held.get(k) for k in theirs} == theirs
    assert whc.fingerprints_in(held[names.TRUST_KEY]) == {status.current.fingerprint}
    assert status.trust is not None
    annotation = names.consumer_annotation("ingress-tls")
    pod = admin.read_namespaced_pod("receiver", namespace)
    deployment = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment("legacy", namespace)
    assert (pod.metadata.annotations or {}).get(annotation) == status.trust.hash
    assert (deployment.spec.template.metadata.annotations or {}).get(annotation) == status.trust.hash

    # An emergency and its cut-over: every write of them (next key, trust, consumers, the old next
    # Secret deleted) passes the policy.
    h.api.emergency("endpoint", "INC-22")
    h.settle("endpoint")
    after = h.status("endpoint")
    assert after.stage == "Compromised" and after.next is not None
    assert whc.fingerprints_in((h.api.secret("ingress-tls") or {})[names.TRUST_KEY]) == {after.next.fingerprint}
    h.api.cutover("endpoint", after.next.serial)
    h.settle("endpoint")
    done = h.status("endpoint")
    assert done.current is not None and done.current.serial == after.next.serial
    assert h.api.secret("endpoint-tls-next") is None
    held = h.api.secret("ingress-tls") or {}
    assert {k: held.get(k) for k in theirs} == theirs
    assert not h.api.events("endpoint", "Forbidden")

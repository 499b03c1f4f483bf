"""The chart's RBAC is enough, and each rule in it is needed: the operator run under the chart's ServiceAccount.

No node is needed: the chart goes into an API-only cluster (`helm install`, or `helm template` and
`kubectl apply` of its RBAC), the operator runs as a subprocess with a token of the chart's
ServiceAccount, and the test drives a planned rotation, a cut-over and an emergency rotation to their
end, scraping the operator's metrics with curl as it goes. Then each verb of the namespaced rules is
taken away, one at a time, and what needs it breaks: a Forbidden condition, Event and log line that
name the verb and the resource, or Kopf's refused list, watch or patch in the log; a test checks that
no verb the chart grants goes without such a case.
`helm upgrade` and `helm uninstall` are checked here too, as far as an API server alone can show them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from tests import conftest, whc
from webhookcerts.devcluster import base
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, names

pytestmark = pytest.mark.integration

CHART = conftest.REPO / "charts" / "webhookcerts"
RELEASE_NAMESPACE = "webhookcerts"
# What Kopf put on every WebhookCertificate while the operator had Kopf handlers (one for deletion).
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
# What the chart's RBAC templates produce; the rest (Deployment, Service, CRDs) is not needed here.
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# The consumer rights (pods, deployments, statefulsets) are off unless asked for.
CONSUMERS_ON = ("--set", "consumers.enabled=true")


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
    """A Pod (Hot reload), a Deployment and a StatefulSet (Rollout) for the operator to nudge: the pods
    and apps rights in use, each of them (the operator tells them in this order)."""
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    container = {"name": "receiver", "image": "receiver:never-runs"}
    core.create_namespaced_pod(
        namespace,
        {"metadata": {"name": "receiver", "labels": {"app": "receiver"}}, "spec": {"containers": [container]}},
    )

    def workload(name: str) -> dict[str, Any]:
        return {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        }

    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "legacy"}, "spec": workload("legacy")})
    apps.create_namespaced_stateful_set(
        namespace, {"metadata": {"name": "store"}, "spec": {**workload("store"), "serviceName": "store"}}
    )
    return [
        {"selector": {"matchLabels": {"app": "receiver"}}, "reload": "Hot"},
        {"selector": {"matchLabels": {"app": "legacy"}}, "reload": "Rollout"},
        {"selector": {"matchLabels": {"app": "store"}}, "reload": "Rollout"},
    ]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a --log-format json log, parsed; a line that is not JSON fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- the whole lifecycle under the chart's ClusterRole ------------------------------------------


@pytest.mark.long
def test_the_operator_runs_the_lifecycle_with_the_charts_rbac(
    fresh_cluster: devcluster.DevCluster, bin_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    helm = conftest.HelmRunner(bin_dir / "helm", fresh_cluster.kubeconfig)
    kubectl = conftest.KubectlRunner(bin_dir / "kubectl", fresh_cluster.kubeconfig)
    # The chart as users install it: CRD, ServiceAccount, ClusterRoles (its pods cannot run without a node).
    # With consumers on (their rights are off by default), and the admission policies the chart ships:
    # every write of the lifecycle below passes them.
    helm("install", "wc", str(CHART), "-n", RELEASE_NAMESPACE, "--create-namespace", *CONSUMERS_ON)
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
        # An object from before the engine, when the operator had a Kopf delete handler, carries Kopf's
        # finalizer: Kopf takes it off now that nothing needs it (a patch the chart grants). In a
        # namespace of its own, so that nothing of it mixes with the story of upvest-sandbox.
        kubectl("create", "namespace", "legacy")
        legacy = whc.Api(api_client, "legacy")
        body = whc.manifest("old")
        body["metadata"]["finalizers"] = [KOPF_FINALIZER]
        legacy.custom.create_namespaced_custom_object(models.GROUP, models.VERSION, "legacy", models.PLURAL, body)
        conftest.wait_for(lambda: not legacy.get("old")["metadata"].get("finalizers"), what="Kopf's finalizer off")

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
            templates = [
                apps.read_namespaced_deployment("legacy", "payments").spec.template.metadata,
                apps.read_namespaced_stateful_set("store", "payments").spec.template.metadata,
            ]
            if trust is None:
                return False
            annotation = names.consumer_annotation(trust.secret_name)
            return pod.get(annotation) == trust.hash and all(
                (t.annotations or {}).get(annotation) == trust.hash for t in templates
            )

        conftest.wait_for(nudged, what="the pod, the Deployment and the StatefulSet to carry the trust hash")

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

        # Deleted (the operator puts no finalizer on what it serves now) and the object's series go.
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


def render_watching(bin_dir: pathlib.Path, namespace: str, prefix: str, *extra: str) -> list[dict[str, Any]]:
    """The chart rendered (`helm template`) for watching ``namespace`` with consumers on (and ``extra``
    helm arguments), under a release name of its own (``prefix`` and a random suffix): every document."""
    release = f"{prefix}-{uuid.uuid4().hex[:6]}"
    watch = f"watchNamespaces={{{namespace}}}"
    rendered = subprocess.run(
        [
            str(bin_dir / "helm"),
            "template",
            release,
            str(CHART),
            "-n",
            namespace,
            "--set",
            watch,
            *CONSUMERS_ON,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def restricted_rbac(
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    drop: tuple[str, str],
) -> str:
    """Apply the chart's RBAC for watching ``namespace``, minus one (resource, verb); the ServiceAccount's name.

    A rule naming several resources (deployments and statefulsets) is split: the others keep the verb.
    """
    docs = [d for d in render_watching(bin_dir, namespace, "neg") if d["kind"] in RBAC_KINDS]
    resource, verb = drop
    removed = 0
    for role in (d for d in docs if d["kind"] == "Role"):
        rules = []
        for rule in role["rules"]:
            if resource not in rule["resources"] or verb not in rule["verbs"]:
                rules.append(rule)
                continue
            removed += 1
            others = [r for r in rule["resources"] if r != resource]
            rest = [v for v in rule["verbs"] if v != verb]
            rules += [{**rule, "resources": others}] if others else []
            # A rule left without verbs is invalid: it goes entirely.
            rules += [{**rule, "resources": [resource], "verbs": rest}] if rest else []
        role["rules"] = rules
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


# --- each verb of the namespaced rules, one at a time ----------------------------------------------

NAME = "drop"
# Every refusal here comes within the operator's start, its list retries and one key generation: seconds
# on an idle machine, but none of that is bounded on a loaded one, so the wait is the suite's usual one.
TIMEOUT = 120


@dataclasses.dataclass(frozen=True)
class Without:
    """The operator run without one verb on one resource, and what a case needs to show what breaks."""

    resource: str
    verb: str
    api: whc.Api
    api_client: kubernetes.client.ApiClient
    operator: conftest.OperatorProcess

    @property
    def refusal(self) -> str:
        """How the API server's 403 names what was refused (with the account, the API group, the namespace)."""
        return f'cannot {self.verb} resource "{self.resource}"'

    def logged(self, pattern: str, what: str) -> re.Match[str]:
        return conftest.wait_for(lambda: re.search(pattern, self.operator.logs()), timeout=TIMEOUT, what=what)

    def reflector_refused(self, doing: str) -> re.Match[str]:
        """The Secret reflector's request refused (kube/secretinformer.py): it logs the server's words and
        retries with a growing backoff."""
        pattern = rf"{doing} secrets in \S+ failed: 403 Forbidden: .*{re.escape(self.refusal)}.*; retrying"
        return self.logged(pattern, f"the reflector's {doing} refused: {self.refusal}")

    def kopf_refused(self, method: str) -> re.Match[str]:
        """Kopf's own request refused: it logs each attempt and retries (1, 1, 2, 3, 5... seconds)."""
        attempt = rf"Request attempt #\d+/\d+ failed; will retry: {method} \S+ -> APIForbiddenError"
        return self.logged(rf"{attempt}\(.*{re.escape(self.refusal)}", f"Kopf's {method} refused: {self.refusal}")


def reported(case: Without) -> models.Condition:
    """The refusal where people look: Ready=False with reason Forbidden, a Warning Event and a log line."""
    ready: models.Condition = conftest.wait_for(
        lambda: (
            (c := case.api.condition(NAME, names.READY)) is not None
            and c.reason == "Forbidden"
            and case.refusal in c.message
            and c
        ),
        timeout=TIMEOUT,
        what=f"Ready=False, Forbidden: {case.refusal}",
    )
    assert ready.status == "False"
    assert f"system:serviceaccount:{case.api.namespace}:" in ready.message
    event = conftest.wait_for(
        lambda: next((e for e in case.api.events(NAME, "Forbidden") if case.refusal in (e.message or "")), None),
        what="the Forbidden Event",
    )
    assert event.type == "Warning"
    assert re.search(rf"{NAME}: Forbidden: .*{re.escape(case.refusal)}", case.operator.logs())
    return ready


def refused_while_issuing(case: Without) -> None:
    """The first issue goes key Secret, Event, trust Secret, its ConfigMap copy, then the consumers (pods,
    Deployments, StatefulSets): it stops at the call refused, and says so."""
    spec = consumers(case.api_client, case.api.namespace)
    case.operator.start()
    case.api.create(NAME, consumers=spec, trust={"secretName": "webhook-trust", "configMap": {"name": "trust-copy"}})
    reported(case)


def refused_updating_the_config_map(case: Without) -> None:
    """A ConfigMap that is there already (a user's, made for the Gateway, consenting) is brought up to
    date: a patch."""
    consent = {names.TRUST_TARGET_ANNOTATION: NAME}
    case.api.core.create_namespaced_config_map(
        case.api.namespace,
        {"metadata": {"name": "trust-copy", "annotations": consent}, "data": {"other.txt": "kept"}},
    )
    refused_while_issuing(case)


def refused_containing(case: Without) -> None:
    """Issuing only creates Secrets; an emergency rewrites the trust Secret, which it is not allowed to."""
    case.operator.start()
    case.api.create(NAME)
    conftest.wait_for(
        lambda: (c := case.api.condition(NAME, names.READY)) is not None and c.status == "True", what="Ready=True"
    )
    current = case.api.status(NAME).current
    assert current is not None
    case.api.emergency(NAME, "INC-403")
    reported(case)
    # The refusal is all that stands between the compromised certificate and its removal from the store.
    assert current.fingerprint in case.api.trusted_fingerprints()


def refused_telling(case: Without) -> None:
    """Every state change is an Event, and so is the report of a refusal: only the log line gets out."""
    case.operator.start()
    case.api.create(NAME)
    case.logged(rf"{NAME}: Forbidden: .*{re.escape(case.refusal)}", "the refusal logged")
    case.logged(rf"{NAME}: could not report the refusal: API 403: .*{re.escape(case.refusal)}", "no report")
    assert not case.api.events(NAME)


def refusal_unreported(case: Without) -> None:
    """A refusal is reported on the object read afresh (get). A ResourceQuota that allows no Secret
    refuses the first key with a 403 of its own: it is logged, but neither Ready nor an Event says so.
    (The other read, after a write conflict, fails quietly: the retry then waits for the watch.)"""
    quota = {"count/secrets": "0"}
    core = case.api.core
    core.create_namespaced_resource_quota(case.api.namespace, {"metadata": {"name": "none"}, "spec": {"hard": quota}})
    # No controller manager runs here to count what the quota covers: its status is written by hand.
    core.patch_namespaced_resource_quota_status("none", case.api.namespace, {"status": {"hard": quota, "used": quota}})
    case.operator.start()
    case.api.create(NAME)
    case.logged(rf"{NAME}: Forbidden: .*exceeded quota", "the quota's refusal logged")
    case.logged(rf"{NAME}: could not report the refusal: API 403: .*{re.escape(case.refusal)}", "no report")
    assert case.api.condition(NAME, names.READY) is None
    assert not case.api.events(NAME, "Forbidden")


def never_listed(case: Without) -> None:
    """The watched kinds are listed before any pass runs (the WebhookCertificates by Kopf, the Secrets
    by the operator's reflector): refused, the lister retries, and nothing is reconciled."""
    case.api.create(NAME)
    case.operator.start()
    if case.resource == "secrets":
        case.reflector_refused("listing")
        conftest.wait_for(
            lambda: len(re.findall(r"listing secrets in \S+ failed: 403", case.operator.logs())) >= 3,
            timeout=TIMEOUT,
            what="the reflector's third attempt",
        )
    else:
        case.kopf_refused("GET")
        case.logged(r"Request attempt #3/\d+ failed; will retry: GET", "Kopf's third attempt")
    # The operator starts its passes once every watched kind has been listed: never, here.
    assert "watches synced" not in case.operator.logs()
    assert case.api.status(NAME).current is None


def object_changes_unseen(case: Without) -> None:
    """Listed, so issued at start; watching refused, so an emergency annotated later is never seen."""
    case.api.create(NAME)
    case.operator.start()
    case.kopf_refused("GET")
    assert re.search(r"will retry: GET \S+watch=", case.operator.logs())
    conftest.wait_for(
        lambda: (c := case.api.condition(NAME, names.READY)) is not None and c.status == "True", what="Ready=True"
    )
    current = case.api.status(NAME).current
    assert current is not None
    case.api.emergency(NAME, "INC-404")
    # The positive control, after the annotation: a change the operator does see (the Secret watch is
    # allowed), the trust Secret deleted by hand, and its repair. The operator has acted on an event
    # newer than the annotation: had it seen the annotation, the emergency would have been first.
    case.api.core.delete_namespaced_secret("webhook-trust", case.api.namespace)
    conftest.wait_for(lambda: case.api.secret("webhook-trust") is not None, timeout=TIMEOUT, what="the repair")
    assert case.api.status(NAME).stage != "Compromised"
    # Repaired from what the operator knows: the compromised certificate is trusted still.
    assert current.fingerprint in case.api.trusted_fingerprints()


def secret_changes_unseen(case: Without) -> None:
    """Listed, so issuing works; watching refused, so no change reaches the operator as an event: the
    reflector retries the watch with a growing backoff (up to 30 s), listing again each time, and a
    trust Secret deleted by hand is seen gone only by such a listing, then restored."""
    case.operator.start()
    case.reflector_refused("watching")
    case.api.create(NAME)
    conftest.wait_for(
        lambda: (c := case.api.condition(NAME, names.READY)) is not None and c.status == "True", what="Ready=True"
    )
    case.api.core.delete_namespaced_secret("webhook-trust", case.api.namespace)
    case.logged(r"/webhook-trust is gone \(not in a new listing\)", "the deletion seen by a new listing")
    conftest.wait_for(lambda: case.api.secret("webhook-trust") is not None, timeout=TIMEOUT, what="the trust restored")


def finalizer_kept(case: Without) -> None:
    """Kopf's own bookkeeping: the finalizer it put on every object while the operator had a delete
    handler comes off with a patch, or such an object could never be deleted."""
    body = whc.manifest(NAME)
    body["metadata"]["finalizers"] = [KOPF_FINALIZER]
    case.api.custom.create_namespaced_custom_object(
        models.GROUP, models.VERSION, case.api.namespace, models.PLURAL, body
    )
    case.operator.start()
    case.kopf_refused("PATCH")
    assert re.search(rf"will retry: PATCH \S+/webhookcertificates/{NAME} ", case.operator.logs())
    assert case.api.get(NAME)["metadata"]["finalizers"] == [KOPF_FINALIZER]


def _ready(case: Without) -> None:
    conftest.wait_for(
        lambda: (c := case.api.condition(NAME, names.READY)) is not None and c.status == "True",
        timeout=TIMEOUT,
        what="Ready=True",
    )


def _report_of_a_running_pod(case: Without, pod: str) -> None:
    """A pod serving the trust Secret, Running, and its report: what a reporter leaves in the namespace."""
    spec = {
        "containers": [{"name": "r", "image": "r:1"}],
        "volumes": [{"name": "t", "secret": {"secretName": "webhook-trust"}}],
    }
    uid = case.api.core.create_namespaced_pod(
        case.api.namespace, {"metadata": {"name": pod}, "spec": spec}
    ).metadata.uid
    case.api.core.patch_namespaced_pod_status(pod, case.api.namespace, {"status": {"phase": "Running"}})
    now = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}"
    body = {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": "PresentationReport",
        "metadata": {"name": pod, "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}]},
        "spec": {
            "trustSecretName": "webhook-trust",
            "reporter": "receiver",
            "startTime": now,
            "heartbeatTime": now,
            "heartbeatIntervalSeconds": 3600,
            "certificates": [],
        },
    }
    case.api.custom.create_namespaced_custom_object(
        models.GROUP, models.VERSION, case.api.namespace, "presentationreports", body
    )


def reports_never_read(case: Without) -> None:
    """Not listable: the operator says why at start and runs without reports (Kopf would give up the
    whole operator on a refused list of a watched kind); the object is reconciled all the same."""
    case.operator.start()
    case.logged(r"not watching presentationreports\.webhookcerts\.io: listing them is refused", "why not")
    case.api.create(NAME)
    _ready(case)


def report_changes_unseen(case: Without) -> None:
    """Listed, so watched; watching refused: Kopf retries the watch, and a report never reaches status."""
    case.api.create(NAME)
    case.operator.start()
    _ready(case)
    case.kopf_refused("GET")
    assert re.search(r"will retry: GET \S+/presentationreports\S*watch=", case.operator.logs())
    _report_of_a_running_pod(case, "reporter-0")
    # The positive control, after the report: a change the operator does see (its trust Secret deleted
    # by hand) and its repair; had it seen the report, status would name the reporter.
    case.api.core.delete_namespaced_secret("webhook-trust", case.api.namespace)
    conftest.wait_for(lambda: case.api.secret("webhook-trust") is not None, timeout=TIMEOUT, what="the repair")
    assert case.api.condition(NAME, names.REPORTERS_STALE) is None
    assert not case.api.status(NAME).reporters


def report_pods_unread(case: Without) -> None:
    """The pod a report names cannot be read: the report is not counted, and the condition says so."""
    case.api.create(NAME)
    case.operator.start()
    _ready(case)
    _report_of_a_running_pod(case, "reporter-0")
    case.logged(r"pod \S+/reporter-0 of a PresentationReport could not be read", "the refused read")
    stale = conftest.wait_for(
        lambda: case.api.condition(NAME, names.REPORTERS_STALE), timeout=TIMEOUT, what="ReportersStale"
    )
    assert (stale.status, stale.reason) == ("True", "NotCounted"), stale
    assert "reporter-0" in stale.message
    assert not case.api.status(NAME).reporters


# Each verb of the chart's namespaced rules and the case that shows what needs it.
WITHOUT_ONE: dict[tuple[str, str], Callable[[Without], None]] = {
    ("webhookcertificates", "get"): refusal_unreported,
    ("webhookcertificates", "list"): never_listed,
    ("webhookcertificates", "watch"): object_changes_unseen,
    ("webhookcertificates", "patch"): finalizer_kept,
    ("secrets", "get"): refused_while_issuing,
    ("secrets", "list"): never_listed,
    ("secrets", "watch"): secret_changes_unseen,
    ("secrets", "create"): refused_while_issuing,
    ("secrets", "patch"): refused_containing,
    ("configmaps", "get"): refused_while_issuing,
    ("configmaps", "create"): refused_while_issuing,
    ("configmaps", "patch"): refused_updating_the_config_map,
    ("events", "create"): refused_telling,
    ("pods", "list"): refused_while_issuing,
    ("pods", "patch"): refused_while_issuing,
    ("deployments", "list"): refused_while_issuing,
    ("deployments", "patch"): refused_while_issuing,
    ("statefulsets", "list"): refused_while_issuing,
    ("statefulsets", "patch"): refused_while_issuing,
    ("presentationreports", "list"): reports_never_read,
    ("presentationreports", "watch"): report_changes_unseen,
    ("pods", "get"): report_pods_unread,
}
# Taken away by the tests above, with the whole story.
TAKEN_AWAY_ABOVE = {("secrets", "delete"), ("webhookcertificates/status", "patch")}


def test_every_verb_the_chart_grants_in_a_namespace_has_a_case_that_takes_it_away(bin_dir: pathlib.Path) -> None:
    rendered = subprocess.run(
        [str(bin_dir / "helm"), "template", "r", str(CHART), "-n", "x", "--set", "watchNamespaces={x}", *CONSUMERS_ON],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (role,) = (d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Role")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == set(WITHOUT_ONE) | TAKEN_AWAY_ABOVE


@pytest.mark.parametrize(("resource", "verb"), list(WITHOUT_ONE), ids=[f"{v}-{r}" for r, v in WITHOUT_ONE])
def test_without_one_verb_what_needs_it_breaks(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    crd_installed: None,
    namespace: str,
    api: whc.Api,
    api_client: kubernetes.client.ApiClient,
    tmp_path: pathlib.Path,
    resource: str,
    verb: str,
) -> None:
    operator = forbidden_operator(cluster, bin_dir, kubectl, namespace, tmp_path, (resource, verb))
    try:
        WITHOUT_ONE[(resource, verb)](Without(resource, verb, api, api_client, operator))
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

"""The reload path on real pods: the kubelet, not trust-sync, brings the new trust store to the receiver.

The reference receiver runs as a Deployment of the project's image on the local node, on the host's
network, with the trust Secret mounted as a directory volume (never ``subPath``), as the receiver guide
tells users to deploy it. The operator runs on the host against the node's cluster, as users run it,
and the WebhookCertificate's ``consumers`` select the receiver's pods: ``reload: Hot`` has the operator
annotate the pod so that the kubelet refreshes the volume at once, ``reload: Rollout`` has it stamp the
Deployment's pod template so that the pods are replaced. The provider simulator delivers from this
process, presenting the certificates the operator issued.

Proven here: a planned rotation and its cut-over under continuous delivery lose nothing; after an
emergency annotation the pod refuses the compromised certificate; a Rollout consumer's new pods start
trusting the new certificate; ``kubectl logs`` of the pod shows which client certificates it accepted;
trust-sync as a native sidecar (docs/receiver.md) feeds an ``emptyDir`` without the kubelet's help.
Nothing is timed (the benchmark ``pod-reload`` measures how fast): each step waits, generously, for a
behaviour, and then asserts it.

That the Hot nudge, and not the kubelet, brought a change: the local node's kubelet syncs every pod
every 5 s, which would refresh a mounted Secret with or without the nudge. For this module it is
restarted with a ``syncFrequency`` of an hour (the kubelet's jitter only ever lengthens the period), so
that nothing but an update of the pod, the nudge, remounts a pod's Secret volume while the tests run;
and the emergency test runs a control pod beside the nudged one, mounting the same trust Secret but
selected by no consumer: it must still trust the compromised certificate once the nudged pod has refused
it and taken the replacement.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import pathlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests import conftest, whc
from tests.e2e import conftest as e2e
from tests.e2e import test_reload as reload
from tests.unit import mtls_pki
from webhookcerts.devcluster import base, workloads
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.devcluster import node as devnode
from webhookcerts.domain import names, pki, trust
from webhookcerts.receiver import providersim

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

CRD = "webhookcertificates.webhookcerts.io"
SERVING_PAIR = "receiver-tls"
# The provider's public signing keys, one <keyid>.pem per data key: the receiver's key directory.
SIGNATURE_KEYS = "provider-signature-keys"
# Pods start, and the kubelet remounts volumes, slowly on a busy 2-core machine.
POD_TIMEOUT = 300.0


# --- the cluster side: CRD, API, operator ------------------------------------------------------------


@pytest.fixture(scope="module")
def node_crd(node_kubectl: conftest.KubectlRunner) -> Iterator[None]:
    """The CRD on the node's cluster; removed afterwards if this module installed it.

    The chart's e2e test installs the CRD from a Helm template, which refuses a CRD it does not own: a
    CRD applied here is therefore deleted again, and one the chart left is used as it is.
    """
    installed = node_kubectl("get", "crd", CRD, check=False).returncode != 0
    if installed:
        node_kubectl("apply", "-f", str(conftest.CRD_FILE))
    conftest.wait_for(
        lambda: (
            node_kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s", check=False).returncode
            == 0
        ),
        timeout=90,
        what="the CRD to be established",
    )
    conftest.wait_for(
        lambda: node_kubectl("get", "whc", "-A", check=False).returncode == 0, timeout=60, what="the CRD to serve"
    )
    yield
    if installed:
        node_kubectl("delete", "crd", CRD, "--timeout=120s", check=False)


@pytest.fixture
def node_api(node_cluster: devcluster.DevCluster, node_namespace: str, node_crd: None) -> whc.Api:
    return whc.Api(whc.api_client(node_cluster.kubeconfig), node_namespace)


@pytest.fixture
def node_operator(
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    node_namespace: str,
    node_crd: None,
    tmp_path: pathlib.Path,
) -> Iterator[conftest.OperatorProcess]:
    """The operator on the host, watching the test's namespace on the node's cluster."""
    proc = conftest.OperatorProcess(node_cluster.kubeconfig, node_namespace, tmp_path / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        # Deleted while the operator runs, the WebhookCertificates lose their finalizers, so neither the
        # namespace nor the CRD is left waiting for an operator that is gone.
        node_kubectl("delete", "whc", "--all", "-n", node_namespace, "--timeout=120s", check=False)
        proc.stop()
        print(f"--- operator log ---\n{proc.logs()[-20000:]}")


# Longer than the module runs: no periodic sync of a pod can fall inside it.
HELD_SYNC = "1h"


@pytest.fixture(scope="module", autouse=True)
def kubelet_without_periodic_sync(node_cluster: devcluster.DevCluster) -> Iterator[None]:
    """The node's kubelet with its periodic pod sync an hour away for this module, as it was afterwards."""
    node_cluster.restart_kubelet(HELD_SYNC)
    try:
        yield
    finally:
        node_cluster.restart_kubelet(devnode.SYNC_FREQUENCY)


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory: pytest.TempPathFactory) -> mtls_pki.Pki:
    """The receiver's serving certificate (for 127.0.0.1) and its CA."""
    return mtls_pki.make(tmp_path_factory.mktemp("pod-server-pki"))


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> reload.ProviderKey:
    """The provider's webhook signing key: the simulator and the probes sign with it, the pods verify."""
    return reload.provider_key(tmp_path_factory.mktemp("pod-provider-signing"))


def ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


def trust_hash_listing(api: whc.Api, fingerprints: set[str]) -> str:
    """The trust hash (what consumers are told) of the trust Secret, once it lists exactly ``fingerprints``."""

    def listed() -> str | None:
        data = (api.secret(reload.TRUST_SECRET) or {}).get(names.TRUST_KEY, b"")
        return trust.trust_hash(data) if whc.fingerprints_in(data) == fingerprints else None

    return conftest.wait_for(listed, what=f"the trust Secret to list {len(fingerprints)} certificate(s)")


def bundle(client: reload.Client, directory: pathlib.Path) -> pathlib.Path:
    """The client's key and certificate as the PKCS#12 bundle a provider is given."""
    path = directory / f"{client.name}.p12"
    p12 = pki.pkcs12_bundle(
        client.key_path.read_bytes(), client.cert_path.read_bytes(), reload.BUNDLE_PASSWORD, client.name
    )
    path.write_bytes(p12)
    return path


# --- the receiver as a Deployment ---------------------------------------------------------------------


@dataclasses.dataclass
class PodEndpoint(reload.Endpoint):
    """The receiver in its pod: the same checks as against the local process, its log from the pod.

    ``receiver_log`` holds what ``kubectl logs`` returned for the pod last asked about.
    """

    kubectl: conftest.KubectlRunner
    namespace: str
    app: str

    def pods(self) -> list[dict[str, Any]]:
        """The Deployment's pods, running or not, oldest first."""
        out = self.kubectl("get", "pods", "-n", self.namespace, "-l", f"app={self.app}", "-o", "json").stdout
        found: list[dict[str, Any]] = json.loads(out)["items"]
        return sorted(found, key=lambda p: p["metadata"]["creationTimestamp"])

    def serving_pod(self) -> str | None:
        """The one running, Ready pod whose receiver has started listening, if there is exactly one.

        Ready, and not only listening: the kubelet syncs a pod (and so remounts its Secret volumes) when
        its startup probe passes, which may come after the receiver has started to listen. Once the pod
        is Ready that sync is under way or done; after it, only an update of the pod or the periodic
        sync brings the pod a changed Secret.
        """
        running = [
            p["metadata"]["name"]
            for p in self.pods()
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        if len(running) != 1:
            return None
        return running[0] if self.pod_records(running[0], "listening") else None

    def logs(self, pod: str) -> str:
        """``kubectl logs`` of the receiver's container in ``pod``."""
        done = self.kubectl("logs", "-n", self.namespace, pod, check=False)
        return done.stdout if done.returncode == 0 else ""

    def pod_records(self, pod: str, event: str) -> list[dict[str, Any]]:
        self.receiver_log.write_text(self.logs(pod))
        return super().records(event)

    def records(self, event: str) -> list[dict[str, Any]]:
        pod = self.serving_pod() or self.pods()[-1]["metadata"]["name"]
        return self.pod_records(pod, event)

    def timeline(self, pod: str) -> list[str]:
        """The pod's log records in order, each as its event (a delivery as ``delivery <status>``)."""
        events = []
        for line in self.logs(pod).splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                event = record.get("event", "")
                events.append(f"{event} {record['status']}" if event == "delivery" else event)
        return events

    def accepted_fingerprints(self, pod: str) -> collections.Counter[str]:
        """Deliveries answered 200, by client certificate fingerprint, as the pod's log tells them."""
        return collections.Counter(
            r["client_fingerprint"] for r in self.pod_records(pod, "delivery") if r["status"] == 200
        )

    def annotation(self, pod: str) -> str | None:
        out = self.kubectl("get", "pod", pod, "-n", self.namespace, "-o", "json").stdout
        annotations = json.loads(out)["metadata"].get("annotations", {})
        value: str | None = annotations.get(names.consumer_annotation(reload.TRUST_SECRET))
        return value

    def template_annotation(self) -> str | None:
        out = self.kubectl("get", "deployment", self.app, "-n", self.namespace, "-o", "json").stdout
        template = json.loads(out)["spec"]["template"]["metadata"]
        value: str | None = template.get("annotations", {}).get(names.consumer_annotation(reload.TRUST_SECRET))
        return value


ReceiverFactory = Callable[..., PodEndpoint]


@pytest.fixture
def receiver(
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    node_namespace: str,
    node_api: whc.Api,
    server_pki: mtls_pki.Pki,
    signing_key: reload.ProviderKey,
    tmp_path: pathlib.Path,
) -> Iterator[ReceiverFactory]:
    """Deploys the receiver (once the trust Secret exists), requiring the provider's signature with the
    keys of a Secret, and waits until it listens; prints its logs. With ``reporting`` it reports what
    it sees (test_presentations.py)."""
    started: list[PodEndpoint] = []

    def create_secret(name: str, files: dict[str, pathlib.Path], kind: str = "Opaque") -> None:
        if node_api.secret(name) is None:
            # Created, not applied: `kubectl apply` would keep a copy of the data in an annotation.
            node_api.core.create_namespaced_secret(
                node_namespace,
                kubernetes.client.V1Secret(
                    metadata=kubernetes.client.V1ObjectMeta(name=name),
                    type=kind,
                    data={k: base64.b64encode(v.read_bytes()).decode() for k, v in files.items()},
                ),
            )

    def deploy(
        app: str, sidecar: workloads.Sidecar | None = None, reporting: workloads.Reporting | None = None
    ) -> PodEndpoint:
        pair = {names.TLS_CERT: server_pki.server.cert_path, names.TLS_KEY: server_pki.server.key_path}
        create_secret(SERVING_PAIR, pair, "kubernetes.io/tls")
        create_secret(SIGNATURE_KEYS, {signing_key.public.name: signing_key.public})
        # A free loopback port of the host (the pod uses the host's network).
        port = base.free_port()
        image = node_cluster.images["webhookcerts"]
        deployment = workloads.receiver_deployment(
            app,
            image,
            port,
            trust_secret=reload.TRUST_SECRET,
            tls_secret=SERVING_PAIR,
            namespace=node_namespace,
            sidecar=sidecar,
            signature_keys=SIGNATURE_KEYS,
            reporting=reporting,
        )
        e2e.apply(node_kubectl, deployment)
        log = tmp_path / f"{app}.log"
        endpoint = PodEndpoint(
            port,
            server_pki.server_ca.cert_path,
            pathlib.Path("/trust"),
            log,
            tmp_path / "no-trust-sync.log",
            node_kubectl,
            node_namespace,
            app,
            signing=signing_key,
        )
        started.append(endpoint)
        conftest.wait_for(endpoint.serving_pod, timeout=POD_TIMEOUT, what=f"the {app} pod to listen")
        return endpoint

    try:
        yield deploy
    finally:
        for endpoint in started:
            for pod in endpoint.pods():
                name = pod["metadata"]["name"]
                print(f"--- kubectl logs {name} ---\n{endpoint.logs(name)[-12000:]}")


def consumer(app: str, reload_mode: str) -> list[dict[str, Any]]:
    return [{"selector": {"matchLabels": {"app": app}}, "reload": reload_mode}]


# --- the tests ---------------------------------------------------------------------------------------


@pytest.mark.long
def test_hot_reload_carries_a_planned_rotation_and_cutover_without_losing_a_delivery(
    node_api: whc.Api, node_operator: conftest.OperatorProcess, receiver: ReceiverFactory, tmp_path: pathlib.Path
) -> None:
    api = node_api
    name, app = "planned", "hot-receiver"
    clients = tmp_path / "clients"
    # No rotation yet: the receiver and the deliveries come first, then renewBefore moves so close to
    # duration that the planned rotation is due at once (the operator reconciles the spec change).
    api.create(name, duration="1h", renewBefore="30m", consumers=consumer(app, "Hot"))
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    old = reload.client_from_secret(api, f"{name}-tls", clients, "old")
    ep = receiver(app)
    pod = ep.serving_pod()
    assert pod is not None
    assert ep.accepts(old)

    provider = reload.Provider(ep)
    provider.use("old", bundle(old, tmp_path))
    provider.start()
    try:
        conftest.wait_for(lambda: provider.started("old") >= 2, timeout=120, what="deliveries to flow")
        api.patch_spec(name, renewBefore="59m59s")
        conftest.wait_for(lambda: api.status(name).stage == "Rotating", timeout=180, what="stage Rotating")
        # Not due again: the certificate the cut-over makes current must not start a rotation of its own.
        api.patch_spec(name, renewBefore="30m")
        pending = api.status(name).next
        assert pending is not None and pending.reason == "Planned"
        new = reload.client_from_secret(api, f"{name}-tls-next", clients, "new")
        assert new.fingerprint == pending.fingerprint
        # The operator told the pod, and the kubelet brought the new trust store into its volume.
        both = trust_hash_listing(api, {old.fingerprint, new.fingerprint})
        conftest.wait_for(lambda: ep.annotation(pod) == both, what="the operator to annotate the pod")
        conftest.wait_for(
            lambda: ep.trusts(old, new.fingerprint), timeout=POD_TIMEOUT, what="the pod to trust the next certificate"
        )

        # The provider switches to the next certificate and finishes what it sent with the old one;
        # only then is the cut-over confirmed, while deliveries go on.
        provider.use("new", bundle(new, tmp_path))
        conftest.wait_for(lambda: provider.finished_with("old"), timeout=180, what="the old campaigns to finish")
        api.cutover(name, pending.serial)
        conftest.wait_for(
            lambda: (c := api.status(name).current) is not None and c.fingerprint == new.fingerprint,
            what="the cut-over",
        )
        conftest.wait_for(
            lambda: not ep.trusts(new, old.fingerprint), timeout=POD_TIMEOUT, what="the pod to drop the old certificate"
        )
        # At least one whole campaign with the new certificate after the old one left the trust store.
        after = provider.started("new")
        conftest.wait_for(lambda: provider.started("new") > after, timeout=120, what="another campaign")
    finally:
        campaigns = provider.stop()

    summaries: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for campaign in campaigns:
        assert campaign.summary is not None
        summaries[campaign.label].append(campaign.summary)
    print(f"campaigns: {json.dumps(summaries, indent=1)}")
    everything = [s for group in summaries.values() for s in group]
    assert [s["failed"] for s in everything] == [0] * len(everything)
    assert sum(s["delivered"] for s in everything) == sum(s["sent"] for s in everything)
    delivered_old = sum(s["delivered"] for s in summaries["old"])
    delivered_new = sum(s["delivered"] for s in summaries["new"])
    assert delivered_old > 0 and delivered_new > 0

    # The same pod did it all (reloaded, never restarted), and its log names each certificate it accepted.
    assert ep.serving_pod() == pod
    assert all(s.get("restartCount", 0) == 0 for p in ep.pods() for s in p["status"].get("containerStatuses", []))
    accepted = ep.accepted_fingerprints(pod)
    assert set(accepted) == {old.fingerprint, new.fingerprint}
    assert accepted[old.fingerprint] >= delivered_old
    assert accepted[new.fingerprint] >= delivered_new
    # Each of them carried the provider's signature, which the pod verified with the key its Secret holds.
    assert ep.unverified_deliveries() == []
    # It reloaded (next trusted, then old dropped) while the stream went on: deliveries before and after.
    timeline = ep.timeline(pod)
    reloads = [i for i, event in enumerate(timeline) if event == "trust_reloaded"]
    delivered = [i for i, event in enumerate(timeline) if event == "delivery 200"]
    assert len(reloads) >= 2
    assert delivered[0] < reloads[0] and reloads[-1] < delivered[-1]
    # And the cut-over really took the old certificate away.
    assert ep.refuses(old)
    assert ep.accepts(new)


def test_hot_reload_makes_the_pod_refuse_a_compromised_certificate(
    node_api: whc.Api, node_operator: conftest.OperatorProcess, receiver: ReceiverFactory, tmp_path: pathlib.Path
) -> None:
    api = node_api
    name, app = "urgent", "hot-urgent"
    clients = tmp_path / "clients"
    api.create(name, consumers=consumer(app, "Hot"))
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    compromised = reload.client_from_secret(api, f"{name}-tls", clients, "compromised")
    # The control: the same image and trust Secret, but no consumer selects it, so nobody nudges it.
    # Deployed first, so that its start (and the kubelet's syncs that come with it) is long over when
    # the emergency begins: the nudged pod starts in between.
    control = receiver("unselected-control")
    ep = receiver(app)
    pod = ep.serving_pod()
    assert pod is not None
    assert ep.accepts(compromised)
    assert ep.accepted_fingerprints(pod)[compromised.fingerprint] >= 1
    assert control.accepts(compromised)

    api.emergency(name, f"INC-{uuid.uuid4().hex[:6]}")
    conftest.wait_for(
        lambda: ep.refuses(compromised), timeout=POD_TIMEOUT, what="the pod to refuse the compromised certificate"
    )
    # The probes above were deliveries too: those before the reload got in. From here on, none may.
    before = ep.accepted_fingerprints(pod)[compromised.fingerprint]
    conftest.wait_for(
        lambda: (s := api.status(name)).stage == "Compromised" and s.next is not None, what="the replacement"
    )
    status = api.status(name)
    assert status.next is not None and status.next.reason == "Emergency"
    fresh = reload.client_from_secret(api, f"{name}-tls-next", clients, "fresh")
    assert fresh.fingerprint == status.next.fingerprint
    fresh_only = trust_hash_listing(api, {fresh.fingerprint})
    conftest.wait_for(lambda: ep.annotation(pod) == fresh_only, what="the operator to annotate the pod")
    # Containment reached the endpoint first (a store trusting nobody); the replacement comes after.
    conftest.wait_for(lambda: ep.accepts(fresh), timeout=POD_TIMEOUT, what="the endpoint to accept the replacement")

    # The provider simulator: the compromised bundle delivers nothing, the new one everything.
    def simulate(client: reload.Client) -> dict[str, Any]:
        config = ep.simulator(
            bundle(client, tmp_path),
            rate=20,
            count=10,
            max_attempts=2,
            backoff_initial=0.05,
            timeout=30.0,
        )
        return providersim.run(config)

    with_compromised, with_fresh = simulate(compromised), simulate(fresh)
    assert (with_compromised["delivered"], with_compromised["failed"]) == (0, 10), with_compromised
    assert (with_fresh["delivered"], with_fresh["failed"]) == (10, 0), with_fresh

    # What the pod's log says: the compromised certificate got in before the incident and never after,
    # the fresh one got in, and the refusals were the trust store's verdict.
    assert ep.serving_pod() == pod
    accepted = ep.accepted_fingerprints(pod)
    assert accepted[compromised.fingerprint] == before
    assert accepted[fresh.fingerprint] >= 11
    assert any(r["reason"] == "certificate_verify_failed" for r in ep.pod_records(pod, "handshake_failed"))
    # The kubelet did not bring the changes by itself: two trust changes and two nudges later, the pod
    # it was not asked to sync still has the store it started with. (Held at a sync of 1 s instead of
    # an hour, this fails: the control pod has reloaded by now.)
    control_pod = control.serving_pod()
    assert control_pod is not None and control.annotation(control_pod) is None
    assert control.accepts(compromised), "the control pod reloaded without a nudge: the kubelet synced it"


@pytest.mark.long
def test_rollout_replaces_the_pods_and_the_new_ones_trust_the_new_certificate(
    node_api: whc.Api, node_operator: conftest.OperatorProcess, receiver: ReceiverFactory, tmp_path: pathlib.Path
) -> None:
    api = node_api
    name, app = "rolled", "rollout-receiver"
    clients = tmp_path / "clients"
    api.create(name, duration="1h", renewBefore="30m", consumers=consumer(app, "Rollout"))
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    old = reload.client_from_secret(api, f"{name}-tls", clients, "old")
    ep = receiver(app)

    def pod_made_for(hash_: str | None) -> str | None:
        """The serving pod, if it was made from the template stamped with ``hash_`` (a pod carries its
        template's annotations; a Rollout consumer's pods are never annotated themselves)."""
        pod = ep.serving_pod()
        return pod if hash_ is not None and pod is not None and ep.annotation(pod) == hash_ else None

    def started_trusting(pod: str) -> set[str]:
        """The fingerprints the pod's receiver trusted when it started (its first log record)."""
        listening = ep.pod_records(pod, "listening")
        assert len(listening) == 1, listening
        return {c["fingerprint"] for c in listening[0]["trusted"]}

    # A Deployment made after the last trust change mounts the current store from its start: nothing is
    # announced to it (no roll for nothing) until the store changes.
    first = conftest.wait_for(lambda: ep.serving_pod(), timeout=POD_TIMEOUT, what="the first pod")
    assert ep.template_annotation() is None
    assert started_trusting(first) == {old.fingerprint}
    assert ep.accepts(old)

    # The planned rotation: the Deployment rolls and its new pod starts with both certificates.
    api.patch_spec(name, renewBefore="59m59s")
    conftest.wait_for(lambda: api.status(name).stage == "Rotating", timeout=180, what="stage Rotating")
    # Not due again: the certificate the cut-over makes current must not start a rotation of its own.
    api.patch_spec(name, renewBefore="30m")
    pending = api.status(name).next
    assert pending is not None
    new = reload.client_from_secret(api, f"{name}-tls-next", clients, "new")
    assert new.fingerprint == pending.fingerprint
    rotating_hash = trust_hash_listing(api, {old.fingerprint, new.fingerprint})
    second = conftest.wait_for(lambda: pod_made_for(rotating_hash), timeout=POD_TIMEOUT, what="the rolled pod")
    assert second != first
    assert started_trusting(second) == {old.fingerprint, new.fingerprint}
    assert ep.accepts(new)
    assert ep.accepts(old)

    # The cut-over: it rolls again, and the next pod trusts the new certificate alone.
    api.cutover(name, pending.serial)
    conftest.wait_for(
        lambda: (c := api.status(name).current) is not None and c.fingerprint == new.fingerprint, what="the cut-over"
    )
    final_hash = trust_hash_listing(api, {new.fingerprint})
    third = conftest.wait_for(lambda: pod_made_for(final_hash), timeout=POD_TIMEOUT, what="the pod after the cut-over")
    assert started_trusting(third) == {new.fingerprint}
    assert {p["metadata"]["name"] for p in ep.pods()} == {third}
    assert ep.accepts(new)
    assert ep.refuses(old)
    # Its log shows the certificate it accepted, and no other.
    assert set(ep.accepted_fingerprints(third)) == {new.fingerprint}


def test_a_trust_sync_native_sidecar_brings_an_emergency_to_the_receiver_without_the_kubelet(
    node_api: whc.Api,
    node_operator: conftest.OperatorProcess,
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    receiver: ReceiverFactory,
    tmp_path: pathlib.Path,
) -> None:
    """docs/receiver.md's native sidecar on the real node: trust-sync in an init container with
    ``restartPolicy: Always``, reading the one Secret its Role names, keeps an ``emptyDir`` in step for
    the receiver. No consumer is set and the kubelet's periodic sync is held off, and an emptyDir is no
    Secret volume anyway: only the sidecar can bring the emergency to the receiver."""
    api, name, account = node_api, "sidecar-fed", "trust-sync"
    clients = tmp_path / "clients"
    api.create(name)
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    compromised = reload.client_from_secret(api, f"{name}-tls", clients, "compromised")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": account, "namespace": api.namespace},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [reload.TRUST_SECRET],
             "verbs": ["get", "list", "watch"]},
        ],
    }  # fmt: skip
    e2e.apply(
        node_kubectl,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": api.namespace}},
        role,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": account, "namespace": api.namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": api.namespace}],
        },
    )
    ep = receiver("sidecar-fed", workloads.Sidecar(api.namespace, account, node_cluster.pod_api_env()))
    pod = ep.serving_pod()
    assert pod is not None
    spec = json.loads(node_kubectl("get", "pod", pod, "-n", api.namespace, "-o", "json").stdout)["spec"]
    assert [c["restartPolicy"] for c in spec["initContainers"]] == ["Always"]
    assert "secret" not in next(v for v in spec["volumes"] if v["name"] == "trust")
    assert ep.accepts(compromised)

    api.emergency(name, f"INC-{uuid.uuid4().hex[:6]}")
    conftest.wait_for(
        lambda: ep.refuses(compromised), timeout=POD_TIMEOUT, what="the receiver to refuse the compromised certificate"
    )
    conftest.wait_for(lambda: (s := api.status(name)).next is not None and s, what="the replacement")
    fresh = reload.client_from_secret(api, f"{name}-tls-next", clients, "fresh")
    conftest.wait_for(lambda: ep.accepts(fresh), timeout=POD_TIMEOUT, what="the receiver to accept the replacement")
    assert ep.serving_pod() == pod
    synced = node_kubectl("logs", "-n", api.namespace, pod, "-c", "trust-sync").stdout
    assert synced.count('"event": "synced"') >= 2, synced

"""Consumers: pods (Hot) and workloads (Rollout) learn the new trust hash when the trust store changes.

The API-only cluster runs no kubelet or controllers, so pods stay Pending and Deployments never roll;
what is tested here is what the operator does to them through the API. Real pods reloading on a real
node are the end-to-end tier's business.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes
import pytest

from tests import conftest, whc
from webhookcerts.domain import names, trust
from webhookcerts.kube import client as kube_client
from webhookcerts.service import consumers, reconcile

pytestmark = pytest.mark.integration

# The objects of these tests name the trust Secret whc.manifest gives them.
HASH = names.consumer_annotation("webhook-trust")


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


def pod(name: str, labels: dict[str, str]) -> kubernetes.client.V1Pod:
    return kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name=name, labels=labels),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="c", image="receiver")]),
    )


def deployment(name: str, labels: dict[str, str]) -> kubernetes.client.V1Deployment:
    return kubernetes.client.V1Deployment(
        metadata=kubernetes.client.V1ObjectMeta(name=name),
        spec=kubernetes.client.V1DeploymentSpec(
            selector=kubernetes.client.V1LabelSelector(match_labels=labels),
            template=kubernetes.client.V1PodTemplateSpec(
                metadata=kubernetes.client.V1ObjectMeta(labels=labels),
                spec=pod("unused", labels).spec,
            ),
        ),
    )


def pod_hash(api: whc.Api, name: str) -> str | None:
    return (api.core.read_namespaced_pod(name, api.namespace).metadata.annotations or {}).get(HASH)


def test_hot_consumers_get_the_trust_hash_on_every_change(
    api: whc.Api, api_client: kubernetes.client.ApiClient, operator: conftest.OperatorProcess
) -> None:
    api.core.create_namespaced_pod(api.namespace, pod("receiver-a", {"app": "receiver"}))
    api.core.create_namespaced_pod(api.namespace, pod("receiver-b", {"app": "receiver"}))
    api.core.create_namespaced_pod(api.namespace, pod("bystander", {"app": "other"}))
    api.create("hot", consumers=[{"selector": {"matchLabels": {"app": "receiver"}}, "reload": "Hot"}])

    first = conftest.wait_for(lambda: (t := api.status("hot").trust) and t.hash, what="a trust hash")
    conftest.wait_for(lambda: pod_hash(api, "receiver-a") == first, what="receiver-a nudged")
    assert pod_hash(api, "receiver-b") == first
    assert pod_hash(api, "bystander") is None
    consumer = api.status("hot").consumers
    assert [(c.selector, c.reload, c.trust_hash, c.targets) for c in consumer] == [
        ("app=receiver", "Hot", first, ["Pod/receiver-a", "Pod/receiver-b"])
    ]

    api.emergency("hot", "INC-4004")

    # Containment changes the store once, the replacement once more: the pods end on the last one.
    def settled() -> str | None:
        status, held = api.status("hot"), (api.secret("webhook-trust") or {}).get(names.TRUST_KEY, b"")
        recorded = status.trust.hash if status.trust else None
        done = status.next is not None and recorded == trust.trust_hash(held) and recorded != first
        return recorded if done else None

    second = conftest.wait_for(settled, what="the replacement's trust hash recorded")
    conftest.wait_for(lambda: pod_hash(api, "receiver-a") == second, what="receiver-a nudged again")
    assert pod_hash(api, "receiver-b") == second
    assert api.events("hot", "TrustReloadRequested")


def test_rollout_consumers_roll_their_workload(
    api: whc.Api, api_client: kubernetes.client.ApiClient, operator: conftest.OperatorProcess
) -> None:
    apps = kubernetes.client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(api.namespace, deployment("legacy", {"app": "legacy"}))
    apps.create_namespaced_deployment(api.namespace, deployment("unrelated", {"app": "unrelated"}))
    api.create("roll", consumers=[{"selector": {"matchLabels": {"app": "legacy"}}, "reload": "Rollout"}])

    def template_hash(name: str) -> str | None:
        template = apps.read_namespaced_deployment(name, api.namespace).spec.template
        return (template.metadata.annotations or {}).get(HASH)

    first = conftest.wait_for(lambda: (t := api.status("roll").trust) and t.hash, what="a trust hash")
    conftest.wait_for(lambda: template_hash("legacy") == first, what="the Deployment's template annotated")
    generation = apps.read_namespaced_deployment("legacy", api.namespace).metadata.generation
    assert template_hash("unrelated") is None

    api.emergency("roll", "INC-5005")
    conftest.wait_for(lambda: template_hash("legacy") not in (None, first), what="the Deployment rolled")
    # A changed pod template is what makes the Deployment controller roll the pods.
    assert apps.read_namespaced_deployment("legacy", api.namespace).metadata.generation > generation


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("webhook-trust", "trust-hash.webhookcerts.io/webhook-trust"),
        ("a" * 63, "trust-hash.webhookcerts.io/" + "a" * 63),
    ],
)
def test_the_consumer_annotation_names_its_trust_secret(secret: str, expected: str) -> None:
    assert names.consumer_annotation(secret) == expected


def test_a_long_trust_secret_name_is_shortened_to_a_valid_distinct_annotation() -> None:
    # Secret names are DNS subdomains (up to 253 characters); an annotation's name part holds 63.
    qualified = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
    long_names = ["a" * 64, "a" * 253, "trust." + "b" * 47 + "-.x" + "c" * 30, "trust." + "b" * 47 + "-.y" + "c" * 30]
    seen: set[str] = set()
    for secret in long_names:
        prefix, _, name = names.consumer_annotation(secret).partition("/")
        assert prefix == "trust-hash.webhookcerts.io"
        assert len(name) <= 63 and qualified.fullmatch(name), name
        assert names.consumer_annotation(secret) == f"{prefix}/{name}"  # stable
        seen.add(name)
    assert len(seen) == len(long_names)
    # The cut drops what would end the kept part badly before the hash is appended.
    assert names.consumer_annotation("trust." + "b" * 47 + "-.x" + "c" * 30).split("/")[1][:54] == (
        "trust." + "b" * 47 + "-"
    )


@pytest.mark.parametrize("recheck", [False, True], ids=["status-shortcut", "every-pass-rechecks"])
def test_consumers_of_two_trust_stores_settle_with_one_reload_per_trust_change(
    api: whc.Api,
    api_client: kubernetes.client.ApiClient,
    crd_installed: None,
    monkeypatch: pytest.MonkeyPatch,
    recheck: bool,
) -> None:
    """Two WebhookCertificates with different trust Secrets select one Deployment (Rollout) and one pod
    (Hot): each trust Secret keeps its own annotation there, so reconciling them in turn reaches a fixed
    point instead of each overwriting the other's hash (and rolling the workload) on every pass.

    ``recheck`` turns off the status short-cut (``consumers.announced``), as when a pass cannot trust
    what the status says it told (a lost status write): the consumers themselves must then be at rest.
    """
    if recheck:
        monkeypatch.setattr(consumers, "announced", lambda *_: False)
    apps = kubernetes.client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(api.namespace, deployment("shared", {"app": "shared"}))
    api.core.create_namespaced_pod(api.namespace, pod("shared-0", {"app": "shared"}))
    stores = {"alpha": "trust-alpha", "beta": "trust-beta"}
    selector: dict[str, Any] = {"matchLabels": {"app": "shared"}}
    for name, store in stores.items():
        api.create(
            name,
            trust={"secretName": store},
            consumers=[{"selector": selector, "reload": "Rollout"}, {"selector": selector, "reload": "Hot"}],
        )

    # Every change of a trust Secret's content, as the operator is told of it (several may fall in one pass).
    held: dict[str, str] = {}
    changes: list[str] = []

    def trust_changed(namespace: str, secret_name: str) -> None:
        now_held = api.secret_object(secret_name).metadata.annotations[names.TRUST_HASH_ANNOTATION]
        if held.get(secret_name) != now_held:
            held[secret_name] = now_held
            changes.append(secret_name)

    ctx = reconcile.Context(kube_client.Clients(api_client), trust_changed=trust_changed)

    def generation() -> int:
        return int(apps.read_namespaced_deployment("shared", api.namespace).metadata.generation)

    def observed() -> tuple[int, dict[str, str], dict[str, str], str]:
        template = apps.read_namespaced_deployment("shared", api.namespace).spec.template.metadata
        shared_pod = api.core.read_namespaced_pod("shared-0", api.namespace).metadata
        return (
            generation(),
            dict(template.annotations or {}),
            dict(shared_pod.annotations or {}),
            shared_pod.resource_version,
        )

    def passes(rounds: int = 6) -> list[tuple[int, dict[str, str], dict[str, str], str]]:
        """Both objects reconciled in turn, ``rounds`` times each; what the consumers looked like after each."""
        seen = []
        for _ in range(rounds):
            for name in stores:
                reconcile.reconcile(ctx, api.get(name))
                seen.append(observed())
        return seen

    def assert_each_consumer_carries_each_trust_hash() -> None:
        _, template, pod_annotations, _ = observed()
        for name, store in stores.items():
            data = api.secret(store)
            assert data is not None, f"{store} was not written"
            expected = trust.trust_hash(data[names.TRUST_KEY])
            recorded = api.status(name).trust
            assert recorded is not None and recorded.hash == expected, (name, recorded)
            assert template.get(names.consumer_annotation(store)) == expected, (store, template)
            assert pod_annotations.get(names.consumer_annotation(store)) == expected, (store, pod_annotations)

    start = generation()
    history = passes()
    assert sorted(changes) == ["trust-alpha", "trust-beta"]  # each store written once, by its first pass
    # One rollout per trust change, and after that a fixed point: nothing moves in the later rounds.
    assert generation() == start + len(changes), [h[0] for h in history]
    assert_each_consumer_carries_each_trust_hash()
    settled = observed()
    assert history[-1] == settled
    assert passes() == [settled] * 2 * 6
    assert sorted(changes) == ["trust-alpha", "trust-beta"]

    # One object's trust store changes (an emergency: containment, then the replacement key): the
    # workload rolls once per change of that store, and then settles again.
    changes.clear()
    before = generation()
    api.emergency("alpha", "INC-6006")
    history = passes()
    assert changes and set(changes) == {"trust-alpha"}, changes
    assert generation() == before + len(changes), (changes, [h[0] for h in history])
    assert_each_consumer_carries_each_trust_hash()
    settled = observed()
    assert history[-1] == settled
    assert passes() == [settled] * 2 * 6
    assert set(changes) == {"trust-alpha"}, changes

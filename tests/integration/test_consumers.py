"""Consumers: pods (Hot) and workloads (Rollout) learn the new trust hash when the trust store changes.

The API-only cluster runs no kubelet or controllers, so pods stay Pending and Deployments never roll;
what is tested here is what the operator does to them through the API. Real pods reloading on a real
node are the end-to-end tier's business.
"""

from __future__ import annotations

import kubernetes
import pytest

from tests import conftest, whc
from webhookcerts.domain import names, trust

pytestmark = pytest.mark.integration

HASH = names.TRUST_HASH_ANNOTATION


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

"""Nudging the pods and workloads that consume a trust store.

Hot: an annotation patch on each matching pod makes the kubelet refresh its mounted Secret volumes at
once instead of after its sync period (about a minute). Rollout: a pod-template annotation on the
owning Deployment or StatefulSet rolls its pods, as Reloader does, for servers that cannot reload.
Both are merge patches of one annotation and are skipped when the value is already there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from webhookcerts.kube import client as kube_client


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str
    name: str
    labels: dict[str, str]
    annotation: str | None


def pods(clients: kube_client.Clients, namespace: str, selector: str, annotation: str) -> list[Target]:
    # The client's models type every field as optional; a listed object always has metadata.
    items: list[Any] = clients.core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        Target("Pod", p.metadata.name, dict(p.metadata.labels or {}), (p.metadata.annotations or {}).get(annotation))
        for p in items
        if not p.metadata.deletion_timestamp
    ]


def workloads(clients: kube_client.Clients, namespace: str, annotation: str) -> list[Target]:
    """Deployments and StatefulSets, labelled by their pod templates (what a consumer selector names)."""
    found: list[Target] = []
    listings: tuple[tuple[str, list[Any]], ...] = (
        ("Deployment", clients.apps.list_namespaced_deployment(namespace).items),
        ("StatefulSet", clients.apps.list_namespaced_stateful_set(namespace).items),
    )
    for kind, items in listings:
        for item in items:
            template = item.spec.template.metadata
            found.append(
                Target(
                    kind,
                    item.metadata.name,
                    dict(template.labels or {}) if template else {},
                    ((template.annotations or {}) if template else {}).get(annotation),
                )
            )
    return found


def annotate(clients: kube_client.Clients, namespace: str, target: Target, annotation: str, value: str) -> None:
    patches: dict[str, Callable[..., object]] = {
        "Pod": clients.core.patch_namespaced_pod,
        "Deployment": clients.apps.patch_namespaced_deployment,
        "StatefulSet": clients.apps.patch_namespaced_stateful_set,
    }
    body: dict[str, object] = {"metadata": {"annotations": {annotation: value}}}
    if target.kind != "Pod":
        body = {"spec": {"template": body}}
    patches[target.kind](target.name, namespace, body)

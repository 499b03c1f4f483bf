"""WebhookCertificate objects through the API: get, list a namespace, patch status and annotations.

Status goes out as a JSON merge patch of the top-level fields that changed (cert-manager's issue #7572:
whole-object updates under contention cost minutes of conflicts); removed fields are sent as null.
"""

from __future__ import annotations

from typing import Any, cast

import kubernetes

from webhookcerts.domain import models
from webhookcerts.kube import client as kube_client


def get(clients: kube_client.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj = cast(
            dict[str, Any],
            clients.custom.get_namespaced_custom_object(models.GROUP, models.VERSION, namespace, models.PLURAL, name),
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def list_namespace(clients: kube_client.Clients, namespace: str) -> list[dict[str, Any]]:
    result = cast(
        dict[str, Any],
        clients.custom.list_namespaced_custom_object(models.GROUP, models.VERSION, namespace, models.PLURAL),
    )
    items: list[dict[str, Any]] = result.get("items", [])
    return items


def list_all(clients: kube_client.Clients) -> list[dict[str, Any]]:
    result = cast(
        dict[str, Any], clients.custom.list_cluster_custom_object(models.GROUP, models.VERSION, models.PLURAL)
    )
    items: list[dict[str, Any]] = result.get("items", [])
    return items


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns status ``old`` into ``new``: changed fields, and null for removed ones.

    Nested objects are diffed too: a merge patch merges into them, so a key dropped from a nested object
    (``current.compromisedBy`` after a cut-over) must be sent as null or it survives on the server.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        patch[key] = status_patch(before, value) if isinstance(before, dict) and isinstance(value, dict) else value
    patch.update({k: None for k in old if k not in new})
    return patch


def patch_status(
    clients: kube_client.Clients,
    namespace: str,
    name: str,
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    resource_version: str | None = None,
) -> dict[str, Any] | None:
    """Send what changed between two status dicts; the object as the server now has it, or None when
    nothing had to be sent.

    With ``resource_version`` the patch is conditional: it fails with 409 Conflict when the object
    changed since that version was read, so a decision taken on a stale copy is never recorded.
    """
    patch = status_patch(old, new)
    if not patch:
        return None
    body: dict[str, Any] = {"status": patch}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return cast(
        dict[str, Any],
        clients.custom.patch_namespaced_custom_object_status(
            models.GROUP, models.VERSION, namespace, models.PLURAL, name, body
        ),
    )


def patch_annotations(
    clients: kube_client.Clients, namespace: str, name: str, annotations: dict[str, str | None]
) -> None:
    clients.custom.patch_namespaced_custom_object(
        models.GROUP,
        models.VERSION,
        namespace,
        models.PLURAL,
        name,
        {"metadata": {"annotations": annotations}},
    )

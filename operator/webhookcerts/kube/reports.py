"""PresentationReports and their pods through the API: the operator only reads them.

A report names its pod; the pod is read once per report change (a few a minute per reporter), with a
short timeout of its own, never listed or watched: the operator has no reason to hold every pod of
the cluster in memory for the handful that report.
"""

from __future__ import annotations

import json
from typing import Any, cast

import kubernetes

from webhookcerts.domain import models, reports
from webhookcerts.kube import client as kube_client

# (connect, read) seconds for the pod GET: it runs on each report change and must not hold the
# watch that delivered it for long.
POD_TIMEOUT = (3.0, 5.0)


def list_namespace(clients: kube_client.Clients, namespace: str) -> list[dict[str, Any]] | None:
    """The namespace's reports; None when the API server does not serve them (the CRD not installed)."""
    try:
        result = cast(
            dict[str, Any],
            clients.custom.list_namespaced_custom_object(models.GROUP, models.VERSION, namespace, reports.PLURAL),
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    items: list[dict[str, Any]] = result.get("items", [])
    return items


def read_pod(clients: kube_client.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    """The pod as a plain dict (camelCase, as the API sends it), or None when it does not exist."""
    try:
        response = clients.core.read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=POD_TIMEOUT
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], json.loads(response.data))  # type: ignore[attr-defined]

"""Writing one's own PresentationReport: named after the reporter's pod, owned by it, nothing else.

A reporter may write its own report and no other (the chart's ValidatingAdmissionPolicy compares the
report's name and owner with the pod in the writer's token), so every write carries both: the name is
the pod's, and the one ownerReference is the pod (apiVersion v1, kind Pod, name, uid; no controller,
no blockOwnerDeletion, which would need the right to delete the pod). The garbage collector removes the
report with the pod. A pod of a StatefulSet comes back under the same name with a new uid: the write
replaces the ownerReference too, so the report never stays tied to a pod that is gone.

One call per write in the usual case: a merge patch of the whole spec (lists are replaced whole, and a
field the spec no longer has is sent as null); a create when the report does not exist yet (the first
write, or after someone deleted it). Every call is bounded in time by the client (kube/client.py).
Errors come out as ``ReportWriteError`` with the API server's status and message only: never the
request, whose headers carry the token.

The operator only reads them (merged here from the reports-ingest branch): a report names its pod; the
pod is read once per report change (a few a minute per reporter), with a short timeout of its own,
never listed or watched: the operator has no reason to hold every pod of the cluster in memory for the
handful that report.
"""

from __future__ import annotations

import json
from typing import Any, cast

import kubernetes

from webhookcerts.domain import models, reports
from webhookcerts.kube import client as kube_client


class ReportWriteError(RuntimeError):
    """The report could not be written; the message is fit for a log."""


def owner_reference(pod_name: str, pod_uid: str) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}


def body(namespace: str, pod_name: str, pod_uid: str, spec: reports.PresentationReportSpec) -> dict[str, Any]:
    """The whole report, as created."""
    return {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": reports.KIND,
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "ownerReferences": [owner_reference(pod_name, pod_uid)],
        },
        "spec": spec.to_api(),
    }


def merge_patch(pod_name: str, pod_uid: str, spec: reports.PresentationReportSpec) -> dict[str, Any]:
    """The merge patch that makes an existing report this one: its owner and spec, removed fields as null."""
    wire = spec.to_api()
    absent = {
        (field.alias or name): None
        for name, field in reports.PresentationReportSpec.model_fields.items()
        if (field.alias or name) not in wire
    }
    return {
        "metadata": {"ownerReferences": [owner_reference(pod_name, pod_uid)]},
        "spec": {**absent, **wire},
    }


def get(clients: kube_client.Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return cast(
            dict[str, Any],
            clients.custom.get_namespaced_custom_object(models.GROUP, models.VERSION, namespace, reports.PLURAL, name),
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


class Writer:
    """Writes the report of the pod ``pod_name`` (uid ``pod_uid``) in ``namespace``; call it with a spec."""

    def __init__(self, clients: kube_client.Clients, *, namespace: str, pod_name: str, pod_uid: str) -> None:
        self._clients = clients
        self.namespace, self.pod_name, self.pod_uid = namespace, pod_name, pod_uid
        self._exists = False  # whether to patch first (the usual case once the report is there)

    def __call__(self, spec: reports.PresentationReportSpec) -> None:
        try:
            self._write(spec)
        except kubernetes.client.ApiException as exc:
            raise ReportWriteError(
                f"{self.namespace}/{self.pod_name}: {exc.status} {kube_client.api_error_reason(exc)}"
            ) from None
        except kube_client.TransportError as exc:
            raise ReportWriteError(f"{self.namespace}/{self.pod_name}: no answer ({type(exc).__name__})") from None

    def _write(self, spec: reports.PresentationReportSpec) -> None:
        if not self._exists:
            try:
                self._create(spec)
                self._exists = True
                return
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:  # AlreadyExists: patch it
                    raise
        try:
            self._patch(spec)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            self._exists = False
            self._create(spec)  # deleted since: make it again
        self._exists = True

    def _create(self, spec: reports.PresentationReportSpec) -> None:
        self._clients.custom.create_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            self.namespace,
            reports.PLURAL,
            body(self.namespace, self.pod_name, self.pod_uid, spec),
        )

    def _patch(self, spec: reports.PresentationReportSpec) -> None:
        self._clients.custom.patch_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            self.namespace,
            reports.PLURAL,
            self.pod_name,
            merge_patch(self.pod_name, self.pod_uid, spec),
        )


# --- reading (the operator) ---

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


def unreadable(clients: kube_client.Clients, namespaces: list[str]) -> str | None:
    """Why the reports cannot be listed where the operator watches (no CRD, no RBAC), or None."""
    try:
        wanted: list[str | None] = list(namespaces) or [None]
        for namespace in wanted:
            if namespace is None:
                clients.custom.list_cluster_custom_object(models.GROUP, models.VERSION, reports.PLURAL, limit=1)
            else:
                clients.custom.list_namespaced_custom_object(
                    models.GROUP, models.VERSION, namespace, reports.PLURAL, limit=1
                )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return "the PresentationReport CRD is not installed"
        if exc.status in (401, 403):
            return f"listing them is refused ({kube_client.api_error_reason(exc)})"
        raise
    return None


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

"""Kopf's raw bodies emptied once the view has read them (handlers/rawbodies.py): the view keeps every
part a pass reads, while Kopf's copy, held per object until every object is indexed, loses its spec,
its status and its managedFields."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any, cast

import kopf
import kubernetes
import pytest

from webhookcerts.domain import names
from webhookcerts.handlers import operator, rawbodies
from webhookcerts.kube import client as kube_client
from webhookcerts.service import engine, reconcile

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
MANAGED_FIELDS = [{"manager": "webhookcerts", "operation": "Update", "fieldsV1": {"f:status": {}}}]


def certificate() -> dict[str, Any]:
    return {
        "apiVersion": "webhookcerts.io/v1alpha1",
        "kind": "WebhookCertificate",
        "metadata": {
            "namespace": "ns",
            "name": "a",
            "uid": "u-a",
            "resourceVersion": "7",
            "annotations": {names.EMERGENCY_ANNOTATION: "INC-1"},
            "managedFields": copy.deepcopy(MANAGED_FIELDS),
        },
        "spec": {
            "environment": "live",
            "subject": {"commonName": "webhooks.example.com"},
            "secretName": "a-tls",
            "trust": {"secretName": "webhook-trust"},
        },
        "status": {
            "stage": "Active",
            "revision": 1,
            "current": {
                "serial": "01",
                "fingerprint": "ab" * 32,
                "notBefore": "2026-01-01T00:00:00Z",
                "notAfter": "2027-01-01T00:00:00Z",
                "certificate": PEM,
                "secretName": "a-tls",
                "revision": 1,
            },
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Issued", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
        },
    }


@pytest.fixture
def eng() -> Iterator[engine.Engine]:
    # Not started: the index functions only feed the view and the queue.
    eng = engine.Engine(reconcile.Context(kube_client.Clients(kubernetes.client.ApiClient())), workers=1)
    operator.configure(eng, None)
    yield eng
    operator.configure(None, None)  # type: ignore[arg-type]


def test_a_certificate_is_in_the_view_whole_after_kopf_s_copy_lost_its_status(eng: engine.Engine) -> None:
    raw = certificate()
    # Called as Kopf calls it (the decorated function's type names every argument Kopf may pass).
    asyncio.run(cast(Any, operator.index_certificate)(body=kopf.Body(raw)))

    # Kopf's copy: the spec, status and managedFields gone, the metadata Kopf reads afterwards kept.
    assert raw["status"] == {} and raw["spec"] == {}
    assert "managedFields" not in raw["metadata"]
    assert raw["metadata"]["name"] == "a" and raw["metadata"]["annotations"] == {names.EMERGENCY_ANNOTATION: "INC-1"}
    # The view: everything a pass reads, untouched by the emptying.
    entry = eng.view.certificate("ns", "a")
    assert entry is not None and entry.status is not None and entry.spec is not None
    assert entry.status.current is not None and entry.status.current.certificate == PEM
    assert [c.type for c in entry.status.conditions] == ["Ready"]
    assert entry.annotations == {names.EMERGENCY_ANNOTATION: "INC-1"}
    assert entry.resource_version == "7" and entry.trust_secret == "webhook-trust"


def test_only_the_parts_read_once_are_emptied() -> None:
    # Another kind keeps its body (nothing here knows what reads it); metadata is never emptied.
    other = {"kind": "ConfigMap", "metadata": {"name": "x", "managedFields": []}, "data": {"k": "v"}}
    rawbodies.release(other)
    assert other == {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}}
    raw = certificate()
    rawbodies.release(raw)
    expected = certificate()
    del expected["metadata"]["managedFields"]
    expected["spec"], expected["status"] = {}, {}
    assert raw == expected


def test_nothing_kopf_runs_for_a_certificate_reads_what_was_emptied() -> None:
    # Emptying the spec and status is safe only while Kopf has no handler that reads them after
    # indexing: none on changes (their diff is the spec), no daemon or timer, no filter on a field.
    registry = kopf.get_default_registry()

    def of_certificates(handlers: Any) -> list[Any]:
        return [h for h in handlers.get_all_handlers() if h.selector.any_name == "webhookcertificates"]

    assert of_certificates(registry._changing) == [] and of_certificates(registry._spawning) == []
    kept = of_certificates(registry._indexing) + of_certificates(registry._watching)
    assert sorted(h.id for h in kept) == ["certificate-events", "certificates"]
    for handler in kept:
        assert (handler.field, handler.value, handler.when) == (None, None, None), handler.id

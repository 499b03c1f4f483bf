"""Whether a report's pod may be counted: which names a pod serves, and what the verdict says."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from webhookcerts.domain import reporters

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def pod(spec: dict[str, Any], *, phase: str = "Running", uid: str = "u-1") -> dict[str, Any]:
    return {"metadata": {"name": "recv-0", "uid": uid}, "spec": spec, "status": {"phase": phase}}


def report(owner_uid: str | None = "u-1", trust: str = "webhook-trust") -> dict[str, Any]:
    owners = [] if owner_uid is None else [{"apiVersion": "v1", "kind": "Pod", "name": "recv-0", "uid": owner_uid}]
    return {
        "metadata": {
            "namespace": "ns",
            "name": "recv-0",
            "resourceVersion": "7",
            "uid": "r-1",
            "ownerReferences": owners,
        },
        "spec": {
            "trustSecretName": trust,
            "reporter": "nginx",
            "startTime": NOW.isoformat(),
            "heartbeatTime": NOW.isoformat(),
            "heartbeatIntervalSeconds": 10,
        },
    }


@pytest.mark.parametrize(
    "spec",
    [
        {"volumes": [{"name": "t", "secret": {"secretName": "webhook-trust"}}]},
        {"volumes": [{"name": "t", "projected": {"sources": [{"secret": {"name": "webhook-trust"}}]}}]},
        {"volumes": [{"name": "t", "projected": {"sources": [{"configMap": {"name": "ca-copy"}}]}}]},
        {"containers": [{"name": "s", "args": ["--secret=ns/webhook-trust"]}]},
        {"containers": [{"name": "s", "command": ["trust-sync", "--secret", "ns/webhook-trust"]}]},
        {"containers": [{"name": "s", "env": [{"name": "TRUST_SECRET", "value": "webhook-trust"}]}]},
    ],
    ids=["volume", "projected", "configmap-copy", "args-equals", "command", "env"],
)
def test_each_way_of_serving_the_trust_store_counts(spec: dict[str, Any]) -> None:
    found = reporters.Report.parse(report(), reporters.PodFacts.of(pod(spec)))
    assert found.why_not(["ca-copy"]) == ""
    assert found.source(["ca-copy"]).counted


@pytest.mark.parametrize(
    ("body", "facts", "why"),
    [
        (report(owner_uid=None), pod({}), "is not owned by its pod"),
        (report(), None, "pod recv-0 does not exist"),
        (report(owner_uid="u-2"), pod({}), "is not the one that owns the report"),
        (report(), pod({}, phase="Succeeded"), "is Succeeded, not Running"),
        (report(), pod({"volumes": [{"name": "t", "secret": {"secretName": "webhook-trust-2"}}]}), "does not serve"),
        (report(), pod({"containers": [{"name": "s", "args": ["--secret", "other/webhook-trust"]}]}), "does not serve"),
    ],
    ids=["no-owner", "no-pod", "other-uid", "not-running", "other-secret", "other-namespace"],
)
def test_a_report_not_counted_says_why(body: dict[str, Any], facts: dict[str, Any] | None, why: str) -> None:
    found = reporters.Report.parse(body, reporters.PodFacts.of(facts))
    source = found.source(["ca-copy"])
    assert not source.counted and why in source.why_not

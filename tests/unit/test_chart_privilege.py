"""Least privilege in the rendered chart: consumer rights only when asked for, in both RBAC shapes; the
admission policies bound to the operator's ServiceAccount alone; the NetworkPolicy. No cluster needed
(tests/integration/test_admission_policy.py applies the same policies to an API server)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from tests.unit.test_chart import (
    CHART,
    CONSUMER_RULES,
    KOPF_CLUSTER_RULES,
    NAMESPACE_WATCH_RULES,
    NAMESPACED_RULES,
    REPORTER_ROLE,
    REPORTER_RULES,
    helm,
    of_kind,
    only,
    render,
    rules_of,
    run_helm,
)

__all__ = ["helm"]  # the fixture, imported for this module's tests

CONSUMERS = ("--set", "consumers.enabled=true")
REPORTS_POLICY = "r-webhookcerts-reports"
WATCHED = ("--set", "watchNamespaces={payments,webhooks}")


def test_consumer_rights_cluster_wide_only_when_enabled(helm: pathlib.Path) -> None:
    assert rules_of(only(render(helm), "ClusterRole", "r-webhookcerts")) == NAMESPACED_RULES
    with_consumers = render(helm, *CONSUMERS)
    assert rules_of(only(with_consumers, "ClusterRole", "r-webhookcerts")) == NAMESPACED_RULES | CONSUMER_RULES
    assert rules_of(only(with_consumers, "ClusterRole", "r-webhookcerts-kopf")) == KOPF_CLUSTER_RULES
    assert not of_kind(with_consumers, "Role")


def test_consumer_rights_namespaced_with_watched_namespaces(helm: pathlib.Path) -> None:
    for extra, wanted in (((), NAMESPACED_RULES), (CONSUMERS, NAMESPACED_RULES | CONSUMER_RULES)):
        docs = render(helm, *WATCHED, *extra)
        roles = {r["metadata"]["namespace"]: rules_of(r) for r in of_kind(docs, "Role")}
        assert roles == {"payments": wanted, "webhooks": wanted}
        # Cluster-wide only what Kopf reads: no pod, workload or Secret right anywhere else.
        cluster_roles = {r["metadata"]["name"]: rules_of(r) for r in of_kind(docs, "ClusterRole")}
        assert cluster_roles == {
            "r-webhookcerts-kopf": KOPF_CLUSTER_RULES | NAMESPACE_WATCH_RULES,
            REPORTER_ROLE: REPORTER_RULES,
        }


def policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in of_kind(docs, "ValidatingAdmissionPolicy")}


@pytest.mark.parametrize("extra", [(), WATCHED], ids=["cluster-wide", "namespaced"])
def test_the_admission_policies_match_the_operators_service_account_only(
    helm: pathlib.Path, extra: tuple[str, ...]
) -> None:
    docs = render(helm, *CONSUMERS, *extra, "--set", "serviceAccount.name=wc-operator")
    found = policies(docs)
    assert set(found) == {"r-webhookcerts-consumers", "r-webhookcerts-secrets", REPORTS_POLICY}
    # The reporters' policy holds every ServiceAccount's token (below); these two the operator's alone.
    found.pop(REPORTS_POLICY)
    for name, policy in found.items():
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert policy["spec"]["matchConditions"] == [
            {
                "name": "the-operator",
                "expression": 'request.userInfo.username == "system:serviceaccount:ops:wc-operator"',
            }
        ]
        binding = only(docs, "ValidatingAdmissionPolicyBinding", name)
        assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}
    secrets = found["r-webhookcerts-secrets"]["spec"]["matchConstraints"]["resourceRules"]
    assert secrets == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["secrets"],
        }
    ]
    workloads = found["r-webhookcerts-consumers"]["spec"]["matchConstraints"]["resourceRules"]
    assert {r for rule in workloads for r in rule["resources"]} >= {"pods", "deployments", "statefulsets"}


def test_the_admission_policies_can_be_turned_off_and_the_consumer_one_needs_consumers(helm: pathlib.Path) -> None:
    assert set(policies(render(helm))) == {"r-webhookcerts-secrets", REPORTS_POLICY}
    off = render(helm, *CONSUMERS, "--set", "admissionPolicy.enabled=false")
    assert not of_kind(off, "ValidatingAdmissionPolicy") and not of_kind(off, "ValidatingAdmissionPolicyBinding")


def test_the_reporter_role_writes_reports_only_and_is_bound_only_where_asked(helm: pathlib.Path) -> None:
    for extra in ((), WATCHED):
        docs = render(helm, *extra)
        assert rules_of(only(docs, "ClusterRole", REPORTER_ROLE)) == REPORTER_RULES
        assert not [b for b in of_kind(docs, "RoleBinding") if b["roleRef"]["name"] == REPORTER_ROLE]
        assert not [b for b in of_kind(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == REPORTER_ROLE]
    accounts = [{"namespace": "payments", "name": "receiver"}, {"namespace": "edge", "name": "nginx"}]
    docs = render(helm, "--set-json", f"reporters.serviceAccounts={json.dumps(accounts)}")
    bindings = [b for b in of_kind(docs, "RoleBinding") if b["roleRef"]["name"] == REPORTER_ROLE]
    # A RoleBinding in the reporter's own namespace: never a right to write reports anywhere else.
    assert [(b["metadata"]["namespace"], b["subjects"]) for b in bindings] == [
        (a["namespace"], [{"kind": "ServiceAccount", **a}]) for a in accounts
    ]
    assert all(
        b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": REPORTER_ROLE}
        for b in bindings
    )
    assert not of_kind(render(helm, "--set", "rbac.create=false"), "RoleBinding")


def test_the_reports_policy_holds_every_service_accounts_report_writes(helm: pathlib.Path) -> None:
    docs = render(helm)
    policy = policies(docs)[REPORTS_POLICY]["spec"]
    assert policy["failurePolicy"] == "Fail"
    assert policy["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["webhookcerts.io"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["presentationreports"],
        }
    ]
    # Every ServiceAccount, not only the operator's (which writes no report); people are not matched.
    assert policy["matchConditions"] == [
        {"name": "a-service-account", "expression": "request.userInfo.username.startsWith('system:serviceaccount:')"}
    ]
    text = json.dumps(policy)
    for claim in ("authentication.kubernetes.io/pod-name", "authentication.kubernetes.io/pod-uid"):
        assert claim in text
    binding = only(docs, "ValidatingAdmissionPolicyBinding", REPORTS_POLICY)
    assert binding["spec"] == {"policyName": REPORTS_POLICY, "validationActions": ["Deny"]}


def test_the_network_policy_is_off_by_default_and_allows_only_its_ports_and_peers(helm: pathlib.Path) -> None:
    assert not of_kind(render(helm), "NetworkPolicy")
    probe = {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    docs = render(
        helm,
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
        "--set-json",
        f"networkPolicy.validationEgress=[{json.dumps(probe)}]",
    )
    policy = only(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "webhookcerts",
        "app.kubernetes.io/instance": "r",
    }
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"] for rule in policy["ingress"]] == [
        [{"port": "metrics", "protocol": "TCP"}],
        [{"port": "health", "protocol": "TCP"}],
    ]
    api, dns, validation = policy["egress"]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert validation == probe


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("consumers.enabled=yes", "/consumers/enabled"),
        ("admissionPolicy.mode=audit", "'mode' not allowed"),
        ("networkPolicy.apiServerCIDRs={10.0.0.1}", "/networkPolicy/apiServerCIDRs"),
        ("networkPolicy.egress=x", "'egress' not allowed"),
        ("reporters.serviceAccounts[0].name=receiver", "missing property 'namespace'"),
        ("reporters.serviceAccounts[0].namespace=Payments", "/reporters/serviceAccounts/0"),
        ("reporters.enabled=true", "'enabled' not allowed"),
    ],
)
def test_the_schema_refuses_unknown_privilege_values(helm: pathlib.Path, setting: str, complaint: str) -> None:
    done = run_helm(helm, "template", "r", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert complaint in done.stderr

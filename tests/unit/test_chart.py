"""The Helm chart as `helm lint` and `helm template` see it: no cluster needed.

What the rendered manifests must say (the pod's security settings, RBAC verb for verb, namespaced Roles,
the CRD's keep annotation and its agreement with ``crds/``), that the schema refuses unknown values,
and that the chart's README, values file, alerts and Grafana dashboard agree with the operator's metrics.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
from typing import Any

import prometheus_client
import pytest
import yaml
from benchmarks import harness

from tests import conftest
from tests.unit import vocabulary
from webhookcerts.devcluster import base as devbase
from webhookcerts.devcluster import chart as devchart
from webhookcerts.service import metrics

CHART = conftest.REPO / "charts" / "webhookcerts"
DASHBOARD = CHART / "files" / "dashboards" / "webhookcerts.json"
CRD_SOURCES = sorted((conftest.REPO / "crds").glob("*.yaml"))
DEVCLUSTER_VALUES = CHART / "values-devcluster.yaml"

Rule = tuple[str, str, str]  # API group, resource, verb

# What the operator calls in a namespace it serves (kube/*.py and Kopf); README.md's RBAC table.
NAMESPACED_RULES: set[Rule] = {
    *{("webhookcerts.io", "webhookcertificates", v) for v in ("get", "list", "watch", "patch")},
    ("webhookcerts.io", "webhookcertificates/status", "patch"),
    *{("", "secrets", v) for v in ("get", "list", "watch", "create", "patch", "delete")},
    *{("", "configmaps", v) for v in ("get", "create", "patch")},
    ("", "events", "create"),
    # Issue 24: the reports the receiving endpoints write, and the pod each names (read by name).
    *{("webhookcerts.io", "presentationreports", v) for v in ("get", "list", "watch")},
    ("", "pods", "get"),
}
# Only with consumers.enabled (tests/unit/test_chart_privilege.py).
CONSUMER_RULES: set[Rule] = {
    ("", "pods", "list"),
    ("", "pods", "patch"),
    *{("apps", r, v) for r in ("deployments", "statefulsets") for v in ("list", "patch")},
}
# What a reporter may do (ClusterRole <fullname>-reporter, bound per namespace by RoleBindings).
REPORTER_ROLE = "r-webhookcerts-reporter"
REPORTER_RULES: set[Rule] = {
    ("webhookcerts.io", "presentationreports", v) for v in ("create", "get", "update", "patch")
}
KOPF_CLUSTER_RULES: set[Rule] = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
NAMESPACE_WATCH_RULES: set[Rule] = {("", "namespaces", v) for v in ("list", "watch")}


@pytest.fixture(scope="module")
def helm(bin_dir: pathlib.Path) -> pathlib.Path:
    path = bin_dir / "helm"
    if not path.exists():
        pytest.fail(f"helm is not in {bin_dir}: run `make setup`")
    return path


def run_helm(helm: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def render(helm: pathlib.Path, *args: str) -> list[dict[str, Any]]:
    done = run_helm(helm, "template", "r", str(CHART), "--namespace", "ops", *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def rules_of(role: dict[str, Any]) -> set[Rule]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    result: dict[str, Any] = pod["containers"][0]
    return result


# --- lint and schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["-f", str(DEVCLUSTER_VALUES), "--set", "image.tag=dev"],
        [
            "--set",
            "replicaCount=3",
            "--set",
            "watchNamespaces={a,b}",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "grafana.dashboard.enabled=true",
            "--set-json",
            'reporters.serviceAccounts=[{"namespace": "a", "name": "receiver"}]',
        ],
    ],
    ids=["defaults", "devcluster", "everything-on"],
)
def test_lint_strict_passes(helm: pathlib.Path, values: list[str]) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("foo=bar", "'foo' not allowed"),
        ("image.registry=quay.io", "'registry' not allowed"),
        ("metrics.prometheusRule.renewalOverdue=1h", "'renewalOverdue' not allowed"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("replicaCount=0", "/replicaCount"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("grafana.dashboard.folder=Certificates", "'folder' not allowed"),
        ("grafana.sidecar.enabled=true", "'sidecar' not allowed"),
        ("grafana.dashboard.enabled=yes", "/grafana/dashboard/enabled"),
        ("grafana.dashboard.label=not a label", "/grafana/dashboard/label"),
    ],
)
def test_the_schema_refuses_unknown_and_invalid_values(helm: pathlib.Path, setting: str, complaint: str) -> None:
    done = run_helm(helm, "template", "r", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert complaint in done.stderr


# --- the pod ------------------------------------------------------------------------------------


def test_the_pod_runs_unprivileged(helm: pathlib.Path) -> None:
    docs = render(helm)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod
    sc = container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The one writable path, for the endpoint probe's temporary key files.
    assert {"name": "tmp", "mountPath": "/tmp"} in container(docs)["volumeMounts"]
    assert container(docs)["resources"]["requests"] and container(docs)["resources"]["limits"]["memory"]


def test_probes_use_kopfs_health_endpoint(helm: pathlib.Path) -> None:
    c = container(render(helm, "--set", "operator.healthPort=8181"))
    assert "--liveness=http://0.0.0.0:8181/healthz" in c["args"]
    assert {"name": "health", "containerPort": 8181, "protocol": "TCP"} in c["ports"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_the_image_defaults_to_the_app_version(helm: pathlib.Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container(render(helm))["image"] == f"webhookcerts:{chart['appVersion']}"
    digest = "sha256:" + "ab" * 32
    assert container(render(helm, "--set", f"image.digest={digest}"))["image"] == f"webhookcerts@{digest}"


def test_one_replica_runs_standalone_and_is_replaced_not_rolled(helm: pathlib.Path) -> None:
    docs = render(helm)
    args = container(docs)["args"]
    assert "--standalone" in args and not any(a.startswith("--peering") for a in args)
    assert only(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [d for d in docs if d["metadata"]["name"].endswith("-leader-election")]


def test_several_replicas_elect_a_leader_with_a_lease(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "replicaCount=2")
    args = container(docs)["args"]
    assert "--standalone" not in args
    assert "--peering=r-webhookcerts" in args
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert only(docs, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not of_kind(docs, "ClusterKopfPeering") and not of_kind(docs, "KopfPeering")


def test_the_logs_are_json_unless_asked_otherwise(helm: pathlib.Path) -> None:
    assert "--log-format=json" in container(render(helm))["args"]
    assert "--log-format=text" in container(render(helm, "--set", "operator.logFormat=text"))["args"]


# --- RBAC ---------------------------------------------------------------------------------------


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(helm: pathlib.Path) -> None:
    docs = render(helm)
    assert not of_kind(docs, "Role")
    operator_role = only(docs, "ClusterRole", "r-webhookcerts")
    assert rules_of(operator_role) == NAMESPACED_RULES
    assert rules_of(only(docs, "ClusterRole", "r-webhookcerts-kopf")) == KOPF_CLUSTER_RULES
    for binding in of_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "r-webhookcerts", "namespace": "ops"}]
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]
    assert only(docs, "ServiceAccount")["metadata"]["name"] == "r-webhookcerts"
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "r-webhookcerts"


def test_no_rule_uses_a_wildcard_and_only_the_operator_role_reads_secrets(helm: pathlib.Path) -> None:
    # The operator lists and watches Secrets with its own label selector (RBAC cannot narrow a list to
    # a label); Kopf's cluster-wide role needs none of it.
    docs = render(helm, "--set", "replicaCount=2")
    for role in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        for group, resource, verb in rules_of(role):
            assert "*" not in (group, resource, verb)
            if role["metadata"]["name"].endswith("-kopf"):
                assert resource != "secrets", role["metadata"]["name"]


def test_watched_namespaces_get_roles_and_no_cluster_wide_secret_access(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "watchNamespaces={payments,webhooks}")
    roles = {r["metadata"]["namespace"]: r for r in of_kind(docs, "Role")}
    assert set(roles) == {"payments", "webhooks"}
    for role in roles.values():
        assert rules_of(role) == NAMESPACED_RULES
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(docs, "RoleBinding")}
    assert set(bindings) == {"payments", "webhooks"}
    assert all(b["subjects"][0]["namespace"] == "ops" for b in bindings.values())
    # Cluster-wide, only what Kopf reads: CRDs, and the namespaces it watches coming and going (and the
    # reporters' role, which grants nothing until bound in a namespace).
    assert {r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")} == {"r-webhookcerts-kopf", REPORTER_ROLE}
    assert rules_of(only(docs, "ClusterRole", "r-webhookcerts-kopf")) == KOPF_CLUSTER_RULES | NAMESPACE_WATCH_RULES
    assert "--namespace=payments" in container(docs)["args"] and "--namespace=webhooks" in container(docs)["args"]


def test_the_lease_rights_are_one_role_in_the_release_namespace(helm: pathlib.Path) -> None:
    for extra in ((), ("--set", "watchNamespaces={payments}")):
        docs = render(helm, "--set", "replicaCount=2", *extra)
        role = only(docs, "Role", "r-webhookcerts-leader-election")
        assert role["metadata"]["namespace"] == "ops"
        assert role["rules"] == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": ["r-webhookcerts"],
                "verbs": ["get", "update"],
            },
        ]
    assert not [d for d in render(helm) if d["metadata"]["name"].endswith("-leader-election")]


def test_no_rbac_when_asked(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "rbac.create=false")
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io")]


# --- CRDs ---------------------------------------------------------------------------------------


def test_the_crds_are_kept_on_uninstall_by_default(helm: pathlib.Path) -> None:
    # Every CRD: deleting the PresentationReport CRD too would drop every report, and an Observed
    # cut-over would wait for reporters again.
    crds = of_kind(render(helm), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in CRD_SOURCES
    }
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    for unkept in of_kind(render(helm, "--set", "crds.keep=false"), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})
    assert not of_kind(render(helm, "--set", "crds.enabled=false"), "CustomResourceDefinition")


@pytest.mark.parametrize("source_path", CRD_SOURCES, ids=[p.name for p in CRD_SOURCES])
def test_the_rendered_crd_is_the_one_in_crds(helm: pathlib.Path, source_path: pathlib.Path) -> None:
    """Drift: the chart's copy (files/crds/) must say what crds/ says; `make chart-crds` syncs it."""
    source = yaml.safe_load(source_path.read_text())
    crd = only(render(helm), "CustomResourceDefinition", source["metadata"]["name"])
    meta = crd["metadata"]
    # Only what the chart adds may differ: its labels and the keep annotation.
    assert meta.pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert meta.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
    assert "labels" not in source["metadata"] and "annotations" not in source["metadata"]
    assert crd == source, "charts/webhookcerts/files/crds/ differs from crds/: run `make chart-crds`"


# --- metrics, alerts, docs -----------------------------------------------------------------------


def test_metrics_service_and_monitor_point_at_the_metrics_port(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.port=9999")
    assert "--metrics-port=9999" in container(docs)["args"]
    assert {"name": "metrics", "containerPort": 9999, "protocol": "TCP"} in container(docs)["ports"]
    service = only(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = only(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The series' own namespace label (the WebhookCertificate's) is what the alerts group by.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert "namespace" in metrics.LABELS
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    failing = run_helm(
        helm,
        "template",
        "r",
        str(CHART),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.service.enabled=false",
    )
    assert failing.returncode != 0 and "needs metrics.service.enabled" in failing.stderr


def operator_metric_names() -> set[str]:
    registry = prometheus_client.CollectorRegistry()
    metrics.Metrics(registry)
    return {family.name for family in registry.collect()}


def test_issue_24s_series_are_known_by_name_only_until_the_operator_exposes_them() -> None:
    pending = set(vocabulary.ISSUE_24_SERIES) - set(vocabulary.exposed_series())
    assert pending, "the operator exposes every series of issue 24 now: delete vocabulary.ISSUE_24_SERIES"


def test_every_alert_uses_metrics_the_operator_exposes(helm: pathlib.Path) -> None:
    rule = only(render(helm, "--set", "metrics.prometheusRule.enabled=true"), "PrometheusRule")
    alerts = rule["spec"]["groups"][0]["rules"]
    assert {a["alert"] for a in alerts} == {
        "WebhookCertificateRenewalOverdue",
        "WebhookCertificateCutoverPending",
        "WebhookCertificateCompromised",
        "WebhookCertificateExpiringWithoutNext",
        "WebhookCertificateNotReady",
        "WebhookCertificateRevokedCertificatePresented",
        "WebhookCertificateReportersStale",
    }
    # Issue 24's series count until the operator has them.
    exposed = operator_metric_names() | set(vocabulary.ISSUE_24_SERIES)
    for alert in alerts:
        used = set(re.findall(r"webhookcerts_[a-z_]+", alert["expr"]))
        assert used and used <= exposed, (alert["alert"], used - exposed)


def test_the_chart_readme_lists_every_metric_alert_and_value() -> None:
    readme = (CHART / "README.md").read_text()
    for name in operator_metric_names():
        # A counter's family name loses `_total`; the README names the series.
        assert re.search(rf"`{name}(_total)?`", readme), name
    for alert in re.findall(r"alert: (\w+)", (CHART / "templates" / "prometheusrule.yaml").read_text()):
        assert f"`{alert}`" in readme, alert
    for path in schema_leaves():
        head = path.split(".")[0]
        assert f"`{path}`" in readme or f"`{head}.*`" in readme or f"`{head}`" in readme, path


def schema_leaves(node: dict[str, Any] | None = None, prefix: str = "") -> list[str]:
    """Every value path the schema knows, stopping at free-form objects (resources, labels, ...)."""
    if node is None:
        node = json.loads((CHART / "values.schema.json").read_text())
    leaves = []
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if key == "global":
            continue
        if "properties" in child:
            leaves.extend(schema_leaves(child, f"{path}."))
        else:
            leaves.append(path)
    return leaves


def commented_keys(text: str) -> dict[str, bool]:
    """Each key path of a values file, and whether a comment line sits right above it."""
    found: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            found[".".join(k for _, k in stack)] = previous.lstrip().startswith("#")
        if line.strip():
            previous = line
    return found


def test_every_value_is_in_the_schema_and_commented() -> None:
    keys = commented_keys((CHART / "values.yaml").read_text())
    leaves = schema_leaves()
    assert set(leaves) <= set(keys), set(leaves) - set(keys)
    uncommented = [path for path in leaves if not keys[path]]
    assert not uncommented


# --- the Grafana dashboard ------------------------------------------------------------------------


def test_the_dashboard_is_off_by_default(helm: pathlib.Path) -> None:
    assert not of_kind(render(helm), "ConfigMap")


def test_the_dashboard_is_a_configmap_the_grafana_sidecar_loads(helm: pathlib.Path) -> None:
    config_map = only(render(helm, "--set", "grafana.dashboard.enabled=true"), "ConfigMap", "r-webhookcerts-dashboard")
    assert config_map["metadata"]["namespace"] == "ops"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["labels"]["app.kubernetes.io/part-of"] == "webhookcerts"
    assert "annotations" not in config_map["metadata"]
    (key,) = config_map["data"]
    assert key.endswith(".json")  # what the sidecar writes out for Grafana to read
    assert json.loads(config_map["data"][key]) == json.loads(DASHBOARD.read_text())


def test_the_dashboard_label_namespace_and_annotations_are_configurable(helm: pathlib.Path) -> None:
    settings = {
        "grafana.dashboard.enabled": "true",
        "grafana.dashboard.label": "example.com/dashboard",
        "grafana.dashboard.labelValue": "1",  # --set makes it a number: still a label value
        "grafana.dashboard.namespace": "monitoring",
        "grafana.dashboard.annotations.grafana_folder": "Certificates",
    }
    args = [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]
    meta = only(render(helm, *args), "ConfigMap")["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["example.com/dashboard"] == "1" and "grafana_dashboard" not in meta["labels"]
    assert meta["annotations"] == {"grafana_folder": "Certificates"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(node: object) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, annotations, variable queries."""
    if isinstance(node, list):
        return [q for item in node for q in queries(item)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
    return found + [q for v in node.values() for q in queries(v)]


def datasources(node: object) -> list[object]:
    if isinstance(node, list):
        return [d for item in node for d in datasources(item)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k == "datasource" and v != {"type": "grafana", "uid": "-- Grafana --"}]
    return found + [d for v in node.values() for d in datasources(v)]


def test_the_dashboard_queries_a_chosen_prometheus_by_namespace_and_environment() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "environment"} <= variables.keys()
    # Every query, wherever it is (panels, targets, annotations, variables), goes to the chosen one;
    # only Grafana's own annotation source is not Prometheus.
    sources = datasources(board)
    assert sources and all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), sources
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels
    # Operator-wide series (key generation) carry no object labels: nothing to filter them by.
    known = vocabulary.series()
    for panel in panels:
        assert panel["targets"] and "datasource" in panel, panel["title"]
        for target in panel["targets"]:
            assert "datasource" in target, panel["title"]
            used = set(vocabulary.METRIC.findall(target["expr"]))
            if used and all("namespace" not in known.get(name, {}) for name in used):
                continue
            assert '"$namespace"' in target["expr"] and '"$environment"' in target["expr"], panel["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_every_series_the_dashboard_queries_is_one_the_operator_exposes() -> None:
    expressions = queries(dashboard())
    used = {name for e in expressions for name in vocabulary.METRIC.findall(e)}
    # Every metric the operator serves has a panel, and every panel reads a series that exists
    # (a counter as `_total`), with labels and label values the operator sets.
    assert used == set(vocabulary.series()), set(vocabulary.series()) ^ used
    assert [p for e in expressions for p in vocabulary.bad_selectors(e)] == []


def test_every_alert_the_dashboard_names_is_one_of_the_charts_rules() -> None:
    alerts = vocabulary.alert_names()
    matchers = [m for e in queries(dashboard()) for m in re.findall(r'alertname\s*(=~|=)\s*"([^"]*)"', e)]
    assert matchers, "no panel shows the chart's alerts"
    for op, value in matchers:
        matched = {a for a in alerts if re.fullmatch(value, a)} if op == "=~" else {value} & alerts
        assert matched, f"alertname{op}{value!r} matches none of {sorted(alerts)}"
        if op == "=~":
            assert matched == alerts, f"alertname=~{value!r} misses {sorted(alerts - matched)}"


def test_the_devcluster_values_are_not_the_defaults(helm: pathlib.Path) -> None:
    defaults = container(render(helm))
    assert not any(e["name"].startswith("KUBERNETES_SERVICE") for e in defaults["env"])
    assert defaults["imagePullPolicy"] == "IfNotPresent"
    docs = render(helm, "-f", str(DEVCLUSTER_VALUES), "--set", "image.tag=abc")
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    c = container(docs)
    assert c["image"] == "localhost/webhookcerts:abc" and c["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == env["KUBERNETES_SERVICE_PORT_HTTPS"]


def test_the_values_devcluster_up_writes_install_the_chart_with_no_value_found_by_hand(
    helm: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    written = devchart.write(tmp_path, "https://127.0.0.1:41234", "localhost/webhookcerts:0123abcd")
    c = container(render(helm, "-f", str(written)))
    assert c["image"] == "localhost/webhookcerts:0123abcd" and c["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KUBERNETES_SERVICE_PORT"] == env["KUBERNETES_SERVICE_PORT_HTTPS"] == "41234"
    with pytest.raises(devbase.DevClusterError, match="not an image of localhost/webhookcerts"):
        devchart.values("https://127.0.0.1:41234", "registry.example/other:1")


def test_the_benchmarks_start_the_operator_with_the_environment_users_get(helm: pathlib.Path) -> None:
    # The memory figures of docs/benchmarks.md hold for the chart and the image only if the benchmarks
    # give the operator the same malloc settings they do.
    env = {e["name"]: e.get("value") for e in container(render(helm))["env"]}
    dockerfile = (conftest.REPO / "operator" / "Dockerfile").read_text()
    for name, value in harness.OPERATOR_ENV.items():
        assert env[name] == value
        assert re.search(rf"^ENV .*\b{name}={value}\b", dockerfile, re.MULTILINE), name

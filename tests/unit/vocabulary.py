"""The names users see, read from where the code defines them, for the tests of docs and dashboards.

The runbooks, the design page and the chart's Grafana dashboard name annotations, conditions, Event
reasons, stages, metrics, alerts, status fields, CLI verbs and chart values. Each set here comes from
the operator's code, the CRD or the chart, never from a list kept by hand, so a document naming
something the code does not have fails a test.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import typing
from collections.abc import Iterator
from typing import Any

import prometheus_client
import yaml

from tests import conftest
from tests.unit import test_metrics
from webhookcerts.domain import models, names, pki
from webhookcerts.service import metrics, probes, state, validation

PACKAGE = conftest.REPO / "operator" / "webhookcerts"
CHART = conftest.REPO / "charts" / "webhookcerts"
CRD = conftest.REPO / "crds" / "webhookcertificates.webhookcerts.io.yaml"

CAMEL = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z0-9]*)*$")
# `webhookcerts.io/...` (`webhookcerts\.io/...` in a kubectl jsonpath), but not the tail of
# `trust-hash.webhookcerts.io/<name>` (a consumer's annotation).
ANNOTATION = re.compile(r"(?<![\w.-])webhookcerts\\?\.io/[a-z0-9-]+")
METRIC = re.compile(r"\bwebhookcerts_[a-z_]+")
# A series selector: `metric{label="value", other=~"regex"}`.
SELECTOR = re.compile(r"\b(webhookcerts_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
# Series labels anyone may choose: the object's identity.
FREE_LABELS = frozenset(metrics.LABELS)
# The suffixes Prometheus sees for each metric type (prometheus_client's exposition; `_created` is off).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


@functools.cache
def _trees() -> tuple[ast.Module, ...]:
    return tuple(ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py")))


def _constant(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def string_constants() -> set[str]:
    """Every string literal of the operator's package: what "exists in the code" means for a name."""
    return {
        n.value for tree in _trees() for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def annotations_and_labels() -> set[str]:
    """`webhookcerts.io/...` annotation and label keys (domain/names.py)."""
    return {v for v in vars(names).values() if isinstance(v, str) and v.startswith(f"{names.PREFIX}/")}


def annotations_in(text: str) -> set[str]:
    return {found.replace("\\", "") for found in ANNOTATION.findall(text)}


def condition_types() -> set[str]:
    """The condition types: the CamelCase names of domain/names.py."""
    return {v for v in vars(names).values() if isinstance(v, str) and CAMEL.match(v)}


def stages() -> set[str]:
    return set(typing.get_args(models.Stage))


def decision_reasons(actions: set[str] | None = None) -> set[str]:
    """The reasons of the policy chain's decisions (domain/policy.py), of the given actions or all."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / "domain" / "policy.py").read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Decision":
            action, reason = node.args[0], _constant(node.args[1])
            if reason and isinstance(action, ast.Attribute) and (actions is None or action.attr in actions):
                found.add(reason)
    return found


# Decisions whose reason the pass turns into an Event: Ready=False (service/derived.conclude, then
# state.CONDITION_EVENTS), a refusal condition, and the steps that record `decision.reason`.
EVENTFUL_ACTIONS = {
    "ADOPT_NEXT",
    "NOT_READY",
    "REFUSE_EMERGENCY",
    "REFUSE_CUTOVER",
    "REFUSE_DISCARD",
    "DISCARD_NEXT",
    "DELETE_STALE_NEXT",
}


def event_reasons() -> set[str]:
    """Every reason an Event can carry.

    Events recorded directly (`p.event(type, reason, ...)`, `events.record(..., reason=...)`), a condition
    turning that state.CONDITION_EVENTS reports, the decisions above, and the endpoint probes' answers.
    """
    found = set()
    for tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            reason: ast.expr | None = None
            if node.func.attr == "event" and len(node.args) >= 2:
                reason = node.args[1]
            elif node.func.attr == "record":
                reason = next((k.value for k in node.keywords if k.arg == "reason"), None)
            elif node.func.attr == "set_condition" and len(node.args) >= 3:
                type_, status = node.args[0], _constant(node.args[1])
                if isinstance(type_, ast.Attribute) and isinstance(type_.value, ast.Name) and type_.value.id == "names":
                    turns = state.CONDITION_EVENTS.get(getattr(names, type_.attr), {})
                    if status is None or status in turns:
                        reason = node.args[2]
                else:
                    reason = node.args[2]  # a type known only at run time: counted in
            if (value := _constant(reason)) is not None:
                found.add(value)
    found |= decision_reasons(EVENTFUL_ACTIONS)
    # What a key Secret's check finds wrong (service/state.observe_secret): a Ready=False reason.
    found |= set(typing.get_args(pki.Reason))
    for outcome in validation.Outcome:
        for want_accept in (True, False):
            found.add(probes.verdict(validation.Probe(outcome, ""), want_accept=want_accept)[1])
    return found


def alert_names() -> set[str]:
    return set(re.findall(r"alert: (\w+)", (CHART / "templates" / "prometheusrule.yaml").read_text()))


# Issue 24's series (names and labels fixed by its contract), which the chart's alerts and dashboard
# read and which the operator's reading of PresentationReports exposes. Until that code is merged they
# are known here by name, each only while the operator does not expose it; test_chart.py fails once it
# exposes them all, to have this deleted.
ISSUE_24_SERIES: dict[str, dict[str, set[str]]] = {
    "webhookcerts_certificate_presentations": {"role": {"current", "next"}},
    "webhookcerts_certificate_last_presented_timestamp_seconds": {"role": {"current", "next"}},
    "webhookcerts_reporters": {"state": {"live", "stale"}},
    "webhookcerts_reporter_heartbeat_timestamp_seconds": {"pod": set()},
    "webhookcerts_revoked_certificate_presentations_total": {"fingerprint": set()},
}


def series() -> dict[str, dict[str, set[str]]]:
    """Each series name a scrape carries, with its labels and the values each label takes; and issue
    24's that the operator does not expose yet (ISSUE_24_SERIES)."""
    found = {name: {k: set(v) for k, v in labels.items()} for name, labels in exposed_series().items()}
    for name, labels in ISSUE_24_SERIES.items():
        found.setdefault(name, {**{label: set() for label in FREE_LABELS}, **labels})
    return found


@functools.cache
def exposed_series() -> dict[str, dict[str, set[str]]]:
    """Each series name a scrape carries, with its labels and the values each label takes.

    Every metric is exercised through the public API once (a rotating object, a rotation, a cut-over,
    a reload, an error) so that the label values come from the code, not from here.
    """
    registry = prometheus_client.CollectorRegistry()
    m = metrics.Metrics(registry)
    for stage, pending, compromised in (("Rotating", "Planned", False), ("Compromised", "Emergency", True)):
        status = test_metrics.status(stage, pending=pending, compromised=compromised)  # type: ignore[arg-type]
        m.observe("ns", f"obj-{stage}", "live", status)
    for reason in metrics.ROTATION_REASONS:
        m.rotated("ns", "obj", "live", reason)
    m.cut_over("ns", "obj", "live")
    m.trust_reloaded("ns", "obj", "live", 1)
    m.reconcile_failed("ns", "obj", "live")
    # Issue 24: what the endpoints report (presentations per role, reporters, heartbeats, revoked).
    seen = test_metrics.status("Rotating", pending="Planned")
    assert seen.current is not None and seen.next is not None
    for record in (seen.current, seen.next):
        record.presentations, record.last_presented = 1, seen.next.issued_at
    seen.reporters = [
        models.ReporterStatus(pod="recv-0", reporter="receiver", heartbeat_time=seen.next.issued_at, stale=False)
    ]
    m.observe("ns", "obj-seen", "live", seen)
    m.heartbeats_seen("ns", "obj-seen", "live", {"recv-0": seen.next.issued_at})
    m.revoked_presented("ns", "obj-seen", "live", "ab" * 32, 1)
    found: dict[str, dict[str, set[str]]] = {}
    for family in registry.collect():
        for suffix in SUFFIXES[family.type]:
            found.setdefault(family.name + suffix, {})
        for sample in family.samples:
            if sample.name in found:
                for label, value in sample.labels.items():
                    found[sample.name].setdefault(label, set()).add(value)
    return found


def bad_selectors(text: str) -> list[str]:
    """What is wrong with the series selectors in `text`: unknown series, labels or label values."""
    known, problems = series(), []
    for name in METRIC.findall(text):
        if name not in known:
            problems.append(f"{name}: no such series")
    for name, matchers in SELECTOR.findall(text):
        for label, op, value in MATCHER.findall(matchers):
            labels = known.get(name, {})
            if label not in labels:
                problems.append(f"{name}{{{label}}}: no such label")
            elif op == "=" and label not in FREE_LABELS and "$" not in value and value not in labels[label]:
                problems.append(f'{name}{{{label}="{value}"}}: never takes that value ({sorted(labels[label])})')
    return problems


@functools.cache
def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def crd_has(path: str) -> bool:
    """Whether `status.next.serial` (say) is a field of the CRD; arrays are walked into."""
    node = crd_schema()
    for part in path.strip(".").split("."):
        while node.get("type") == "array":
            node = node["items"]
        properties = node.get("properties") or {}
        if part not in properties:
            return False
        node = properties[part]
    return True


def values_schema_has(path: str) -> bool:
    """Whether `grafana.dashboard.enabled` (say) is a value the chart's schema knows."""
    node: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    for part in path.split("."):
        properties = node.get("properties") or {}
        if part not in properties:
            return False
        node = properties[part]
    return True


def fenced_blocks(markdown: str) -> Iterator[tuple[str, str]]:
    """(language, body) of each fenced block."""
    for match in re.finditer(r"^```([\w-]*)\n(.*?)^```", markdown, re.M | re.S):
        yield match.group(1), match.group(2)


def prose(markdown: str) -> str:
    """The text outside fenced blocks."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)


def inline_code(markdown: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose(markdown))

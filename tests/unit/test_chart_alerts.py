"""Every alert of the chart evaluated by Prometheus' own rule engine: `promtool test rules`.

The chart's PrometheusRule is rendered (`helm template`), its `spec.groups` written out as a rules
file, and each alert gets input series written here (the names and labels the operator exposes,
docs/design.md's metrics) with the alerts expected at given times: firing where it should, silent
where it should not (too early, a condition missing, the other object). promtool is Debian's
`prometheus` package, which `make setup` installs (tools/images/host-packages.sh): without it the
tests skip on a developer's machine and fail in CI (`CI` set), where setup must have put it.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.unit.test_chart import CHART, helm, only, render

__all__ = ["helm"]  # the fixture, imported for this module's tests

# Thresholds small enough for a few hours of series at one sample a minute; each alert's test reads
# them from here, so a changed default does not silently change what is tested.
VALUES = {
    "renewalOverdueSeconds": 3600,
    "cutoverPendingSeconds": 7200,
    "cutoverPendingQuietSeconds": 1800,
    "cutoverPendingFor": "10m",
    "expiryWithoutNextSeconds": 7200,
    "notReadyFor": "15m",
    "revokedPresentationWindow": "10m",
    "reportersStaleFor": "10m",
}
RuleGroups = list[dict[str, Any]]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian's prometheus package; `make setup` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def groups(helm: pathlib.Path) -> RuleGroups:
    settings = [a for k, v in VALUES.items() for a in ("--set", f"metrics.prometheusRule.{k}={v}")]
    rule = only(render(helm, "--set", "metrics.prometheusRule.enabled=true", *settings), "PrometheusRule")
    found: RuleGroups = rule["spec"]["groups"]
    return found


def labels(name: str, **extra: str) -> dict[str, str]:
    return {"name": name, "namespace": "payments", "environment": "live", **extra}


def series(metric: str, values: str, **label_values: str) -> dict[str, str]:
    """One input series of `metric` with the object's labels (``name`` among ``label_values``)."""
    selector = ",".join(f'{k}="{v}"' for k, v in label_values.items())
    return {"series": f"{metric}{{{selector}}}", "values": values}


def filled_annotations(groups: RuleGroups, alert: str, alert_labels: dict[str, str], value: str = "") -> dict[str, str]:
    """The rule's annotations as Prometheus fills them in for ``alert_labels``: what promtool compares."""
    (rule,) = (r for g in groups for r in g["rules"] if r.get("alert") == alert)

    def fill(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: alert_labels.get(m.group(1), ""), text)
        return text.replace("{{ $value }}", value)

    return {k: fill(v) for k, v in rule["annotations"].items()}


def fired(groups: RuleGroups, alert: str, alert_labels: dict[str, str], value: str = "") -> dict[str, Any]:
    severity = next(r["labels"]["severity"] for g in groups for r in g["rules"] if r.get("alert") == alert)
    return {
        "exp_labels": {**alert_labels, "severity": severity},
        "exp_annotations": filled_annotations(groups, alert, alert_labels, value),
    }


def run_promtool(
    promtool: str, groups: RuleGroups, tmp_path: pathlib.Path, input_series: list[dict[str, str]], cases: list[Any]
) -> None:
    """``cases``: (eval time, alert, [expected alerts]); promtool must pass every one."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": alert, "exp_alerts": expected} for at, alert, expected in cases
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- one test per alert ----------------------------------------------------------------------------


def test_renewal_overdue(promtool: str, groups: RuleGroups, tmp_path: pathlib.Path) -> None:
    alert = "WebhookCertificateRenewalOverdue"
    renewal = "webhookcerts_certificate_renewal_timestamp_seconds"
    inputs = [
        # Renewal time at t=0 (the epoch promtool starts at); overdue after renewalOverdueSeconds.
        series(renewal, "0x180", **labels("stuck")),
        # The same, but a next certificate exists: rotating, not overdue.
        series(renewal, "0x180", **labels("rotating")),
        series("webhookcerts_next_certificate_issued_timestamp_seconds", "60x180", **labels("rotating")),
    ]
    cases = [
        ("30m", alert, []),  # renewal time passed 30 minutes ago: within the allowance
        ("2h", alert, [fired(groups, alert, labels("stuck"))]),
    ]
    run_promtool(promtool, groups, tmp_path, inputs, cases)


def test_cutover_pending_early_when_the_provider_switched_and_by_age_in_any_case(
    promtool: str, groups: RuleGroups, tmp_path: pathlib.Path
) -> None:
    alert = "WebhookCertificateCutoverPending"
    issued = "webhookcerts_next_certificate_issued_timestamp_seconds"
    last = "webhookcerts_certificate_last_presented_timestamp_seconds"
    reporters = "webhookcerts_reporters"
    inputs = [
        # No reporter: the next certificate issued at t=0, by age alone (cutoverPendingSeconds = 2 h).
        series(issued, "0x240", **labels("unreported")),
        # Live reporters; the next presented at 10 min; the current last presented at t=0: the
        # provider switched and nobody cut over (long before the age threshold).
        series(issued, "0x240", **labels("switched")),
        series(reporters, "1x240", **labels("switched", state="live")),
        series(reporters, "0x240", **labels("switched", state="stale")),
        series(last, "_x10 600x230", **labels("switched", role="next")),
        series(last, "0x240", **labels("switched", role="current")),
        # Live reporters; the next presented, but the current presented still (last seen = now): the
        # provider alternates; no early alert.
        series(issued, "0x240", **labels("alternating")),
        series(reporters, "1x240", **labels("alternating", state="live")),
        series(last, "_x10 600+60x230", **labels("alternating", role="next")),
        series(last, "0+60x240", **labels("alternating", role="current")),
        # As "switched", but one reporter is stale: its silence proves nothing.
        series(issued, "0x240", **labels("stale")),
        series(reporters, "1x240", **labels("stale", state="live")),
        series(reporters, "1x240", **labels("stale", state="stale")),
        series(last, "_x10 600x230", **labels("stale", role="next")),
        series(last, "0x240", **labels("stale", role="current")),
        # Live reporters, the current quiet, but the next never presented: the provider has not switched.
        series(issued, "0x240", **labels("waiting")),
        series(reporters, "1x240", **labels("waiting", state="live")),
        series(last, "0x240", **labels("waiting", role="current")),
    ]
    cases = [
        # The current quiet for 30 min at 30 min: the quiet period just reached, not yet for 10 min.
        ("35m", alert, []),
        ("1h", alert, [fired(groups, alert, labels("switched"))]),
        # Past the age threshold (2 h + 10 min): every one, reporters or not (the backstop before the
        # current certificate's expiry forces a cut-over the provider may not be ready for).
        (
            "3h",
            alert,
            [
                fired(groups, alert, labels(name))
                for name in ("switched", "unreported", "alternating", "stale", "waiting")
            ],
        ),
    ]
    run_promtool(promtool, groups, tmp_path, inputs, cases)


def test_compromised(promtool: str, groups: RuleGroups, tmp_path: pathlib.Path) -> None:
    alert = "WebhookCertificateCompromised"
    compromised = "webhookcerts_certificate_compromised"
    inputs = [
        series(compromised, "0x4 1x20", **labels("hit")),
        series(compromised, "0x25", **labels("fine")),
    ]
    cases = [
        ("3m", alert, []),
        ("6m", alert, [fired(groups, alert, labels("hit"))]),  # at once: no `for`
    ]
    run_promtool(promtool, groups, tmp_path, inputs, cases)


def test_expiring_without_next(promtool: str, groups: RuleGroups, tmp_path: pathlib.Path) -> None:
    alert = "WebhookCertificateExpiringWithoutNext"
    expiry = "webhookcerts_certificate_expiration_timestamp_seconds"
    inputs = [
        # Expires at 3 h; within expiryWithoutNextSeconds (2 h) from 1 h on.
        series(expiry, "10800x180", **labels("alone")),
        series(expiry, "10800x180", **labels("covered")),
        series("webhookcerts_next_certificate_issued_timestamp_seconds", "0x180", **labels("covered")),
    ]
    cases = [
        ("30m", alert, []),
        ("1h5m", alert, []),  # within 2 h of expiry for 5 minutes: not yet for 10
        ("1h30m", alert, [fired(groups, alert, labels("alone"))]),
    ]
    run_promtool(promtool, groups, tmp_path, inputs, cases)


def test_not_ready(promtool: str, groups: RuleGroups, tmp_path: pathlib.Path) -> None:
    alert = "WebhookCertificateNotReady"
    ready = "webhookcerts_certificate_ready_status"
    inputs = [
        series(ready, "1x30", **labels("broken", condition="False")),
        series(ready, "0x30", **labels("broken", condition="True")),
        series(ready, "0x30", **labels("fine", condition="False")),
        series(ready, "1x30", **labels("fine", condition="True")),
    ]
    cases = [
        ("10m", alert, []),
        ("20m", alert, [fired(groups, alert, labels("broken", condition="False"))]),
    ]
    run_promtool(promtool, groups, tmp_path, inputs, cases)


def test_revoked_certificate_presented(promtool: str, groups: RuleGroups, tmp_path: pathlib.Path) -> None:
    alert = "WebhookCertificateRevokedCertificatePresented"
    counter = "webhookcerts_revoked_certificate_presentations_total"
    old, stolen = "a" * 64, "b" * 64
    inputs = [
        # Known at zero, presented 3 times at 3 min, then nothing.
        series(counter, "0 0 0 3x60", **labels("hit", fingerprint=old)),
        # A series that first appears at 20 min already at 2 (an operator that counts from its first
        # sighting): increase() alone sees no rise in it.
        series(counter, "_x20 2x40", **labels("hit", fingerprint=stolen)),
    ]
    cases = [
        ("2m", alert, []),
        ("5m", alert, [fired(groups, alert, labels("hit", fingerprint=old))]),
        ("22m", alert, [fired(groups, alert, labels("hit", fingerprint=stolen))]),
        # revokedPresentationWindow (10 min) after each: quiet again.
        ("40m", alert, []),
    ]
    run_promtool(promtool, groups, tmp_path, inputs, cases)


def test_reporters_stale(promtool: str, groups: RuleGroups, tmp_path: pathlib.Path) -> None:
    alert = "WebhookCertificateReportersStale"
    reporters = "webhookcerts_reporters"
    inputs = [
        series(reporters, "0x4 2x30", **labels("silent", state="stale")),
        series(reporters, "1x35", **labels("silent", state="live")),
        series(reporters, "0x35", **labels("fine", state="stale")),
        series(reporters, "2x35", **labels("fine", state="live")),
    ]
    cases = [
        ("10m", alert, []),  # stale since 5 min: not yet for 10
        ("20m", alert, [fired(groups, alert, labels("silent", state="stale"), value="2")]),
    ]
    run_promtool(promtool, groups, tmp_path, inputs, cases)


def test_every_alert_has_a_promtool_test_and_the_rules_check(
    promtool: str, groups: RuleGroups, tmp_path: pathlib.Path
) -> None:
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    source = pathlib.Path(__file__).read_text()
    tested = set(re.findall(r'alert = "(\w+)"', source))
    assert alerts == tested, f"untested: {alerts - tested}; not in the chart: {tested - alerts}"
    assert alerts == set(re.findall(r"alert: (\w+)", (CHART / "templates" / "prometheusrule.yaml").read_text()))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr

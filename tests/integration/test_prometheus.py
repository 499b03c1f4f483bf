"""A real Prometheus scraping a running operator, with the chart's alerting rules, sees an alert fire.

The promtool tests (tests/unit/test_chart_alerts.py) feed the rules series written by hand; this one
closes the loop with what the operator really serves: Debian's `prometheus` binary scrapes
`webhookcerts run --metrics-port` every second on loopback and evaluates the chart's rules (rendered
with `helm template`) every second, with its storage in the test's temporary directory. An emergency
annotation on a WebhookCertificate must bring `WebhookCertificateCompromised` to firing in
Prometheus' own /api/v1/alerts. Skipped without the binary outside CI, failed in CI (`make setup`
installs it).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import yaml

from tests import conftest, processes, whc
from webhookcerts.devcluster import base
from webhookcerts.devcluster import cluster as devcluster

pytestmark = pytest.mark.integration

CHART = conftest.REPO / "charts" / "webhookcerts"
NAME = "watched"
ALERT = "WebhookCertificateCompromised"


@pytest.fixture
def metrics_port() -> int:
    return base.free_port()


@pytest.fixture
def operator_args(metrics_port: int) -> Sequence[str]:
    """The ``operator`` fixture's metrics endpoint, on loopback, for Prometheus to scrape."""
    return ["--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1"]


@pytest.fixture
def api(api_client: Any, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus is not installed (Debian's prometheus package; `make setup` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def chart_rules(bin_dir: pathlib.Path, path: pathlib.Path) -> set[str]:
    """The chart's PrometheusRule groups written to ``path`` as a Prometheus rules file; the alert names."""
    rendered = subprocess.run(
        [str(bin_dir / "helm"), "template", "r", str(CHART), "--set", "metrics.prometheusRule.enabled=true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (rule,) = (d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "PrometheusRule")
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


class Prometheus:
    """The server on a loopback port, its TSDB under the test's directory, tied to the test process."""

    def __init__(self, binary: str, directory: pathlib.Path, rules: pathlib.Path, target_port: int) -> None:
        self.port = base.free_port()
        self.log_path = directory / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "webhookcerts",
                    "honor_labels": True,  # the series' own namespace label, as the chart's ServiceMonitor
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = [
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
                start_new_session=True,
                preexec_fn=devcluster.die_with_parent,
            )

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise processes.ProcessExited(f"prometheus exited: {self.logs()[-4000:]}")
        try:
            self.get("/api/v1/status/buildinfo")
        except OSError:
            return False
        return True

    def alerts(self, alert: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get("/api/v1/alerts")["alerts"]
        return [a for a in found if a["labels"]["alertname"] == alert]

    def value(self, query: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": query}))["result"]
        return found

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        processes.stop(self.proc)


@pytest.fixture
def prometheus(bin_dir: pathlib.Path, tmp_path: pathlib.Path, metrics_port: int) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    directory = tmp_path / "prometheus"
    directory.mkdir()
    assert ALERT in chart_rules(bin_dir, directory / "rules.yaml")
    server = Prometheus(binary, directory, directory / "rules.yaml", metrics_port)
    try:
        conftest.wait_for(server.answers, timeout=60, what="Prometheus to answer")
        yield server
    finally:
        server.stop()
        print(f"--- prometheus log ---\n{server.logs()[-8000:]}")


def test_prometheus_fires_the_compromised_alert_on_the_operators_metrics(
    operator: conftest.OperatorProcess, prometheus: Prometheus, api: whc.Api
) -> None:
    api.create(NAME, environment="live")
    selector = f'webhookcerts_certificate_compromised{{namespace="{api.namespace}", name="{NAME}"}}'
    # The positive control of the silence below: Prometheus has scraped the object's series, at 0, and
    # evaluated the rules since that sample, every one without error: the alert was looked for.
    (sample,) = conftest.wait_for(
        lambda: [s for s in prometheus.value(selector) if s["value"][1] == "0"],
        timeout=120,
        what="Prometheus to scrape the object's compromised series at 0",
    )
    scraped_at = datetime.datetime.fromtimestamp(float(sample["value"][0]), datetime.UTC)

    def evaluated_since() -> list[dict[str, Any]] | None:
        (group,) = prometheus.get("/api/v1/rules?type=alert")["groups"]
        last = datetime.datetime.fromisoformat(group["lastEvaluation"].replace("Z", "+00:00"))
        rules: list[dict[str, Any]] = group["rules"]
        return rules if last > scraped_at else None

    rules = conftest.wait_for(evaluated_since, what="a rule evaluation after the scrape")
    assert {r["name"] for r in rules if r["health"] == "ok"} == {r["name"] for r in rules} >= {ALERT}, rules
    assert not prometheus.alerts(ALERT)

    api.emergency(NAME, "INC-9090")
    firing = conftest.wait_for(
        lambda: [
            a
            for a in prometheus.alerts(ALERT)
            if a["state"] == "firing"
            and a["labels"].get("name") == NAME
            and a["labels"].get("namespace") == api.namespace
        ],
        timeout=120,
        what=f"{ALERT} firing in Prometheus",
    )
    (alert,) = firing
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["environment"] == "live"
    assert f"{api.namespace}/{NAME}" in alert["annotations"]["summary"]

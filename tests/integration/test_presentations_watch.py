"""The operator process reads PresentationReports from its watch: a report written, changed or deleted
reaches the status of the objects whose trust Secret it names, with a resync interval of an hour, so
nothing seen here comes from a timer. An older install without the report CRD still works.
"""

from __future__ import annotations

import json
import pathlib
import types
from collections.abc import Iterator
from typing import cast

import kubernetes
import pytest

from tests import conftest, whc
from tests.integration import test_chart_rbac
from tests.integration import test_presentations as reported
from tests.integration.test_service import Harness
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import clock, models, names, reports

pytestmark = pytest.mark.integration


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> whc.Api:
    return whc.Api(api_client, namespace)


@pytest.fixture
def no_report_crd(kubectl: conftest.KubectlRunner, crd_installed: None) -> Iterator[None]:
    """The PresentationReport CRD deleted (an install from before issue 24), put back afterwards for the
    tests that follow in the session."""
    kubectl("delete", "-f", str(conftest.REPORT_CRD_FILE), "--wait=true")
    conftest.wait_for(
        lambda: kubectl("get", "whcreport", "-A", check=False).returncode != 0, timeout=60, what="reports unserved"
    )
    try:
        yield
    finally:
        kubectl("apply", "-f", str(conftest.REPORT_CRD_FILE))
        conftest.wait_for(
            lambda: kubectl("get", "whcreport", "-A", check=False).returncode == 0, timeout=90, what="reports served"
        )


@pytest.fixture
def operator_args() -> list[str]:
    return ["--resync-interval", "3600"]


def test_a_report_written_and_deleted_reaches_status_from_the_watch(
    api: whc.Api, operator: conftest.OperatorProcess
) -> None:
    # The helpers of the Harness tests, with the real clock the operator process runs on.
    h = cast(Harness, types.SimpleNamespace(api=api, fake=clock.SystemClock()))
    api.create("watched")

    def ready() -> bool:
        condition = api.condition("watched", names.READY)
        return condition is not None and condition.status == "True"

    conftest.wait_for(ready, what="Ready=True")
    current = api.status("watched").current
    assert current is not None
    uid = reported.reporter_pod(h, "recv-0")
    certificates = [reported.entry(current.certificate, accepted=4, last=h.fake.now())]
    # A long interval: the reporter stays live however slow the machine.
    reported.report(h, "recv-0", uid, certificates, interval=3600)

    def counted() -> bool:
        record = api.status("watched").current
        return record is not None and record.presentations == 4

    conftest.wait_for(counted, timeout=30, what="the report's presentations in status")
    assert [r.pod for r in api.status("watched").reporters] == ["recv-0"]

    api.custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, api.namespace, reports.PLURAL, "recv-0")
    conftest.wait_for(lambda: api.status("watched").reporters == [], timeout=30, what="the reporter gone from status")
    record = api.status("watched").current
    assert record is not None and record.presentations is None and record.last_presented is not None


def test_without_the_report_crd_the_operator_starts_and_reconciles(
    no_report_crd: None, api: whc.Api, operator: conftest.OperatorProcess
) -> None:
    api.create("older")

    def ready() -> bool:
        condition = api.condition("older", names.READY)
        return condition is not None and condition.status == "True"

    conftest.wait_for(ready, timeout=60, what="Ready=True without the report CRD")
    status = api.status("older")
    assert status.reporters == [] and not any(c.type.endswith("InUse") for c in status.conditions)
    # Kopf said why it does not watch reports: the one trace of the missing CRD.
    assert "presentationreports" in operator.logs()


def test_with_rbac_that_predates_the_reports_the_operator_starts_and_reconciles(
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    kubectl: conftest.KubectlRunner,
    crd_installed: None,
    api: whc.Api,
    tmp_path: pathlib.Path,
) -> None:
    # The chart's RBAC for one namespace, less anything on presentationreports: an upgrade of the
    # operator whose RBAC has not followed. Kopf would give up the whole operator on the refused list.
    docs = [
        d
        for d in test_chart_rbac.render_watching(bin_dir, api.namespace, "old")
        if d["kind"] in test_chart_rbac.RBAC_KINDS
    ]
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        role["rules"] = [r for r in role["rules"] if reports.PLURAL not in r.get("resources", [])]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    (account,) = (d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    kubeconfig = conftest.token_kubeconfig(kubectl, cluster, account, api.namespace, tmp_path / "sa", duration="2h")
    operator = conftest.OperatorProcess(kubeconfig, api.namespace, tmp_path / "operator.log")
    operator.start()
    try:
        api.create("upgraded")

        def ready() -> bool:
            condition = api.condition("upgraded", names.READY)
            return condition is not None and condition.status == "True"

        conftest.wait_for(ready, timeout=60, what="Ready=True with RBAC that predates the reports")
        assert "not watching presentationreports.webhookcerts.io: listing them is refused" in operator.logs()
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.logs()[-20000:]}")

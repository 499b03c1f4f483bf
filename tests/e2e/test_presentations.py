"""The loop closed on the real node (issue 24): endpoints report what the provider presents, the
operator cuts over when the provider has switched, and a revoked certificate knocking is an alarm.

The reference receiver runs as a Deployment of the project's image and writes its pod's
PresentationReport (a ServiceAccount allowed to, its identity from the downward API); nginx runs on the
host with trust-sync in a pod beside it (host network, the trust directory and the access log on a
hostPath) reading nginx's access log. The operator runs on the host against the node's cluster, with
its metrics endpoint; the provider simulator delivers from this process.

Proven here: with ``cutover.policy: Observed`` a planned rotation cuts over by itself, with no failed
delivery, once the simulator has switched to the next certificate; it does not while the simulator
still presents the current certificate now and then, nor while the only reporter is gone (and does,
the positive control, once both are over); a revoked certificate presented to nginx raises the Warning
Event ``RevokedCertificatePresented`` and the counter, one Event per burst however many reports the
burst spans. Nothing is timed: each step waits for a behaviour, and the negative checks first wait
for the moment the operator would have acted.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests import conftest, whc
from tests import servers as launchers
from tests.e2e import conftest as e2e
from tests.e2e import endpoints
from tests.e2e.presentations import (
    Operator,
    Switching,
    alarms,
    by_certificate,
    condition,
    current_is,
    http_status,
    now,
    presented,
    rotate,
    settled,
    stamp,
    start_nginx,
    status,
)
from tests.e2e.test_pods_reload import (  # noqa: F401 - fixtures, found by pytest in this module's namespace
    POD_TIMEOUT,
    ReceiverFactory,
    bundle,
    consumer,
    node_api,
    node_crd,
    ready,
    receiver,
    server_pki,
    signing_key,
)
from webhookcerts.devcluster import base, workloads
from webhookcerts.devcluster import cluster as devcluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

REPORT_CRD = "presentationreports.webhookcerts.io"
REPORTER = "reporter"  # the receiver's ServiceAccount
HEARTBEAT = 2.0  # s: a report turns stale after three missed heartbeats and 10 s
QUIET = datetime.timedelta(minutes=1)  # the shortest the spec accepts
MIN_PRESENTATIONS = 5
OBSERVED: dict[str, Any] = {
    "policy": "Observed",
    "observed": {"minPresentations": MIN_PRESENTATIONS, "quietPeriod": "1m"},
}


# --- the cluster side: the reports' CRD, the operator with its metrics --------------------------------


@pytest.fixture(scope="module")
def report_crd(node_kubectl: conftest.KubectlRunner) -> Iterator[None]:
    """The PresentationReport CRD on the node's cluster (removed afterwards if this module installed it)."""
    installed = node_kubectl("get", "crd", REPORT_CRD, check=False).returncode != 0
    if installed:
        node_kubectl("apply", "-f", str(conftest.REPO / "crds" / f"{REPORT_CRD}.yaml"))
    conftest.wait_for(
        lambda: node_kubectl("get", "whcreport", "-A", check=False).returncode == 0, timeout=90, what="reports served"
    )
    yield
    if installed:
        node_kubectl("delete", "crd", REPORT_CRD, "--timeout=120s", check=False)


@pytest.fixture
def operator(
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    node_namespace: str,
    node_crd: None,  # noqa: F811 - the fixture imported above
    report_crd: None,
    tmp_path: pathlib.Path,
) -> Iterator[Operator]:
    """The operator on the host, watching the test's namespace, serving its metrics on a loopback port."""
    port = base.free_port()
    metrics = ["--metrics-port", str(port), "--metrics-address", "127.0.0.1"]
    proc = conftest.OperatorProcess(node_cluster.kubeconfig, node_namespace, tmp_path / "operator.log", metrics)
    proc.start()
    try:
        yield Operator(proc, port)
    finally:
        node_kubectl("delete", "whc", "--all", "-n", node_namespace, "--timeout=120s", check=False)
        proc.stop()
        print(f"--- operator log ---\n{proc.logs()[-20000:]}")


def reporting(cluster: devcluster.DevCluster, kubectl: conftest.KubectlRunner, namespace: str) -> workloads.Reporting:
    """The receiver's account, allowed to write reports (a Role: the chart is not installed here)."""
    e2e.apply(kubectl, *workloads.reporter_rbac(namespace, REPORTER))
    return workloads.Reporting(REPORTER, cluster.pod_api_env(), HEARTBEAT)


# --- the tests ---------------------------------------------------------------------------------------


@pytest.mark.long
def test_an_observed_cutover_follows_the_provider_switching_with_no_failed_delivery(
    node_api: whc.Api,  # noqa: F811
    operator: Operator,
    receiver: ReceiverFactory,  # noqa: F811
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    tmp_path: pathlib.Path,
) -> None:
    api, name, app = node_api, "observed", "reporting-receiver"
    api.create(name, duration="1h", renewBefore="30m", consumers=consumer(app, "Hot"), cutover=OBSERVED)
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    ep = receiver(app, reporting=reporting(node_cluster, node_kubectl, api.namespace))
    pod = ep.serving_pod()
    old, new = rotate(api, name, tmp_path / "clients")
    assert (status(api, name).get("next") or {}).get("fingerprint") == new.fingerprint
    conftest.wait_for(lambda: ep.trusts(old, new.fingerprint), timeout=POD_TIMEOUT, what="the pod to trust the next")

    provider = Switching(ep, bundle(old, tmp_path), bundle(new, tmp_path)).start()
    try:
        # The loop is closed: the pod's report names it, and the operator counts the current's deliveries.
        conftest.wait_for(lambda: presented(api, name, "current") >= MIN_PRESENTATIONS, what="the current counted")
        assert [r["pod"] for r in status(api, name).get("reporters", [])] == [pod]
        # Nothing presents the next yet: the operator waits, and says why.
        conftest.wait_for(
            lambda: condition(api, name, "CutoverReady").get("reason") == "AwaitingNextPresentations",
            what="CutoverReady False: AwaitingNextPresentations",
        )
        assert condition(api, name, "CutoverReady")["status"] == "False"

        # The provider switches sender by sender: half the deliveries present the next certificate. The
        # current is still presented, so the operator holds on (a premature cut-over would fail these).
        provider.present(0.5)
        conftest.wait_for(
            lambda: (
                condition(api, name, "CutoverReady").get("reason") == "CurrentStillPresented"
                or current_is(api, name, new.fingerprint)
            ),
            what="the next counted and the current still presented",
        )
        provider.run_campaigns(2)
        # Every sender has switched: the cut-over follows the quiet period by itself.
        provider.present(1.0)
        conftest.wait_for(lambda: current_is(api, name, new.fingerprint), timeout=300, what="the observed cut-over")
        conftest.wait_for(
            lambda: not ep.trusts(new, old.fingerprint), timeout=POD_TIMEOUT, what="the pod to drop the old"
        )
        provider.run_campaigns(2)
    finally:
        summaries = provider.stop()

    print(f"campaigns: {json.dumps(summaries, indent=1)}")
    assert [s["failed"] for s in summaries] == [0] * len(summaries)
    assert by_certificate(summaries, old.fingerprint, "delivered") > 0
    assert by_certificate(summaries, new.fingerprint, "delivered") > 0
    events = api.events(name, "ObservedCutover")
    assert len(events) == 1, [(e.reason, e.message) for e in api.events(name)]
    history = status(api, name).get("history", [])
    assert [h["fingerprint"] for h in history] == [old.fingerprint]
    assert ep.serving_pod() == pod

    # The old certificate left the provider a quiet period before the cut-over retired it: that is no
    # revoked certificate knocking. Asked once the operator has counted a report written after it.
    retired = stamp(history[0]["retiredAt"])
    conftest.wait_for(
        lambda: stamp(status(api, name)["current"].get("lastPresented") or "1970-01-01T00:00:00Z") > retired,
        what="a report written after the cut-over, counted",
    )
    assert [e.message for e in api.events(name, "RevokedCertificatePresented")] == []
    # The positive control: the old certificate knocking now, over TLS 1.2 (the receiver reads the
    # refused certificate in the clear and reports it), is the alarm.
    code, answer = ep.curl(old, "--tls-max", "1.2")
    assert code != 0 and answer == "000", (code, answer)
    conftest.wait_for(lambda: api.events(name, "RevokedCertificatePresented"), what="the alarm for the old")
    [alarm] = api.events(name, "RevokedCertificatePresented")
    assert old.fingerprint in (alarm.message or "") and pod in (alarm.message or ""), alarm.message


def observed(min_presentations: int) -> dict[str, Any]:
    return {**OBSERVED, "observed": {**OBSERVED["observed"], "minPresentations": min_presentations}}


def waits_for(api: whc.Api, name: str, reason: str) -> bool:
    """CutoverReady is False for ``reason``."""
    ready_ = condition(api, name, "CutoverReady")
    return ready_.get("status") == "False" and ready_.get("reason") == reason


def quiet_since(moment: datetime.datetime) -> None:
    """Wait until the quiet period (and a margin) has passed since ``moment`` (a reporter's stamp)."""
    end = moment + QUIET + datetime.timedelta(seconds=5)
    conftest.wait_for(lambda: now() > end, timeout=180, what="the quiet period to pass")


@pytest.mark.long
def test_no_observed_cutover_while_the_current_is_presented_nor_with_the_reporter_stale_or_gone(
    node_api: whc.Api,  # noqa: F811
    operator: Operator,
    receiver: ReceiverFactory,  # noqa: F811
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    tmp_path: pathlib.Path,
) -> None:
    api, name, app = node_api, "holding", "holding-receiver"
    api.create(name, duration="1h", renewBefore="30m", consumers=consumer(app, "Hot"), cutover=OBSERVED)
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    ep = receiver(app, reporting=reporting(node_cluster, node_kubectl, api.namespace))
    old, new = rotate(api, name, tmp_path / "clients")
    conftest.wait_for(lambda: ep.trusts(old, new.fingerprint), timeout=POD_TIMEOUT, what="the pod to trust the next")

    # Nine deliveries in ten present the next certificate, the tenth the current one.
    provider = Switching(ep, bundle(old, tmp_path), bundle(new, tmp_path))
    provider.present(0.9)
    provider.start()
    try:
        conftest.wait_for(
            lambda: condition(api, name, "CutoverReady").get("reason") == "CurrentStillPresented",
            timeout=180,
            what="CutoverReady False: CurrentStillPresented",
        )
        # Reports of the next keep coming for longer than the quiet period from there: had the current's
        # presentations not counted, the operator would have cut over by the end of this wait.
        since = stamp(status(api, name)["next"]["lastPresented"])
        conftest.wait_for(
            lambda: stamp(status(api, name)["next"]["lastPresented"]) > since + QUIET + datetime.timedelta(seconds=5),
            timeout=180,
            what="the next presented for longer than the quiet period",
        )
        assert current_is(api, name, old.fingerprint)
        assert condition(api, name, "CutoverReady")["reason"] == "CurrentStillPresented"
        assert condition(api, name, "NextInUse").get("status") == "True"
        assert condition(api, name, "CurrentInUse").get("status") == "True"

        # The reporter stops reporting while its pod serves on (it lost the right to write its report):
        # the provider still presents the current now and then, and no report says so any more. After a
        # quiet period of reports, a stale reporter is still no evidence.
        node_kubectl("delete", "rolebinding", REPORTER, "-n", api.namespace)
        conftest.wait_for(
            lambda: condition(api, name, "ReportersStale").get("status") == "True", timeout=120, what="ReportersStale"
        )
        last_reported = stamp(status(api, name)["current"]["lastPresented"])
        quiet_since(last_reported)
        settled(api, name, cutover=observed(4))
        assert current_is(api, name, old.fingerprint)
        assert waits_for(api, name, "ReportersStale"), condition(api, name, "CutoverReady")
        # Allowed again, the reporter writes again, and its report shows the current still presented.
        e2e.apply(node_kubectl, *workloads.reporter_rbac(api.namespace, REPORTER))
        conftest.wait_for(lambda: waits_for(api, name, "CurrentStillPresented"), timeout=120, what="the reporter back")
    finally:
        summaries = provider.stop()
    assert [s["failed"] for s in summaries] == [0] * len(summaries)

    # The only reporter goes (the current was presented up to here) and nothing reports for longer than
    # the quiet period: silence from a reporter that is gone is no evidence that the current is unused.
    last_current = stamp(status(api, name)["current"]["lastPresented"])
    node_kubectl("scale", "deployment", app, "-n", api.namespace, "--replicas=0")
    conftest.wait_for(lambda: not ep.pods(), timeout=POD_TIMEOUT, what="the reporter's pod to go")
    # Its report goes with it (the garbage collector), or is not counted without its pod: no reporter.
    conftest.wait_for(lambda: waits_for(api, name, "NoReporters"), what="CutoverReady False: NoReporters")
    quiet_since(last_current)
    settled(api, name, cutover=observed(3))
    assert current_is(api, name, old.fingerprint)
    assert waits_for(api, name, "NoReporters"), condition(api, name, "CutoverReady")
    assert api.events(name, "ObservedCutover") == []

    # The positive control: a reporter again, and every delivery on the next certificate: it cuts over.
    node_kubectl("scale", "deployment", app, "-n", api.namespace, "--replicas=1")
    conftest.wait_for(ep.serving_pod, timeout=POD_TIMEOUT, what="the receiver back")
    provider = Switching(ep, bundle(old, tmp_path), bundle(new, tmp_path))
    provider.present(1.0)
    provider.start()
    try:
        conftest.wait_for(lambda: current_is(api, name, new.fingerprint), timeout=300, what="the observed cut-over")
    finally:
        summaries = provider.stop()
    assert [s["failed"] for s in summaries] == [0] * len(summaries)
    assert len(api.events(name, "ObservedCutover")) == 1


# The user the project's image runs as (operator/Dockerfile): trust-sync in the pod writes as it.
IMAGE_UID = 10001


@pytest.fixture
def host_directory() -> Iterator[pathlib.Path]:
    """What the host's nginx and the pod beside it share: ``trust/`` (trust-sync writes it, as the image's
    user) and ``access.log`` (nginx writes it, trust-sync reads it). Not under pytest's temporary
    directory, which only root may enter."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="webhookcerts-e2e-host-"))
    directory.chmod(0o755)
    (directory / "trust").mkdir()
    os.chown(directory / "trust", IMAGE_UID, IMAGE_UID)
    (directory / "access.log").touch(mode=0o644)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.long
def test_a_revoked_certificate_presented_to_nginx_raises_one_alarm_per_burst(
    node_api: whc.Api,  # noqa: F811
    operator: Operator,
    host_directory: pathlib.Path,
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    workspace: launchers.Workspace,
    tmp_path: pathlib.Path,
) -> None:
    api, app, account = node_api, "nginx-reporter", "log-reader"
    # Two objects on one trust store: "control" shows the loop works through nginx before "leaked" is
    # compromised; leaked's certificate is presented only after its revocation.
    for name in ("control", "leaked"):
        api.create(name)
    for name in ("control", "leaked"):
        conftest.wait_for(functools.partial(ready, api, name), what=f"{name} Ready")
    clients = tmp_path / "clients"
    control = endpoints.client_from_secret(api, "control-tls", clients, "control")
    leaked = endpoints.client_from_secret(api, "leaked-tls", clients, "leaked")

    host_dir = host_directory
    e2e.apply(node_kubectl, *workloads.reporter_rbac(api.namespace, account, trust_secret=endpoints.TRUST_SECRET))
    e2e.apply(
        node_kubectl,
        workloads.log_reader_deployment(
            app,
            node_cluster.images["webhookcerts"],
            trust_secret=endpoints.TRUST_SECRET,
            namespace=api.namespace,
            host_dir=str(host_dir),
            access_log=str(host_dir / "access.log"),
            log_format="nginx",
            reporting=workloads.Reporting(account, node_cluster.pod_api_env(), HEARTBEAT),
        ),
    )
    trust_file = host_dir / "trust" / "ca.crt"

    def host_trusts() -> set[str]:
        return whc.fingerprints_in(trust_file.read_bytes()) if trust_file.exists() else set()

    conftest.wait_for(
        lambda: host_trusts() == {control.fingerprint, leaked.fingerprint}, timeout=POD_TIMEOUT, what="trust-sync"
    )
    pods = json.loads(node_kubectl("get", "pods", "-n", api.namespace, "-l", f"app={app}", "-o", "json").stdout)
    pod = pods["items"][0]["metadata"]["name"]
    try:
        ep, reload_nginx = start_nginx(workspace, host_dir)
        # The positive control: a delivery through nginx is counted for the certificate that made it.
        assert http_status(ep, control) == "200"
        conftest.wait_for(lambda: presented(api, "control", "current") >= 1, what="nginx's delivery counted")

        api.emergency("leaked", "INC-E2E-24")
        conftest.wait_for(lambda: leaked.fingerprint not in host_trusts(), what="trust-sync to drop the leaked")
        subprocess.run(reload_nginx, check=True, capture_output=True, timeout=60)
        assert alarms(api, "leaked") == 0  # nothing presented it since its revocation
        assert operator.revoked_presentations(leaked.fingerprint) == 0

        # The first burst, in two waves, each written in a report of its own: one alarm for both.
        knocks = 0

        def knock() -> str:
            nonlocal knocks
            answer = http_status(ep, leaked)
            # What the counter counts is a refused presentation: a worker that has not yet finished the
            # reload may still accept one, and that is no knock on the endpoint that refuses it.
            if answer == "400":
                knocks += 1
            return answer

        conftest.wait_for(lambda: knock() == "400", what="nginx to refuse the leaked certificate")
        conftest.wait_for(lambda: operator.revoked_presentations(leaked.fingerprint) == knocks, what="the counter")
        conftest.wait_for(lambda: alarms(api, "leaked") >= 1, what="the alarm")
        assert condition(api, "leaked", "RevokedCertificatePresented").get("status") == "True"
        assert [knock() for _ in range(3)] == ["400"] * 3
        conftest.wait_for(
            lambda: operator.revoked_presentations(leaked.fingerprint) == knocks, what="the second wave counted"
        )
        assert alarms(api, "leaked") == 1
        message = api.events("leaked", "RevokedCertificatePresented")[0].message or ""
        assert leaked.fingerprint in message and pod in message, message

        # A second burst after a quiet gap (5 minutes) raises one alarm more: integration/test_presentations.py
        # shows it on a fake clock; here it would cost the suite five minutes of waiting.
        # control's certificate was never revoked: no alarm for it.
        assert alarms(api, "control") == 0
    finally:
        print(
            f"--- kubectl logs {pod} ---\n{node_kubectl('logs', '-n', api.namespace, pod, check=False).stdout[-8000:]}"
        )

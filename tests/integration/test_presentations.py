"""What the endpoints report reaches status: presentations, reporters, conditions, the revoked alarm.

The ``Harness`` of test_service (fake clock, real API server): the test writes PresentationReports as
admin for Pod objects it creates (no node runs them: the pod's phase is set to Running through the
pods/status subresource, as a kubelet would), and each ``run`` reads them through the same snapshot
and pod check the operator's watch uses (``reconcile.snapshot``). The times in the reports are the fake
clock's, so staleness and bursts move with ``h.fake``, never with the machine.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import kubernetes
import prometheus_client
import pytest

from tests.integration.test_service import Harness, active, condition, harness, rotating
from webhookcerts.domain import models, pki, reports
from webhookcerts.service import metrics, presentations

pytestmark = pytest.mark.integration

__all__ = ["harness"]

TRUST = "webhook-trust"
SECOND = datetime.timedelta(seconds=1)
INTERVAL = 10
# Each reporter's startTime, fixed when its pod is made: a report with another startTime is a
# restarted reporter, whose counts start again from zero.
_STARTS: dict[tuple[str, str], datetime.datetime] = {}


def _time(moment: datetime.datetime) -> str:
    return f"{moment.astimezone(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}"


def reporter_pod(h: Harness, name: str, *, serves: dict[str, Any] | None = None, running: bool = True) -> str:
    """A pod that mounts the trust Secret (or as ``serves`` says); Running unless told; its uid."""
    spec: dict[str, Any] = {"containers": [{"name": "receiver", "image": "receiver:1"}]}
    spec.update(serves if serves is not None else {"volumes": [{"name": "trust", "secret": {"secretName": TRUST}}]})
    body = {"metadata": {"name": name}, "spec": spec}
    _STARTS[(h.api.namespace, name)] = h.fake.now() - datetime.timedelta(hours=2)
    created = h.api.core.create_namespaced_pod(h.api.namespace, body)
    if running:
        h.api.core.patch_namespaced_pod_status(name, h.api.namespace, {"status": {"phase": "Running"}})
    return str(created.metadata.uid)


def entry(
    pem: str, *, accepted: int = 0, refused: int = 0, last: datetime.datetime, by: str = "sha256"
) -> dict[str, Any]:
    """One certificate line of a report, by the fingerprint a server would log."""
    prints = reports.Fingerprints.of(pem)
    line: dict[str, Any] = {"sha256": prints.sha256} if by == "sha256" else {"sha1": prints.sha1}
    line.update(accepted=accepted, refused=refused, firstSeen=_time(last - 60 * SECOND), lastSeen=_time(last))
    if accepted:
        line["lastAccepted"] = _time(last)
    if refused:
        line["lastRefused"] = _time(last)
    return line


def report(
    h: Harness,
    pod: str,
    uid: str,
    certificates: list[dict[str, Any]],
    *,
    heartbeat: datetime.datetime | None = None,
    start: datetime.datetime | None = None,
    trust: str = TRUST,
    interval: int = INTERVAL,
) -> None:
    """Write (create or replace) the report of ``pod``, owned by the pod of ``uid``."""
    now = h.fake.now()
    spec = {
        "trustSecretName": trust,
        "reporter": "receiver",
        "startTime": _time(start or _STARTS.get((h.api.namespace, pod), now)),
        "heartbeatTime": _time(heartbeat or now),
        "heartbeatIntervalSeconds": interval,
        "certificates": certificates,
    }
    owner = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
    body = {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": reports.KIND,
        "metadata": {"name": pod, "ownerReferences": [owner]},
        "spec": spec,
    }
    args = (models.GROUP, models.VERSION, h.api.namespace, reports.PLURAL)
    try:
        h.api.custom.create_namespaced_custom_object(*args, body)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
        h.api.custom.patch_namespaced_custom_object(*args, pod, {"spec": spec})


def resource_version(h: Harness, name: str) -> str:
    return str(h.api.get(name)["metadata"]["resourceVersion"])


def revoked_total(h: Harness, name: str, fingerprint: str, registry: prometheus_client.CollectorRegistry) -> float:
    labels = {"name": name, "namespace": h.api.namespace, "environment": "sandbox", "fingerprint": fingerprint}
    return registry.get_sample_value("webhookcerts_revoked_certificate_presentations_total", labels) or 0.0


# --- status and conditions follow the reports -------------------------------------------------------


def test_status_and_conditions_follow_the_reports_and_a_heartbeat_alone_writes_nothing(harness: Harness) -> None:
    h = harness
    status = rotating(h, "seen", environment="sandbox")
    assert status.current is not None and status.next is not None
    current, nxt = status.current.certificate, status.next.certificate
    # Before any report: no condition of the reports, nothing written for them.
    assert condition(status, presentations.CURRENT_IN_USE) is None
    uid = reporter_pod(h, "recv-0")

    presented = h.fake.now() - 10 * SECOND
    report(h, "recv-0", uid, [entry(current, accepted=5, last=presented)])
    result = h.run("seen")
    status = h.status("seen")
    assert status.current is not None and status.next is not None
    assert (status.current.presentations, status.current.last_presented) == (5, presented)
    assert status.next.presentations == 0 and status.next.last_presented is None
    assert [(r.pod, r.reporter, r.stale) for r in status.reporters] == [("recv-0", "receiver", False)]
    in_use = condition(status, presentations.CURRENT_IN_USE)
    assert in_use is not None and (in_use.status, in_use.reason) == ("True", "Presented")
    next_in_use = condition(status, presentations.NEXT_IN_USE)
    assert next_in_use is not None and (next_in_use.status, next_in_use.reason) == ("False", "NotPresented")
    stale = condition(status, presentations.REPORTERS_STALE)
    assert stale is not None and stale.status == "False"
    # The next pass is due when the reporter would turn stale without a heartbeat (3 intervals + 10 s).
    assert result.requeue_after is not None and result.requeue_after <= 3 * INTERVAL + 10

    # The provider switches: the next is accepted.
    switched = h.fake.now()
    report(h, "recv-0", uid, [entry(current, accepted=5, last=presented), entry(nxt, accepted=3, last=switched)])
    h.run("seen")
    status = h.status("seen")
    assert status.next is not None and (status.next.presentations, status.next.last_presented) == (3, switched)
    next_in_use = condition(status, presentations.NEXT_IN_USE)
    assert next_in_use is not None and next_in_use.status == "True"
    assert "accepted 3 time(s)" in next_in_use.message and _time(switched) in next_in_use.message

    # A heartbeat alone: nothing moves, nothing is written (the write just above shows a write is seen).
    before = resource_version(h, "seen")
    h.fake.advance(5 * SECOND)
    report(h, "recv-0", uid, [entry(current, accepted=5, last=presented), entry(nxt, accepted=3, last=switched)])
    h.run("seen")
    assert resource_version(h, "seen") == before

    # Time alone: an hour without the current being presented turns CurrentInUse False.
    h.fake.set(presented + presentations.DEFAULT_IN_USE_WINDOW + SECOND)
    report(h, "recv-0", uid, [entry(current, accepted=5, last=presented), entry(nxt, accepted=9, last=h.fake.now())])
    h.run("seen")
    in_use = h.api.condition("seen", presentations.CURRENT_IN_USE)
    assert in_use is not None and (in_use.status, in_use.reason) == ("False", "NotPresented")


def test_reports_that_cannot_be_counted_are_named_and_not_counted(harness: Harness) -> None:
    h = harness
    status = rotating(h, "strays", environment="sandbox")
    assert status.current is not None and status.next is not None
    nxt = status.next.certificate
    now = h.fake.now()
    # The positive control: a pod that serves the trust store counts, beside the ones that may not.
    report(h, "good", reporter_pod(h, "good"), [entry(nxt, accepted=2, last=now)])
    report(h, "ghost", "00000000-0000-0000-0000-000000000000", [entry(nxt, accepted=100, last=now)])
    report(h, "pending", reporter_pod(h, "pending", running=False), [entry(nxt, accepted=100, last=now)])
    reporter_pod(h, "reborn")
    report(h, "reborn", "11111111-1111-1111-1111-111111111111", [entry(nxt, accepted=100, last=now)])
    other = {"volumes": [{"name": "trust", "secret": {"secretName": "someone-elses-trust"}}]}
    report(h, "elsewhere", reporter_pod(h, "elsewhere", serves=other), [entry(nxt, accepted=100, last=now)])

    h.run("strays")
    status = h.status("strays")
    assert status.next is not None and status.next.presentations == 2
    assert [r.pod for r in status.reporters] == ["good"]
    stale = condition(status, presentations.REPORTERS_STALE)
    assert stale is not None and (stale.status, stale.reason) == ("True", "NotCounted")
    for why in (
        "pod ghost does not exist",
        "pod pending is Pending, not Running",
        "pod reborn is not the one that owns the report",
        "pod elsewhere does not serve trust Secret webhook-trust",
    ):
        assert why in stale.message, stale.message


def test_a_pod_serves_the_trust_store_by_projected_volume_configmap_copy_or_trust_sync_args(harness: Harness) -> None:
    h = harness
    current = active(h, "ways", environment="sandbox", trust={"secretName": TRUST, "configMap": {"name": "ca-copy"}})
    now = h.fake.now()
    ways = {
        "projected": {"volumes": [{"name": "t", "projected": {"sources": [{"secret": {"name": TRUST}}]}}]},
        "copy": {"volumes": [{"name": "t", "configMap": {"name": "ca-copy"}}]},
        "sync": {
            "containers": [
                {"name": "receiver", "image": "nginx:1"},
                {"name": "sync", "image": "wc:1", "args": ["trust-sync", "--secret", f"{h.api.namespace}/{TRUST}"]},
            ]
        },
        "nothing": {},
    }
    for pod, serves in ways.items():
        report(h, pod, reporter_pod(h, pod, serves=serves), [entry(current.certificate, accepted=1, last=now)])
    h.run("ways")
    status = h.status("ways")
    assert [r.pod for r in status.reporters] == ["copy", "projected", "sync"]
    assert status.current is not None and status.current.presentations == 3
    stale = condition(status, presentations.REPORTERS_STALE)
    assert stale is not None and "pod nothing does not serve" in stale.message


def test_a_stale_heartbeat_gives_reporters_stale(harness: Harness) -> None:
    h = harness
    current = active(h, "quiet", environment="sandbox")
    uid = reporter_pod(h, "recv-0")
    report(h, "recv-0", uid, [entry(current.certificate, accepted=1, last=h.fake.now())])
    h.run("quiet")
    stale = h.api.condition("quiet", presentations.REPORTERS_STALE)
    assert stale is not None and stale.status == "False"

    late = reports.PresentationReportSpec(
        trust_secret_name=TRUST,
        reporter="receiver",
        start_time=h.fake.now(),
        heartbeat_time=h.fake.now(),
        heartbeat_interval_seconds=INTERVAL,
    ).stale_at()
    h.fake.set(late - SECOND)
    h.run("quiet")
    assert h.status("quiet").reporters[0].stale is False
    h.fake.set(late + SECOND)
    h.run("quiet")
    status = h.status("quiet")
    assert [(r.pod, r.stale) for r in status.reporters] == [("recv-0", True)]
    stale = condition(status, presentations.REPORTERS_STALE)
    assert stale is not None and (stale.status, stale.reason) == ("True", "Stale") and "recv-0" in stale.message


# --- the revoked-certificate alarm ------------------------------------------------------------------


def test_a_revoked_certificate_presented_alarms_once_per_burst_and_counts_once(harness: Harness) -> None:
    h = harness
    status = rotating(h, "knock", environment="sandbox")
    assert status.current is not None and status.next is not None
    old = status.current
    h.api.cutover("knock", status.next.serial)
    h.settle("knock")
    status = h.status("knock")
    assert status.history[0].fingerprint == old.fingerprint and status.history[0].sha1 == pki.sha1_fingerprint(
        old.certificate
    )
    registry = h.ctx.metrics.registry
    uid = reporter_pod(h, "nginx-0")

    # nginx logs SHA-1: the old certificate is recognised by it.
    report(h, "nginx-0", uid, [entry(old.certificate, refused=3, last=h.fake.now(), by="sha1")])
    h.run("knock")
    alarms = h.events("knock", presentations.REVOKED_PRESENTED)
    assert len(alarms) == 1 and alarms[0].type == "Warning"
    assert old.fingerprint in alarms[0].message and "nginx-0" in alarms[0].message
    assert "superseded" in alarms[0].message
    assert revoked_total(h, "knock", old.fingerprint, registry) == 3
    alarm = h.api.condition("knock", presentations.REVOKED_PRESENTED)
    assert alarm is not None and alarm.status == "True"

    # A second pass, then more presentations inside the burst: no second Event, only what was added.
    h.run("knock")
    h.fake.advance(4 * datetime.timedelta(minutes=1))
    report(h, "nginx-0", uid, [entry(old.certificate, refused=5, last=h.fake.now(), by="sha1")])
    h.run("knock")
    assert len(h.events("knock", presentations.REVOKED_PRESENTED)) == 1
    assert revoked_total(h, "knock", old.fingerprint, registry) == 5

    # The operator restarted (new metrics, no memory but status): neither an Event nor a count again.
    restarted = dataclasses.replace(h.ctx, metrics=metrics.Metrics(prometheus_client.CollectorRegistry()))
    h2 = dataclasses.replace(h, ctx=restarted)
    h2.run("knock")
    assert len(h.events("knock", presentations.REVOKED_PRESENTED)) == 1
    assert revoked_total(h, "knock", old.fingerprint, restarted.metrics.registry) == 0

    # Quiet for longer than a burst's gap: the condition drops; the next presentation is a new burst.
    h.fake.advance(presentations.BURST_GAP + SECOND)
    h2.run("knock")
    alarm = h.api.condition("knock", presentations.REVOKED_PRESENTED)
    assert alarm is not None and (alarm.status, alarm.reason) == ("False", "Quiet")
    report(h, "nginx-0", uid, [entry(old.certificate, refused=6, last=h.fake.now(), by="sha1")])
    h2.run("knock")
    assert len(h.events("knock", presentations.REVOKED_PRESENTED)) == 2
    assert revoked_total(h, "knock", old.fingerprint, restarted.metrics.registry) == 1


def test_the_compromised_current_presented_after_an_emergency_says_so(harness: Harness) -> None:
    h = harness
    current = active(h, "breach", environment="sandbox")
    h.api.emergency("breach", "INC-7")
    h.settle("breach")
    status = h.status("breach")
    assert current.fingerprint in status.revoked_fingerprints and status.current is not None
    report(h, "recv-0", reporter_pod(h, "recv-0"), [entry(current.certificate, refused=2, last=h.fake.now())])
    h.run("breach")
    alarms = h.events("breach", presentations.REVOKED_PRESENTED)
    assert len(alarms) == 1 and "compromised (incident INC-7)" in alarms[0].message
    alarm = h.api.condition("breach", presentations.REVOKED_PRESENTED)
    assert alarm is not None and alarm.status == "True" and "has not installed the replacement" in alarm.message


def test_a_report_with_times_past_now_never_breaks_the_pass(harness: Harness) -> None:
    """9999-12-31T23:59:59Z passes the CRD's date-time; the pass once added an interval to it and every
    pass of every object on the trust store failed (OverflowError). Read as now, it proves nothing."""
    h = harness
    current = active(h, "far", environment="sandbox")
    end = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    lines = [entry(current.certificate, accepted=3, refused=1, last=end)]
    report(h, "recv-0", reporter_pod(h, "recv-0"), lines, heartbeat=end)
    h.api.emergency("far", "INC-9")
    h.settle("far")
    status = h.status("far")
    assert current.fingerprint in status.revoked_fingerprints and status.next is not None
    assert status.current is not None and status.current.last_presented is not None
    assert status.current.last_presented <= h.fake.now()
    assert [(r.pod, r.stale) for r in status.reporters] == [("recv-0", False)]
    alarm = condition(status, presentations.REVOKED_PRESENTED)
    assert alarm is not None and alarm.status == "True"

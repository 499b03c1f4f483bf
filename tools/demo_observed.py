"""What the operator saw, for the demo: the receiver's reports as the WebhookCertificates' status shows
them (issue 24), narrated while the demo waits, and summed up at the end.

The receiver reports which client certificate each delivery presented (its PresentationReport); the
operator adds the reports up into ``status.current`` / ``status.next`` (``presentations``,
``lastPresented``), the conditions ``CutoverReady`` (sandbox's ``cutover.policy: Observed``) and
``RevokedCertificatePresented``, and the Events ``ObservedCutover`` and ``RevokedCertificatePresented``.
The demo shows each change when the operator made it, on the demo's clock.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

from demo_console import NAMESPACE, DemoError, Timeline, Tools

# The reference receiver's account: the chart binds it to the reporter ClusterRole (values
# reporters.serviceAccounts), and the chart's admission policy holds its token to its own pod's report.
REPORTER_ACCOUNT = "receiver"
# How often the receiver writes its report when nothing new happened (a new certificate goes sooner).
REPORT_INTERVAL = 5.0
# sandbox cuts over by itself once the next certificate has been accepted this often and the current
# one not presented for the quiet period (1m, the shortest the operator accepts).
OBSERVED = {"policy": "Observed", "observed": {"minPresentations": 10, "quietPeriod": "1m"}}


def helm_values() -> list[str]:
    """``helm install`` arguments binding the receiver's ServiceAccount to the reporter ClusterRole."""
    return [
        "--set", f"reporters.serviceAccounts[0].namespace={NAMESPACE}",
        "--set", f"reporters.serviceAccounts[0].name={REPORTER_ACCOUNT}",
    ]  # fmt: skip


def service_account() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": REPORTER_ACCOUNT, "namespace": NAMESPACE},
    }


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def _when(timeline: Timeline, text: str | None) -> str:
    if not text:
        return "never"
    return timeline.stamp(timeline.since_start(datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))))


def seen(timeline: Timeline, record: dict[str, Any] | None) -> str:
    """A status certificate record as the reports left it: accepted presentations and the last one."""
    if not record:
        return "none"
    count = record.get("presentations")
    if count is None:
        return "no report yet"
    return f"{count} presentation(s), last {_when(timeline, record.get('lastPresented'))}"


def narrate(
    tools: Tools, timeline: Timeline, name: str, what: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Wait for ``done(status)``, saying on the timeline each new thing the operator concluded from the
    reports meanwhile: CutoverReady's reason, and the next certificate's first presentations."""
    said: dict[str, str] = {}

    def step() -> dict[str, Any] | None:
        status = tools.status(name)
        ready = _condition(status, "CutoverReady")
        if ready and said.get("ready") != ready.get("reason"):
            said["ready"] = ready.get("reason", "")
            timeline.say(f"{name}: CutoverReady {ready['status']} ({ready.get('reason')}): {ready.get('message')}")
        nxt = status.get("next") or {}
        if nxt.get("presentations") and "next" not in said:
            said["next"] = "seen"
            timeline.say(f"{name}: the operator sees the provider present the next certificate: {seen(timeline, nxt)}")
        return status if done(status) else None

    return timeline.wait(what, step, timeout)


def events(tools: Tools, name: str, reason: str) -> list[dict[str, Any]]:
    out = tools.kubectl(
        "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={name},reason={reason}",
        "-o", "json", show=False,
    )  # fmt: skip
    found: list[dict[str, Any]] = json.loads(out)["items"]
    return sorted(found, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def announced(tools: Tools, timeline: Timeline, name: str, reason: str, timeout: float = 120) -> dict[str, Any]:
    """Wait for the operator's Event ``reason`` about ``name`` and put it on the timeline."""
    found = timeline.wait(f"the Event {reason} on {name}", lambda: events(tools, name, reason), timeout)
    event = found[-1]
    timeline.say(f"{name}: {event.get('type')} Event {reason}: {event.get('message')}")
    return event


def operator_saw(tools: Tools, timeline: Timeline, names: list[str]) -> list[str]:
    """The end of the demo: what each object's status and Events say the reports showed."""
    lines = ["", "What the operator saw (status from the receiver's reports, and its Events)", "-" * 75]
    for name in names:
        status = tools.status(name)
        current = status.get("current") or {}
        lines.append(f"  {name}: current {current.get('serial', '?')[:12]}: {seen(timeline, current)}")
        for entry in status.get("history", []):
            lines.append(f"    retired {entry.get('serial', '?')[:12]} ({entry.get('reason')})")
        for reporter in status.get("reporters", []):
            lines.append(
                f"    reporter {reporter.get('pod')} ({reporter.get('reporter')}), stale: {reporter.get('stale')}"
            )
        for reason in ("ObservedCutover", "RevokedCertificatePresented"):
            for event in events(tools, name, reason):
                at = _when(timeline, event.get("lastTimestamp") or event.get("eventTime"))
                lines.append(f"    {at}  Event {reason} (x{event.get('count') or 1}): {event.get('message')}")
    if not any("Event ObservedCutover" in line for line in lines):
        raise DemoError("no ObservedCutover Event: the sandbox cut-over was not the operator's own")
    return lines

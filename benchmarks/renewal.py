"""Planned rotation on schedule: from ``renewalTime`` to the next certificate being issued.

The lifecycle issue promises that a planned rotation starts within 60 s of ``renewalTime``. Ten
WebhookCertificates with ``duration: 1h`` and ``renewBefore: 59m50s`` are created at once against the
local control plane with the operator running as deployed; each one's renewal time comes ten seconds
after its certificate was issued. The figure per object is ``status.next.issuedAt - status.renewalTime``,
both written by the operator from the same clock.
"""

from __future__ import annotations

import pathlib
from typing import Any

from tests import processes

from benchmarks import harness, report, stats

NAME = "renewal"
COUNT = 10
TARGET_S = 60.0


def measure(directory: pathlib.Path, count: int = COUNT) -> dict[str, Any]:
    machine = report.machine()
    names_ = [f"renew-{i}" for i in range(count)]
    with harness.cluster(directory) as handle:
        proc = harness.operator(handle, directory / "operator.log")
        try:
            for name in names_:
                handle.create(name, duration="1h", renewBefore="59m50s")

            def all_rotating() -> bool:
                return all(handle.status(n).next is not None for n in names_)

            harness.wait_for(all_rotating, timeout=300, what="every planned rotation")
            statuses = [handle.status(n) for n in names_]
        finally:
            processes.stop(proc)
    delays = []
    for status in statuses:
        if status.next is None or status.renewal_time is None:
            raise harness.BenchmarkError("a rotation vanished before it was read")
        delays.append((status.next.issued_at - status.renewal_time).total_seconds())
    summary = stats.summary(delays, digits=1)
    return {
        "benchmark": NAME,
        "renewal_time_to_next_issued_s": summary,
        "target": f"every rotation within {TARGET_S:.0f} s of renewalTime",
        "meets_target": summary["max"] <= TARGET_S,
        "samples_s": [round(d, 1) for d in delays],
        "machine": machine,
    }


def section(result: dict[str, Any], command: str) -> str:
    summary = result["renewal_time_to_next_issued_s"]
    verdict = "meets" if result["meets_target"] else "MISSES"
    rows: list[tuple[object, ...]] = [
        (
            "renewalTime -> next certificate issued",
            f"{summary['median']:.1f}",
            f"{summary['p95']:.1f}",
            f"{summary['max']:.1f}",
        )
    ]
    return "\n".join(
        [
            "## Planned rotation on schedule",
            "",
            f"{len(result['samples_s'])} WebhookCertificates (`duration: 1h`, `renewBefore: 59m50s`) created at once,",
            "the operator running as deployed (each object is woken at its own renewalTime). Per object:",
            "`status.next.issuedAt - status.renewalTime`.",
            "",
            report.table(("", "median (s)", "p95 (s)", "max (s)"), rows),
            "",
            f"Runs (s): {', '.join(f'{s:.1f}' for s in result['samples_s'])}.",
            "",
            f"Target: {result['target']}: **{verdict}** it.",
            "",
            report.footer(command, result["machine"]),
        ]
    )

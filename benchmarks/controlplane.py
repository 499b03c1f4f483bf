"""Control plane start-to-ready: how long ``DevCluster.up`` takes until the API server answers /readyz.

This is the wait every integration test session and every ``make devcluster-up --no-node`` pays: the
PKI is generated, etcd and kube-apiserver start, and the clock stops when ``/readyz`` answers 200.
Each run starts from an empty directory and is torn down before the next.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

from benchmarks import report, stats
from webhookcerts.devcluster import cluster as devcluster

NAME = "controlplane"
TARGET_S = 15.0
MIN_RUNS = 5


def measure(directory: pathlib.Path, runs: int = MIN_RUNS) -> dict[str, Any]:
    machine = report.machine()  # before the benchmark loads the machine itself
    samples: list[float] = []
    for index in range(runs):
        dev = devcluster.DevCluster(directory / f"run-{index}", tie_to_parent=True)
        started = time.monotonic()
        try:
            dev.up(node=False)
            samples.append(time.monotonic() - started)
        finally:
            dev.down()
    summary = stats.summary(samples, digits=2)
    return {
        "benchmark": NAME,
        "start_to_ready_s": summary,
        "samples_s": [round(s, 2) for s in samples],
        "target_s": TARGET_S,
        "meets_target": summary["median"] <= TARGET_S,
        "machine": machine,
    }


def section(result: dict[str, Any], command: str) -> str:
    s = result["start_to_ready_s"]
    verdict = "meets" if result["meets_target"] else "MISSES"
    rows: list[tuple[object, ...]] = [
        ("median", f"{s['median']:.2f} s"),
        ("min / max", f"{s['min']:.2f} s / {s['max']:.2f} s"),
        ("runs", ", ".join(f"{v:.2f}" for v in result["samples_s"]) + " s"),
    ]
    return "\n".join(
        [
            "## Control plane start-to-ready",
            "",
            "From `DevCluster.up(node=False)` (PKI generated, etcd and kube-apiserver started) until the API",
            f"server's `/readyz` answers 200; {s['n']} runs, each from an empty directory.",
            "",
            report.table(("", "start-to-ready"), rows),
            "",
            f"Target: median <= {result['target_s']:.0f} s on this 2-core machine: **{verdict}** it.",
            "",
            report.footer(command, result["machine"]),
        ]
    )

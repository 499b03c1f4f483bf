"""The scale benchmark's memory figures: the cost per object, and where the operator's bytes are.

- **Per object**: the same burst as the main run (every object applied at once, each one a first
  key) at a small N in a namespace of its own, with an operator of its own; its peak RSS beside the
  main run's gives the slope, (RSS(N) - RSS(n)) / (N - n), and the intercept is what the operator
  costs with no objects at all (mostly imports). Both runs then start a second operator on their
  Ready objects: its start-up (Kopf lists every WebhookCertificate and holds each one until all are
  indexed, the reflector lists the Secrets, then every object is passed once) is a peak of its own,
  with a line of its own.
- **Where the bytes are**: after the main run's figures are taken, one more operator, started under
  tracemalloc (benchmarks/heapprofile.py), reads the N Ready objects (its start-up pass) and says, by
  package, where its Python heap is. That process is not measured for RSS: tracing costs memory too.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from typing import Any

from tests import processes

from benchmarks import harness, opmetrics, population, report

SMALL_N = 100
HEAP_GROUPS = 12
SETTLE_S = 10.0


def alive(proc: subprocess.Popen[bytes], log: pathlib.Path) -> Callable[[], None]:
    def check() -> None:
        if proc.poll() is not None:
            raise harness.BenchmarkError(f"the operator exited: {log.read_text(errors='replace')[-2000:]}")

    return check


def small_run(handle: harness.Cluster, directory: pathlib.Path, n: int) -> dict[str, Any]:
    """n objects at once in a namespace of their own, with an operator of its own: its peak and settled RSS."""
    namespace = f"{handle.namespace}-small"
    handle.kubectl("create", "namespace", namespace)
    small = harness.Cluster(handle.dev, handle.api, namespace)
    log = directory / "operator-small.log"
    proc = harness.operator(small, log)
    try:
        started = time.monotonic()
        population.create_all(small, n)
        population.wait_ready(small, n, alive(proc, log), timeout=max(600.0, 5.0 * n), log=log)
        ready_s = time.monotonic() - started
        peak_kb = opmetrics.status_kb(proc.pid, "VmHWM")
        time.sleep(SETTLE_S)
        settled_kb = opmetrics.status_kb(proc.pid, "VmRSS")
    finally:
        processes.stop(proc)
    restart_kb = restart_peak(small, directory / "operator-small-restart.log")
    return {
        "n": n,
        "ready_s": round(ready_s, 1),
        "peak_rss_kb": peak_kb,
        "settled_rss_kb": settled_kb,
        "restart_peak_rss_kb": restart_kb,
    }


def restart_peak(handle: harness.Cluster, log: pathlib.Path) -> int:
    """A fresh operator on the Ready objects, through its start-up pass: its peak RSS (kB)."""
    proc = harness.operator(handle, log)
    try:
        check = alive(proc, log)

        def passed() -> bool:
            check()
            return "start-up pass done" in log.read_text(errors="replace")

        harness.wait_for(passed, timeout=600, what="the restarted operator's start-up pass")
        time.sleep(SETTLE_S)
        return opmetrics.status_kb(proc.pid, "VmHWM")
    finally:
        processes.stop(proc)


def heap_profile(handle: harness.Cluster, directory: pathlib.Path) -> dict[str, Any]:
    """An operator under tracemalloc, through its start-up pass over every object: its heap by package."""
    out = directory / "heap.json"
    log = directory / "operator-heap.log"
    os.environ["WEBHOOKCERTS_HEAP_PROFILE"] = str(out)
    try:
        proc = harness.operator(handle, log, module="benchmarks.heapprofile")
    finally:
        del os.environ["WEBHOOKCERTS_HEAP_PROFILE"]
    try:
        harness.wait_for(
            lambda: "start-up pass done" in log.read_text(errors="replace"),
            timeout=600,
            what="the traced operator's start-up pass",
        )
        time.sleep(SETTLE_S)
        rss_kb = opmetrics.status_kb(proc.pid, "VmRSS")
        proc.send_signal(signal.SIGUSR1)
        harness.wait_for(out.exists, timeout=300, what="the heap profile")
        profile: dict[str, Any] = json.loads(out.read_text())
    finally:
        processes.stop(proc)
    profile["groups"] = profile["groups"][:HEAP_GROUPS]
    profile["traced_process_rss_kb"] = rss_kb
    return profile


def per_object(small: dict[str, Any], big_n: int, big_peak_kb: float, field: str = "peak_rss_kb") -> dict[str, float]:
    """The line through (n, peak RSS(n)) and (N, peak RSS(N)): kB per object, and MB at no objects."""
    slope_kb = (big_peak_kb - small[field]) / (big_n - small["n"])
    intercept_kb = small[field] - slope_kb * small["n"]
    return {"kb_per_object": round(slope_kb, 1), "mb_at_zero": round(opmetrics.mb(intercept_kb), 1)}


def heap_rows(profile: dict[str, Any]) -> list[tuple[object, ...]]:
    total = max(1, int(profile["traced_kb"]))
    return [
        (f"`{g['group']}`", f"{g['kb'] / 1024:.1f}", f"{100 * g['kb'] / total:.0f} %", f"{g['blocks']:,}")
        for g in profile["groups"]
    ]


def per_object_text(result: dict[str, Any]) -> str:
    small, line = result.get("small"), result.get("per_object")
    if not small or not line:
        return ""
    text = (
        f" (burst: N={small['n']}: {opmetrics.mb(small['peak_rss_kb']):.0f} MB, N={result['n']}: "
        f"{result['burst_peak_rss_mb']:.0f} MB, {line['kb_per_object']:.0f} kB per object, "
        f"{line['mb_at_zero']:.0f} MB at none"
    )
    restart = result.get("per_object_restart")
    if restart and small.get("restart_peak_rss_kb"):
        text += (
            f"; restart: N={small['n']}: {opmetrics.mb(small['restart_peak_rss_kb']):.0f} MB, N={result['n']}: "
            f"{result['restart_peak_rss_mb']:.0f} MB, {restart['kb_per_object']:.0f} kB per object, "
            f"{restart['mb_at_zero']:.0f} MB at none"
        )
    return text + ")"


def section_lines(result: dict[str, Any]) -> list[str]:
    """The page's memory paragraph and the heap table, when the run took them."""
    lines: list[str] = []
    small, line, profile = result.get("small"), result.get("per_object"), result.get("heap")
    if small and line:
        restart = result.get("per_object_restart")
        text = (
            f"Memory: peak RSS {opmetrics.mb(small['peak_rss_kb']):.0f} MB through the burst of {small['n']} "
            f"objects (the same burst, its own operator), {result['burst_peak_rss_mb']:.0f} MB through the burst "
            f"of {result['n']}: {line['kb_per_object']:.0f} kB per object on the line through both, "
            f"{line['mb_at_zero']:.0f} MB at no objects (the interpreter, the imports, what the first passes load)."
        )
        if restart and small.get("restart_peak_rss_kb"):
            text += (
                f" An operator started again on the Ready objects peaks at "
                f"{opmetrics.mb(small['restart_peak_rss_kb']):.0f} MB with {small['n']} and "
                f"{result['restart_peak_rss_mb']:.0f} MB with {result['n']} ({restart['kb_per_object']:.0f} kB per "
                f"object, {restart['mb_at_zero']:.0f} MB at none): Kopf lists every WebhookCertificate and holds "
                "each one, in a worker of its own, until all are indexed (the Secrets come through the "
                "operator's own reflector), then every object is passed once."
            )
        text += f" After its start-up pass, which writes nothing, it held {result['restarted_rss_mb']:.0f} MB"
        if result["burst_peak_rss_mb"] > result["restarted_rss_mb"]:
            text += (
                ": the burst's peak above that is what the burst adds (key generation, writes, the watch events "
                "they bring back)."
            )
        else:
            text += ": the start-up, not the burst, sets the peak."
        lines += [textwrap.fill(text, width=100, break_on_hyphens=False), ""]
    if profile:
        lines += [
            textwrap.fill(
                f"Where the bytes are: an operator under tracemalloc, after its start-up pass over the "
                f"{result['n']} objects, had {profile['traced_kb'] / 1024:.1f} MB of Python heap traced "
                f"(peak {profile['peak_traced_kb'] / 1024:.1f} MB; that process's RSS "
                f"{opmetrics.mb(profile['traced_process_rss_kb']):.0f} MB, tracing included). tracemalloc sees what "
                "Python allocates, by the file that allocated it, not what OpenSSL or pydantic-core allocate "
                "on their own; the rest of the RSS is the interpreter, shared libraries and malloc's free lists.",
                width=100,
                break_on_hyphens=False,
            ),
            "",
            report.table(("allocated by", "MB", "of traced", "blocks"), heap_rows(profile)),
            "",
        ]
    return lines

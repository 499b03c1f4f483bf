"""The scale benchmark's memory figures: the cost per object, and where the operator's bytes are.

- **Per object**: the same burst as the main run (every object applied at once, each one a first
  key) at a small N in a namespace of its own, with an operator of its own; its peak RSS beside the
  main run's gives the slope, (RSS(N) - RSS(n)) / (N - n), and the intercept is what the operator
  costs with no objects at all (mostly imports).
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
    return {"n": n, "ready_s": round(ready_s, 1), "peak_rss_kb": peak_kb, "settled_rss_kb": settled_kb}


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


def per_object(small: dict[str, Any], big_n: int, big_peak_kb: float) -> dict[str, float]:
    """The line through (n, peak RSS(n)) and (N, peak RSS(N)): kB per object, and MB at no objects."""
    slope_kb = (big_peak_kb - small["peak_rss_kb"]) / (big_n - small["n"])
    intercept_kb = small["peak_rss_kb"] - slope_kb * small["n"]
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
    return (
        f" (N={small['n']}: {opmetrics.mb(small['peak_rss_kb']):.0f} MB; {line['kb_per_object']:.0f} kB "
        f"per object, {line['mb_at_zero']:.0f} MB at none)"
    )


def section_lines(result: dict[str, Any]) -> list[str]:
    """The page's memory paragraph and the heap table, when the run took them."""
    lines: list[str] = []
    small, line, profile = result.get("small"), result.get("per_object"), result.get("heap")
    if small and line:
        lines += [
            textwrap.fill(
                f"Memory: peak RSS {opmetrics.mb(small['peak_rss_kb']):.0f} MB with {small['n']} objects "
                f"(the same burst, its own operator), {result['peak_rss_mb']:.0f} MB with {result['n']}: "
                f"{line['kb_per_object']:.0f} kB per object on the line through both, {line['mb_at_zero']:.0f} MB "
                "at no objects (the interpreter, the imports, what the first passes load). The operator started "
                "again on the "
                f"{result['n']} Ready objects held {result['restarted_rss_mb']:.0f} MB after its start-up pass, "
                "which writes nothing: the difference to the peak is what the burst left (key generation, writes, the "
                "watch events they bring back).",
                width=100,
                break_on_hyphens=False,
            ),
            "",
        ]
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

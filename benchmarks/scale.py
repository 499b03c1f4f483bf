"""Scale: N WebhookCertificates in one namespace, from applied to Ready, then idle, containment, restart.

The operator runs as users run it (``webhookcerts run -n NS``) against the local control plane. N
objects (default 1,000) are applied at once, sandbox and live in pairs sharing one trust Secret.

- **Ready** is timed from the first create to the last ``Ready=True``, beside the key-generation bound
  of the very keys waited for: the operator's ``webhookcerts_key_generation_seconds`` histogram is
  read before the first create and after the last Ready, and the seconds it gained, divided by the
  keys the operator generates at once (one per core), are the least time those keys could take. The
  rest is measured from the operator's log: before its first Issued record (watch delivery, first
  passes), after its last (the last writes, and the Ready poll's resolution), and in between.
- **Peak RSS** is the operator's ``VmHWM`` from /proc, the higher of two: the operator through the
  burst (and the containment runs), and the operator started again on the N Ready objects through
  its start-up pass; benchmarks/memory.py adds both at a small N (the cost per object) and a heap
  profile of an operator holding the N objects.
- **Idle**: 20 s after the last Ready, the operator's CPU time over ``idle`` seconds (utime + stime
  from /proc), and the API server's ``apiserver_request_total`` over the same window, less the rate
  the API server shows with no operator running (measured before it starts), per minute.
- **Containment**: an emergency annotation on one object, with the N others present, until the
  compromised certificate is gone from the trust Secret (polled every 20 ms); then the replacement
  is awaited and cut over to, so every run starts from one Active certificate. The time the
  replacement appeared is recorded beside it: containment must not wait for it.
- **Restart**: SIGTERM with N Ready, timed to exit; a new operator timed until its log says the
  start-up pass is done; the certificates' revisions and the managed Secrets' resourceVersions are
  compared before and after (keys issued, Secrets rewritten: both must be 0).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import textwrap
import time
import uuid
from typing import Any

from tests import processes

from benchmarks import harness, memory, opmetrics, population, report, stats
from webhookcerts.kube import client as kube_client

NAME = "scale"
DEFAULT_N = 1000
MIN_CONTAINMENT_RUNS = 20
IDLE_S = 300.0
SETTLE_S = 20.0
BASELINE_S = 30.0
POLL_S = 0.02

TARGETS = {
    "ready_x_bound": 1.15,
    "peak_rss_mb": 120.0,
    "idle_cpu_percent": 2.0,
    "idle_requests_per_min": 60.0,
    "containment_p95_s": 1.5,
    "restart_to_idle_s": 60.0,
    "sigterm_to_exit_s": 10.0,
}


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


_REQUESTS = re.compile(r"^apiserver_request_total\{[^}]*\} (\S+)$", re.MULTILINE)


def requests_total(handle: harness.Cluster) -> float:
    method, url, headers, body, _ = handle.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = handle.api.call_api(method, url, headers, body)
    response.read()
    return sum(float(v) for v in _REQUESTS.findall(response.data.decode()))


def managed_versions(handle: harness.Cluster) -> dict[str, str]:
    selector = f"{kube_client.MANAGED_BY_LABEL}={kube_client.MANAGED_BY}"
    items = handle.core.list_namespaced_secret(handle.namespace, label_selector=selector).items
    return {s.metadata.name: s.metadata.resource_version for s in items}


def revisions(handle: harness.Cluster) -> dict[str, int]:
    return {
        item["metadata"]["name"]: int((item.get("status") or {}).get("revision") or 0)
        for item in population.listing(handle)
    }


def contain_once(handle: harness.Cluster, name: str, trust_secret: str) -> dict[str, float]:
    current = handle.status(name).current
    if current is None:
        raise harness.BenchmarkError(f"{name} has no current certificate")
    reference = f"BENCH-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    handle.emergency(name, reference)
    contained_at = replaced_at = None
    while contained_at is None or replaced_at is None:
        now = time.monotonic()
        if now - started > 120:
            raise harness.BenchmarkError("the compromised certificate was still trusted after 120 s")
        if contained_at is None and current.fingerprint not in handle.trusted_fingerprints(trust_secret):
            contained_at = now
        if replaced_at is None:
            status = handle.status(name)
            if status.next is not None and status.next.reason == "Emergency":
                replaced_at = now
        time.sleep(POLL_S)
    harness.cut_over_after_emergency(handle, name)
    return {"contained_s": round(contained_at - started, 3), "replacement_s": round(replaced_at - started, 3)}


def stop_timed(proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return float("inf")
    return time.monotonic() - started


def breakdown(
    ready_s: float, bound_s: float, issued_at: list[float], started_at: float, mean_key_s: float
) -> dict[str, float]:
    """Where the time over the bound went, from the operator's log: before the first key's generation
    began (its Issued record less a mean key: every slot starts its first key then, so that much of
    the head is in the bound already), after the last Issued record, and the remainder in between."""
    head = issued_at[0] - started_at - mean_key_s
    tail = ready_s - (issued_at[-1] - started_at)
    return {
        "before_first_key_s": round(head, 1),
        "after_last_issued_s": round(tail, 1),
        "in_between_s": round(ready_s - bound_s - head - tail, 1),
    }


def burst(handle: harness.Cluster, directory: pathlib.Path, n: int, log: pathlib.Path) -> tuple[Any, dict[str, Any]]:
    """The operator started, n objects applied at once, until all are Ready: the process and its figures."""
    port = opmetrics.free_port()
    proc = harness.operator(handle, log, metrics_port=port)
    alive = memory.alive(proc, log)

    def scraped() -> str | None:
        alive()
        try:
            return opmetrics.scrape(port)
        except OSError:
            return None

    before = opmetrics.keygen_totals(harness.wait_for(scraped, timeout=120, what="the operator's metrics"))
    started_at, started = time.time(), time.monotonic()
    population.create_all(handle, n)
    created_s = time.monotonic() - started

    # The log, not the API, tells when every key is issued (a LIST of N objects is megabytes and would
    # load the machine the keys are generated on); only then is Ready polled.
    def issued() -> bool:
        alive()
        return len(opmetrics.issued_times(log.read_text(errors="replace"))) >= n

    processes.wait_for(issued, timeout=max(600.0, 5.0 * n), what=f"{n} first keys issued", interval=1.0)
    population.wait_ready(handle, n, alive, timeout=600.0, log=log)
    ready_s = time.monotonic() - started
    generated = opmetrics.keygen_totals(scraped() or "") - before
    slots = os.cpu_count() or 1  # the operator's BoundedKeygen: one key per core at a time
    bound_s = generated.seconds / slots
    issued_at = opmetrics.issued_times(log.read_text(errors="replace"))
    return proc, {
        "create_s": round(created_s, 1),
        "ready_s": round(ready_s, 1),
        "keys_generated": int(generated.count),
        "keygen_seconds": round(generated.seconds, 1),
        "keygen_mean_s": round(generated.seconds / max(1.0, generated.count), 2),
        "keygen_slots": slots,
        "keygen_bound_s": round(bound_s, 1),
        "ready_x_bound": round(ready_s / bound_s, 2),
        "over_bound": breakdown(ready_s, bound_s, issued_at, started_at, generated.seconds / max(1.0, generated.count)),
        "peak_rss_kb": opmetrics.status_kb(proc.pid, "VmHWM"),
    }


def measure(
    directory: pathlib.Path,
    *,
    n: int = DEFAULT_N,
    idle: float = IDLE_S,
    containment_runs: int = MIN_CONTAINMENT_RUNS,
    small_n: int = memory.SMALL_N,
    heap: bool = True,
) -> dict[str, Any]:
    machine = report.machine()
    with harness.cluster(directory) as handle:
        baseline_start = requests_total(handle)
        time.sleep(BASELINE_S)
        baseline_per_min = (requests_total(handle) - baseline_start) / BASELINE_S * 60
        small = memory.small_run(handle, directory, small_n) if small_n else None
        log = directory / "operator.log"
        proc, figures = burst(handle, directory, n, log)
        try:
            time.sleep(SETTLE_S)
            cpu0, req0, t0 = cpu_seconds(proc.pid), requests_total(handle), time.monotonic()
            time.sleep(idle)
            cpu1, req1, t1 = cpu_seconds(proc.pid), requests_total(handle), time.monotonic()
            idle_cpu = (cpu1 - cpu0) / (t1 - t0) * 100
            # Two requests of our own (the /metrics reads) are in that window.
            idle_requests = max(0.0, (req1 - req0 - 1) / (t1 - t0) * 60 - baseline_per_min)

            samples = [contain_once(handle, population.name_of(1), "trust-0000") for _ in range(containment_runs)]
            time.sleep(2.0)
            revisions_before, versions_before = revisions(handle), managed_versions(handle)
            burst_peak_kb = max(figures["peak_rss_kb"], opmetrics.status_kb(proc.pid, "VmHWM"))
            sigterm_s = stop_timed(proc)
            restarted = time.monotonic()
            proc = harness.operator(handle, log)
            harness.wait_for(
                lambda: log.read_text(errors="replace").count("start-up pass done") >= 2,
                timeout=300,
                what="the restarted operator's start-up pass",
            )
            restart_s = time.monotonic() - restarted
            time.sleep(5.0)
            revisions_after, versions_after = revisions(handle), managed_versions(handle)
            restarted_rss_kb = opmetrics.status_kb(proc.pid, "VmRSS")
            restart_peak_kb = opmetrics.status_kb(proc.pid, "VmHWM")
        finally:
            processes.stop(proc)
        profile = memory.heap_profile(handle, directory) if heap else None
    contained = stats.summary([s["contained_s"] for s in samples], digits=3)
    replaced = stats.summary([s["replacement_s"] for s in samples], digits=3)
    result: dict[str, Any] = {
        "benchmark": NAME,
        "n": n,
        **figures,
        "peak_rss_mb": round(opmetrics.mb(max(burst_peak_kb, restart_peak_kb)), 1),
        "burst_peak_rss_mb": round(opmetrics.mb(burst_peak_kb), 1),
        "restart_peak_rss_mb": round(opmetrics.mb(restart_peak_kb), 1),
        "restarted_rss_mb": round(opmetrics.mb(restarted_rss_kb), 1),
        "small": small,
        "per_object": memory.per_object(small, n, figures["peak_rss_kb"]) if small else None,
        "per_object_restart": memory.per_object(small, n, restart_peak_kb, "restart_peak_rss_kb") if small else None,
        "heap": profile,
        "malloc_env": harness.OPERATOR_ENV,
        "idle_s": round(t1 - t0, 1),
        "idle_cpu_percent": round(idle_cpu, 2),
        "idle_requests_per_min": round(idle_requests, 1),
        "baseline_requests_per_min": round(baseline_per_min, 1),
        "containment_s": contained,
        "replacement_s": replaced,
        "containment_samples": samples,
        "sigterm_to_exit_s": round(sigterm_s, 2),
        "restart_to_idle_s": round(restart_s, 1),
        "restart_keys_issued": sum(revisions_after.get(k, 0) - v for k, v in revisions_before.items()),
        "restart_secrets_rewritten": sum(1 for k, v in versions_before.items() if versions_after.get(k) != v),
        "machine": machine,
    }
    result["meets"] = {
        "ready_x_bound": result["ready_x_bound"] <= TARGETS["ready_x_bound"],
        "peak_rss_mb": result["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        "idle_cpu_percent": result["idle_cpu_percent"] <= TARGETS["idle_cpu_percent"],
        "idle_requests_per_min": result["idle_requests_per_min"] <= TARGETS["idle_requests_per_min"],
        "containment_p95_s": contained["p95"] <= TARGETS["containment_p95_s"],
        "restart_to_idle_s": result["restart_to_idle_s"] <= TARGETS["restart_to_idle_s"],
        "sigterm_to_exit_s": result["sigterm_to_exit_s"] <= TARGETS["sigterm_to_exit_s"],
    }
    return result


def section(result: dict[str, Any], command: str) -> str:
    meets = result["meets"]

    def verdict(key: str) -> str:
        return "meets" if meets[key] else "**misses**"

    c, r, over = result["containment_s"], result["replacement_s"], result["over_bound"]
    rows: list[tuple[object, ...]] = [
        (
            "applied -> all Ready",
            f"{result['ready_s']:.1f} s = {result['ready_x_bound']:.2f} x the key-generation bound "
            f"({result['keygen_bound_s']:.1f} s: {result['keys_generated']} keys took "
            f"{result['keygen_seconds']:.1f} s of generation, {result['keygen_slots']} at a time, "
            f"mean {result['keygen_mean_s']:.2f} s)",
            f"<= {TARGETS['ready_x_bound']} x",
            verdict("ready_x_bound"),
        ),
        (
            "operator peak RSS",
            f"{result['peak_rss_mb']:.0f} MB" + memory.per_object_text(result),
            f"<= {TARGETS['peak_rss_mb']:.0f} MB",
            verdict("peak_rss_mb"),
        ),
        (
            f"idle CPU ({result['idle_s']:.0f} s)",
            f"{result['idle_cpu_percent']:.2f} % of one core",
            f"<= {TARGETS['idle_cpu_percent']} %",
            verdict("idle_cpu_percent"),
        ),
        (
            "idle API requests",
            f"{result['idle_requests_per_min']:.1f} /min "
            f"(the API server's own {result['baseline_requests_per_min']:.1f} /min subtracted)",
            f"<= {TARGETS['idle_requests_per_min']:.0f} /min",
            verdict("idle_requests_per_min"),
        ),
        (
            f"containment, {c['n']} runs",
            f"p50 {c['median']:.3f} s, p95 {c['p95']:.3f} s (replacement issued: p50 {r['median']:.3f} s)",
            f"p95 <= {TARGETS['containment_p95_s']} s",
            verdict("containment_p95_s"),
        ),
        (
            "SIGTERM -> exit, N Ready",
            f"{result['sigterm_to_exit_s']:.2f} s",
            f"<= {TARGETS['sigterm_to_exit_s']:.0f} s",
            verdict("sigterm_to_exit_s"),
        ),
        (
            "restart -> start-up pass done",
            f"{result['restart_to_idle_s']:.1f} s; keys issued {result['restart_keys_issued']}, "
            f"Secrets rewritten {result['restart_secrets_rewritten']}; RSS then {result['restarted_rss_mb']:.0f} MB",
            f"<= {TARGETS['restart_to_idle_s']:.0f} s, 0 keys",
            verdict("restart_to_idle_s"),
        ),
    ]
    rest = result["ready_s"] - result["keygen_bound_s"]
    env = " ".join(f"`{k}={v}`" for k, v in result["malloc_env"].items())
    return "\n".join(
        [
            f"## Scale: {result['n']} WebhookCertificates in one namespace",
            "",
            textwrap.fill(
                f"`webhookcerts run -n NS` against the local control plane (API server and etcd only), with {env} "
                "as the image and the chart set it; every object applied at once (in "
                f"{result['create_s']:.1f} s), sandbox and live in pairs sharing a trust Secret, no bundles. "
                "How each figure is taken: the docstrings of `benchmarks/scale.py` and `benchmarks/memory.py`.",
                width=100,
                break_on_hyphens=False,
            ),
            "",
            report.table(("", "measured", "target", ""), rows),
            "",
            textwrap.fill(
                f"The bound is the operator's own `webhookcerts_key_generation_seconds` over the burst (the "
                f"{result['keys_generated']} keys it waited for), divided by the {result['keygen_slots']} keys "
                f"generated at once. The rest, {rest:.1f} s: {over['before_first_key_s']:.1f} s from the first create "
                "until the first key's generation began (the first Issued record in the operator's log, less a mean "
                "key: the watch delivering the new objects, the first passes), "
                f"{over['after_last_issued_s']:.1f} s from the last "
                "Issued record to all Ready seen (the last writes, and this benchmark's Ready poll every 2 s), "
                f"and {over['in_between_s']:.1f} s in between with a key-generation slot free (a worker writing "
                "Secrets, status and trust Secrets to the API server while no other had a key to generate).",
                width=100,
                break_on_hyphens=False,
            ),
            "",
            *memory.section_lines(result),
            report.footer(command, result["machine"]),
        ]
    )

"""Scale: N WebhookCertificates in one namespace, from applied to Ready, then idle, containment, restart.

The operator runs as users run it (``webhookcerts run -n NS``) against the local control plane. N
objects (default 1,000) are applied at once, sandbox and live in pairs sharing one trust Secret.

- **Ready** is timed from the first create to the last ``Ready=True``, beside the RSA-4096
  key-generation bound measured in this run, in this process: one thread per core generating keys
  with cryptography (which releases the GIL), N divided by that rate.
- **Peak RSS** is the operator's ``VmHWM`` from /proc.
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

import concurrent.futures
import os
import pathlib
import re
import signal
import subprocess
import time
import uuid
from typing import Any

from tests import processes

from benchmarks import harness, report, stats
from webhookcerts.domain import models, names, pki
from webhookcerts.kube import client as kube_client

NAME = "scale"
DEFAULT_N = 1000
MIN_CONTAINMENT_RUNS = 20
IDLE_S = 300.0
SETTLE_S = 20.0
BASELINE_S = 30.0
POLL_S = 0.02
READY_POLL_S = 2.0
CERT_PREFIX = "c"

TARGETS = {
    "ready_x_bound": 1.25,
    "peak_rss_mb": 150.0,
    "idle_cpu_percent": 2.0,
    "idle_requests_per_min": 60.0,
    "containment_p95_s": 1.5,
    "restart_to_idle_s": 60.0,
    "sigterm_to_exit_s": 10.0,
}


def keygen_rate(keys: int) -> float:
    """RSA-4096 keys per second with one thread per core (cryptography, as the operator generates)."""
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        list(pool.map(lambda _: pki.generate_private_key(), range(keys)))
    return keys / (time.perf_counter() - started)


def name_of(i: int) -> str:
    return f"{CERT_PREFIX}-{i:04d}"


def create_all(handle: harness.Cluster, n: int) -> None:
    def one(i: int) -> None:
        handle.create(
            name_of(i),
            environment="sandbox" if i % 2 == 0 else "live",
            trust={"secretName": f"trust-{i // 2:04d}"},
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def listing(handle: harness.Cluster) -> list[dict[str, Any]]:
    result = handle.custom.list_namespaced_custom_object(models.GROUP, models.VERSION, handle.namespace, models.PLURAL)
    items: list[dict[str, Any]] = result["items"]
    return items


def ready_count(items: list[dict[str, Any]]) -> int:
    count = 0
    for item in items:
        for condition in (item.get("status") or {}).get("conditions") or []:
            if condition.get("type") == names.READY and condition.get("status") == "True":
                count += 1
    return count


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise harness.BenchmarkError("no VmHWM in /proc")


_REQUESTS = re.compile(r"^apiserver_request_total\{[^}]*\} (\S+)$", re.MULTILINE)


def requests_total(handle: harness.Cluster) -> float:
    method, url, headers, body, _ = handle.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = handle.api.call_api(method, url, headers, body)
    response.read()
    return sum(float(v) for v in _REQUESTS.findall(response.data.decode()))


def start_operator(handle: harness.Cluster, log: pathlib.Path) -> subprocess.Popen[bytes]:
    return harness.operator(handle, log)


def managed_versions(handle: harness.Cluster) -> dict[str, str]:
    selector = f"{kube_client.MANAGED_BY_LABEL}={kube_client.MANAGED_BY}"
    items = handle.core.list_namespaced_secret(handle.namespace, label_selector=selector).items
    return {s.metadata.name: s.metadata.resource_version for s in items}


def revisions(handle: harness.Cluster) -> dict[str, int]:
    return {item["metadata"]["name"]: int((item.get("status") or {}).get("revision") or 0) for item in listing(handle)}


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


def measure(
    directory: pathlib.Path,
    *,
    n: int = DEFAULT_N,
    idle: float = IDLE_S,
    containment_runs: int = MIN_CONTAINMENT_RUNS,
) -> dict[str, Any]:
    machine = report.machine()
    cores = os.cpu_count() or 1
    # Key generation time varies widely from key to key (the search for primes): enough keys for a rate.
    rate = keygen_rate(max(40, 20 * cores))
    with harness.cluster(directory) as handle:
        baseline_start = requests_total(handle)
        time.sleep(BASELINE_S)
        baseline_per_min = (requests_total(handle) - baseline_start) / BASELINE_S * 60
        log = directory / "operator.log"
        proc = start_operator(handle, log)
        try:
            started = time.monotonic()
            create_all(handle, n)
            created_s = time.monotonic() - started

            # A LIST of N objects is megabytes, and decoding it takes a good part of a core: the list is
            # not polled before 90 % of the bound has passed, then every READY_POLL_S (the resolution).
            deadline = started + max(600.0, 5 * n / rate)
            time.sleep(max(0.0, 0.9 * n / rate - (time.monotonic() - started)))
            while ready_count(listing(handle)) < n:
                if proc.poll() is not None:
                    raise harness.BenchmarkError(f"the operator exited: {log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise harness.BenchmarkError("not every WebhookCertificate became Ready")
                time.sleep(READY_POLL_S)
            ready_s = time.monotonic() - started
            rss_mb = peak_rss_mb(proc.pid)

            time.sleep(SETTLE_S)
            cpu0, req0, t0 = cpu_seconds(proc.pid), requests_total(handle), time.monotonic()
            time.sleep(idle)
            cpu1, req1, t1 = cpu_seconds(proc.pid), requests_total(handle), time.monotonic()
            idle_cpu = (cpu1 - cpu0) / (t1 - t0) * 100
            # Two requests of our own (the /metrics reads) are in that window.
            idle_requests = max(0.0, (req1 - req0 - 1) / (t1 - t0) * 60 - baseline_per_min)

            samples = [contain_once(handle, name_of(1), "trust-0000") for _ in range(containment_runs)]
            time.sleep(2.0)
            revisions_before, versions_before = revisions(handle), managed_versions(handle)
            sigterm_s = stop_timed(proc)
            restarted = time.monotonic()
            proc = start_operator(handle, log)
            harness.wait_for(
                lambda: log.read_text(errors="replace").count("start-up pass done") >= 2,
                timeout=300,
                what="the restarted operator's start-up pass",
            )
            restart_s = time.monotonic() - restarted
            time.sleep(5.0)
            revisions_after, versions_after = revisions(handle), managed_versions(handle)
            rss_mb = max(rss_mb, peak_rss_mb(proc.pid))
        finally:
            processes.stop(proc)
    contained = stats.summary([s["contained_s"] for s in samples], digits=3)
    replaced = stats.summary([s["replacement_s"] for s in samples], digits=3)
    bound_s = n / rate
    result = {
        "benchmark": NAME,
        "n": n,
        "keygen_keys_per_s": round(rate, 2),
        "keygen_bound_s": round(bound_s, 1),
        "create_s": round(created_s, 1),
        "ready_s": round(ready_s, 1),
        "ready_x_bound": round(ready_s / bound_s, 2),
        "peak_rss_mb": round(rss_mb, 1),
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

    c, r = result["containment_s"], result["replacement_s"]
    rows: list[tuple[object, ...]] = [
        (
            "applied -> all Ready",
            f"{result['ready_s']:.1f} s = {result['ready_x_bound']:.2f} x the key-generation bound "
            f"({result['keygen_bound_s']:.1f} s at {result['keygen_keys_per_s']:.2f} keys/s)",
            f"<= {TARGETS['ready_x_bound']} x",
            verdict("ready_x_bound"),
        ),
        (
            "operator peak RSS",
            f"{result['peak_rss_mb']:.0f} MB",
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
            f"Secrets rewritten {result['restart_secrets_rewritten']}",
            f"<= {TARGETS['restart_to_idle_s']:.0f} s, 0 keys",
            verdict("restart_to_idle_s"),
        ),
    ]
    return "\n".join(
        [
            f"## Scale: {result['n']} WebhookCertificates in one namespace",
            "",
            "`webhookcerts run -n NS` against the local control plane (API server and etcd only); every object",
            "applied at once (in "
            f"{result['create_s']:.1f} s), sandbox and live in pairs sharing a trust Secret, no bundles. How each",
            "figure is taken: the docstring of `benchmarks/scale.py`.",
            "",
            report.table(("", "measured", "target", ""), rows),
            "",
            report.footer(command, result["machine"]),
        ]
    )

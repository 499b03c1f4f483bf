"""Emergency, end to end: from the annotation to a real server refusing the compromised certificate.

Everything as deployed, among many objects: the operator (``webhookcerts run``) watches one namespace
holding N other WebhookCertificates (default 1,000, adopted from key Secrets written beforehand, so the
run does not spend minutes generating their keys first; the operator holds and watches them as it does
issued ones) and the one the emergency is for. trust-sync watches that object's trust Secret and
writes the server's trust directory in the kubelet's layout, then runs the server's own reload
(``--exec``): ``nginx -s reload`` and HAProxy's master-worker SIGUSR2 (tests/servers.py starts both,
as tests/e2e/test_servers.py does).

Each run presents the object's current certificate (key and certificate read from its Secret, as the
provider holds them) on fresh TLS connections and waits until the server accepts it. The clock starts
just before the emergency annotation is patched and stops at the first connection presenting it that
the server refuses for good (probed every 20 ms; two more refusals in a row; a server whose old
workers still take a connection for a moment after a reload refuses, then accepts: the clock then stops
at the final streak, and the run is counted as "accepted again"). trust-sync's swap of the ``..data``
link splits the figure: before it, the operator's containment and the watch; after it, the reload.
Between runs the replacement is cut over to, so every run starts from one Active certificate, trusted
alone.

The operator's containment does not wait for the replacement's key (it is issued after the trust
Secret lost the compromised certificate): key generation is not on this path, and the target is
absolute.
"""

from __future__ import annotations

import dataclasses
import pathlib
import ssl
import textwrap
import time
import uuid
from typing import Any

from tests import processes
from tests import servers as launchers

from benchmarks import harness, population, report, servers, stats
from webhookcerts.domain import names, pki

NAME = "emergency"
MIN_RUNS = 20
DEFAULT_OTHERS = 1000
TARGET_P95_S = 1.0
CERT = "bench"
PROBE_INTERVAL = 0.02
CONFIRMATIONS = servers.CONFIRMATIONS
RUN_TIMEOUT = 120.0
SERVERS = tuple(s for s in servers.SERVERS if s.reload_by_exec)  # nginx, HAProxy: trust-sync --exec


@dataclasses.dataclass(frozen=True)
class Presented:
    """The certificate the provider presents now: its fingerprint and a client context presenting it."""

    fingerprint: str
    ctx: ssl.SSLContext


def presented(handle: harness.Cluster, directory: pathlib.Path, server_ca: pathlib.Path) -> Presented:
    current = handle.status(CERT).current
    data = handle.secret(f"{CERT}-tls")
    if current is None or data is None:
        raise harness.BenchmarkError("no current certificate to compromise")
    if pki.inspect(data[names.TLS_CERT]).fingerprint != current.fingerprint:
        raise harness.BenchmarkError("the current Secret does not hold the recorded certificate")
    files = harness.write_pair(directory / "clients", current.serial, data[names.TLS_KEY], data[names.TLS_CERT])
    return Presented(current.fingerprint, harness.client_context(server_ca, files))


def emergency(handle: harness.Cluster) -> None:
    handle.emergency(CERT, f"BENCH-{uuid.uuid4().hex[:8]}")


def one_run(
    handle: harness.Cluster, launched: launchers.Launched, trust_dir: pathlib.Path, work: pathlib.Path, first: bool
) -> dict[str, Any]:
    """Wait (untimed) for the server to accept the current certificate; then time its emergency."""
    now = presented(handle, work, launched.server_ca)
    harness.wait_for(
        lambda: servers.deliver(launched.port, now.ctx) == "200",
        timeout=RUN_TIMEOUT,
        what=f"{launched.name} to accept the current certificate",
    )
    if not first:
        # A reload still settling (the previous cut-over's: old workers draining) is not the change timed here.
        harness.wait_for(launched.reloaded, timeout=RUN_TIMEOUT, what=f"{launched.name} to finish its last reload")
    with harness.DirectoryWatch(trust_dir) as watch:
        started = time.monotonic()
        emergency(handle)
        refused = servers.until_refused(
            lambda: servers.deliver(launched.port, now.ctx), started, launched.name, PROBE_INTERVAL
        )
    harness.cut_over_after_emergency(handle, CERT)
    return {
        "refused_s": round(refused.at - started, 3),
        "swap_s": round(watch.changed_at - started, 3) if watch.changed_at is not None else None,
        "refusal": refused.outcome,
        "accepted_after_first_refusal": refused.flaps,
    }


def synced_records(log: pathlib.Path) -> int:
    text = log.read_text(errors="replace")
    return text.count('"event": "synced"') + text.count('"event": "unchanged"')


def measure_server(
    server: servers.Server, handle: harness.Cluster, directory: pathlib.Path, built: servers.Built, runs: int
) -> dict[str, Any]:
    work = directory / server.name
    work.mkdir()
    ws = launchers.Workspace(work, built.material)
    try:
        launched = servers.start(server, handle, ws, built)
        # trust-sync's initial sync (--once, then the sidecar's own): after it the sidecar is watching.
        harness.wait_for(
            lambda: synced_records(ws.logs["trust-sync"]) >= 2, timeout=RUN_TIMEOUT, what="trust-sync to sync"
        )
        samples = [one_run(handle, launched, work / "trust", work, first=i == 0) for i in range(runs)]
    except (harness.BenchmarkError, processes.ProcessExited, AssertionError):
        ws.dump()
        raise
    finally:
        ws.stop()
    refused = [s["refused_s"] for s in samples]
    swaps = [s["swap_s"] for s in samples if s["swap_s"] is not None]
    return {
        "description": server.description,
        "annotation_to_refused_s": stats.summary(refused, digits=2),
        "annotation_to_swap_s": stats.summary(swaps, digits=2) if swaps else None,
        "refusals": sorted({s["refusal"] for s in samples}),
        "runs_accepted_again": sum(1 for s in samples if s["accepted_after_first_refusal"]),
        "reload_commands": servers.exec_runs(ws.logs["trust-sync"]),
        "samples": samples,
    }


def measure(directory: pathlib.Path, runs: int = MIN_RUNS, others: int = DEFAULT_OTHERS) -> dict[str, Any]:
    machine = report.machine()  # before the benchmark loads the machine itself
    built = servers.Built(launchers.make_material(directory / "pki"), pathlib.Path(), pathlib.Path())
    results: dict[str, Any] = {}
    with harness.cluster(directory) as handle:
        log = directory / "operator.log"
        proc = harness.operator(handle, log)
        try:

            def alive() -> None:
                if proc.poll() is not None:
                    raise harness.BenchmarkError(f"the operator exited: {log.read_text()[-2000:]}")

            population.create_adopted(handle, others)
            handle.create(CERT, trust={"secretName": servers.TRUST_STORE})
            population.wait_ready(handle, others + 1, alive, timeout=max(600.0, 2.0 * others), log=log)
            for server in SERVERS:
                results[server.name] = measure_server(server, handle, directory, built, runs)
                alive()
        finally:
            processes.stop(proc)
    return {
        "benchmark": NAME,
        "others": others,
        "runs_per_server": runs,
        "servers": results,
        "probe_interval_s": PROBE_INTERVAL,
        "target_p95_s": TARGET_P95_S,
        "meets_target": all(r["annotation_to_refused_s"]["p95"] <= TARGET_P95_S for r in results.values()),
        "machine": machine,
    }


def section(result: dict[str, Any], command: str) -> str:
    rows: list[tuple[object, ...]] = []
    for name, figures in result["servers"].items():
        refused, swap = figures["annotation_to_refused_s"], figures["annotation_to_swap_s"]
        rows.append(
            (
                f"{name}: {figures['description']}",
                f"{swap['median']:.2f} / {swap['p95']:.2f}" if swap else "-",
                f"{refused['median']:.2f}",
                f"{refused['p95']:.2f}",
                f"{refused['min']:.2f} / {refused['max']:.2f}",
                ", ".join(f"`{r}`" for r in figures["refusals"]),
                f"{figures['runs_accepted_again']}/{len(figures['samples'])}",
            )
        )
    verdict = "meets" if result["meets_target"] else "misses"
    reloads = "; ".join(
        f"{name}: {f['reload_commands']['exec']} reload commands run, {f['reload_commands']['exec_failed']} failed"
        for name, f in result["servers"].items()
    )
    runs = "; ".join(
        f"{name}: " + ", ".join(f"{s['refused_s']:.2f}" for s in f["samples"]) for name, f in result["servers"].items()
    )
    return "\n".join(
        [
            "## Emergency, end to end: annotation to the server refusing the compromised certificate",
            "",
            textwrap.fill(
                f"The operator watching one namespace with {result['others']:,} other WebhookCertificates in it; "
                "trust-sync feeding the server's trust directory from the object's trust Secret and running "
                "its reload (`--exec`); the server on the loopback. Each run compromises the certificate the "
                "server has just accepted: the clock starts before the emergency annotation is patched and "
                "stops at the first fresh TLS connection presenting it that the server refuses for good "
                f"(probed every {result['probe_interval_s'] * 1000:.0f} ms; {CONFIRMATIONS} more refusals in a "
                'row). "Swap" is trust-sync moving the directory\'s `..data` link: before it, containment '
                "(the operator's watch, its pass, the trust Secret write) and trust-sync's watch; after it, "
                '`--exec` and the server\'s reload. "Accepted again": runs in which an old worker took a '
                "connection after a first refusal (the clock stops at the final streak). Each run is followed "
                "by a cut-over to the replacement, untimed.",
                width=100,
                break_on_hyphens=False,
            ),
            "",
            report.table(
                (
                    "server",
                    "swap median / p95 (s)",
                    "refused median (s)",
                    "refused p95 (s)",
                    "min / max (s)",
                    "refused as",
                    "accepted again",
                ),
                rows,
            ),
            "",
            f"Target: p95 <= {result['target_p95_s']:.1f} s on every server: **{verdict}** it. "
            f"{result['runs_per_server']} runs per server. {reloads}.",
            "",
            f"Runs (s): {runs}.",
            "",
            report.footer(command, result["machine"]),
        ]
    )

"""Receiver reporting: how many API writes a receiver makes at full delivery rate, and what it costs.

Issue 24 bounds a reporter's writes "however many deliveries arrive": receiver/reporting.py writes the
PresentationReport once per heartbeat (``--report-interval``, 15 s by default) and, for a certificate
the last report did not hold, at most once per 2 s. This measures that bound on the real thing: the
``webhookcerts receiver`` process with ``--report-trust-secret``, writing to a real API server (the
harness's control plane with the report CRD applied, and a Pod object for its POD_* identity: the
ownerReference needs one, no node does), driven by the provider simulator on keep-alive connections as
fast as the two of them go on this machine (``benchmarks/receiver.py``'s way), for ``seconds``.

The writes are counted where they land: a watch on the report sees one ADDED or MODIFIED event, with a
new resourceVersion, per write, and its first event (the report written at start) is awaited before the
deliveries begin, so a watch that saw nothing cannot pass for a reporter that wrote nothing. The API
server's own ``apiserver_request_total`` for presentationreports counts the write requests, failed ones
too, as a cross-check. At the end the report must count, as accepted, exactly the deliveries the
simulator made to that receiver (its heartbeat carries them; nothing is stopped to flush them).

The throughput cost is measured after that run, against a second receiver without the flag: as many
campaigns of about 10 s on each as the run lasted, one of each back to back and alternating which goes
first, so that a drift in the shared machine's load falls on both alike; the cost is the median of the
pairs' changes, in deliveries per second and in the receiver's CPU time per delivery (which other
work on the machine moves far less). The write bound does not depend on the machine's speed; the
deliveries per second do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import pathlib
import time
from typing import Any

import kubernetes
from cryptography import x509
from tests import processes

from benchmarks import harness, receiver, report, report_writes, scale, stats
from webhookcerts.domain import models, names, pki, reports
from webhookcerts.receiver import reporting as receiver_reporting
from webhookcerts.receiver import trustdir

NAME = "reporting"
DEFAULT_SECONDS = 60.0
MIN_SECONDS = 60.0  # a recorded figure is writes per minute: at least one whole minute of it
CHUNK_S = 10.0  # one simulator campaign; the drive repeats them until its time is up
POD = "receiver-0"
TRUST_SECRET = "webhook-trust"  # noqa: S105 - a Secret's name, not a password
REPORT_CRD = harness.REPO / "crds" / "presentationreports.webhookcerts.io.yaml"


@dataclasses.dataclass
class Totals:
    """What the simulator did to one receiver, over every campaign."""

    delivered: int = 0
    failed: int = 0
    retries: int = 0
    attempts: int = 0

    def add(self, summary: dict[str, Any]) -> None:
        self.delivered += summary["delivered"]
        self.failed += summary["failed"]
        self.retries += summary["retries"]
        self.attempts += summary["attempts"]


def drive(rx: harness.Receiver, bundle: pathlib.Path, seconds: float, rate: float, totals: Totals) -> dict[str, Any]:
    """Keep-alive deliveries as fast as they go for at least ``seconds``, in campaigns of about CHUNK_S."""
    run = Totals()
    rates: list[float] = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        count = max(receiver.CALIBRATION, round(rate * min(CHUNK_S, seconds - elapsed)))
        summary = receiver.campaign(rx, bundle, count, keep_alive=True)
        run.add(summary)
        totals.add(summary)
        rate = summary["delivered_per_s"] or rate
        rates.append(rate)
    duration = time.monotonic() - started
    return {
        "seconds": round(duration, 2),
        "delivered": run.delivered,
        "deliveries_per_s": round(run.delivered / duration, 1),
        "campaigns_per_s": rates,
        "failed": run.failed,
        "retries": run.retries,
        "started": started,
        "ended": started + duration,
    }


def compare(
    receivers: tuple[harness.Receiver, harness.Receiver],
    bundle: pathlib.Path,
    rates: tuple[float, float],
    pairs: int,
    totals: tuple[Totals, Totals],
) -> dict[str, Any]:
    """The cost: ``pairs`` campaigns of about CHUNK_S on each receiver (with reporting, without), one of
    each back to back, alternating which goes first, so that the machine's drift falls on both alike.

    Each campaign's deliveries per second, and the receiver process's CPU time (every thread, the
    reporter's too) per delivery: on a shared machine the first moves with everyone else's load, the
    second far less."""
    per_s: tuple[list[float], list[float]] = ([], [])
    cpu_us: tuple[list[float], list[float]] = ([], [])
    failed = 0
    for pair in range(pairs):
        for side in (0, 1) if pair % 2 == 0 else (1, 0):
            count = max(receiver.CALIBRATION, round(rates[side] * CHUNK_S))
            cpu_before = scale.cpu_seconds(receivers[side].proc.pid)
            summary = receiver.campaign(receivers[side], bundle, count, keep_alive=True)
            cpu = scale.cpu_seconds(receivers[side].proc.pid) - cpu_before
            totals[side].add(summary)
            per_s[side].append(float(summary["delivered_per_s"]))
            cpu_us[side].append(round(cpu / max(1, summary["delivered"]) * 1e6, 1))
            failed += summary["failed"]
    return cost_figures(per_s, cpu_us) | {"pairs": pairs, "failed": failed}


def _changes(pairs: tuple[list[float], list[float]]) -> list[float]:
    return [round((w / o - 1) * 100, 1) for w, o in zip(*pairs, strict=True)]


def cost_figures(per_s: tuple[list[float], list[float]], cpu_us: tuple[list[float], list[float]]) -> dict[str, Any]:
    """Each pair's change from without to with reporting (``(with, without)`` lists); the median of those
    is the cost, in deliveries per second and in receiver CPU per delivery."""
    return {
        "with_per_s": per_s[0],
        "without_per_s": per_s[1],
        "with_median_per_s": round(stats.median(per_s[0]), 1),
        "without_median_per_s": round(stats.median(per_s[1]), 1),
        "changes_percent": _changes(per_s),
        "cost_percent": round(stats.median(_changes(per_s)), 1),
        "with_cpu_us": cpu_us[0],
        "without_cpu_us": cpu_us[1],
        "with_median_cpu_us": round(stats.median(cpu_us[0]), 1),
        "without_median_cpu_us": round(stats.median(cpu_us[1]), 1),
        "cpu_changes_percent": _changes(cpu_us),
        "cpu_cost_percent": round(stats.median(_changes(cpu_us)), 1),
    }


def warm_up(rx: harness.Receiver, bundle: pathlib.Path, totals: Totals) -> float:
    """Two short campaigns; the rate of the second (the first is mostly start-up)."""
    totals.add(receiver.campaign(rx, bundle, receiver.CALIBRATION, keep_alive=True))
    second = receiver.campaign(rx, bundle, 4 * receiver.CALIBRATION, keep_alive=True)
    totals.add(second)
    return float(second["delivered_per_s"])


def _pod(handle: harness.Cluster) -> str:
    body = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name=POD),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="rx", image="receiver")]),
    )
    return str(handle.core.create_namespaced_pod(handle.namespace, body).metadata.uid)


def _report_crd(handle: harness.Cluster) -> None:
    handle.kubectl("apply", "-f", str(REPORT_CRD))
    handle.kubectl("wait", "--for=condition=Established", f"crd/{reports.PLURAL}.{models.GROUP}")

    def served() -> bool:
        try:
            handle.kubectl("get", reports.PLURAL, "-n", handle.namespace)
        except harness.BenchmarkError:
            return False
        return True

    harness.wait_for(served, timeout=60, what="the report CRD to be served")


def measure(directory: pathlib.Path, seconds: float = DEFAULT_SECONDS) -> dict[str, Any]:
    machine = report.machine()  # before the benchmark loads the machine itself
    now = datetime.datetime.now(datetime.UTC)
    client = pki.new_key_pair(models.Subject(common_name="provider.example.com"), now, datetime.timedelta(days=1))
    sha256 = pki.fingerprint(x509.load_pem_x509_certificate(client.cert_pem))
    bundle = directory / "client.p12"
    bundle.write_bytes(pki.pkcs12_bundle(client.key_pem, client.cert_pem, receiver.PASSWORD, "provider"))
    trust_dir = directory / "trust"
    trustdir.write_atomic(trust_dir, {names.TRUST_KEY: client.cert_pem})
    interval = receiver_reporting.DEFAULT_INTERVAL
    with harness.cluster(directory) as handle:
        _report_crd(handle)
        env = {"POD_NAME": POD, "POD_NAMESPACE": handle.namespace, "POD_UID": _pod(handle)}
        flags = ("--report-trust-secret", TRUST_SECRET, "--kubeconfig", str(handle.dev.kubeconfig))
        requests_before = report_writes.api_write_requests(handle)
        with report_writes.ReportWatch(handle, POD, sha256) as watch:
            (directory / "reporting").mkdir()
            (directory / "plain").mkdir()
            rx = harness.start_receiver(directory / "reporting", trust_dir, *flags, env=env)
            plain = harness.start_receiver(directory / "plain", trust_dir)
            try:
                # The positive control: the report written at start is seen before any delivery.
                harness.wait_for(watch.writes, timeout=60, what="the report written at the receiver's start")
                totals, plain_totals = Totals(), Totals()
                rate = warm_up(rx, bundle, totals)
                plain_rate = warm_up(plain, bundle, plain_totals)
                measured = drive(rx, bundle, seconds, rate, totals)
                pairs = max(2, round(seconds / CHUNK_S))
                cost = compare(
                    (rx, plain), bundle, (measured["deliveries_per_s"], plain_rate), pairs, (totals, plain_totals)
                )
                load_end = round(os.getloadavg()[0], 2)
                # The heartbeat after the deliveries carries every one of them: wait for it (not for a stop).
                with contextlib.suppress(harness.BenchmarkError):  # a report that never does: a mismatch, below
                    harness.wait_for(
                        lambda: watch.writes()[-1].accepted >= totals.delivered,
                        timeout=2 * interval + 30,
                        what="a report counting every delivery",
                    )
                writes = watch.writes()
                # The request counter moves when the answer is sent, the watch event may come first.
                with contextlib.suppress(harness.BenchmarkError):  # recorded as it is
                    harness.wait_for(
                        lambda: report_writes.api_write_requests(handle) - requests_before >= len(writes),
                        timeout=10,
                        what="the API server to count the writes the watch saw",
                    )
                requests = report_writes.api_write_requests(handle) - requests_before
            finally:
                processes.stop(rx.proc)
                processes.stop(plain.proc)
    figures = report_writes.write_figures([w.at for w in writes], measured["started"], measured["ended"])
    # The client's certificate was written in the warm-up: inside the window only heartbeats are due.
    bound = math.floor(figures["window_s"] / interval) + 1
    last = writes[-1]
    return {
        "benchmark": NAME,
        "seconds": seconds,
        "concurrency": receiver.CONCURRENCY,
        "heartbeat_s": interval,
        "min_gap_s": receiver_reporting.DEFAULT_MIN_GAP,
        "reporting": {k: v for k, v in measured.items() if k not in ("started", "ended")},
        "cost": cost,
        **figures,
        "bound_writes": bound,
        "meets_bound": figures["writes"] <= bound,
        "writes_total": len(writes),
        "write_kinds": [w.kind for w in writes],
        "api_write_requests": requests,
        "watch_error": watch.error,
        "counts": {
            "simulator_delivered": totals.delivered,
            "simulator_attempts": totals.attempts,
            "simulator_failed": totals.failed,
            "report_accepted": last.accepted,
            "report_refused": last.refused,
            "match": last.accepted == totals.delivered and last.refused == 0 and totals.attempts == totals.delivered,
        },
        "load_1min_end": load_end,
        "machine": machine,
    }


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values) or "none"


def _changes_text(values: list[float]) -> str:
    return ", ".join(f"{v:+.1f}" for v in values) + " %"


def section(result: dict[str, Any], command: str) -> str:
    run, cost, counts = result["reporting"], result["cost"], result["counts"]
    gap = result["largest_gap_s"]
    pairs = f"median of {cost['pairs']} campaigns"
    rows = [
        (
            f"with `--report-trust-secret` (heartbeat {result['heartbeat_s']:g} s)",
            f"{run['deliveries_per_s']:.0f} ({run['delivered']:,} in {run['seconds']:.1f} s)",
            f"{result['writes']} in {result['window_s']:.1f} s",
            f"{result['writes_per_min']:.1f}",
            f"{gap:.1f} s" if gap is not None else "-",
            f"{cost['with_median_per_s']:.0f}",
            f"{cost['with_median_cpu_us']:.0f}",
            f"{run['failed'] + cost['failed']}",
        ),
        (
            "without",
            "-",
            "none",
            "-",
            "-",
            f"{cost['without_median_per_s']:.0f}",
            f"{cost['without_median_cpu_us']:.0f}",
            "-",
        ),
    ]
    header = (
        "receiver",
        f"deliveries/s, {result['seconds']:.0f} s run",
        "report writes in the run",
        "writes/min",
        "largest gap between writes",
        f"deliveries/s, {pairs} interleaved",
        "receiver CPU µs per delivery, same campaigns",
        "failed",
    )
    verdict = "**match**" if counts["match"] else "**do not match**"
    return "\n".join(
        [
            "## Receiver reporting: API writes at full delivery rate",
            "",
            "The real `webhookcerts receiver` with `--report-trust-secret` writing its PresentationReport to the",
            "local API server, driven by the provider simulator on keep-alive connections "
            f"({result['concurrency']} in flight, RSA-4096",
            f"client certificate) as fast as they go for {result['seconds']:.0f} s; its writes counted by a watch "
            "on the report (one ADDED or",
            "MODIFIED event, one new resourceVersion, per write). Then the cost: campaigns of about "
            f"{CHUNK_S:g} s against it and against a",
            "receiver without the flag, back to back, alternating which goes first. Everything shares the "
            "machine's 2 cores.",
            "",
            report.table(header, rows),
            "",
            f"Writes at (s into the run): {', '.join(f'{t:g}' for t in result['at_s']) or 'none'}. "
            "The bound is by construction, not by speed: one write per heartbeat, and one more (at most one per "
            f"{result['min_gap_s']:g} s) when a certificate appears that the last report did not hold, however many "
            "deliveries arrive. The client's certificate was first written during the warm-up, so the run owes "
            f"heartbeats only: at most {result['bound_writes']} writes in its {result['window_s']:.1f} s "
            f"(one per {result['heartbeat_s']:g} s, and one for the phase): "
            f"{'**meets**' if result['meets_bound'] else '**misses**'} it.",
            "",
            f"Cost of reporting, the median of the pairs' changes: {cost['cpu_cost_percent']:+.1f} % receiver CPU "
            f"per delivery ({_changes_text(cost['cpu_changes_percent'])}; with: {_rates(cost['with_cpu_us'])} µs; "
            f"without: {_rates(cost['without_cpu_us'])} µs) and {cost['cost_percent']:+.1f} % deliveries/s "
            f"({_changes_text(cost['changes_percent'])}; with: {_rates(cost['with_per_s'])}; without: "
            f"{_rates(cost['without_per_s'])}). A cost within the spread of the pairs is noise; the deliveries per "
            "second are the shared machine's, not the receiver's alone, and move with everyone else's load.",
            "",
            f"Counts: the last report counts {counts['report_accepted']:,} presentations accepted "
            f"and {counts['report_refused']} refused; the simulator made {counts['simulator_delivered']:,} "
            f"deliveries to that receiver ({counts['simulator_attempts']:,} attempts, warm-up and cost campaigns "
            f"included): they {verdict}. Over the whole run the watch saw {result['writes_total']} writes and the "
            f"API server counted {result['api_write_requests']} write requests on presentationreports."
            + (
                f" The watch met an error ({result['watch_error']}): it may have missed writes."
                if result.get("watch_error")
                else ""
            ),
            "",
            f"{report.footer(command, result['machine'])} Load average {result['load_1min_end']} at the end.",
        ]
    )

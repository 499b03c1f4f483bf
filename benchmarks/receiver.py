"""Receiver throughput: deliveries per second, with and without a trust reload every second.

The receiver runs as its own process (``webhookcerts receiver``, logging one line per delivery as
deployed) and the provider simulator drives it from this process with 32 deliveries in flight,
presenting an RSA-4096 client certificate from a PKCS#12 bundle, as the provider does. Both share
the machine's cores, so the figure is what one small host does, not the receiver alone.

Two connection modes: a new TLS connection per delivery (the simulator's default and the worst
case: every delivery pays a full handshake with the 4096-bit client key) and keep-alive. The
reloading variant rewrites the trust directory once a second, in the kubelet's layout, alternating
between the client's certificate alone and the client's certificate plus another one, so the
receiver builds a new TLS context every second while the client stays trusted. Runs alternate
between the variants (which goes first alternates too) and each figure is the median of its runs.
"""

from __future__ import annotations

import datetime
import pathlib
import threading
from typing import Any

from tests import processes

from benchmarks import harness, report, stats
from webhookcerts.domain import models, names, pki
from webhookcerts.receiver import providersim, trustdir

NAME = "receiver"
PASSWORD = b"benchmark-bundle-password"
CONCURRENCY = 32
CALIBRATION = 200


class Reloader:
    """Rewrites the trust directory every ``interval`` seconds, alternating between two contents."""

    def __init__(self, directory: pathlib.Path, contents: tuple[bytes, bytes], interval: float = 1.0) -> None:
        self.directory, self.contents, self.interval = directory, contents, interval
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reloader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        # Leave the client's certificate alone in the store, as before.
        trustdir.write_atomic(self.directory, {names.TRUST_KEY: self.contents[0]})

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.writes += 1
            trustdir.write_atomic(self.directory, {names.TRUST_KEY: self.contents[self.writes % 2]})


def campaign(rx: harness.Receiver, bundle: pathlib.Path, count: int, keep_alive: bool) -> dict[str, Any]:
    config = providersim.Config(
        url=f"https://127.0.0.1:{rx.port}/webhooks",
        bundle=bundle,
        password=PASSWORD,
        ca=rx.server_ca,
        # Unthrottled: the pool of CONCURRENCY workers is the limit, so this measures capacity.
        rate=1_000_000.0,
        count=count,
        keep_alive=keep_alive,
        concurrency=CONCURRENCY,
        timeout=30.0,
    )
    return providersim.run(config)


def measure(directory: pathlib.Path, seconds: float = 10.0, repeats: int = 2) -> dict[str, Any]:
    machine = report.machine()  # before the benchmark loads the machine itself
    now = datetime.datetime.now(datetime.UTC)
    subject = models.Subject(common_name="provider.example.com", organization="Benchmark")
    client = pki.new_key_pair(subject, now, datetime.timedelta(days=1))
    other = pki.new_key_pair(models.Subject(common_name="other.example.com"), now, datetime.timedelta(days=1))
    bundle = directory / "client.p12"
    bundle.write_bytes(pki.pkcs12_bundle(client.key_pem, client.cert_pem, PASSWORD, "provider"))
    contents = (client.cert_pem, client.cert_pem + other.cert_pem)
    trust_dir = directory / "trust"
    trustdir.write_atomic(trust_dir, {names.TRUST_KEY: contents[0]})
    rx = harness.start_receiver(directory, trust_dir)
    modes: dict[str, Any] = {}
    try:
        for keep_alive in (False, True):
            mode = "keep_alive" if keep_alive else "new_connection"
            # Two short campaigns warm up and size the measured ones to about ``seconds`` each (the
            # first is dominated by start-up, so it only sizes the second).
            warm = campaign(rx, bundle, CALIBRATION, keep_alive)
            warm = campaign(rx, bundle, max(CALIBRATION, round(warm["delivered_per_s"] * 2)), keep_alive)
            count = max(CALIBRATION, round(warm["delivered_per_s"] * seconds))
            runs: dict[str, list[dict[str, Any]]] = {"steady": [], "reload_every_1s": []}
            for repeat in range(repeats):
                # Alternate which variant goes first, so a drift of the machine favours neither.
                order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
                for variant in order:
                    reloads_before = rx.count("trust_reloaded")
                    if variant == "steady":
                        summary = campaign(rx, bundle, count, keep_alive)
                    else:
                        with Reloader(trust_dir, contents):
                            summary = campaign(rx, bundle, count, keep_alive)
                    summary["receiver_reloads"] = rx.count("trust_reloaded") - reloads_before
                    runs[variant].append(summary)
            modes[mode] = {
                "deliveries_per_run": count,
                **{
                    variant: {
                        "deliveries_per_s": stats.median([r["delivered_per_s"] for r in results]),
                        "runs_per_s": [r["delivered_per_s"] for r in results],
                        "failed": sum(r["failed"] for r in results),
                        "retries": sum(r["retries"] for r in results),
                        "receiver_reloads": [r["receiver_reloads"] for r in results],
                        "latency_ms_p50": stats.median([r["latency_ms"]["p50"] for r in results]),
                        "latency_ms_p95": stats.median([r["latency_ms"]["p95"] for r in results]),
                    }
                    for variant, results in runs.items()
                },
            }
    finally:
        processes.stop(rx.proc)
    return {
        "benchmark": NAME,
        "concurrency": CONCURRENCY,
        "repeats": repeats,
        "seconds": seconds,
        "modes": modes,
        "machine": machine,
    }


def section(result: dict[str, Any], command: str) -> str:
    rows: list[tuple[object, ...]] = []
    runs: list[str] = []
    labels = {"new_connection": "new TLS connection per delivery", "keep_alive": "keep-alive"}
    for mode, label in labels.items():
        data = result["modes"][mode]
        steady, reload = data["steady"], data["reload_every_1s"]
        runs.append(
            f"{label}: steady {', '.join(f'{r:.0f}' for r in steady['runs_per_s'])}; "
            f"reloading {', '.join(f'{r:.0f}' for r in reload['runs_per_s'])}"
        )
        change = (reload["deliveries_per_s"] - steady["deliveries_per_s"]) / steady["deliveries_per_s"] * 100
        rows.append(
            (
                label,
                f"{steady['deliveries_per_s']:.0f}",
                f"{reload['deliveries_per_s']:.0f}",
                f"{change:+.0f} %",
                f"{steady['latency_ms_p95']:.0f} / {reload['latency_ms_p95']:.0f}",
                f"{steady['failed'] + reload['failed']}",
                ", ".join(str(n) for n in reload["receiver_reloads"]),
            )
        )
    header = (
        "connections",
        "deliveries/s, steady",
        "deliveries/s, reload every 1 s",
        "change",
        "p95 latency ms (steady / reload)",
        "failed",
        "reloads seen per run",
    )
    return "\n".join(
        [
            "## Receiver throughput, with and without a trust reload every second",
            "",
            f"The receiver in its own process; the provider simulator in the benchmark's process with "
            f"{result['concurrency']} deliveries in flight, presenting an RSA-4096 client certificate. Each",
            f"figure is the median of {result['repeats']} runs of about {result['seconds']:.0f} s; both share the "
            "machine's cores.",
            "",
            report.table(header, rows),
            "",
            f"Runs (deliveries/s): {'. '.join(runs)}. A change within the spread of the runs is noise.",
            "",
            report.footer(command, result["machine"]),
        ]
    )

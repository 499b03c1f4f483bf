"""Servers: from the trust Secret write to each real server refusing the revoked certificate.

What an emergency asks of the endpoint, timed per server users run (tests/servers.py starts them, as
tests/e2e/test_servers.py does): nginx (``ssl_verify_client on``) and HAProxy (``verify required``),
reloaded by trust-sync's ``--exec``; the JDK's own HTTPS server reading a PKCS#12 and a JKS truststore
that trust-sync encodes (``--format pkcs12|jks``), and a Go ``net/http`` server
(``RequireAndVerifyClientCert``), both reloading by themselves when their file changes. trust-sync
watches the trust Secret of an API-only local control plane.

Each run lists a fresh RSA-4096 client certificate beside an anchor in the trust Secret and waits (not
timed) until the server accepts it. The clock starts just before the Secret is written without it, as
the operator's containment writes it, and stops at the first fresh TLS connection presenting it that
the server refuses (a TLS alert, or nginx's HTTP 400) and goes on refusing: two more in a row; the
anchor must still be accepted afterwards, or the run is an error rather than a figure. A server whose
old workers still take a new connection for a moment after a reload accepts the certificate again
after a first refusal; the clock then stops at the first refusal of the final streak, and the run is
counted under "accepted again". trust-sync's swap of the directory's
``..data`` link splits each figure into delivery (watch, write) and the server's own reload.

The operator's part (annotation to trust Secret written) is the emergency benchmark's; add the two.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import pathlib
import ssl
import textwrap
import time
from collections.abc import Callable
from typing import Any

import kubernetes
from tests import processes
from tests import servers as launchers

from benchmarks import harness, pod_reload, report, stats
from webhookcerts.domain import names

NAME = "servers"
MIN_RUNS = 10
PROBE_INTERVAL = 0.05
CONFIRMATIONS = 2
TRUST_STORE = "webhook-trust"
RUN_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Server:
    """One server configuration: how trust-sync feeds it and how it is started on the synced files."""

    name: str
    description: str
    java_store: str | None = None  # pkcs12 or jks: trust-sync encodes the truststore the JVM reads
    reload_by_exec: bool = False  # nginx and HAProxy: trust-sync runs their reload command


SERVERS = (
    Server("nginx", "nginx, `ssl_verify_client on`, `nginx -s reload` by trust-sync --exec", reload_by_exec=True),
    Server("haproxy", "HAProxy, `verify required`, master-worker SIGUSR2 by trust-sync --exec", reload_by_exec=True),
    Server("java-pkcs12", "JDK HttpsServer, PKCS#12 truststore (trust-sync --format pkcs12)", java_store="pkcs12"),
    Server("java-jks", "JDK HttpsServer, JKS truststore (trust-sync --format jks)", java_store="jks"),
    Server("go", "Go net/http, RequireAndVerifyClientCert, reloads on file change"),
)


@dataclasses.dataclass(frozen=True)
class Built:
    material: launchers.Material
    java_classes: pathlib.Path
    go_server: pathlib.Path


def deliver(port: int, ctx: ssl.SSLContext) -> str:
    """One delivery on a fresh connection: "200", another HTTP status, or the name of the TLS or
    connection error that ended it."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        body = json.dumps({"event": "benchmark"}).encode()
        conn.request("POST", "/webhooks", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as exc:
        # ssl.SSLError is an OSError: a refused certificate, at the handshake or (TLS 1.3) first read.
        return type(exc).__name__
    finally:
        conn.close()


def write_trust(handle: harness.Cluster, pem: bytes) -> None:
    data = {names.TRUST_KEY: base64.b64encode(pem).decode()}
    handle.core.patch_namespaced_secret(TRUST_STORE, handle.namespace, {"data": data})


def trust_sync(
    handle: harness.Cluster, ws: launchers.Workspace, trust_dir: pathlib.Path, *extra: str, once: bool = False
) -> None:
    """trust-sync as a sidecar runs it (or ``--once``, as an init container, waited for)."""
    log = ws.log("trust-sync")
    proc = harness.trust_sync(handle, TRUST_STORE, trust_dir, log, *extra, *(["--once"] if once else []))
    if once:
        if proc.wait(timeout=120) != 0:
            raise harness.BenchmarkError(f"trust-sync --once failed: {log.read_text()[-2000:]}")
    else:
        ws.track(proc)


def start(server: Server, handle: harness.Cluster, ws: launchers.Workspace, built: Built) -> launchers.Launched:
    """trust-sync and the server, in the order a pod starts them; returns once the server listens."""
    trust_dir = ws.directory / "trust"
    ca = trust_dir / names.TRUST_KEY
    if server.java_store:
        store = trust_dir / f"truststore.{'p12' if server.java_store == 'pkcs12' else 'jks'}"
        password = ["--password-file", str(built.material.truststore_password)]
        trust_sync(handle, ws, trust_dir, "--format", server.java_store, *password)
        harness.wait_for(store.exists, what="trust-sync to write the truststore")
        store_type = "PKCS12" if server.java_store == "pkcs12" else "JKS"
        return launchers.start_java(ws, built.java_classes, store, store_type, server.name)
    if server.name == "go":
        trust_sync(handle, ws, trust_dir)
        harness.wait_for(ca.exists, what="trust-sync to write ca.crt")
        return launchers.start_go(ws, built.go_server, ca)
    trust_sync(handle, ws, trust_dir, once=True)
    launch: Callable[[launchers.Workspace, pathlib.Path], launchers.Launched] = {
        "nginx": launchers.start_nginx,
        "haproxy": launchers.start_haproxy,
    }[server.name]
    launched = launch(ws, ca)
    assert launched.reload_command is not None
    trust_sync(handle, ws, trust_dir, "--exec", launched.reload_command)
    return launched


@dataclasses.dataclass(frozen=True)
class Refused:
    """When the server first refused the compromised certificate for good, how, and how many times a
    refusal was followed by an acceptance before that final streak."""

    at: float
    outcome: str
    flaps: int


def until_refused(probe: Callable[[], str], started: float, what: str, interval: float = PROBE_INTERVAL) -> Refused:
    """Probe (``"200"``: accepted; anything else: how it was refused) every ``interval`` until
    CONFIRMATIONS more refusals follow a first one; an acceptance in between starts the streak over."""
    refused_at, streak, flaps, outcome = 0.0, 0, 0, ""
    while streak <= CONFIRMATIONS:
        if time.monotonic() - started > RUN_TIMEOUT:
            raise harness.BenchmarkError(f"{what} still accepted the certificate it was to refuse")
        seen = probe()
        probed_at = time.monotonic()
        if seen == "200":
            flaps += 1 if streak else 0
            streak = 0
            time.sleep(interval)
            continue
        if not streak:
            refused_at, outcome = probed_at, seen
        streak += 1
    return Refused(refused_at, outcome, flaps)


def one_run(
    handle: harness.Cluster,
    launched: launchers.Launched,
    trust_dir: pathlib.Path,
    anchor: tuple[bytes, ssl.SSLContext],
    revoked: tuple[bytes, ssl.SSLContext],
) -> dict[str, Any]:
    """List ``revoked`` beside the anchor, wait for the server to take it; then time its removal."""
    anchor_pem, anchor_ctx = anchor
    revoked_pem, revoked_ctx = revoked
    write_trust(handle, anchor_pem + revoked_pem)
    harness.wait_for(
        lambda: deliver(launched.port, revoked_ctx) == "200",
        timeout=RUN_TIMEOUT,
        what=f"{launched.name} to accept the certificate before its removal",
    )
    # A reload still settling (nginx's old workers, HAProxy's old process) is not the change timed here.
    time.sleep(1.0)
    with harness.DirectoryWatch(trust_dir) as watch:
        started = time.monotonic()
        write_trust(handle, anchor_pem)
        # A server whose old workers still take connections for a moment (nginx after `-s reload`)
        # refuses, then accepts: only a streak of refusals counts.
        refused = until_refused(lambda: deliver(launched.port, revoked_ctx), started, launched.name)
    if (anchor_outcome := deliver(launched.port, anchor_ctx)) != "200":
        raise harness.BenchmarkError(f"{launched.name} refused the anchor too ({anchor_outcome}): not a trust reload")
    return {
        "refused_s": round(refused.at - started, 3),
        "swap_s": round(watch.changed_at - started, 3) if watch.changed_at is not None else None,
        "refusal": refused.outcome,
        "accepted_after_first_refusal": refused.flaps,
    }


def exec_runs(log: pathlib.Path) -> dict[str, int]:
    """trust-sync's --exec records: how many reload commands ran, and how many failed."""
    counts = {"exec": 0, "exec_failed": 0}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line).get("event")
            if event in counts:
                counts[event] += 1
    return counts


def measure_server(
    server: Server,
    handle: harness.Cluster,
    directory: pathlib.Path,
    built: Built,
    anchor: tuple[bytes, ssl.SSLContext],
    runs: int,
) -> dict[str, Any]:
    """``runs`` removals timed against one server, started afresh and stopped afterwards."""
    work = directory / server.name
    work.mkdir()
    ws = launchers.Workspace(work, built.material)
    try:
        launched = start(server, handle, ws, built)
        harness.wait_for(lambda: deliver(launched.port, anchor[1]) == "200", what=f"{server.name} to accept the anchor")
        samples = []
        for index in range(runs):
            files, pem = pod_reload.client_certificate(directory / "clients", f"{server.name}-{index}")
            revoked = (pem, harness.client_context(built.material.server_ca, files))
            samples.append(one_run(handle, launched, work / "trust", anchor, revoked))
    except (harness.BenchmarkError, processes.ProcessExited, AssertionError):
        ws.dump()
        raise
    finally:
        ws.stop()
    refused = [s["refused_s"] for s in samples]
    swaps = [s["swap_s"] for s in samples if s["swap_s"] is not None]
    return {
        "description": server.description,
        "secret_to_refused_s": stats.summary(refused, digits=2),
        "secret_to_swap_s": stats.summary(swaps, digits=2) if swaps else None,
        "refusals": sorted({s["refusal"] for s in samples}),
        "runs_accepted_again": sum(1 for s in samples if s["accepted_after_first_refusal"]),
        "reload_commands": exec_runs(ws.logs["trust-sync"]) if server.reload_by_exec else None,
        "samples": samples,
    }


def measure(directory: pathlib.Path, runs: int = MIN_RUNS) -> dict[str, Any]:
    built = Built(
        launchers.make_material(directory / "pki"),
        launchers.compile_java(directory / "build-java"),
        launchers.build_go(directory / "build-go"),
    )
    results: dict[str, Any] = {}
    with harness.cluster(directory) as handle:
        anchor_files, anchor_pem = pod_reload.client_certificate(directory / "clients", "anchor")
        handle.core.create_namespaced_secret(
            handle.namespace,
            kubernetes.client.V1Secret(
                metadata=kubernetes.client.V1ObjectMeta(name=TRUST_STORE),
                data={names.TRUST_KEY: base64.b64encode(anchor_pem).decode()},
            ),
        )
        anchor = (anchor_pem, harness.client_context(built.material.server_ca, anchor_files))
        for server in SERVERS:
            results[server.name] = measure_server(server, handle, directory, built, anchor, runs)
    return {
        "benchmark": NAME,
        "runs_per_server": runs,
        "servers": results,
        "probe_interval_s": PROBE_INTERVAL,
        "machine": report.machine(),
    }


def section(result: dict[str, Any], command: str) -> str:
    rows: list[tuple[object, ...]] = []
    for name, figures in result["servers"].items():
        refused, swap = figures["secret_to_refused_s"], figures["secret_to_swap_s"]
        rows.append(
            (
                f"{name}: {figures['description']}",
                f"{swap['median']:.2f}" if swap else "-",
                f"{refused['median']:.2f}",
                f"{refused['min']:.2f}",
                f"{refused['p95']:.2f}",
                ", ".join(f"`{r}`" for r in figures["refusals"]),
                f"{figures['runs_accepted_again']}/{len(figures['samples'])}",
            )
        )
    reloads = [
        f"{name}: {f['reload_commands']['exec']} reload commands run, {f['reload_commands']['exec_failed']} failed"
        for name, f in result["servers"].items()
        if f["reload_commands"] is not None
    ]
    return "\n".join(
        [
            "## Real servers: trust Secret write to the server refusing the revoked certificate",
            "",
            textwrap.fill(
                "Each server on the loopback, fed by trust-sync watching the trust Secret (API-only local control "
                "plane). Each run lists a fresh RSA-4096 client certificate beside an anchor and waits, untimed, "
                "for the server to accept it; the clock starts just before the Secret is written without it (as "
                "the operator's containment writes it) and stops at the first fresh TLS connection presenting it "
                f"that the server refuses for good (probed every {result['probe_interval_s'] * 1000:.0f} ms; "
                f'{CONFIRMATIONS} more refusals in a row; the anchor still accepted). "Accepted again" counts the '
                "runs in which a connection was accepted after a first refusal (old workers finishing a reload): "
                "the clock stops at the final streak. The swap column is trust-sync's `..data` link "
                "moving: the rest is the server's own reload. The operator's part (annotation to trust Secret) "
                "is the emergency figure above.",
                width=100,
                break_on_hyphens=False,
            ),
            "",
            report.table(
                (
                    "server",
                    "swap median (s)",
                    "refused median (s)",
                    "min (s)",
                    "p95 (s)",
                    "refused as",
                    "accepted again",
                ),
                rows,
            ),
            "",
            f"{result['runs_per_server']} runs per server; with 10 runs the p95 is the slowest run. "
            + "; ".join(reloads)
            + ".",
            "",
            report.footer(command, result["machine"]),
        ]
    )

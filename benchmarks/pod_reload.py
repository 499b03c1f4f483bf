"""Pod reload: from a change of the trust Secret to the receiver pod accepting the new certificate.

The receiver runs as a Deployment on the local cluster's node, in the project's image, with the trust
Secret mounted as a directory volume (no trust-sync): the kubelet alone brings the new ``ca.crt`` into
the pod, and the receiver's watcher reloads it. Each run adds a fresh RSA-4096 client certificate to
the trust Secret and probes the pod with it, on a new TLS connection every 50 ms, until it is accepted.

Two ways the kubelet learns of the change. With the Hot nudge the pod's
``trust-hash.webhookcerts.io/webhook-trust`` annotation (the operator keeps one per trust Secret) is
patched right after the Secret, as the operator does for a ``reload: Hot`` consumer: a pod update makes
the kubelet sync that pod, and remount its Secret volumes, at once. Without it the kubelet remounts on
its own periodic sync of the pod (``syncFrequency`` plus up to half of it in jitter). The node's kubelet
runs with the kubelet's default ``syncFrequency`` of one minute, as a real cluster does, unless told
otherwise (the local cluster's tests run with 5 s). Before each run without the nudge the benchmark
waits a random part of that period, so that the change lands at a random point of the kubelet's cycle
rather than always just after a sync.

The mounted volume is watched from the host as well (the kubelet's pod directory), which splits each
figure at the moment the kubelet swapped the volume's ``..data`` link.
"""

from __future__ import annotations

import base64
import datetime
import pathlib
import random
import ssl
import subprocess
import sys
import textwrap
import time
from typing import Any

import kubernetes
from cryptography.hazmat.primitives import serialization

from benchmarks import harness, report, stats
from webhookcerts.devcluster import base, workloads
from webhookcerts.devcluster import node as devnode
from webhookcerts.domain import durations, models, names, pki, trust

NAME = "pod-reload"
MIN_RUNS = 10
TARGET_S = 2.0
PROBE_INTERVAL = 0.05
APP = "receiver"
TRUST_STORE = "webhook-trust"
SERVING_PAIR = "receiver-tls"
TRUST_VOLUME = "trust"  # the volume workloads.receiver_deployment mounts the trust Secret as
IMAGES_BUILD = harness.REPO / "tools" / "images" / "build.py"
# The kubelet's own default syncFrequency, what a real cluster runs with (the local cluster's tests use 5 s).
KUBELET_DEFAULT_SYNC = "1m"
RUN_TIMEOUT = 600.0


def build_images() -> None:
    """The node's images as the working tree says they should be (seconds when nothing changed)."""
    done = subprocess.run([sys.executable, str(IMAGES_BUILD)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise harness.BenchmarkError(f"building the node's images failed (run `make setup`): {done.stderr[-2000:]}")


# --- certificates ----------------------------------------------------------------------------------


def client_certificate(directory: pathlib.Path, name: str) -> tuple[harness.Files, bytes]:
    """A client certificate of the operator's profile (self-signed, RSA-4096): its files and its PEM."""
    key = pki.generate_private_key()
    subject = models.Subject(common_name=f"{name}.webhooks.example.com", organization="Benchmark")
    cert = pki.issue_certificate(key, subject, datetime.datetime.now(datetime.UTC), datetime.timedelta(hours=2))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return harness.write_pair(directory, name, key_pem, pem), pem


# --- the receiver pod ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def start_pod(handle: harness.Cluster, server: harness.Files, anchor_pem: bytes, port: int) -> tuple[str, pathlib.Path]:
    """Secrets and the Deployment; the running pod's name and its trust volume's directory on the host."""
    handle.core.create_namespaced_secret(
        handle.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=TRUST_STORE),
            data={names.TRUST_KEY: _b64(anchor_pem)},
        ),
    )
    return deploy(handle, server, port)


def deploy(handle: harness.Cluster, server: harness.Files, port: int) -> tuple[str, pathlib.Path]:
    """The serving pair's Secret and the Deployment mounting it and the trust Secret (which must exist:
    the kubelet does not start a pod whose Secret volume is missing); the running pod's name and its
    trust volume's directory on the host."""
    core = handle.core
    core.create_namespaced_secret(
        handle.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=SERVING_PAIR),
            type="kubernetes.io/tls",
            data={names.TLS_CERT: _b64(server.cert.read_bytes()), names.TLS_KEY: _b64(server.key.read_bytes())},
        ),
    )
    # The client takes plain dicts as bodies; its type hints name only its own models.
    body: Any = workloads.receiver_deployment(
        APP, handle.dev.images["webhookcerts"], port, trust_secret=TRUST_STORE, tls_secret=SERVING_PAIR
    )
    kubernetes.client.AppsV1Api(handle.api).create_namespaced_deployment(handle.namespace, body)

    def running() -> Any:
        pods: list[Any] = core.list_namespaced_pod(handle.namespace, label_selector=f"app={APP}").items
        ready = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        return ready[0] if len(ready) == 1 else None

    pod = harness.wait_for(running, timeout=300, what="the receiver pod to run")
    volume = devnode.Layout.of(handle.dev.directory).kubelet_root / "pods" / pod.metadata.uid / "volumes"
    trust_volume = volume / "kubernetes.io~secret" / TRUST_VOLUME
    if not (trust_volume / "..data").is_symlink():
        raise harness.BenchmarkError(f"the trust volume is not where the kubelet keeps it: {trust_volume}")
    return pod.metadata.name, trust_volume


def pod_log(handle: harness.Cluster, pod: str) -> str:
    return handle.kubectl("logs", "-n", handle.namespace, pod)


# --- one run ---------------------------------------------------------------------------------------


def one_run(
    handle: harness.Cluster,
    pod: str,
    volume: pathlib.Path,
    port: int,
    ctx: ssl.SSLContext,
    bundle: bytes,
    *,
    nudge: bool,
) -> dict[str, Any]:
    """Write ``bundle`` as the trust Secret's ``ca.crt`` (nudging the pod or not) and time until the
    pod accepts the certificate ``ctx`` presents."""
    if harness.accepts(port, ctx):
        raise harness.BenchmarkError("the pod accepted the new certificate before the trust Secret listed it")
    core = handle.core
    with harness.DirectoryWatch(volume) as watch:
        started = time.monotonic()
        core.patch_namespaced_secret(TRUST_STORE, handle.namespace, {"data": {names.TRUST_KEY: _b64(bundle)}})
        if nudge:
            # What the operator does for a `reload: Hot` consumer, right after it wrote the trust Secret.
            annotations = {names.consumer_annotation(TRUST_STORE): trust.trust_hash(bundle)}
            core.patch_namespaced_pod(pod, handle.namespace, {"metadata": {"annotations": annotations}})
        while not harness.accepts(port, ctx):
            if time.monotonic() - started > RUN_TIMEOUT:
                raise harness.BenchmarkError(f"the pod still refused the new certificate after {RUN_TIMEOUT:.0f} s")
            time.sleep(PROBE_INTERVAL)
        accepted_at = time.monotonic()
    return {
        "nudge": nudge,
        "accepted_s": round(accepted_at - started, 3),
        "volume_s": round(watch.changed_at - started, 3) if watch.changed_at is not None else None,
    }


def measure(
    directory: pathlib.Path, runs: int = MIN_RUNS, sync_frequency: str = KUBELET_DEFAULT_SYNC
) -> dict[str, Any]:
    period = durations.parse(sync_frequency)
    build_images()
    with harness.cluster(directory, node=True, kubelet_sync_frequency=sync_frequency) as handle:
        server_ca, server = harness.serving_pki(directory / "server-pki")
        clients = directory / "clients"
        anchor, anchor_pem = client_certificate(clients, "anchor")
        port = base.free_port()
        pod, volume = start_pod(handle, server, anchor_pem, port)
        anchor_ctx = harness.client_context(server_ca, anchor)
        harness.wait_for(
            lambda: harness.accepts(port, anchor_ctx), timeout=120, what="the receiver pod to accept the anchor"
        )
        samples: list[dict[str, Any]] = []
        for nudge in (True, False):
            for index in range(runs):
                files, pem = client_certificate(clients, f"{'hot' if nudge else 'sync'}-{index}")
                # Without the nudge, a random point of the kubelet's cycle (see the module's docstring).
                time.sleep(random.uniform(1.0, 1.0 + period.total_seconds()) if not nudge else 1.0)
                samples.append(
                    one_run(
                        handle,
                        pod,
                        volume,
                        port,
                        harness.client_context(server_ca, files),
                        anchor_pem + pem,
                        nudge=nudge,
                    )
                )
        log = pod_log(handle, pod)
    hot = [s for s in samples if s["nudge"]]
    cold = [s for s in samples if not s["nudge"]]
    accepted = {
        "nudge": stats.summary([s["accepted_s"] for s in hot], digits=2),
        "sync": stats.summary([s["accepted_s"] for s in cold], digits=2),
    }
    volume_summary = {
        label: stats.summary(values, digits=2)
        if (values := [s["volume_s"] for s in group if s["volume_s"] is not None])
        else None
        for label, group in (("nudge", hot), ("sync", cold))
    }
    return {
        "benchmark": NAME,
        "secret_to_accepted_s": accepted,
        "secret_to_volume_s": volume_summary,
        "kubelet_sync_frequency": sync_frequency,
        "target_s": TARGET_S,
        "target": f"median with the nudge <= {TARGET_S} s",
        "meets_target": accepted["nudge"]["median"] <= TARGET_S,
        "p95_within_target": accepted["nudge"]["p95"] <= TARGET_S,
        "reloads_logged": log.count('"event": "trust_reloaded"'),
        "samples": samples,
        "probe_interval_s": PROBE_INTERVAL,
        "machine": report.machine(),
    }


def section(result: dict[str, Any], command: str) -> str:
    accepted, volume = result["secret_to_accepted_s"], result["secret_to_volume_s"]
    sync = result["kubelet_sync_frequency"]
    sync_note = (
        "the kubelet's default" if sync == KUBELET_DEFAULT_SYNC else f"the kubelet's default is {KUBELET_DEFAULT_SYNC}"
    )
    rows: list[tuple[object, ...]] = []
    for label, key in (("with the Hot nudge", "nudge"), ("without (kubelet's periodic sync)", "sync")):
        rows.append(
            (f"Secret -> pod accepts, {label}", f"{accepted[key]['median']:.2f}", f"{accepted[key]['p95']:.2f}")
        )
        if volume[key] is not None:
            rows.append(
                (
                    f"Secret -> kubelet swaps the volume, {label}",
                    f"{volume[key]['median']:.2f}",
                    f"{volume[key]['p95']:.2f}",
                )
            )
    verdict = "meets" if result["meets_target"] else "MISSES"
    p95_note = "within" if result["p95_within_target"] else "over"

    def runs(key: str) -> str:
        return ", ".join(f"{s['accepted_s']:.2f}" for s in result["samples"] if s["nudge"] == (key == "nudge"))

    return "\n".join(
        [
            "## Pod reload: trust Secret to the receiver pod accepting the new certificate",
            "",
            textwrap.fill(
                "The receiver as a Deployment on the local node, the trust Secret mounted as a directory volume "
                "(no trust-sync). Each run adds a fresh RSA-4096 client certificate to the trust Secret; the clock "
                "starts just before that write and stops at the first TLS connection presenting the new "
                f"certificate that the pod accepts (probed every {result['probe_interval_s'] * 1000:.0f} ms). "
                f"With the Hot nudge the pod's `{names.consumer_annotation(TRUST_STORE)}` annotation is patched "
                "right after the Secret, as the operator does; without it the kubelet remounts on its periodic "
                "sync of the pod. "
                f"This node's kubelet runs with `syncFrequency: {sync}` ({sync_note}); each run without the nudge "
                "starts after a random wait, so that the change lands at a random point of the kubelet's cycle.",
                width=100,
                break_on_hyphens=False,
            ),
            "",
            report.table(("", "median (s)", "p95 (s)"), rows),
            "",
            f"Target: with the nudge, median <= {result['target_s']:.1f} s: **{verdict}** it (p95 is {p95_note} "
            f"it). {accepted['nudge']['n']} and {accepted['sync']['n']} runs; with 10 runs the p95 is the "
            "slowest run.",
            "",
            f"Runs (s), with the nudge: {runs('nudge')}; without: {runs('sync')}.",
            "",
            report.footer(command, result["machine"]),
        ]
    )

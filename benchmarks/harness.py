"""What the benchmarks run against: the local control plane, the operator, trust-sync and the receiver.

Every process is started the way users start it (``webhookcerts run``, ``webhookcerts trust-sync``,
``webhookcerts receiver``), tied to the benchmark's own process so that an interrupted run leaves
nothing behind, and stopped by its own process id. The tests start theirs the same way: both use
tests/processes.py, drive WebhookCertificates with tests/whc.py and take throw-away serving
certificates from tests/unit/mtls_pki.py, so what is measured is what is tested.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import pathlib
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import kubernetes
import kubernetes.watch
from tests import processes, whc
from tests.unit import mtls_pki

from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.devcluster import node as devnode
from webhookcerts.domain import models

REPO = pathlib.Path(__file__).resolve().parent.parent
CRD = REPO / "crds" / "webhookcertificates.webhookcerts.io.yaml"
T = TypeVar("T")


class BenchmarkError(RuntimeError):
    """Something the benchmark waited for did not happen; the message says what."""


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 120, what: str = "condition") -> T:
    # Polled finely: what follows a wait is often timed.
    try:
        return processes.wait_for(predicate, timeout=timeout, what=what, interval=0.05)
    except processes.TimedOut as exc:
        raise BenchmarkError(str(exc)) from None


class DirectoryWatch:
    """Notes when a trust directory's ``..data`` link first moves (trust-sync or the kubelet wrote a new version)."""

    def __init__(self, trust_dir: pathlib.Path) -> None:
        self._link = trust_dir / "..data"
        self._before = os.readlink(self._link)
        self._stop = threading.Event()
        self.changed_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DirectoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            try:
                if os.readlink(self._link) != self._before:
                    self.changed_at = time.monotonic()
                    return
            except OSError:
                continue


class ApiWatch:
    """Notes when a watch first delivers an object for which ``seen`` is true: what the API server
    announced, at the moment a watcher of its own (the kubelet, trust-sync) could have learnt it.

    The watch starts from a list made on entry, so an object that already matches is not "seen";
    ``list_fn`` and ``kwargs`` are a namespaced list call of the client (a selector narrows it)."""

    def __init__(self, list_fn: Callable[..., Any], seen: Callable[[Any], bool], **kwargs: Any) -> None:
        self._list, self._seen, self._kwargs = list_fn, seen, kwargs
        self._watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        self.changed_at: float | None = None
        self.failed: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ApiWatch:
        self._since = self._list(**self._kwargs).metadata.resource_version
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Not joined: a stopped watch ends only with its next event (or the server's timeout).
        self._watch.stop()  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        try:
            events = self._watch.stream(  # type: ignore[no-untyped-call]
                self._list, resource_version=self._since, timeout_seconds=300, **self._kwargs
            )
            for event in events:
                if event["type"] != "ERROR" and self._seen(event["object"]):
                    self.changed_at = time.monotonic()
                    return
        except Exception as exc:  # the watch failed (the cluster went down, a bad predicate): nothing was seen
            self.failed = f"{type(exc).__name__}: {exc}"


# --- TLS material ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Files:
    cert: pathlib.Path
    key: pathlib.Path


def write_pair(directory: pathlib.Path, name: str, key_pem: bytes, cert_pem: bytes) -> Files:
    return Files(*mtls_pki.write_pem_files(directory, name, key_pem, cert_pem))


def serving_pki(directory: pathlib.Path) -> tuple[pathlib.Path, Files]:
    """A throw-away CA and a serving certificate for 127.0.0.1 signed by it: (CA file, server files)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = mtls_pki.ca(directory, "server-ca")
    server = mtls_pki.issued(directory, "server", ca, server=True)
    return ca.cert_path, Files(server.cert_path, server.key_path)


# --- the receiver ----------------------------------------------------------------------------------


def client_context(server_ca: pathlib.Path, client: Files) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server_ca))
    ctx.load_cert_chain(client.cert, client.key)
    return ctx


def accepts(port: int, ctx: ssl.SSLContext, timeout: float = 10.0) -> bool:
    """One fresh TLS connection and a health request on the loopback: True on 200, False when refused."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        # ssl.SSLError is an OSError: a refused certificate, at handshake or (TLS 1.3) first read.
        return False
    finally:
        conn.close()


@dataclasses.dataclass
class Receiver:
    proc: subprocess.Popen[bytes]
    port: int
    server_ca: pathlib.Path
    log: pathlib.Path

    def client_context(self, client: Files) -> ssl.SSLContext:
        return client_context(self.server_ca, client)

    def accepts(self, ctx: ssl.SSLContext, timeout: float = 10.0) -> bool:
        return accepts(self.port, ctx, timeout)

    def count(self, event: str) -> int:
        needle = f'"event": "{event}"'
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if needle in line)


def start_receiver(
    directory: pathlib.Path,
    trust_dir: pathlib.Path,
    *extra: str,
    log_level: str = "INFO",
    env: dict[str, str] | None = None,
) -> Receiver:
    """``webhookcerts receiver`` serving from ``trust_dir``, its log in ``directory``; ``extra`` flags go last."""
    server_ca, server = serving_pki(directory / "server-pki")
    log = directory / "receiver.log"
    proc = processes.receiver(server.cert, server.key, trust_dir, log, "--log-level", log_level, *extra, env=env)
    port = wait_for(lambda: processes.listening_port(proc, log), timeout=60, what="the receiver to listen")
    return Receiver(proc, port, server_ca, log)


# --- the cluster -----------------------------------------------------------------------------------


class Cluster(whc.Api):
    """The WebhookCertificates of one namespace (tests/whc.py), the cluster they live in, and kubectl."""

    def __init__(self, dev: devcluster.DevCluster, api: kubernetes.client.ApiClient, namespace: str) -> None:
        super().__init__(api, namespace)
        self.dev, self.api = dev, api

    def kubectl(self, *args: str) -> str:
        done = subprocess.run(
            [str(devcluster.binary("kubectl")), f"--kubeconfig={self.dev.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise BenchmarkError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done.stdout


@contextlib.contextmanager
def cluster(
    directory: pathlib.Path,
    namespace: str = "bench",
    *,
    node: bool = False,
    kubelet_sync_frequency: str = devnode.SYNC_FREQUENCY,
) -> Iterator[Cluster]:
    """A control plane (API only, unless ``node``) with the CRD served and one namespace, stopped afterwards."""
    dev = devcluster.DevCluster(directory / "cluster", tie_to_parent=True)
    dev.up(node=node, kubelet_sync_frequency=kubelet_sync_frequency)
    try:
        handle = Cluster(dev, whc.api_client(dev.kubeconfig), namespace)
        handle.kubectl("apply", "-f", str(CRD))
        handle.kubectl("wait", "--for=condition=Established", "crd/webhookcertificates.webhookcerts.io")
        handle.kubectl("create", "namespace", namespace)

        def served() -> bool:
            try:
                handle.kubectl("get", "whc", "-n", namespace)
            except BenchmarkError:
                return False
            return True

        wait_for(served, timeout=60, what="the CRD to be served")
        yield handle
    finally:
        dev.down()


def cut_over_after_emergency(handle: Cluster, name: str) -> None:
    """Back to one Active certificate after an emergency: wait for the replacement, cut over to it."""

    def replaced() -> models.NextCertificate | None:
        status = handle.status(name)
        pending = status.next
        return pending if status.stage == "Compromised" and pending is not None else None

    pending = wait_for(replaced, what="the replacement certificate")
    handle.cutover(name, pending.serial)

    def active() -> bool:
        status = handle.status(name)
        return status.stage == "Active" and status.current is not None and status.current.serial == pending.serial

    wait_for(active, what="the cut-over")


# The environment the image (operator/Dockerfile) and the chart's Deployment give the operator: the
# benchmarks start it with the same, so that its memory figures are what users get.
OPERATOR_ENV = {"MALLOC_ARENA_MAX": "2"}


def operator(
    handle: Cluster, log: pathlib.Path, *, metrics_port: int = 0, module: str = "webhookcerts"
) -> subprocess.Popen[bytes]:
    """``webhookcerts run`` for the handle's namespace; metrics off unless given a port (no fixed port:
    two benchmarks' operators on one machine must not collide)."""
    argv = ["run", "--standalone", "--kubeconfig", str(handle.dev.kubeconfig), "-n", handle.namespace]
    return processes.spawn([*argv, "--metrics-port", str(metrics_port)], log, env=OPERATOR_ENV, module=module)


def trust_sync(
    handle: Cluster, secret: str, directory: pathlib.Path, log: pathlib.Path, *extra: str
) -> subprocess.Popen[bytes]:
    argv = ["trust-sync", "--secret", f"{handle.namespace}/{secret}", "--dir", str(directory)]
    return processes.spawn([*argv, "--kubeconfig", str(handle.dev.kubeconfig), *extra], log)


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False)

"""What the benchmarks run against: the local control plane, the operator, trust-sync and the receiver.

Every process is started the way users start it (``webhookcerts run``, ``webhookcerts trust-sync``,
``webhookcerts receiver``), tied to the benchmark's own process so that an interrupted run leaves
nothing behind, and stopped by its own process id.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import http.client
import ipaddress
import json
import os
import pathlib
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import oid

from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.devcluster import node as devnode
from webhookcerts.domain import models

REPO = pathlib.Path(__file__).resolve().parent.parent
CRD = REPO / "crds" / "webhookcertificates.webhookcerts.io.yaml"
T = TypeVar("T")


class BenchmarkError(RuntimeError):
    """Something the benchmark waited for did not happen; the message says what."""


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 120, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise BenchmarkError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- processes -------------------------------------------------------------------------------------


def spawn(argv: list[str], log_path: pathlib.Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m webhookcerts ARGV`` with its output in ``log_path``, killed if we die."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), **(env or {})}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "webhookcerts", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=full_env,
            start_new_session=True,
            preexec_fn=devcluster.die_with_parent,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --- TLS material ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Files:
    cert: pathlib.Path
    key: pathlib.Path


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pair(directory: pathlib.Path, name: str, key_pem: bytes, cert_pem: bytes) -> Files:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(cert_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    return Files(cert, key)


def serving_pki(directory: pathlib.Path) -> tuple[pathlib.Path, Files]:
    """A throw-away CA and a serving certificate for 127.0.0.1 signed by it: (CA file, server files)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "benchmark server CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "server-ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_path, write_pair(directory, "server", _key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


# --- the receiver ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Receiver:
    proc: subprocess.Popen[bytes]
    port: int
    server_ca: pathlib.Path
    log: pathlib.Path

    def client_context(self, client: Files) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.server_ca))
        ctx.load_cert_chain(client.cert, client.key)
        return ctx

    def accepts(self, ctx: ssl.SSLContext, timeout: float = 10.0) -> bool:
        """One fresh TLS connection and a health request: True on 200, False when refused."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=timeout)
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

    def count(self, event: str) -> int:
        needle = f'"event": "{event}"'
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if needle in line)


def start_receiver(
    directory: pathlib.Path, trust_dir: pathlib.Path, *, log_level: str = "INFO", env: dict[str, str] | None = None
) -> Receiver:
    server_ca, server = serving_pki(directory / "server-pki")
    log = directory / "receiver.log"
    argv = ["receiver", "--cert", str(server.cert), "--key", str(server.key), "--trust-dir", str(trust_dir)]
    proc = spawn([*argv, "--host", "127.0.0.1", "--port", "0", "--log-level", log_level], log, env)

    def listening() -> int | None:
        if proc.poll() is not None:
            raise BenchmarkError(f"the receiver exited: {log.read_text(errors='replace')[-2000:]}")
        match = re.search(r'"event": "listening", "address": "127\.0\.0\.1:(\d+)"', log.read_text(errors="replace"))
        return int(match.group(1)) if match else None

    return Receiver(proc, wait_for(listening, timeout=60, what="the receiver to listen"), server_ca, log)


# --- the cluster -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Cluster:
    dev: devcluster.DevCluster
    api: kubernetes.client.ApiClient
    namespace: str

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

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

    def create(self, name: str, **spec: Any) -> None:
        body_spec: dict[str, Any] = {
            "environment": "sandbox",
            "subject": {"commonName": f"{name}.webhooks.example.com", "organization": "Benchmark"},
            "secretName": f"{name}-tls",
            "trust": {"secretName": "webhook-trust"},
            **spec,
        }
        body = {
            "apiVersion": f"{models.GROUP}/{models.VERSION}",
            "kind": models.KIND,
            "metadata": {"name": name},
            "spec": body_spec,
        }
        self.custom.create_namespaced_custom_object(models.GROUP, models.VERSION, self.namespace, models.PLURAL, body)

    def annotate(self, name: str, annotations: dict[str, str]) -> None:
        self.custom.patch_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            self.namespace,
            models.PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
        )

    def status(self, name: str) -> models.WebhookCertificateStatus:
        obj: Any = self.custom.get_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, name
        )
        return models.WebhookCertificateStatus.model_validate(obj.get("status") or {})

    def secret(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


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
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(dev.kubeconfig), client_configuration=configuration
        )
        api = kubernetes.client.ApiClient(configuration)
        handle = Cluster(dev, api, namespace)
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


def operator(handle: Cluster, log: pathlib.Path) -> subprocess.Popen[bytes]:
    argv = ["run", "--standalone", "--kubeconfig", str(handle.dev.kubeconfig), "-n", handle.namespace]
    # No fixed metrics port: two benchmarks' operators on one machine must not collide.
    return spawn([*argv, "--metrics-port", "0"], log)


def trust_sync(handle: Cluster, secret: str, directory: pathlib.Path, log: pathlib.Path) -> subprocess.Popen[bytes]:
    argv = ["trust-sync", "--secret", f"{handle.namespace}/{secret}", "--dir", str(directory)]
    return spawn([*argv, "--kubeconfig", str(handle.dev.kubeconfig)], log)


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False)

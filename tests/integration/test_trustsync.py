"""trust-sync against a real API server: the directory follows the Secret, in the kubelet's layout."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests import conftest, processes, whc
from webhookcerts.devcluster import base as devbase
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.receiver import trustdir

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[2]


def secret(name: str, data: dict[str, bytes]) -> kubernetes.client.V1Secret:
    return kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name=name),
        data={k: base64.b64encode(v).decode() for k, v in data.items()},
    )


def content(directory: pathlib.Path, name: str = "ca.crt") -> bytes | None:
    try:
        return (directory / name).read_bytes()
    except OSError:
        return None


def trust_sync(cluster: devcluster.DevCluster, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": str(REPO / "operator")}
    return subprocess.Popen(
        [sys.executable, "-m", "webhookcerts", "trust-sync", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        processes.stop(proc)


def test_the_directory_follows_the_secret(
    cluster: devcluster.DevCluster,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
    tmp_path: pathlib.Path,
    stop_later: list[subprocess.Popen[str]],
) -> None:
    directory = tmp_path / "trust"
    core_v1.create_namespaced_secret(namespace, secret("trust", {"ca.crt": b"version 1"}))
    proc = trust_sync(cluster, "--secret", f"{namespace}/trust", "--dir", str(directory))
    stop_later.append(proc)

    assert conftest.poll(lambda: content(directory) == b"version 1", timeout=30.0)
    assert os.readlink(directory / "ca.crt") == "..data/ca.crt"
    first_data_dir = os.readlink(directory / "..data")

    core_v1.replace_namespaced_secret("trust", namespace, secret("trust", {"ca.crt": b"version 2"}))
    assert conftest.poll(lambda: content(directory) == b"version 2", timeout=30.0)
    assert os.readlink(directory / "..data") != first_data_dir

    # Deleting the Secret is not how trust is revoked: the last content stays, nothing is emptied.
    core_v1.delete_namespaced_secret("trust", namespace)
    core_v1.create_namespaced_secret(namespace, secret("trust", {"ca.crt": b"version 3", "other": b"x"}))
    assert conftest.poll(lambda: content(directory) == b"version 3", timeout=30.0)
    assert trustdir.read(directory) == {"ca.crt": b"version 3"}  # only the trust store, unless keys are named

    proc.terminate()
    assert proc.wait(timeout=30) == 0


def test_once_writes_only_the_selected_key_and_exits(
    cluster: devcluster.DevCluster,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
    tmp_path: pathlib.Path,
    stop_later: list[subprocess.Popen[str]],
) -> None:
    directory = tmp_path / "trust"
    core_v1.create_namespaced_secret(namespace, secret("trust", {"ca.crt": b"pem", "tls.key": b"not for us"}))
    proc = trust_sync(cluster, "--secret", f"{namespace}/trust", "--dir", str(directory), "--key", "ca.crt", "--once")
    stop_later.append(proc)

    assert proc.wait(timeout=60) == 0, proc.stdout.read() if proc.stdout else ""
    assert trustdir.read(directory) == {"ca.crt": b"pem"}


def test_a_role_for_that_one_secret_is_enough(
    cluster: devcluster.DevCluster,
    core_v1: kubernetes.client.CoreV1Api,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    tmp_path: pathlib.Path,
    stop_later: list[subprocess.Popen[str]],
) -> None:
    # The API server authorizes a list/watch filtered by metadata.name as a request for that name, so
    # the sidecar needs no access to the namespace's other Secrets.
    kubectl("create", "serviceaccount", "trust-sync", "-n", namespace)
    kubectl(
        "create", "role", "trust-reader", "--verb=get,list,watch", "--resource=secrets", "--resource-name=trust",
        "-n", namespace,
    )  # fmt: skip
    kubectl(
        "create", "rolebinding", "trust-sync", "--role=trust-reader", f"--serviceaccount={namespace}:trust-sync",
        "-n", namespace,
    )  # fmt: skip
    kubeconfig = conftest.token_kubeconfig(
        kubectl, cluster, "trust-sync", namespace, tmp_path / "kubeconfig", default_namespace=True
    )
    core_v1.create_namespaced_secret(namespace, secret("trust", {"ca.crt": b"least privilege"}))
    directory = tmp_path / "trust"
    proc = trust_sync(
        cluster, "--secret", f"{namespace}/trust", "--dir", str(directory), "--kubeconfig", str(kubeconfig)
    )
    stop_later.append(proc)

    assert conftest.poll(lambda: content(directory) == b"least privilege", timeout=30.0)
    core_v1.replace_namespaced_secret("trust", namespace, secret("trust", {"ca.crt": b"and it watches"}))
    assert conftest.poll(lambda: content(directory) == b"and it watches", timeout=30.0)
    denied = kubectl("get", "secrets", "--kubeconfig", str(kubeconfig), check=False)
    assert denied.returncode != 0


def _certificate(cn: str) -> bytes:
    return whc.self_signed_pem(cn)


def _keytool_fingerprints(store: pathlib.Path, password: str) -> list[str]:
    keytool = shutil.which("keytool")
    assert keytool is not None
    listed = subprocess.run(
        [keytool, "-list", "-keystore", str(store), "-storepass", password, "-storetype", "JKS"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert listed.stdout.count(", trustedCertEntry,") == listed.stdout.count("Certificate fingerprint (SHA-256)")
    return sorted(
        line.split(": ", 1)[1].strip()
        for line in listed.stdout.splitlines()
        if line.startswith("Certificate fingerprint (SHA-256)")
    )


def _fingerprints(pem: bytes) -> list[str]:
    return sorted(
        ":".join(f"{b:02X}" for b in c.fingerprint(hashes.SHA256())) for c in x509.load_pem_x509_certificates(pem)
    )


def _records(log: pathlib.Path, *events: str) -> list[dict[str, object]]:
    lines = log.read_text().splitlines() if log.exists() else []
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    return [r for r in parsed if r.get("event") in events]


@pytest.mark.skipif(shutil.which("keytool") is None, reason="keytool (a JDK) is not installed: nothing reads a JKS")
def test_a_jks_truststore_and_a_reload_command_once_per_change(
    cluster: devcluster.DevCluster,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    directory, reloads, log = tmp_path / "trust", tmp_path / "reloads.log", tmp_path / "trust-sync.log"
    password_file = tmp_path / "password"
    password_file.write_text("not-changeit\n")
    # The reload command records how many certificates ca.crt held when it ran, and fails the first
    # time: trust-sync must log that and go on. Quoted for shlex, run without a shell.
    code = (
        "import sys; n = open(sys.argv[2]).read().count('BEGIN CERTIFICATE'); "
        "open(sys.argv[1], 'a').write(f'{n}\\n'); sys.exit(7 if n == 1 else 0)"
    )
    command = shlex.join([sys.executable, "-c", code, str(reloads), str(directory / "ca.crt")])
    first, second = _certificate("client-1"), _certificate("client-2")
    core_v1.create_namespaced_secret(namespace, secret("trust", {"ca.crt": first}))
    argv = ["trust-sync", "--secret", f"{namespace}/trust", "--dir", str(directory), "--format", "jks"]
    extra = ["--password-file", str(password_file), "--exec", command]
    proc = processes.spawn([*argv, *extra], log, env={"KUBECONFIG": str(cluster.kubeconfig)})
    try:
        assert conftest.poll(lambda: len(_records(log, "exec", "exec_failed")) == 1, timeout=30.0), log.read_text()
        assert reloads.read_text() == "1\n"
        assert _keytool_fingerprints(directory / "truststore.jks", "not-changeit") == _fingerprints(first)

        # A new resourceVersion with the same certificates: no swap, no reload. Then a real change.
        unchanged = secret("trust", {"ca.crt": first})
        unchanged.metadata.labels = {"touched": "yes"}
        core_v1.replace_namespaced_secret("trust", namespace, unchanged)
        core_v1.replace_namespaced_secret("trust", namespace, secret("trust", {"ca.crt": first + second}))

        assert conftest.poll(lambda: len(_records(log, "exec", "exec_failed")) == 2, timeout=30.0), log.read_text()
        assert reloads.read_text() == "1\n2\n"
        assert _keytool_fingerprints(directory / "truststore.jks", "not-changeit") == _fingerprints(first + second)
        runs = [(r["event"], r["exit_status"]) for r in _records(log, "exec", "exec_failed")]
        assert runs == [("exec_failed", 7), ("exec", 0)]  # the failure was logged, and survived
        writes = [r["event"] for r in _records(log, "synced", "unchanged")]
        assert writes[0] == "synced"
        assert writes.count("synced") == 2
        assert "unchanged" in writes[1 : writes.index("synced", 1)]
        assert "not-changeit" not in log.read_text()
    finally:
        processes.stop(proc)
    assert proc.returncode == 0, log.read_text()


def test_only_the_trust_store_is_copied_and_an_update_never_waits_for_a_hung_reload(
    cluster: devcluster.DevCluster,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    """The ingress layout (the endpoint's serving pair beside our ca.crt): only ca.crt is written. The
    reload command hangs for the first version (600 s allowed: waiting for it would time this test
    out); the next version, an emergency's, is written at once, the hung run killed, the command run
    for the new version. The order is trust-sync's own log."""
    directory, log = tmp_path / "trust", tmp_path / "trust-sync.log"
    started, ran = tmp_path / "hung.pid", tmp_path / "ran"
    script = (
        f'if [ "$(cat {directory}/ca.crt)" = v1 ]; then '
        f"sleep 600 & echo $! > {started}.new && mv {started}.new {started}; wait; "
        f"else cat {directory}/ca.crt > {ran}; fi"
    )
    key = b"-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----\n"
    serving = {"tls.crt": _certificate("endpoint"), "tls.key": key}
    core_v1.create_namespaced_secret(namespace, secret("trust", {"ca.crt": b"v1", **serving}))
    argv = ["trust-sync", "--secret", f"{namespace}/trust", "--dir", str(directory)]
    argv += ["--exec", shlex.join(["sh", "-c", script]), "--exec-timeout", "600"]
    proc = processes.spawn(argv, log, env={"KUBECONFIG": str(cluster.kubeconfig)})
    try:
        # The positive control: the first run is under way, hung, when the next version is written.
        conftest.wait_for(lambda: started.exists() and started.read_text().strip(), what="the hung reload")
        assert trustdir.read(directory) == {"ca.crt": b"v1"}
        core_v1.replace_namespaced_secret("trust", namespace, secret("trust", {"ca.crt": b"v2", **serving}))

        assert conftest.poll(lambda: ran.exists() and ran.read_text() == "v2", timeout=60.0), log.read_text()
        assert trustdir.read(directory) == {"ca.crt": b"v2"}
        events = ("synced", "exec_started", "exec_superseded", "exec", "exec_failed")
        conftest.wait_for(lambda: len(_records(log, "exec")) == 1, what="the second run's record")
        order = [str(r["event"]) for r in _records(log, *events)]
        assert order == ["synced", "exec_started", "synced", "exec_superseded", "exec_started", "exec"], order
        hung = int(started.read_text())
        conftest.wait_for(lambda: not devbase.pid_alive(hung), what="the hung run's child killed")
    finally:
        processes.stop(proc)
        pid = int(started.read_text()) if started.exists() and started.read_text().strip() else None
        if pid is not None and devbase.pid_alive(pid) and "sleep" in devbase.cmdline(pid):
            os.kill(pid, 9)
    assert proc.returncode == 0, log.read_text()
    assert "MC4=" not in log.read_text()

"""trust-sync against a real API server: the directory follows the Secret, in the kubelet's layout."""

from __future__ import annotations

import base64
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import kubernetes
import pytest

from tests import conftest, processes
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
    assert trustdir.read(directory) == {"ca.crt": b"version 3", "other": b"x"}

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

"""End-to-end fixtures: a local cluster with a real node, for the project's image running as Pods.

The node cluster is its own DevCluster in a temporary directory, beside the API-only ``cluster`` of the
session (tests/conftest.py): separate ports, containerd socket, root and state, kubelet root dir and
ports. It is tied to the pytest process and stopped at the end of the session whatever happened.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests import conftest
from tests import servers as launchers
from webhookcerts.devcluster import cluster as devcluster

IMAGES_BUILD = conftest.REPO / "tools" / "images" / "build.py"


@pytest.fixture(scope="session")
def node_images() -> None:
    """The images as the working tree says they should be: rebuilt when an input changed, else seconds."""
    done = subprocess.run([sys.executable, str(IMAGES_BUILD)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"building the node's images failed (run `make setup`):\n{done.stderr[-4000:]}")


@pytest.fixture(scope="session")
def node_cluster(
    tmp_path_factory: pytest.TempPathFactory, node_images: None, bin_dir: pathlib.Path
) -> Iterator[devcluster.DevCluster]:
    """etcd, kube-apiserver, controller-manager, scheduler, containerd and a kubelet, for the session."""
    dev = devcluster.DevCluster(tmp_path_factory.mktemp("node") / "cluster", tie_to_parent=True)
    dev.up(node=True)
    try:
        yield dev
    finally:
        dev.down()


@pytest.fixture(scope="session")
def node_kubectl(node_cluster: devcluster.DevCluster, bin_dir: pathlib.Path) -> conftest.KubectlRunner:
    return conftest.KubectlRunner(bin_dir / "kubectl", node_cluster.kubeconfig)


@pytest.fixture
def node_namespace(node_kubectl: conftest.KubectlRunner) -> Iterator[str]:
    """A fresh namespace on the node cluster; deleting it stops its Pods (the namespace controller runs)."""
    name = f"n-{uuid.uuid4().hex[:10]}"
    node_kubectl("create", "namespace", name)
    yield name
    node_kubectl("delete", "namespace", name, "--wait=false")


def apply(kubectl: conftest.KubectlRunner, *objects: dict[str, Any]) -> None:
    """kubectl apply of objects given as dicts (JSON is YAML)."""
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def host_network_pod_spec(cluster: devcluster.DevCluster, command: list[str], **extra: Any) -> dict[str, Any]:
    """A Pod spec for the project image on the host's network, with in-cluster API access."""
    container: dict[str, Any] = {
        "name": "main",
        "image": cluster.images["webhookcerts"],
        "command": command,
        "env": cluster.pod_api_env(),
    }
    container.update(extra.pop("container", {}))
    return {"hostNetwork": True, "containers": [container], **extra}


def pod_phase(kubectl: conftest.KubectlRunner, namespace: str, selector: str) -> str | None:
    """The phase of the one Pod matching ``selector`` ("" when none yet)."""
    out = kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    pods = json.loads(out)["items"]
    return pods[0]["status"].get("phase", "") if pods else ""


# --- the servers of test_servers.py and test_servers_static.py: serving certificates, Java and Go built --


@pytest.fixture(scope="session")
def java_classes(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return launchers.compile_java(tmp_path_factory.mktemp("java-server"))


@pytest.fixture(scope="session")
def go_server(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return launchers.build_go(tmp_path_factory.mktemp("go-server"))

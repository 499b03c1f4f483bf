"""Shared fixtures: a real local control plane per test session and a fresh namespace per test.

The control plane starts only when a test asks for it (unit tests never pay for it), is tied to the
pytest process so that even a SIGKILLed run leaves no etcd or API server behind, and is stopped at the
end of the session whatever happened. Beside the fixtures are the helpers that tests of several modules
share (kubectl, helm, the operator as a process, polling, a ServiceAccount's kubeconfig, metrics).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import kubernetes
import pytest
import yaml
from prometheus_client import parser

from tests import processes, whc
from tests import servers as launchers
from webhookcerts.devcluster import cluster as devcluster

REPO = processes.REPO
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``long`` first, the rest in their usual order.

    With pytest-xdist (``make test``) workers take tests in this order and steal from each other's
    queues: a long test handed out last would leave one worker running it alone at the end.
    """
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session")
def bin_dir() -> pathlib.Path:
    return devcluster.bin_dir()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, bin_dir: pathlib.Path) -> Iterator[devcluster.DevCluster]:
    """A real etcd + kube-apiserver for the whole session (API only, no node)."""
    dev = devcluster.DevCluster(tmp_path_factory.mktemp("devcluster") / "cluster", tie_to_parent=True)
    dev.up(node=False)
    old_path = os.environ.get("PATH", "")
    # The pinned kubectl and helm come first, never the machine's own.
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
    try:
        yield dev
    finally:
        os.environ["PATH"] = old_path
        dev.down()


@pytest.fixture(scope="session")
def api_client(cluster: devcluster.DevCluster) -> kubernetes.client.ApiClient:
    return whc.api_client(cluster.kubeconfig)


@pytest.fixture(scope="session")
def core_v1(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture
def namespace(core_v1: kubernetes.client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (no namespace controller runs: objects stay in etcd,
    which is harmless for a throw-away cluster)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core_v1.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
    yield name
    core_v1.delete_namespace(name)


@pytest.fixture
def kubectl(cluster: devcluster.DevCluster, bin_dir: pathlib.Path) -> KubectlRunner:
    return KubectlRunner(bin_dir / "kubectl", cluster.kubeconfig)


class KubectlRunner:
    """Runs the pinned kubectl against the session's cluster."""

    def __init__(self, executable: pathlib.Path, kubeconfig: pathlib.Path) -> None:
        self.executable = executable
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.executable), *self._config_args(args), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def _config_args(self, args: tuple[str, ...]) -> list[str]:
        # A call that brings its own --kubeconfig (another user) must not get the admin's as well.
        return [] if any(a.startswith("--kubeconfig") for a in args) else [f"--kubeconfig={self.kubeconfig}"]


class OperatorProcess:
    """The operator as users run it (``webhookcerts run``), in a subprocess a test may kill."""

    def __init__(
        self,
        kubeconfig: pathlib.Path,
        namespace: str | None,
        log_path: pathlib.Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``namespace`` None watches every namespace; ``extra_args`` go last (they win over ours)."""
        self.kubeconfig, self.namespace, self.log_path = kubeconfig, namespace, log_path
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["run", "--standalone", "-v", "--kubeconfig", str(self.kubeconfig)]
        argv += ["-n", self.namespace] if self.namespace else []
        # No metrics endpoint unless a test asks for one: operators of several tests may run at once.
        argv += ["--metrics-port", "0", *self.extra_args]
        self.proc = processes.spawn(argv, self.log_path)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or an OOM kill would leave things."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            devcluster.stop_pid(self.proc.pid)
            self.proc.wait(timeout=10)
            self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def operator_args() -> Sequence[str]:
    """Extra arguments of the ``operator`` fixture's ``webhookcerts run``; a test module may override it."""
    return ()


@pytest.fixture
def operator(
    cluster: devcluster.DevCluster,
    namespace: str,
    crd_installed: None,
    tmp_path: pathlib.Path,
    operator_args: Sequence[str],
) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace; its log is printed when the test fails."""
    proc = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log", operator_args)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log ---\n{proc.logs()[-20000:]}")


def poll(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Whether ``condition`` holds within ``timeout``, for tests that assert it themselves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# Shared with the benchmarks and tests/servers.py, which cannot import this module's fixtures.
wait_for = processes.wait_for


CRD_FILE = REPO / "crds" / "webhookcertificates.webhookcerts.io.yaml"
REPORT_CRD_FILE = REPO / "crds" / "presentationreports.webhookcerts.io.yaml"


@pytest.fixture(scope="session")
def crd_installed(cluster: devcluster.DevCluster, bin_dir: pathlib.Path) -> None:
    """The project's CRDs applied with the pinned kubectl, as users apply them, and serving."""
    run = KubectlRunner(bin_dir / "kubectl", cluster.kubeconfig)
    run("apply", "-f", str(CRD_FILE), "-f", str(REPORT_CRD_FILE))
    # kubectl wait fails at once ("accessor error") while the CRD has no status yet: ask again.
    wait_for(
        lambda: (
            run(
                "wait",
                "--for=condition=Established",
                "crd/webhookcertificates.webhookcerts.io",
                "--timeout=60s",
                check=False,
            ).returncode
            == 0
        ),
        timeout=90,
        what="the CRD to be established",
    )
    # Established comes a moment before the resource is served: wait until a list answers.
    wait_for(
        lambda: run("get", "whc,whcreport", "-A", check=False).returncode == 0, timeout=30, what="the CRDs to serve"
    )


class HelmRunner:
    """Runs the pinned helm against one cluster; a failure fails the test with helm's output."""

    def __init__(self, executable: pathlib.Path, kubeconfig: pathlib.Path, *, timeout: float = 300) -> None:
        self.executable, self.kubeconfig, self.timeout = executable, kubeconfig, timeout

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.executable), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done


def token_kubeconfig(
    kubectl: KubectlRunner,
    dev: devcluster.DevCluster,
    account: str,
    namespace: str,
    path: pathlib.Path,
    *,
    duration: str | None = None,
    default_namespace: bool = False,
    bound_pod: tuple[str, str] | None = None,
) -> pathlib.Path:
    """A kubeconfig that authenticates as the ServiceAccount ``namespace/account``, with nothing of the
    admin's; ``default_namespace`` makes its context name that namespace, as a user's kubeconfig may.
    ``bound_pod`` (name, uid) binds the token to that Pod, as the kubelet's projected token is: its
    user info then carries the pod's name and uid."""
    args = ["create", "token", account, "-n", namespace]
    if bound_pod is not None:
        pod, uid = bound_pod
        args += ["--bound-object-kind=Pod", f"--bound-object-name={pod}", f"--bound-object-uid={uid}"]
    token = kubectl(*args, *([f"--duration={duration}"] if duration else [])).stdout.strip()
    context = {"cluster": "dev", "user": account, **({"namespace": namespace} if default_namespace else {})}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "dev",
                        "cluster": {
                            "server": dev.apiserver_url,
                            "certificate-authority": str(dev.directory / "pki" / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": account, "context": context}],
                "current-context": account,
            }
        )
    )
    return path


Scraped = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Scraped:
    """The operator's /metrics on a loopback port, fetched with curl as Prometheus would, by series."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parser.text_string_to_metric_families(done.stdout)
        for s in family.samples
    }


# --- real servers on the loopback (tests/servers.py): unit, integration and e2e tests run them ----------


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> launchers.Material:
    """Serving and client certificates for the servers a module runs."""
    return launchers.make_material(tmp_path_factory.mktemp("servers-pki"))


@pytest.fixture
def workspace(material: launchers.Material, tmp_path: pathlib.Path) -> Iterator[launchers.Workspace]:
    """Where a test's servers run; stopped, and their logs printed, afterwards."""
    ws = launchers.Workspace(tmp_path, material)
    try:
        yield ws
    finally:
        ws.stop()
        ws.dump()

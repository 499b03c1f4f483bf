"""The local cluster's node runs the project's image as a real cluster would, and leaves nothing behind.

Proof for the node (issue 7): a Deployment of the project image reaches Running; ``kubectl logs`` and
``exec`` reach its container through the kubelet; a Pod's ServiceAccount token reaches the API server and
RBAC applies to it; two clusters run side by side; ``down``, an interrupted ``up`` and the ``up`` after a
SIGKILLed cluster leave no process, shim, container or mount; missing parts and a node that never
registers fail with a message that says what to do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests import conftest
from tests.e2e import conftest as e2e
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.devcluster import node as devnode

pytestmark = pytest.mark.e2e

SLEEPER = ["python3", "-c", "import time\nprint('pod says hello', flush=True)\nwhile True: time.sleep(1)"]


# --- what runs on the machine ----------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _alive(process: tuple[int, str]) -> bool:
    """The same process (pid and start time) still runs; a zombie counts as gone."""
    return _start_time(process[0]) == process[1]


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode() for a in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()]


def _processes_naming(directory: pathlib.Path) -> list[tuple[int, str]]:
    """Live processes whose command line names ``directory`` or its containerd socket: the cluster's
    own and the shims."""
    needles = (str(directory), str(devnode.Layout.of(directory).root))
    found = []
    for pid in _pids():
        if pid != os.getpid() and any(n in arg for arg in _cmdline(pid) for n in needles):
            start = _start_time(pid)
            if start is not None:
                found.append((pid, start))
    return found


def _containers_of(directory: pathlib.Path) -> list[tuple[int, str]]:
    """The shims serving the cluster's containerd and every process below them (pause and workloads)."""
    socket = str(devnode.Layout.of(directory).socket)
    parents = {}
    for pid in _pids():
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[pid] = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    found = [pid for pid in parents if socket in _cmdline(pid) and "containerd-shim" in _cmdline(pid)[0]]
    todo = list(found)
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return [(pid, start) for pid in found if (start := _start_time(pid)) is not None]


def _mounts_of(directory: pathlib.Path) -> list[str]:
    """Mount points under the cluster directory or its node's directory."""
    roots = (str(directory), str(devnode.Layout.of(directory).root))
    lines = pathlib.Path("/proc/self/mountinfo").read_text().splitlines()
    points = [line.split()[4] for line in lines]
    return [p for p in points if any(p == root or p.startswith(f"{root}/") for root in roots)]


def _run_pod_with_a_secret_volume(cluster: devcluster.DevCluster, kubectl: conftest.KubectlRunner) -> None:
    """A Pod with a Secret volume (a tmpfs mount), a sandbox (shm mount) and a container (overlay)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mounted", "namespace": "default"},
        "data": {"greeting": base64.b64encode(b"hello").decode()},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default", "labels": {"app": "sleeper"}},
        "spec": e2e.host_network_pod_spec(
            cluster,
            SLEEPER,
            container={"volumeMounts": [{"name": "secret", "mountPath": "/etc/mounted"}]},
            volumes=[{"name": "secret", "secret": {"secretName": "mounted"}}],
        ),
    }
    e2e.apply(kubectl, secret, pod)
    conftest.wait_for(
        lambda: e2e.pod_phase(kubectl, "default", "app=sleeper") == "Running", what="the sleeper Pod to run"
    )


def _kubectl_for(cluster: devcluster.DevCluster, bin_dir: pathlib.Path) -> conftest.KubectlRunner:
    return conftest.KubectlRunner(bin_dir / "kubectl", cluster.kubeconfig)


def _sigkill_launcher(cluster: devcluster.DevCluster) -> None:
    """What a `kill -9` of the test run does to the launcher's processes: no chance to clean up."""
    state = devcluster.State.load(cluster.directory)
    assert state is not None
    for component in state.components:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.pid, signal.SIGKILL)
    for proc in cluster.processes.values():
        proc.wait(timeout=10)
    cluster.processes.clear()


# --- Pods on the node --------------------------------------------------------------------------------


def test_deployment_of_the_project_image_runs_and_answers_logs_and_exec(
    node_cluster: devcluster.DevCluster, node_kubectl: conftest.KubectlRunner, node_namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": node_namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": e2e.host_network_pod_spec(node_cluster, SLEEPER),
            },
        },
    }
    e2e.apply(node_kubectl, deployment)
    node_kubectl("rollout", "status", "deployment/probe", "-n", node_namespace, "--timeout=90s")
    assert e2e.pod_phase(node_kubectl, node_namespace, "app=probe") == "Running"

    logs = conftest.wait_for(
        lambda: node_kubectl("logs", "deployment/probe", "-n", node_namespace).stdout, what="the Pod's log"
    )
    assert "pod says hello" in logs

    help_text = node_kubectl("exec", "deployment/probe", "-n", node_namespace, "--", "webhookcerts", "--help").stdout
    assert "usage: webhookcerts" in help_text
    # The image runs as the non-root user its Dockerfile names.
    assert node_kubectl("exec", "deployment/probe", "-n", node_namespace, "--", "id", "-u").stdout.strip() == "10001"


def test_a_pods_service_account_token_reaches_the_api_under_rbac(
    node_cluster: devcluster.DevCluster, node_kubectl: conftest.KubectlRunner, node_namespace: str
) -> None:
    ns = node_namespace
    lister = (
        "import kubernetes\n"
        "kubernetes.config.load_incluster_config()\n"
        "api = kubernetes.client.CoreV1Api()\n"
        f"print('configmaps:', sorted(c.metadata.name for c in api.list_namespaced_config_map({ns!r}).items))\n"
        "try:\n"
        f"    api.list_namespaced_secret({ns!r})\n"
        "    print('secrets: allowed')\n"
        "except kubernetes.client.ApiException as exc:\n"
        "    print('secrets:', exc.status)\n"
    )
    e2e.apply(
        node_kubectl,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lister", "namespace": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "visible", "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-configmaps", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lister-reads-configmaps", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "lister", "namespace": ns, "labels": {"app": "lister"}},
            "spec": e2e.host_network_pod_spec(
                node_cluster, ["python3", "-c", lister], serviceAccountName="lister", restartPolicy="Never"
            ),
        },
    )
    phase = conftest.wait_for(
        lambda: (p := e2e.pod_phase(node_kubectl, ns, "app=lister")) in ("Succeeded", "Failed") and p,
        what="the lister Pod to finish",
    )
    logs = node_kubectl("logs", "lister", "-n", ns).stdout
    assert phase == "Succeeded", logs
    # Admission mounted a projected token, the API server took it, and RBAC decided per resource.
    pod = json.loads(node_kubectl("get", "pod", "lister", "-n", ns, "-o", "json").stdout)
    assert any("projected" in volume for volume in pod["spec"]["volumes"])
    assert "configmaps: ['kube-root-ca.crt', 'visible']" in logs
    assert "secrets: 403" in logs


def test_status_shows_every_part_and_the_node_conditions(node_cluster: devcluster.DevCluster) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "webhookcerts", "devcluster", "status", "--dir", str(node_cluster.directory)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(conftest.REPO / "operator")},
    ).stdout
    for part in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet"):
        assert any(line.startswith(part) and " running " in line for line in out.splitlines()), out
    assert "Ready=True" in out
    assert node_cluster.images["webhookcerts"] in out


# --- teardown, leftovers, two clusters -----------------------------------------------------------------


def test_two_clusters_run_side_by_side_and_down_leaves_nothing_behind(
    tmp_path: pathlib.Path,
    node_cluster: devcluster.DevCluster,
    node_kubectl: conftest.KubectlRunner,
    node_namespace: str,
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
) -> None:
    # The session's node keeps a Pod running while a second node comes and goes beside it (and the
    # session's API-only cluster runs too).
    witness = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "witness", "namespace": node_namespace, "labels": {"app": "witness"}},
        "spec": e2e.host_network_pod_spec(node_cluster, SLEEPER),
    }
    e2e.apply(node_kubectl, witness)
    conftest.wait_for(lambda: e2e.pod_phase(node_kubectl, node_namespace, "app=witness") == "Running", what="witness")
    witness_processes = _containers_of(node_cluster.directory)

    second = devcluster.DevCluster(tmp_path / "second", tie_to_parent=True)
    second.up(node=True)
    try:
        _run_pod_with_a_secret_volume(second, _kubectl_for(second, bin_dir))
        processes = _processes_naming(second.directory)
        containers = _containers_of(second.directory)
        mounts = _mounts_of(second.directory)
    finally:
        second.down()

    # Before: a shim with pause and the workload below it, and every kind of mount a Pod makes.
    assert len(containers) >= 3
    assert any("kubernetes.io~secret" in m for m in mounts)
    assert any(m.endswith("/shm") for m in mounts)
    assert any(m.endswith("/rootfs") for m in mounts)
    # After: nothing.
    assert not [p for p in processes + containers if _alive(p)]
    assert not _processes_naming(second.directory)
    assert not _mounts_of(second.directory)
    assert not second.directory.exists()
    assert not devnode.Layout.of(second.directory).root.exists()
    # The other cluster did not notice.
    assert all(_alive(p) for p in witness_processes)
    assert e2e.pod_phase(node_kubectl, node_namespace, "app=witness") == "Running"
    assert devcluster.State.load(cluster.directory) is not None


def test_up_after_a_killed_cluster_removes_what_it_left(
    tmp_path: pathlib.Path, node_images: None, bin_dir: pathlib.Path
) -> None:
    directory = tmp_path / "killed"
    first = devcluster.DevCluster(directory, tie_to_parent=True)
    first.up(node=True)
    try:
        _run_pod_with_a_secret_volume(first, _kubectl_for(first, bin_dir))
        containers = _containers_of(directory)
        mounts = set(_mounts_of(directory))
        _sigkill_launcher(first)
    except BaseException:
        first.down()
        raise
    # Shims and containers outlive a killed containerd, and the mounts stay: that is what needs cleaning.
    assert containers
    assert all(_alive(p) for p in containers)
    assert any("kubernetes.io~secret" in m for m in mounts)

    again = devcluster.DevCluster(directory, tie_to_parent=True)
    again.up(node=True)
    try:
        assert not [p for p in containers if _alive(p)]
        now = _mounts_of(directory)
        # The new kubelet mounts its root dir again at the same path; nothing of the old Pod remains.
        assert not (mounts - {str(devnode.Layout.of(directory).kubelet_root)}) & set(now)
        assert now.count(str(devnode.Layout.of(directory).kubelet_root)) <= 1
    finally:
        again.down()
    assert not _mounts_of(directory)
    assert not _processes_naming(directory)


def test_a_killed_cluster_elsewhere_is_cleaned_by_the_next_node_up(
    tmp_path: pathlib.Path, node_images: None, bin_dir: pathlib.Path
) -> None:
    # A SIGKILLed test run leaves its cluster in a temporary directory nobody will `down` again.
    dead = devcluster.DevCluster(tmp_path / "dead", tie_to_parent=True)
    dead.up(node=True)
    try:
        _run_pod_with_a_secret_volume(dead, _kubectl_for(dead, bin_dir))
        containers = _containers_of(dead.directory)
        _sigkill_launcher(dead)
    except BaseException:
        dead.down()
        raise
    assert containers
    assert all(_alive(p) for p in containers)
    assert _mounts_of(dead.directory)

    other = devcluster.DevCluster(tmp_path / "other", tie_to_parent=True)
    other.up(node=True)
    try:
        assert not [p for p in containers if _alive(p)]
        assert not _mounts_of(dead.directory)
        assert not _processes_naming(dead.directory)
        assert not devnode.Layout.of(dead.directory).root.exists()
    finally:
        other.down()
        dead.down()


# --- what a user is told -----------------------------------------------------------------------------


def test_up_without_containerd_says_to_run_make_setup(
    tmp_path: pathlib.Path, bin_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOKCERTS_BIN_DIR", str(bin_dir))
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    dev = devcluster.DevCluster(tmp_path / "c")
    with pytest.raises(devcluster.DevClusterError, match=r"containerd.*not found.*make setup"):
        dev.up(node=True)
    assert not dev.directory.exists()


def test_up_without_a_kubelet_says_to_run_make_setup(
    tmp_path: pathlib.Path, bin_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = tmp_path / "bin"
    partial.mkdir()
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        (partial / name).symlink_to(bin_dir / name)
    monkeypatch.setenv("WEBHOOKCERTS_BIN_DIR", str(partial))
    dev = devcluster.DevCluster(tmp_path / "c")
    with pytest.raises(devcluster.DevClusterError, match=r"kubelet is not built.*make setup"):
        dev.up(node=True)
    assert not dev.directory.exists()


def test_a_node_that_never_registers_times_out_with_the_kubelets_last_lines(
    tmp_path: pathlib.Path, bin_dir: pathlib.Path, node_images: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        (fake / name).symlink_to(bin_dir / name)
    # A kubelet that runs, logs and never registers, as one with a broken configuration would.
    kubelet = fake / "kubelet"
    kubelet.write_text(
        "#!/bin/sh\necho 'E0000 kubelet: cannot register node: the fault this test injects'\nexec sleep 600\n"
    )
    kubelet.chmod(0o755)
    monkeypatch.setenv("WEBHOOKCERTS_BIN_DIR", str(fake))
    dev = devcluster.DevCluster(tmp_path / "c", tie_to_parent=True)
    with pytest.raises(devcluster.DevClusterError) as failure:
        dev.up(node=True, node_timeout=8)
    message = str(failure.value)
    assert "timed out after 8 s waiting for kubelet (node localhost to register" in message
    assert "cannot register node: the fault this test injects" in message
    # The failed `up` cleaned up after itself.
    assert not dev.directory.exists()
    assert not _processes_naming(dev.directory)

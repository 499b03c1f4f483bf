"""Start, inspect and stop a local Kubernetes cluster, as controller-runtime's envtest does, plus a node.

``up`` starts etcd and kube-apiserver and, unless told ``node=False`` (``--no-node``), a real node:
containerd, a kubelet, kube-controller-manager and kube-scheduler (see ``node``). Most tests want the
API alone, which starts in a few seconds; the node is for running the project's image as Pods.

State lives in one directory (``.devcluster`` by default): the PKI, etcd's data, the logs, the
kubeconfig, the node's files and ``state.json`` with the process ids. Every process runs in a session
of its own so that ``down`` can kill it with everything it spawned. A directory left behind by a dead
cluster is cleaned by the next ``up``; a live one is refused rather than silently replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

from webhookcerts.devcluster import base, chart, pki, teardown
from webhookcerts.devcluster import node as devnode

READY_TIMEOUT = 90.0
# Stop order matters: the kubelet and the controllers first (nothing may restart a container), the
# containers, containerd, then the API server before etcd (one that outlives etcd hangs for minutes in
# graceful shutdown).
_STOP_FIRST = devnode.STOP_FIRST
_STOP_LAST = ("containerd", "kube-apiserver", "etcd")
# What ``stop_component`` and ``start_component`` take: a control plane process, one at a time.
RESTARTABLE = ("etcd", "kube-apiserver")

# Kept here for the callers that know them as cluster.X.
DevClusterError = base.DevClusterError
bin_dir = base.bin_dir
binary = base.binary
free_port = base.free_port
check_port_free = base.check_port_free
die_with_parent = base.die_with_parent
pid_alive = base.pid_alive
stop_pid = base.stop_pid


@dataclasses.dataclass
class Component:
    name: str
    pid: int
    log: str


@dataclasses.dataclass
class State:
    directory: str
    apiserver_url: str
    etcd_url: str
    components: list[Component]
    node: bool = False
    # Image references by name ("webhookcerts", "pause"), for Pods on the node.
    images: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def load(cls, directory: pathlib.Path) -> State | None:
        path = directory / "state.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            directory=raw["directory"],
            apiserver_url=raw["apiserver_url"],
            etcd_url=raw["etcd_url"],
            components=[Component(**c) for c in raw["components"]],
            node=bool(raw.get("node", False)),
            images=dict(raw.get("images", {})),
        )


class DevCluster:
    """One local cluster rooted at ``directory``."""

    def __init__(self, directory: pathlib.Path, *, tie_to_parent: bool = False) -> None:
        self.directory = directory.resolve()
        self.tie_to_parent = tie_to_parent
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # The command line each process was started with, so that one can be started again alone.
        self._argv: dict[str, list[str]] = {}
        self.apiserver_url = ""
        self.etcd_url = ""
        self._node: devnode.Node | None = None

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.directory / "kubeconfig"

    @property
    def chart_values(self) -> pathlib.Path:
        """The chart's values for this cluster (a node's only), for ``helm install -f``."""
        return self.directory / chart.FILE_NAME

    @property
    def images(self) -> dict[str, str]:
        """Image references the node holds, by name: ``webhookcerts`` (the project) and ``pause``."""
        state = State.load(self.directory)
        return dict(state.images) if state else {}

    def pod_api_env(self) -> list[dict[str, str]]:
        """Container env for Pods that talk to the API server (in-cluster configuration); see ``node``."""
        return devnode.pod_api_env(self.apiserver_url or self._loaded().apiserver_url)

    def _loaded(self) -> State:
        state = State.load(self.directory)
        if state is None:
            raise DevClusterError(f"no cluster in {self.directory}")
        return state

    # up ---------------------------------------------------------------------------------------

    def up(
        self,
        *,
        apiserver_port: int | None = None,
        node: bool = True,
        node_timeout: float = devnode.NODE_TIMEOUT,
        log: Callable[[str], None] = lambda _m: None,
        kubelet_sync_frequency: str = devnode.SYNC_FREQUENCY,
    ) -> State:
        """Start the cluster; ``kubelet_sync_frequency`` is the node's kubelet ``syncFrequency`` (how
        often it syncs each pod, remounting its Secret volumes), a Go duration."""
        existing = State.load(self.directory)
        if existing is not None:
            alive = [c for c in existing.components if base.component_alive(c.name, c.pid)]
            if alive and len(alive) == len(existing.components):
                raise DevClusterError(
                    f"a cluster already runs in {self.directory} ({existing.apiserver_url}); "
                    f"run `webhookcerts devcluster down --dir {self.directory}` first"
                )
            log(f"cleaning up a dead cluster left in {self.directory}")
            self._stop_state(existing)
        self._remove_directory()
        if apiserver_port is not None:
            check_port_free(apiserver_port)
        etcd_bin, apiserver_bin = binary("etcd"), binary("kube-apiserver")
        self._node = None
        if node:
            self._node = devnode.Node(
                self.directory,
                self.directory / "pki",
                spawn=self._spawn,
                wait=self._wait,
                log=log,
                timeout=node_timeout,
                sync_frequency=kubelet_sync_frequency,
            )
            self._node.check()
            teardown.sweep_orphans(log)
        self.directory.mkdir(parents=True)
        certs = self.directory / "pki"
        pki.write(certs, node=node)
        try:
            return self._start(etcd_bin, apiserver_bin, certs, apiserver_port, log)
        except BaseException:
            # Ctrl-C or a failure half-way: leave nothing running.
            self.down()
            raise

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.directory / f"{name}.log"
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent if self.tie_to_parent else None,
            )
        self.processes[name] = proc
        self._argv[name] = list(argv)
        self._write_state()
        return proc

    def _write_state(self) -> None:
        state = State(
            directory=str(self.directory),
            apiserver_url=self.apiserver_url,
            etcd_url=self.etcd_url,
            components=[
                Component(name=n, pid=p.pid, log=str(self.directory / f"{n}.log")) for n, p in self.processes.items()
            ],
            node=self._node is not None,
            images=dict(self._node.images.refs) if self._node and self._node.images else {},
        )
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(state.to_json())
        tmp.replace(self.directory / "state.json")

    def _start(
        self,
        etcd_bin: pathlib.Path,
        apiserver_bin: pathlib.Path,
        certs: pathlib.Path,
        apiserver_port: int | None,
        log: Callable[[str], None],
    ) -> State:
        started = time.monotonic()
        if self._node is not None:
            # containerd needs no API server: it starts, with its images, while etcd and the API do.
            self._node.start_runtime()
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(etcd_bin),
                "--name=devcluster",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=devcluster={peer_url}",
                # A throw-away cluster: durability buys nothing and fsync costs seconds on a VM disk.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: base.http_ok(f"{self.etcd_url}/health"))
        port = apiserver_port or free_port()
        self.apiserver_url = f"https://127.0.0.1:{port}"
        self._spawn("kube-apiserver", [str(apiserver_bin), *self._apiserver_flags(certs, port)])
        self.kubeconfig.write_text(
            base.kubeconfig(self.apiserver_url, certs / "ca.crt", certs / "admin.crt", certs / "admin.key", "admin")
        )
        self._write_state()
        self._wait("kube-apiserver", lambda: self._readyz(certs))
        log(f"control plane ready in {time.monotonic() - started:.1f} s at {self.apiserver_url}")
        if self._node is not None:
            self._node.start_kubernetes(self.apiserver_url)
            self._node.wait_ready(self.apiserver_url)
            log(f"node {devnode.NODE_NAME} Ready in {time.monotonic() - started:.1f} s from the start")
            assert self._node.images is not None
            chart.write(self.directory, self.apiserver_url, self._node.images.refs["webhookcerts"])
        state = State.load(self.directory)
        assert state is not None
        return state

    def _apiserver_flags(self, certs: pathlib.Path, port: int) -> list[str]:
        flags = [
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            f"--kubelet-client-certificate={certs / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={certs / 'apiserver-kubelet-client.key'}",
            # The kubelet refuses a loopback node IP; by host name ("localhost") the API server finds it.
            "--kubelet-preferred-address-types=Hostname",
            "--allow-privileged=true",
            "--v=1",
        ]
        if self._node is None:
            # No controller-manager runs in the API-only cluster, so nothing would create the
            # ServiceAccounts this admission plugin waits for.
            return [*flags, "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]
        return [
            *flags,
            # The Node authorizer grants the kubelet what its own Pods need, as in a real cluster.
            "--authorization-mode=Node,RBAC",
            f"--kubelet-certificate-authority={certs / 'ca.crt'}",
        ]

    def _readyz(self, certs: pathlib.Path) -> bool:
        return base.http_ok(f"{self.apiserver_url}/readyz", base.admin_context(certs))

    def _wait(
        self, name: str, ready: Callable[[], bool], timeout: float = READY_TIMEOUT, waiting_for: str = ""
    ) -> None:
        what = f"{name} ({waiting_for})" if waiting_for else name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for other, proc in self.processes.items():
                if proc.poll() is not None:
                    log_path = self.directory / f"{other}.log"
                    raise DevClusterError(
                        f"{other} exited with code {proc.returncode} while waiting for {what}; "
                        f"last lines of {log_path}:\n{base.tail(log_path)}"
                    )
            if ready():
                return
            time.sleep(0.1)
        log_path = self.directory / f"{name}.log"
        raise DevClusterError(
            f"timed out after {timeout:.0f} s waiting for {what}; last lines of {log_path}:\n{base.tail(log_path)}"
        )

    # one component at a time ------------------------------------------------------------------

    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one control plane process (``etcd`` or ``kube-apiserver``) and leave the rest running.

        SIGTERM, then SIGKILL after a grace period; ``kill`` sends SIGKILL at once, as a crash would.
        Its data directory and ports stay, so ``start_component`` brings the same cluster back. Stop
        one at a time: a kube-apiserver sent SIGTERM after etcd stopped hangs in graceful shutdown.
        """
        if name not in RESTARTABLE:
            raise DevClusterError(f"only {' and '.join(RESTARTABLE)} can be stopped alone, not {name}")
        proc = self.processes.pop(name, None)
        if proc is None:
            raise DevClusterError(f"{name} is not running in the cluster this process started")
        if kill:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        else:
            stop_pid(proc.pid)
        with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        self._write_state()

    def start_component(self, name: str) -> None:
        """Start a process stopped by ``stop_component`` again, with the flags it had; returns once it
        serves (etcd's /health, the API server's /readyz)."""
        if name not in RESTARTABLE:
            raise DevClusterError(f"only {' and '.join(RESTARTABLE)} can be started alone, not {name}")
        if name in self.processes:
            raise DevClusterError(f"{name} is already running")
        argv = self._argv.get(name)
        if argv is None:
            raise DevClusterError(f"{name} was never started by this process: nothing to start again")
        self._spawn(name, argv)
        if name == "etcd":
            self._wait(name, lambda: base.http_ok(f"{self.etcd_url}/health"))
        else:
            self._wait(name, lambda: self._readyz(self.directory / "pki"))

    def restart_kubelet(self, sync_frequency: str) -> None:
        """Stop the node's kubelet and start it again with another ``syncFrequency`` (a Go duration).

        The pods keep running meanwhile (containerd holds them), as in a kubelet upgrade. A test that
        must tell a reload it caused from one the kubelet's own periodic sync brought pushes that sync
        out this way, and puts it back afterwards. Returns once the kubelet serves its healthz again.
        """
        proc = self.processes.pop("kubelet", None)
        if self._node is None or proc is None:
            raise DevClusterError("no kubelet started by this process: nothing to restart")
        stop_pid(proc.pid)
        with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        healthz = self._node.reconfigure_kubelet(sync_frequency)
        self._spawn("kubelet", self._argv["kubelet"])
        self._wait("kubelet", lambda: base.http_ok(healthz))

    # down and status ----------------------------------------------------------------------------

    def _stop_state(self, state: State) -> None:
        by_name = {c.name: c for c in state.components}

        def stop(*names: str) -> None:
            for name in names:
                component = by_name.pop(name, None)
                # A pid from a dead cluster's state may belong to another process by now.
                if component is not None and base.component_alive(component.name, component.pid):
                    stop_pid(component.pid)

        stop(*_STOP_FIRST)
        layout = devnode.Layout.of(self.directory)
        if layout.root.exists():
            teardown.remove_containers(layout.root)
        stop(*_STOP_LAST, *list(by_name))

    def down(self) -> bool:
        """Stop every process and remove the state; True when something was there."""
        state = State.load(self.directory)
        found = state is not None or self.directory.exists()
        if state is not None:
            self._stop_state(state)
        for proc in self.processes.values():
            stop_pid(proc.pid)
            with contextlib.suppress(ChildProcessError):
                proc.wait(timeout=1)
        self.processes.clear()
        self._remove_directory()
        return found

    def _remove_directory(self) -> None:
        layout = devnode.Layout.of(self.directory)
        if layout.root.exists():
            # Also without a state (an `up` interrupted early): the paths alone say what to remove.
            still_mounted = teardown.remove(layout.root)
            if still_mounted:
                raise DevClusterError(f"cannot remove {layout.root}: still mounted there: {', '.join(still_mounted)}")
        if not self.directory.exists():
            return
        still_mounted = teardown.unmount_all(self.directory)
        if still_mounted:
            # Deleting through a mount would delete what it shows (a volume's source), so refuse.
            raise DevClusterError(f"cannot remove {self.directory}: still mounted there: {', '.join(still_mounted)}")
        shutil.rmtree(self.directory, ignore_errors=True)

    def status(self) -> Iterator[str]:
        state = State.load(self.directory)
        if state is None:
            yield f"no cluster in {self.directory}"
            return
        width = max(len(c.name) for c in [*state.components, Component("api server", 0, "")]) + 2
        for component in state.components:
            running = "running" if base.component_alive(component.name, component.pid) else "NOT running"
            yield f"{component.name:<{width}}pid {component.pid:<8} {running:<12} log {component.log}"
        self.apiserver_url = state.apiserver_url
        certs = self.directory / "pki"
        ready = bool(state.apiserver_url) and self._readyz(certs)
        yield f"{'api server':<{width}}{state.apiserver_url}  {'ready' if ready else 'NOT ready'}"
        if state.node:
            conditions = devnode.describe(state.apiserver_url, certs) if ready else "unknown (API server not ready)"
            yield f"{'node ' + devnode.NODE_NAME:<{width}}{conditions}"
            for name, ref in sorted(state.images.items()):
                yield f"{'image ' + name:<{width}}{ref}"
        else:
            yield f"{'node':<{width}}none (API only)"
        yield f"{'kubeconfig':<{width}}{self.kubeconfig}"

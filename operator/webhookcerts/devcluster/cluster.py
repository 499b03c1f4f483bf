"""Start, inspect and stop a local etcd + kube-apiserver pair, as controller-runtime's envtest does.

State lives in one directory (``.devcluster`` by default): the PKI, etcd's data, the logs, the
kubeconfig and ``state.json`` with the process ids. Every process runs in a session of its own so that
``down`` can kill it with everything it spawned. A directory left behind by a dead cluster is cleaned
by the next ``up``; a live one is refused rather than silently replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

from webhookcerts.devcluster import pki

READY_TIMEOUT = 90.0
_STOP_GRACE = 5.0
# Stop order matters: an API server that outlives etcd hangs for minutes in graceful shutdown.
_STOP_ORDER = ("kube-apiserver", "etcd")


class DevClusterError(RuntimeError):
    """A problem the user can act on; the message says what to do."""


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
        )


# --- binaries ------------------------------------------------------------------------------------


def _repo_build_script() -> pathlib.Path | None:
    for start in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "tools" / "controlplane" / "build.sh"
            if candidate.exists():
                return candidate
    return None


def bin_dir() -> pathlib.Path:
    """Where the pinned binaries are: $WEBHOOKCERTS_BIN_DIR, or what build.sh says for this checkout."""
    explicit = os.environ.get("WEBHOOKCERTS_BIN_DIR")
    if explicit:
        return pathlib.Path(explicit)
    script = _repo_build_script()
    if script is None:
        raise DevClusterError(
            "cannot find the control plane binaries: set WEBHOOKCERTS_BIN_DIR or run from a webhookcerts "
            "checkout after `make setup`"
        )
    out = subprocess.run(["bash", str(script), "--print-dir"], capture_output=True, text=True, check=True)
    return pathlib.Path(out.stdout.strip())


def binary(name: str) -> pathlib.Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise DevClusterError(f"{name} is not built ({path} is missing): run `make setup` first")
    return path


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise DevClusterError(
                f"port 127.0.0.1:{port} is already taken ({exc.strerror}); choose another"
            ) from exc


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the child is killed when the process that started it dies, even by SIGKILL,
    # so a killed test run leaves no etcd or API server behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    with contextlib.suppress(OSError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, grace: float = _STOP_GRACE) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- the cluster ---------------------------------------------------------------------------------


class DevCluster:
    """One local control plane rooted at ``directory``."""

    def __init__(self, directory: pathlib.Path, *, tie_to_parent: bool = False) -> None:
        self.directory = directory.resolve()
        self.tie_to_parent = tie_to_parent
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.directory / "kubeconfig"

    # up ---------------------------------------------------------------------------------------

    def up(self, *, apiserver_port: int | None = None, log: Callable[[str], None] = lambda _m: None) -> State:
        existing = State.load(self.directory)
        if existing is not None:
            alive = [c for c in existing.components if pid_alive(c.pid)]
            if alive and len(alive) == len(existing.components):
                raise DevClusterError(
                    f"a cluster already runs in {self.directory} ({existing.apiserver_url}); "
                    f"run `webhookcerts devcluster down --dir {self.directory}` first"
                )
            log(f"cleaning up a dead cluster left in {self.directory}")
            self._stop_state(existing)
        if self.directory.exists():
            shutil.rmtree(self.directory)
        if apiserver_port is not None:
            check_port_free(apiserver_port)
        etcd_bin, apiserver_bin = binary("etcd"), binary("kube-apiserver")
        self.directory.mkdir(parents=True)
        certs = self.directory / "pki"
        pki.write(certs)
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
                preexec_fn=_die_with_parent if self.tie_to_parent else None,
            )
        self.processes[name] = proc
        self._write_state()
        return proc

    def _write_state(self) -> None:
        state = State(
            directory=str(self.directory),
            apiserver_url=getattr(self, "apiserver_url", ""),
            etcd_url=getattr(self, "etcd_url", ""),
            components=[
                Component(name=n, pid=p.pid, log=str(self.directory / f"{n}.log"))
                for n, p in self.processes.items()
            ],
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
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        started = time.monotonic()
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
        self._wait("etcd", lambda: _http_ok(f"{self.etcd_url}/health"))
        port = apiserver_port or free_port()
        self.apiserver_url = f"https://127.0.0.1:{port}"
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver_bin),
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'apiserver.crt'}",
                f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                # No controller-manager runs in the API-only cluster, so nothing would create the
                # ServiceAccount tokens this admission plugin waits for.
                "--disable-admission-plugins=ServiceAccount",
                f"--kubelet-client-certificate={certs / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={certs / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=Hostname",
                "--allow-privileged=true",
                "--v=1",
            ],
        )
        self._write_kubeconfig(certs)
        self._write_state()
        self._wait("kube-apiserver", lambda: self._readyz(certs))
        log(f"control plane ready in {time.monotonic() - started:.1f} s at {self.apiserver_url}")
        state = State.load(self.directory)
        assert state is not None
        return state

    def _readyz(self, certs: pathlib.Path) -> bool:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        ctx.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
        return _http_ok(f"{self.apiserver_url}/readyz", ctx)

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for other, proc in self.processes.items():
                if proc.poll() is not None:
                    log_path = self.directory / f"{other}.log"
                    raise DevClusterError(
                        f"{other} exited with code {proc.returncode} while waiting for {name}; "
                        f"last lines of {log_path}:\n{_tail(log_path)}"
                    )
            if ready():
                return
            time.sleep(0.1)
        raise DevClusterError(
            f"{name} was not ready after {READY_TIMEOUT:.0f} s; last lines of its log:\n"
            f"{_tail(self.directory / (name + '.log'))}"
        )

    def _write_kubeconfig(self, certs: pathlib.Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devcluster",
                    "cluster": {"server": self.apiserver_url, "certificate-authority": str(certs / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(certs / "admin.crt"),
                        "client-key": str(certs / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": "admin"}}],
            "current-context": "devcluster",
        }
        # JSON is YAML, and every kubeconfig reader accepts it.
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    # down and status ----------------------------------------------------------------------------

    def _stop_state(self, state: State) -> None:
        by_name = {c.name: c for c in state.components}
        for name in (*_STOP_ORDER, *by_name):
            component = by_name.pop(name, None)
            if component is not None:
                stop_pid(component.pid)

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
        if self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)
        return found

    def status(self) -> Iterator[str]:
        state = State.load(self.directory)
        if state is None:
            yield f"no cluster in {self.directory}"
            return
        for component in state.components:
            running = "running" if pid_alive(component.pid) else "NOT running"
            yield f"{component.name:<16} pid {component.pid:<8} {running}   log {component.log}"
        self.apiserver_url = state.apiserver_url
        ready = bool(state.apiserver_url) and self._readyz(self.directory / "pki")
        yield f"{'api server':<16} {state.apiserver_url}  {'ready' if ready else 'NOT ready'}"
        yield f"{'kubeconfig':<16} {self.kubeconfig}"


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False

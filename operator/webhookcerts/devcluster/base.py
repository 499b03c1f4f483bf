"""What the control plane launcher and the node launcher share: errors, binaries, processes, probes.

It sits below both ``cluster`` and ``node`` so that neither imports the other's internals and
``cluster`` can start a node without an import cycle.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

STOP_GRACE = 5.0


class DevClusterError(RuntimeError):
    """A problem the user can act on; the message says what to do."""


# --- binaries ------------------------------------------------------------------------------------


def repo_file(relative: str) -> pathlib.Path | None:
    for start in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / relative
            if candidate.exists():
                return candidate
    return None


def bin_dir() -> pathlib.Path:
    """Where the pinned binaries are: $WEBHOOKCERTS_BIN_DIR, or what build.sh says for this checkout."""
    explicit = os.environ.get("WEBHOOKCERTS_BIN_DIR")
    if explicit:
        return pathlib.Path(explicit)
    script = repo_file("tools/controlplane/build.sh")
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


def cache_dir() -> pathlib.Path:
    """The cache shared with tools/ (binaries, images): $WEBHOOKCERTS_CACHE or ~/.cache/webhookcerts."""
    root = os.environ.get("WEBHOOKCERTS_CACHE") or str(pathlib.Path.home() / ".cache" / "webhookcerts")
    return pathlib.Path(root)


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
            raise DevClusterError(f"port 127.0.0.1:{port} is already taken ({exc.strerror}); choose another") from exc


def _set_parent_death_signal(sig: signal.Signals) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, sig)  # PR_SET_PDEATHSIG


def die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the child is killed when the process that started it dies, even by SIGKILL,
    # so a killed test run leaves no etcd or API server behind.
    _set_parent_death_signal(signal.SIGKILL)


def term_with_parent() -> None:
    # The catchable variant, for a process that must clean up after its parent died.
    _set_parent_death_signal(signal.SIGTERM)


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


def cmdline(pid: int) -> list[str]:
    """A process's arguments, or [] when it is gone or not ours to read."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def component_alive(name: str, pid: int) -> bool:
    """Whether ``pid`` still runs the program ``name``: a dead cluster's pid may belong to another by now."""
    if not pid_alive(pid):
        return False
    # The program itself, or a script run by an interpreter.
    return name in [os.path.basename(arg) for arg in cmdline(pid)[:2]]


def all_pids() -> list[int]:
    return [int(entry.name) for entry in pathlib.Path("/proc").iterdir() if entry.name.isdigit()]


def parents() -> dict[int, int]:
    """Every process's parent, by process id (those that exit while being read are left out)."""
    found = {}
    for pid in all_pids():
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command name may hold spaces and parentheses: the fields after the last ")".
            found[pid] = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return found


def stop_pid(pid: int, grace: float = STOP_GRACE) -> None:
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


def tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- the API -------------------------------------------------------------------------------------


def admin_context(certs: pathlib.Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
    return ctx


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def get_json(url: str, context: ssl.SSLContext) -> Any:
    """GET a JSON document from the API server; None when it is missing or unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ssl.SSLError, ValueError):
        return None


def kubeconfig(server: str, ca: pathlib.Path, cert: pathlib.Path, key: pathlib.Path, user: str) -> str:
    """A kubeconfig naming files, not embedding them: the keys stay in the PKI directory."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}],
        "current-context": "devcluster",
    }
    # JSON is YAML, and every kubeconfig reader accepts it.
    return json.dumps(config, indent=2)

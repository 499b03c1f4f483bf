"""Removing a local node: every container, shim, mount and file it made, with containerd dead or alive.

Order matters, or something survives: the kubelet and the controllers first (``node.STOP_FIRST``,
stopped by the cluster), then every container (``runc delete --force`` in this node's runc root) and its
shim, then containerd, then whatever is still mounted under the node's directory (the kubelet's root
dir, secret volumes, sandbox ``shm``, container root file systems). Each step works from the node's
paths alone, with containerd dead or alive, and nothing in it waits on a socket that may never answer.
So ``down``, an interrupted ``up`` and the ``up`` after a killed cluster all remove everything; and
since every node lives under ``<cache>/nodes``, any node's ``up`` also removes what a SIGKILLed test run
left in a temporary directory nobody will ``down`` again (``sweep_orphans``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable

from webhookcerts.devcluster import base
from webhookcerts.devcluster import node as devnode

_SHIM_SOCKET_DIR = pathlib.Path("/run/containerd/s")
_CONTAINER_LOG_LINKS = pathlib.Path("/var/log/containers")


def remove_containers(node_dir: pathlib.Path) -> None:
    """Kill and delete every container of the node, then its shims; containerd may be dead or alive."""
    layout = devnode.Layout(node_dir)
    _runc_delete_all(layout.runc_root)
    shims = [pid for pid in base.all_pids() if _shim_socket(base.cmdline(pid)) == str(layout.socket)]
    if shims:
        parents = base.parents()
        # A container whose runc state is gone is still a child of its shim: kill the children first,
        # while they can still be told apart from everything else.
        for shim in shims:
            _kill_all([*_descendants(shim, parents), shim])
    _remove_shim_sockets(layout)


def unmount_all(directory: pathlib.Path) -> list[str]:
    """Lazily unmount everything mounted under ``directory``; returns what is still mounted."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    remaining: list[str] = []
    for _ in range(5):
        remaining = _mounts_under(directory)
        if not remaining:
            break
        # Deepest first, so a parent's unmount does not hide its children.
        for mount_point in sorted(remaining, key=len, reverse=True):
            libc.umount2(mount_point.encode(), 2)  # MNT_DETACH: never blocks on a busy mount
    return remaining


def remove_log_links(node_dir: pathlib.Path) -> None:
    """The kubelet links every container's log into /var/log/containers; drop the links into this node."""
    with contextlib.suppress(OSError):
        for link in _CONTAINER_LOG_LINKS.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(f"{node_dir}/"):
                    link.unlink()


def remove(node_dir: pathlib.Path) -> list[str]:
    """Remove a node whose containerd and kubelet are stopped: containers, shims, mounts, files.
    Returns what is still mounted, in which case nothing is deleted (that would delete through a mount)."""
    remove_containers(node_dir)
    remaining = unmount_all(node_dir)
    if remaining:
        return remaining
    remove_log_links(node_dir)
    shutil.rmtree(node_dir, ignore_errors=True)
    if not any(p.is_dir() for p in devnode.nodes_dir().glob("*")):
        devnode.restore_kernel_tunables()
    return []


def sweep_orphans(log: devnode.Log) -> None:
    """Remove nodes whose containerd and kubelet are dead and whose cluster is gone: a test run killed
    with SIGKILL leaves shims, containers and mounts in a directory nobody will `down` again."""
    try:
        node_dirs = [p for p in devnode.nodes_dir().iterdir() if p.is_dir()]
    except OSError:
        return
    if not node_dirs:
        return
    in_use: set[str] = set()
    for pid in base.all_pids():
        args = base.cmdline(pid)
        if _shim_socket(args) is None:
            in_use.update(str(d) for d in node_dirs if any(str(d) in arg for arg in args))
    for node_dir in node_dirs:
        if str(node_dir) in in_use or _owner_alive(devnode.Layout(node_dir)):
            continue
        log(f"removing what a dead cluster left in {node_dir}")
        remove(node_dir)


def _owner_alive(layout: devnode.Layout) -> bool:
    """Whether the cluster that made the node may still use it: it exists and is starting or running."""
    try:
        owner = pathlib.Path(layout.owner.read_text().strip())
    except OSError:
        # No owner file yet: a node being set up right now.
        return True
    try:
        state = json.loads((owner / "state.json").read_text())
    except FileNotFoundError:
        # A cluster between making its directory and starting its first process, or one long gone.
        return owner.exists()
    except (OSError, ValueError):
        return False
    return any(base.component_alive(c["name"], int(c["pid"])) for c in state.get("components", []))


def _runc_delete_all(runc_root: pathlib.Path) -> None:
    if not runc_root.is_dir():
        return
    # containerd's runc shim keeps one runc root per containerd namespace below the configured one.
    for namespace_root in [p for p in runc_root.iterdir() if p.is_dir()]:
        listed = _run_quietly(["runc", f"--root={namespace_root}", "list", "--quiet"])
        for container in listed.split():
            _run_quietly(["runc", f"--root={namespace_root}", "delete", "--force", container])


def _run_quietly(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def _shim_socket(args: list[str]) -> str | None:
    if not args or not os.path.basename(args[0]).startswith("containerd-shim"):
        return None
    for flag, value in itertools.pairwise(args):
        if flag == "-address":
            return value
    return None


def _descendants(pid: int, parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_all(pids: Iterable[int]) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + base.STOP_GRACE
    while time.monotonic() < deadline and any(base.pid_alive(pid) for pid in pids):
        time.sleep(0.05)


def _remove_shim_sockets(layout: devnode.Layout) -> None:
    # A killed shim leaves its socket in /run/containerd/s, named as containerd 1.6 names it: the
    # sha256 of "<containerd socket>/<namespace>/<task id>".
    tasks = layout.containerd_state / "io.containerd.runtime.v2.task"
    with contextlib.suppress(OSError):
        for namespace in tasks.iterdir():
            for task in namespace.iterdir():
                digest = hashlib.sha256(f"{layout.socket}/{namespace.name}/{task.name}".encode()).hexdigest()
                with contextlib.suppress(OSError):
                    (_SHIM_SOCKET_DIR / digest).unlink()


def _mounts_under(directory: pathlib.Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    found = []
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            # Octal escapes (\040 for a space) are how mountinfo spells awkward characters.
            mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
            if mount_point == str(directory) or mount_point.startswith(prefix):
                found.append(mount_point)
    return found

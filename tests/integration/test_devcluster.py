"""``webhookcerts devcluster`` as a user runs it: up, status, down, and the bad inputs it must explain.

Each case starts its own API-only cluster (a few seconds) in a temporary directory, through the real
console script, and checks that nothing outlives ``down`` or a failed ``up``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys

import pytest

from tests import conftest
from webhookcerts.devcluster import cluster as devcluster

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "webhookcerts", "devcluster"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=conftest.REPO,
        env={**os.environ, "PYTHONPATH": str(conftest.REPO / "operator"), **(env or {})},
    )


def pids(directory: pathlib.Path) -> list[int]:
    state = json.loads((directory / "state.json").read_text())
    return [c["pid"] for c in state["components"]]


def test_up_status_down_leaves_nothing_running(tmp_path: pathlib.Path, bin_dir: pathlib.Path) -> None:
    directory = tmp_path / "dc"
    up = run("up", "--no-node", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={directory.resolve() / 'kubeconfig'}" in up.stdout
    started = pids(directory)
    try:
        status = run("status", "--dir", str(directory))
        assert status.returncode == 0
        assert "etcd" in status.stdout and "kube-apiserver" in status.stdout
        assert "NOT" not in status.stdout
        version = subprocess.run(
            [str(bin_dir / "kubectl"), f"--kubeconfig={directory / 'kubeconfig'}", "get", "--raw", "/version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert json.loads(version.stdout)["gitVersion"].startswith("v1.37.")
    finally:
        down = run("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert not directory.exists()
    assert not [p for p in started if devcluster.pid_alive(p)]


def test_a_dead_clusters_directory_is_cleaned_by_the_next_up(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "dc"
    assert run("up", "--no-node", "--dir", str(directory)).returncode == 0
    first = pids(directory)
    # Kill everything behind the launcher's back, as a crash of the machine's session would.
    for pid in first:
        devcluster.stop_pid(pid, grace=0)
    try:
        again = run("up", "--no-node", "--dir", str(directory))
        assert again.returncode == 0, again.stderr
        assert "dead cluster" in again.stderr
        assert set(pids(directory)).isdisjoint(first)
    finally:
        run("down", "--dir", str(directory))


def test_a_taken_port_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("up", "--no-node", "--dir", str(tmp_path / "dc"), "--apiserver-port", str(port))
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} is already taken" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_binaries_name_make_setup(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run("up", "--no-node", "--dir", str(tmp_path / "dc"), env={"WEBHOOKCERTS_BIN_DIR": str(empty)})
    assert result.returncode == 1
    assert "make setup" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_etcd_that_dies_is_reported_with_its_log(tmp_path: pathlib.Path, bin_dir: pathlib.Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    etcd = fake / "etcd"
    etcd.write_text("#!/bin/sh\necho 'etcd: disk full (simulated)' >&2\nexit 3\n")
    etcd.chmod(etcd.stat().st_mode | stat.S_IXUSR)
    (fake / "kube-apiserver").symlink_to(bin_dir / "kube-apiserver")
    result = run("up", "--no-node", "--dir", str(tmp_path / "dc"), env={"WEBHOOKCERTS_BIN_DIR": str(fake)})
    assert result.returncode == 1
    assert "etcd exited with code 3" in result.stderr
    assert "disk full (simulated)" in result.stderr
    assert not (tmp_path / "dc").exists()


def path_without_go(shadow: pathlib.Path) -> str:
    """This machine's PATH with every ``go`` taken out, wherever Go is installed: a directory that holds
    one is replaced by a copy of its links without it (Debian's golang puts go in /usr/bin itself)."""
    entries = []
    for index, entry in enumerate(os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)):
        directory = pathlib.Path(entry)
        if not (directory / "go").exists():
            entries.append(entry)
            continue
        copy = shadow / str(index)
        copy.mkdir(parents=True)
        for item in directory.iterdir():
            if item.name != "go":
                (copy / item.name).symlink_to(item)
        entries.append(str(copy))
    return os.pathsep.join(entries)


def test_build_without_go_says_so(tmp_path: pathlib.Path) -> None:
    # A cache with nothing in it forces a build, and a PATH without Go makes it impossible.
    path = path_without_go(tmp_path / "path")
    assert shutil.which("go", path=path) is None
    result = subprocess.run(
        ["bash", str(conftest.REPO / "tools" / "controlplane" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path, "HOME": str(tmp_path), "WEBHOOKCERTS_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 1
    assert "no Go toolchain" in result.stderr

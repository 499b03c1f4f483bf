"""``make demo`` as a newcomer runs it: tools/demo.py on a local cluster of its own, to the end.

The demo starts its own cluster with a node (beside the session's), installs the chart, runs a planned
and an emergency rotation with the provider simulator delivering, and prints a timeline. Asserted here:
it ends with exit status 0; the planned rotation and its cut-over lose no delivery in either
environment, nor does anything after the emergency's cut-over; the emergency step's failures are the
compromised certificate's alone (sandbox loses nothing, live's are refusals); the compromised
certificate was accepted by the receiver before the incident only; every delivery the receiver
accepted carried the provider's signature, which it verified, and the one unsigned delivery (with a
trusted certificate) was answered 401; and nothing of its cluster is left: no directory, no process.
Issue 24: sandbox's cut-over is the operator's own (``cutover.policy: Observed``: no ``webhookcerts
cutover`` for it, the ``ObservedCutover`` Event), after the timeline showed it seeing the next
certificate presented; after live's emergency the timeline shows the ``RevokedCertificatePresented``
alarm, raised while the provider still presented the compromised certificate (before the replacement
was submitted).

"No process" means where the cluster really runs: etcd and the API server name the demo's temporary
directory, but the node (containerd, the kubelet, the containerd shims) runs under
``<cache>/nodes/<hash>`` (devcluster/node.py), and the pods' processes name neither: they are found as
the shims' descendants. While the demo runs, the test samples the process table with the same matcher
and requires it to have seen containerd, the kubelet, a shim and a pod process (the positive control:
the final check would have seen them), then requires every one of them gone, and nothing matching left.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from tests import conftest
from webhookcerts.devcluster import base as devbase
from webhookcerts.devcluster import node as devnode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

DEMO = conftest.REPO / "tools" / "demo.py"


def delivered(output: str, environment: str, step: str) -> tuple[int, int]:
    match = re.search(rf"^  {environment}\s+{step}\s+delivered\s+(\d+)\s+failed\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {environment}/{step} row in:\n{output}"
    return int(match.group(1)), int(match.group(2))


def stamp(text: str) -> int:
    minutes, seconds = text.split(":")
    return int(minutes) * 60 + int(seconds)


# The timeline's lines of issue 24, in the order they must come (see the test).
TIMELINE = {
    "next seen": r"upvest-sandbox: the operator sees the provider present the next certificate: \d+ presentation",
    "observed event": r"upvest-sandbox: Normal Event ObservedCutover: ",
    "cut over": r"upvest-sandbox: cut over by itself",
    "emergency": r"upvest-live: key exposed",
    "alarm": r"upvest-live: Warning Event RevokedCertificatePresented: revoked certificate [0-9a-f]{64}",
    "replacement submitted": r"upvest-live: the replacement submitted",
}


def line_stamp(output: str, pattern: str) -> int:
    """The timeline's stamp (seconds) of the first line matching ``pattern``."""
    match = re.search(rf"^  (\d\d:\d\d)  {pattern}", output, re.MULTILINE)
    assert match, f"no timeline line {pattern!r} in:\n{output}"
    return stamp(match.group(1))


def node_dirs_of(tmp_path: pathlib.Path) -> set[pathlib.Path]:
    """The node directories (<cache>/nodes/<hash>) of clusters whose directory is under ``tmp_path``."""
    found = set()
    if devnode.nodes_dir().is_dir():
        for node_dir in devnode.nodes_dir().iterdir():
            try:
                owner = (node_dir / "owner").read_text().strip()
            except OSError:
                continue
            if owner.startswith(f"{tmp_path}/"):
                found.add(node_dir)
    return found


def _started(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, who it is (pids are reused)."""
    try:
        return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class Proc:
    pid: int
    started: int
    kind: str  # containerd, kubelet, shim, pod (a shim's descendant) or other (etcd, the API server, ...)
    argv: str

    def alive(self) -> bool:
        return devbase.pid_alive(self.pid) and _started(self.pid) == self.started


def cluster_processes(marks: list[str]) -> set[Proc]:
    """Every process whose command line names one of ``marks`` (the demo's temporary directory, its node
    directories), and everything below those (a shim's containers name no path of ours)."""
    parents = devbase.parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found: set[Proc] = set()

    def add(pid: int, kind: str) -> None:
        started = _started(pid)
        if started is not None and devbase.pid_alive(pid):
            found.add(Proc(pid, started, kind, " ".join(devbase.cmdline(pid))[:300]))

    for pid in parents:
        argv = devbase.cmdline(pid)
        if pid == os.getpid() or not any(mark in arg for mark in marks for arg in argv):
            continue
        program = os.path.basename(argv[0])
        kind = "shim" if program.startswith("containerd-shim") else program
        add(pid, kind if kind in ("containerd", "kubelet", "shim") else "other")
        todo = list(children.get(pid, []))
        while todo:
            child = todo.pop()
            add(child, "pod" if kind == "shim" else "other")
            todo += children.get(child, [])
    return found


def run_watching(
    argv: list[str], env: dict[str, str], tmp_path: pathlib.Path, timeout: float
) -> tuple[subprocess.CompletedProcess[str], set[pathlib.Path], set[Proc]]:
    """Runs the demo, sampling its cluster's processes every second while it runs."""
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    node_dirs: set[pathlib.Path] = set()
    seen: set[Proc] = set()
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, text=True, env=env)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.terminate()
                proc.wait(timeout=120)
                pytest.fail(f"the demo ran for more than {timeout:.0f} s")
            node_dirs |= node_dirs_of(tmp_path)
            seen |= cluster_processes([str(tmp_path), *map(str, node_dirs)])
            time.sleep(1)  # a sampling interval: nothing is asserted about time
    done = subprocess.CompletedProcess(argv, proc.returncode, out.read_text(), err.read_text())
    return done, node_dirs, seen


@pytest.mark.long
def test_make_demo_runs_the_whole_story_and_leaves_nothing_running(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done, node_dirs, seen = run_watching([sys.executable, str(DEMO)], env, tmp_path, timeout=1200)
    output = done.stdout
    print(output, done.stderr[-4000:])
    assert done.returncode == 0, done.stderr[-4000:]
    assert "nothing is left running" in output

    for environment in ("sandbox", "live"):
        for step in ("planned rotation", "after"):
            sent, failed = delivered(output, environment, step)
            assert sent > 0 and failed == 0, (environment, step)
    assert delivered(output, "sandbox", "emergency")[1] == 0
    assert delivered(output, "live", "emergency")[1] > 0, "the compromised certificate was never refused"
    refusals = re.search(r"live\s+emergency.*\(failed attempts: (.*)\)", output)
    assert refusals and "timeout" not in refusals.group(1), output

    contained = re.search(r"^  (\d\d:\d\d)  upvest-live: contained in", output, re.MULTILINE)
    window = re.search(r"live [0-9A-F]{12} \(compromised\)\s+\d+ deliveries, (\d\d:\d\d) to (\d\d:\d\d)", output)
    assert contained and window, output
    assert stamp(window.group(2)) <= stamp(contained.group(1))

    # The sandbox cut-over is the operator's, on the receiver's reports; the alarm follows the emergency.
    assert "webhookcerts cutover upvest-sandbox" not in output
    assert "webhookcerts cutover upvest-live" in output  # live's policy is Manual: the user confirms
    at = {what: line_stamp(output, pattern) for what, pattern in TIMELINE.items()}
    assert at["next seen"] <= at["observed event"] <= at["cut over"] <= at["emergency"] <= at["alarm"], at
    assert at["alarm"] <= at["replacement submitted"], at
    assert re.search(r"^    \d\d:\d\d  Event ObservedCutover \(x1\)", output, re.MULTILINE), output
    assert re.search(r"^    \d\d:\d\d  Event RevokedCertificatePresented", output, re.MULTILINE), output

    # What the real provider delivers: signed (v6), verified by the receiver on every delivery it
    # accepted; without a signature a trusted certificate gets a 401, and only the demo's one probe tried.
    verified = re.search(r"verified on (\d+) of the (\d+) deliveries the receiver accepted", output)
    assert verified and int(verified.group(1)) == int(verified.group(2)) > 0, output
    assert re.search(r"keyid provider-demo \(ecdsa-p256-sha512\)\s+\d+", output), output
    unauthorized = re.findall(r"refused 401 after the handshake: (\d+) x (.*)", output)
    assert unauthorized == [("1", "signature: signature-input header missing")], output

    # The cluster lived in the demo's temporary directory and its node's: gone with everything it ran.
    assert not list(tmp_path.glob("webhookcerts-demo-*"))
    # The positive control: while it ran, the matcher saw the node and the pods on it.
    assert len(node_dirs) == 1, node_dirs
    kinds = {p.kind for p in seen}
    assert {"containerd", "kubelet", "shim", "pod", "other"} <= kinds, sorted(kinds)
    assert not [d for d in node_dirs if d.exists()], node_dirs
    survivors = [p for p in seen if p.alive()]
    assert survivors == [], survivors
    left = cluster_processes([str(tmp_path), *map(str, node_dirs)])
    assert left == set(), left


def test_the_leftover_check_sees_a_node_process_and_what_runs_below_it(tmp_path: pathlib.Path) -> None:
    """The matcher's own control, in seconds: a process naming a node directory (as a shim names its
    containerd's socket) and its child naming nothing (as a container) are both found, then neither."""
    node_dir = tmp_path / "nodes" / "0123456789ab"
    socket = str(node_dir / "containerd" / "containerd.sock")
    # sh under a shim's name (argv[0]), whose child names nothing of ours.
    argv = ["containerd-shim-runc-v2", "-c", "sleep 600 & wait", "sh", "-address", socket]
    shim = subprocess.Popen(argv, executable="/bin/sh", start_new_session=True)
    try:
        found = conftest.wait_for(
            lambda: f if len(f := cluster_processes([str(node_dir)])) == 2 else None, what="the process and its child"
        )
        assert {(p.kind, p.argv.split()[0]) for p in found} == {("shim", "containerd-shim-runc-v2"), ("pod", "sleep")}
        assert all(p.alive() for p in found)
    finally:
        os.killpg(shim.pid, 9)
        shim.wait(timeout=30)
    conftest.wait_for(lambda: not any(p.alive() for p in found), what="both to exit")
    assert cluster_processes([str(node_dir)]) == set()
    assert cluster_processes([str(tmp_path / "elsewhere")]) == set()

"""``make demo`` as a newcomer runs it: tools/demo.py on a local cluster of its own, to the end.

The demo starts its own cluster with a node (beside the session's), installs the chart, runs a planned
and an emergency rotation with the provider simulator delivering, and prints a timeline. Asserted here:
it ends with exit status 0; the planned rotation and its cut-over lose no delivery in either
environment, nor does anything after the emergency's cut-over; the emergency step's failures are the
compromised certificate's alone (sandbox loses nothing, live's are refusals); the compromised
certificate was accepted by the receiver before the incident only; and nothing of its cluster is
left: no directory, no process.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests import conftest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

DEMO = conftest.REPO / "tools" / "demo.py"


def delivered(output: str, environment: str, step: str) -> tuple[int, int]:
    match = re.search(rf"^  {environment}\s+{step}\s+delivered\s+(\d+)\s+failed\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {environment}/{step} row in:\n{output}"
    return int(match.group(1)), int(match.group(2))


def stamp(text: str) -> int:
    minutes, seconds = text.split(":")
    return int(minutes) * 60 + int(seconds)


def test_make_demo_runs_the_whole_story_and_leaves_nothing_running(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=1200, env=env, check=False
    )
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

    # The cluster lived in the demo's temporary directory: gone with everything it ran.
    assert not list(tmp_path.glob("webhookcerts-demo-*"))
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", left.stdout

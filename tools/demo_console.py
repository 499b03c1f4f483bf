"""What the demo shows: a clock on every step, the commands a user would type with their output,
and waits that say what they wait for; kubectl and helm pointed at the demo's cluster."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from webhookcerts.devcluster import base
from webhookcerts.devcluster import cluster as devcluster

REPO = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "demo"
T = TypeVar("T")


class DemoError(RuntimeError):
    """A step did not happen in time; the message says which, the cluster's logs why."""


# --- saying what happens ----------------------------------------------------------------------------


class Timeline:
    """Prints each step with the time since the start, and keeps them for the summary."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.wall_started = datetime.datetime.now(datetime.UTC)
        self.events: list[tuple[float, str]] = []
        self._tty = sys.stdout.isatty()
        self._waiting = False  # a "waiting for" line is open (without a terminal: dots follow it)

    def since_start(self, when: datetime.datetime) -> float:
        return (when - self.wall_started).total_seconds()

    def _end_waiting_line(self) -> None:
        if self._waiting:
            print("\r\033[K" if self._tty else "", end="" if self._tty else "\n", flush=True)
            self._waiting = False

    def now(self) -> float:
        return time.monotonic() - self.started

    def stamp(self, at: float | None = None) -> str:
        seconds = int(self.now() if at is None else at)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def say(self, message: str, *, keep: bool = True) -> None:
        self._end_waiting_line()
        if keep:
            self.events.append((self.now(), message))
        print(f"[{self.stamp()}] {message}", flush=True)

    def command(self, argv: list[str], output: str = "") -> None:
        self._end_waiting_line()
        print(f"         $ {shlex.join(argv)}", flush=True)
        for line in output.rstrip().splitlines():
            print(f"           {line}", flush=True)

    def wait(self, what: str, predicate: Callable[[], T | None], timeout: float = 300) -> T:
        """Poll ``predicate``, showing that the demo is waiting (a ticking counter on a terminal)."""
        started = time.monotonic()
        last_dot = started
        while True:
            result = predicate()
            if result:
                self._end_waiting_line()
                return result
            waited = time.monotonic() - started
            if waited > timeout:
                self._end_waiting_line()
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
            if self._tty:
                print(f"\r         waiting for {what} ... {waited:.0f} s", end="", flush=True)
                self._waiting = True
            elif not self._waiting:
                print(f"         waiting for {what} ", end="", flush=True)
                self._waiting = True
            elif time.monotonic() - last_dot >= 5:
                print(".", end="", flush=True)
                last_dot = time.monotonic()
            time.sleep(0.5)


# --- the cluster's tools ----------------------------------------------------------------------------


@dataclasses.dataclass
class Tools:
    """kubectl (with the plugin on its PATH) and helm, pointed at the demo's cluster."""

    timeline: Timeline
    env: dict[str, str]

    def run(
        self, *argv: str, show: bool = True, echo: bool = False, input: str | None = None, check: bool = True
    ) -> str:
        """Run a command; ``show`` prints it as typed, ``echo`` its output too (once it has succeeded)."""
        done = subprocess.run(
            list(argv), env=self.env, cwd=REPO, capture_output=True, text=True, input=input, timeout=600
        )
        if check and done.returncode != 0:
            raise DemoError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        if show:
            self.timeline.command(list(argv), done.stdout if echo else "")
        return done.stdout

    def kubectl(
        self, *args: str, show: bool = True, echo: bool = False, input: str | None = None, check: bool = True
    ) -> str:
        return self.run("kubectl", *args, show=show, echo=echo, input=input, check=check)

    def apply(self, *objects: dict[str, Any], verb: str = "apply") -> None:
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.kubectl(verb, "-f", "-", show=False, input=body)

    def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        out = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", show=False, check=False)
        return json.loads(out) if out.strip() else None

    def status(self, name: str) -> dict[str, Any]:
        obj = self.get("whc", name) or {}
        found: dict[str, Any] = obj.get("status") or {}
        return found


def ready(tools: Tools, name: str) -> bool:
    conditions = tools.status(name).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def tools_env(dev: devcluster.DevCluster) -> dict[str, str]:
    """The pinned kubectl and helm first, then the venv's commands (the kubectl plugin among them)."""
    path = os.pathsep.join([str(base.bin_dir()), str(pathlib.Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "KUBECONFIG": str(dev.kubeconfig), "PATH": path}

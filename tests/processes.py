"""The project's commands as child processes, started the way users start them, for tests and benchmarks.

``python -m webhookcerts ...`` from the working tree, with its output in a log file, in a session of its
own and tied to the parent (``devcluster.die_with_parent``), so that an interrupted run leaves nothing
behind; stopped by its own process id. The e2e tests and ``benchmarks/harness.py`` share these, so the
receiver they measure is started exactly as the one they test.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from webhookcerts.devcluster import cluster as devcluster

REPO = pathlib.Path(__file__).resolve().parent.parent
# The receiver's log record once its socket is bound; with --port 0 it is the only place the port shows.
_LISTENING = re.compile(r'"event": "listening", "address": "127\.0\.0\.1:(\d+)"')


class ProcessExited(RuntimeError):
    """A process that should be running has exited; the message carries the end of its log."""


class TimedOut(AssertionError):
    """What ``wait_for`` waited for did not happen in time; the message says what."""


T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float = 90, what: str = "condition", interval: float = 0.25
) -> T:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimedOut(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def spawn(
    argv: list[str], log_path: pathlib.Path, env: dict[str, str] | None = None, module: str = "webhookcerts"
) -> subprocess.Popen[bytes]:
    """``python -m webhookcerts ARGV`` with stdout and stderr appended to ``log_path``; ``env`` adds variables.

    ``module`` runs another module in its place (a wrapper that runs the command under a profiler)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), **(env or {})}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=full_env,
            start_new_session=True,
            preexec_fn=devcluster.die_with_parent,
        )


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def receiver(
    cert: pathlib.Path,
    key: pathlib.Path,
    trust_dir: pathlib.Path,
    log_path: pathlib.Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``webhookcerts receiver`` on a free loopback port (``listening_port`` tells which); ``extra`` goes last."""
    argv = ["receiver", "--cert", str(cert), "--key", str(key), "--trust-dir", str(trust_dir)]
    return spawn([*argv, "--host", "127.0.0.1", "--port", "0", *extra], log_path, env)


def listening_port(proc: subprocess.Popen[Any], log_path: pathlib.Path) -> int | None:
    """The port a ``receiver`` process listens on, or None while it starts; raises once it has exited."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    if proc.poll() is not None:
        raise ProcessExited(f"the receiver exited ({proc.returncode}): {text[-2000:]}")
    match = _LISTENING.search(text)
    return int(match.group(1)) if match else None

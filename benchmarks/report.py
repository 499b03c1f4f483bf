"""docs/benchmarks.md: each benchmark owns one marked section and rewrites only that one.

A section runs from ``<!-- benchmark:NAME -->`` to ``<!-- /benchmark:NAME -->``; the prose around the
sections is written by hand and never touched. Every section says what machine measured it, when,
and with which command, so a figure is never separated from how it was obtained.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import re
import ssl
import subprocess
from collections.abc import Mapping

REPO = pathlib.Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
# What a figure depends on: the operator, the benchmarks, and the helpers both share with the tests.
CODE = ("operator", "benchmarks", "tests/processes.py", "tests/servers.py", "tests/whc.py", "crds")
STALE = "<!-- stale -->"
_COMMIT = re.compile(r" at commit ([0-9a-f]{7,40})")
_DATE = re.compile(r"^Measured (\d{4}-\d\d-\d\d) ", re.MULTILINE)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` holding ``body``; the section is appended when missing."""
    start, end = _markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text, count=1)
    return f"{text.rstrip()}\n\n{block}\n"


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict[str, str | int | float]:
    """What the figures depend on: cores, CPU, the Python and OpenSSL doing the work, and how busy the
    machine already was (other work on a 2-core machine shows up in every figure)."""
    return {
        "cores": os.cpu_count() or 0,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "load_1min": round(os.getloadavg()[0], 2),
        **tree(),
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def tree() -> dict[str, str]:
    """The commit the benchmark runs on, and whether the code differs from it (uncommitted changes)."""
    commit = _git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return {}
    dirty = bool(_git("status", "--porcelain", "--", *CODE))
    return {"commit": commit + ("+" if dirty else "")}


def changed_since(section: str, head: str | None = None) -> str | None:
    """Why ``section``'s figures may not describe the code at ``head`` (HEAD), or None when they do.

    A section records the commit it ran on; one recorded before commits were, only its date."""
    head = head or "HEAD"
    found = _COMMIT.search(section)
    if found is not None:
        commit = found.group(1)
        if section[found.end() : found.end() + 1] == "+":
            return f"it ran with uncommitted changes on {commit}"
        files = _git("diff", "--name-only", commit, head, "--", *CODE).splitlines()
        if not files:
            return None
        return (
            f"{len(files)} files of the code changed after the commit it ran on ({commit}), e.g. {', '.join(files[:3])}"
        )
    dated = _DATE.search(section)
    if dated is None:
        return None
    commits = _git("log", "--oneline", f"--since={dated.group(1)}T23:59:59", head, "--", *CODE).splitlines()
    if not commits:
        return None
    return f"it records no commit, and {len(commits)} commits changed the code after the day it ran ({dated.group(1)})"


def mark_stale(text: str, head: str | None = None) -> str:
    """Every section of ``text`` with a line saying whether the code changed since it ran (or none)."""
    pattern = re.compile(r"(<!-- benchmark:([\w-]+) -->\n)(.*?)(<!-- /benchmark:\2 -->)", re.DOTALL)

    def note(match: re.Match[str]) -> str:
        body = "\n".join(line for line in match.group(3).splitlines() if not line.startswith(STALE)).rstrip()
        why = changed_since(body, head)
        if why is not None:
            body += (
                f"\n\n{STALE} **Not measured on today's code**: {why}. Run it again before relying on these figures."
            )
        return f"{match.group(1)}{body}\n{match.group(4)}"

    return pattern.sub(note, text)


def footer(command: str, info: Mapping[str, str | int | float]) -> str:
    at = f" at commit {info['commit']}" if info.get("commit") else ""
    return (
        f"Measured {info['date']}{at} with `{command}` on {info['cores']} cores ({info['cpu']}), "
        f"Python {info['python']}, {info['openssl']}; load average {info['load_1min']} when it started."
    )


def table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: pathlib.Path = DOC) -> None:
    """Record one section, and say in every other one whether the code changed since it ran."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    doc.write_text(mark_stale(replace_section(text, name, body)))

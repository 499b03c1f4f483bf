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
from collections.abc import Mapping

REPO = pathlib.Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"


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
    }


def footer(command: str, info: Mapping[str, str | int | float]) -> str:
    return (
        f"Measured {info['date']} with `{command}` on {info['cores']} cores ({info['cpu']}), "
        f"Python {info['python']}, {info['openssl']}; load average {info['load_1min']} when it started."
    )


def table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: pathlib.Path = DOC) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    doc.write_text(replace_section(text, name, body))

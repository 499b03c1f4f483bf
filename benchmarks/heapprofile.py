"""``python -m benchmarks.heapprofile ARGS``: ``webhookcerts ARGS`` under tracemalloc, for the scale page.

On SIGUSR1 it writes where its Python heap is, grouped by package (a dependency, a module of ours, the
standard library), to the JSON file ``WEBHOOKCERTS_HEAP_PROFILE`` names. tracemalloc sees what Python
allocates (objects, the interpreter's own buffers), not what C libraries allocate on their own (OpenSSL,
pydantic-core's Rust), and it costs memory and time itself: the scale benchmark runs it in a process of
its own, after the figures of the untraced operator are taken.
"""

from __future__ import annotations

import json
import os
import pathlib
import runpy
import signal
import sys
import tracemalloc
import types

ENV = "WEBHOOKCERTS_HEAP_PROFILE"
STDLIB = pathlib.Path(os.__file__).parent.as_posix()


def group(filename: str) -> str:
    """The package a traced allocation belongs to: ``kopf``, ``webhookcerts/service/view.py``, ``stdlib/json``."""
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/webhookcerts/" in filename:
        return "webhookcerts/" + filename.rsplit("/webhookcerts/", 1)[1]
    if filename.startswith(STDLIB + "/"):
        return "stdlib/" + filename[len(STDLIB) + 1 :].split("/", 1)[0].removesuffix(".py")
    if filename.startswith("<frozen importlib"):
        # Allocated while importing: the modules' code objects, dicts and classes.
        return "imports (code objects, module dicts)"
    if filename.startswith("<frozen "):
        return "stdlib/" + filename.removeprefix("<frozen ").rstrip(">")
    return filename


def summary(snapshot: tracemalloc.Snapshot) -> dict[str, object]:
    groups: dict[str, list[int]] = {}
    for stat in snapshot.statistics("filename"):
        entry = groups.setdefault(group(stat.traceback[0].filename), [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    ordered = sorted(groups.items(), key=lambda item: -item[1][0])
    current, peak = tracemalloc.get_traced_memory()
    return {
        "traced_kb": current // 1024,
        "peak_traced_kb": peak // 1024,
        "groups": [{"group": name, "kb": size // 1024, "blocks": count} for name, (size, count) in ordered],
    }


def main() -> None:
    out = pathlib.Path(os.environ[ENV])
    tracemalloc.start(1)

    def dump(signum: int, frame: types.FrameType | None) -> None:
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps(summary(tracemalloc.take_snapshot())))
        partial.replace(out)

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["webhookcerts", *sys.argv[1:]]
    runpy.run_module("webhookcerts", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""Crash safety, many times over: the operator SIGKILLed mid-rotation, the control plane stopped under it.

One harness for the benchmark (``python benchmarks/run.py chaos --write``) and the integration test
(tests/integration/test_chaos.py): the operator runs as users run it (``webhookcerts run``, its own
process); the harness drives WebhookCertificates through three paths (planned rotation, cut-over,
emergency rotation) and SIGKILLs the operator at a seeded random moment of each round, then starts it
again at once; separately it stops kube-apiserver, and then etcd, under the same operator process.

Where each part lives: the rounds in benchmarks/chaos_rounds.py, what is checked and counted of them
in benchmarks/chaos_audit.py, the operator's process and the harness's reads and Secret watch in
benchmarks/chaos_observe.py. Here: how many rounds of each, and the section of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

from benchmarks import harness, report
from benchmarks.chaos_audit import COUNTERS, Stats
from benchmarks.chaos_rounds import COMPONENTS, DEFAULT_OBJECTS, DEFAULT_SEED, KILL_DELAY_S, OUTAGE_S, PATHS, Chaos

NAME = "chaos"
MIN_KILLS = 30
DEFAULT_STOPS = 3

# --- the runs -----------------------------------------------------------------------------------------


def kill_paths(chaos: Chaos, kills: int) -> dict[str, Stats]:
    """``kills`` rounds of each path: planned, then a cut-over of each planned round, then emergencies."""
    result = {path: Stats(path) for path in PATHS}
    labels = [chaos.planned(result["planned"], i) for i in range(kills)]
    # A planned round that did not converge (counted there) has nothing to cut over.
    for label in labels:
        if label is not None:
            chaos.cutover(result["cutover"], label)
    for _ in range(kills):
        if not chaos.emergency(result["emergency"], chaos.pool):
            break
    return result


def control_plane_stops(chaos: Chaos, stops: int, first_index: int = 0) -> dict[str, Stats]:
    """``stops`` outages of each component, one at a time; SIGTERM and SIGKILL alternate (the first
    kube-apiserver stop is a SIGTERM, the first etcd stop a SIGKILL)."""
    result = {component: Stats(component) for component in COMPONENTS}
    index = first_index
    for round_no in range(stops):
        for offset, component in enumerate(COMPONENTS):
            chaos.control_plane(result[component], index, component, kill=(round_no + offset) % 2 == 1)
            index += 1
    return result


# --- the benchmark ----------------------------------------------------------------------------------------


def measure(
    directory: pathlib.Path,
    *,
    kills: int = MIN_KILLS,
    objects: int = DEFAULT_OBJECTS,
    stops: int = DEFAULT_STOPS,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    machine = report.machine()  # before the benchmark loads the machine itself
    started = time.monotonic()
    with (
        harness.cluster(directory, namespace="chaos") as handle,
        Chaos(handle.dev, handle.namespace, directory, objects=objects, seed=seed) as chaos,
    ):
        paths = kill_paths(chaos, kills)
        components = control_plane_stops(chaos, stops)
        audit = chaos.audit.final_audit()
        relists = chaos.secrets.relists
    return summarize(
        paths,
        components,
        audit,
        seed=seed,
        objects=objects,
        relists=relists,
        duration_s=time.monotonic() - started,
        machine=machine,
    )


def summarize(
    paths: dict[str, Stats],
    components: dict[str, Stats],
    audit: Stats,
    *,
    seed: int,
    objects: int,
    relists: int,
    duration_s: float,
    machine: dict[str, str | int | float],
) -> dict[str, Any]:
    """The benchmark's result: each path's and component's figures, the final audit, the totals."""
    everything = [*paths.values(), *components.values(), audit]
    return {
        "benchmark": NAME,
        "seed": seed,
        "objects_per_round": objects,
        "kill_delay_s": KILL_DELAY_S,
        "outage_s": OUTAGE_S,
        "paths": {name: s.to_json() for name, s in paths.items()},
        "control_plane": {name: s.to_json() for name, s in components.items()},
        "final_audit": audit.to_json(),
        "totals": {
            "kills": sum(s.interruptions for s in paths.values()),
            "kills_survived": sum(s.survived for s in paths.values()),
            "control_plane_stops": sum(s.interruptions for s in components.values()),
            "control_plane_stops_survived": sum(s.survived for s in components.values()),
            "rotations_checked": sum(s.rotations_checked for s in [*paths.values(), *components.values()]),
            **{c: sum(getattr(s, c) for s in everything) for c in COUNTERS},
        },
        "clean": all(s.failures() == 0 and not s.defects for s in everything),
        # Times the harness's own Secret watch had to list again (it may have missed a version then).
        "secret_watch_relists": relists,
        "duration_s": round(duration_s, 1),
        # Other work on a 2-core machine slows every restart: how busy it was at the end, too.
        "load_1min_end": round(os.getloadavg()[0], 2),
        "machine": machine,
    }


def _converge_cell(s: dict[str, Any]) -> str:
    converge = s["converge_s"]
    return f"{converge['median']:.1f} / {converge['max']:.1f}" if converge else "-"


def _row(s: dict[str, Any]) -> tuple[object, ...]:
    return (
        f"{s['interruptions']} ({s['survived']})",
        s["mid_rotation"],
        s["rotations_checked"],
        s["keys_lost"],
        s["double_rotations"],
        s["unrecorded_keys"],
        f"{s['trust_gaps']} ({s['trust_samples']})",
        s["orphans"],
        s["not_converged"],
        _converge_cell(s),
    )


def section(result: dict[str, Any], command: str) -> str:
    totals, audit = result["totals"], result["final_audit"]
    delays = ", ".join(f"{path} 0-{bound:g} s" for path, bound in result["kill_delay_s"].items())

    def head(interruption: str, since: str) -> tuple[str, ...]:
        return (
            "",
            f"{interruption} (survived)",
            "mid-rotation",
            "rotations checked",
            "keys lost",
            "double rotations",
            "unrecorded keys",
            "trust gaps (samples)",
            "orphans",
            "not converged",
            f"{since} -> converged, median / max (s)",
        )

    kill_rows = [(name, *_row(s)) for name, s in result["paths"].items()]
    stop_rows = [(name, *_row(s)) for name, s in result["control_plane"].items()]
    defects = [
        d.splitlines()[0] for group in ("paths", "control_plane") for s in result[group].values() for d in s["defects"]
    ]
    defects += [d.splitlines()[0] for d in audit["defects"]]
    verdict = (
        "**Clean**: no key lost, no double rotation, no unrecorded key, no trust gap, no orphan, every round converged."
        if result["clean"]
        else "**Defects found** (details, with the operator's log lines, in the result JSON):\n\n"
        + "\n".join(f"- {d}" for d in defects[:10])
    )
    return "\n".join(
        [
            "## Crash safety: SIGKILL mid-rotation, control plane outages",
            "",
            f"The operator (`webhookcerts run`, its own process) SIGKILLed {totals['kills']} times at a random moment "
            f"(seed {result['seed']}; {delays} after the round's first write) and started again at once;",
            f"{result['objects_per_round']} objects per round. Planned: fresh objects (`duration: 2h`, "
            "`renewBefore: 1h59m59s`: first key, then the next key a second later). Cut-over: the Rotating objects of "
            "a planned round cut over (each followed by a new planned next, its renewal time having passed too). "
            "Emergency: Active objects (default durations) given an incident reference, then cut over to the "
            "replacement before the next round. Then kube-apiserver and etcd, one at a time, stopped during the "
            f"planned rotation of fresh objects (SIGTERM and SIGKILL alternately), down for {result['outage_s']:g} s, "
            "started again; the operator is not restarted.",
            "",
            "After each round every object must converge (revision up by exactly the rotation's keys, the key and "
            "next Secrets holding the recorded certificates with their keys, the trust Secret listing them and not "
            "the compromised one). Keys lost: a recorded certificate its Secret does not hold. Double rotations: the "
            "revision moved more than expected, or two EmergencyRotation Events for one reference. Unrecorded keys: a "
            "certificate a watch saw in an object's key Secrets that its status never recorded. Trust gaps: samples "
            "(every 50 ms from the first write to convergence) in which a certificate status records as current or "
            "next, not compromised, once seen trusted, was missing from the trust Secret. Orphans: a Secret of the "
            "operator's that no object claims (a `-next` Secret with no `status.next`). Mid-rotation: kills that "
            "found the round unfinished (the others landed after it converged).",
            "",
            "Operator kills:",
            "",
            report.table(head("kills", "kill"), kill_rows),
            "",
            "Control plane stops (the same operator process throughout):",
            "",
            report.table(head("stops", "restart"), stop_rows),
            "",
            f"Final audit of all {audit['rotations_checked']} objects after the last round: {audit['keys_lost']} keys "
            f"lost, {audit['double_rotations']} double rotations, {audit['unrecorded_keys']} unrecorded keys, "
            f"{audit['orphans']} orphans.",
            "",
            f"Totals: {totals['kills_survived']} of {totals['kills']} kills and "
            f"{totals['control_plane_stops_survived']} of {totals['control_plane_stops']} control plane stops "
            f"survived, {totals['rotations_checked']} "
            f"rotations checked, {totals['keys_lost']} keys lost, {totals['double_rotations']} double rotations, "
            f"{totals['trust_gaps']} trust gaps. {verdict}",
            "",
            f"The whole run took {result['duration_s'] / 60:.0f} min; load average {result['load_1min_end']} when it "
            "ended.",
            "",
            report.footer(command, result["machine"]),
        ]
    )

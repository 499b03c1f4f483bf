"""``python benchmarks/run.py [NAME ...] [--write]``: run benchmarks, print JSON, optionally record them.

``make bench`` runs every benchmark. Each prints its result as JSON; with ``--write`` it also rewrites
its own section of docs/benchmarks.md, which refuses fewer runs than the figure there promises.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
# Run as a script, this file's directory is on sys.path, not the repository the package lives in.
for entry in (REPO, REPO / "operator"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from benchmarks import (  # noqa: E402
    chaos,
    chaos_rounds,
    controlplane,
    emergency,
    emergency_node,
    harness,
    memory,
    pod_reload,
    receiver,
    renewal,
    report,
    reporting,
    scale,
    servers,
)

NAMES = (
    controlplane.NAME,
    renewal.NAME,
    emergency.NAME,
    emergency_node.NAME,
    receiver.NAME,
    reporting.NAME,
    pod_reload.NAME,
    servers.NAME,
    scale.NAME,
    chaos.NAME,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run the benchmarks and print their results as JSON; --write records them in docs/benchmarks.md.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(NAMES)} (default: all)")
    p.add_argument("--write", action="store_true", help="update the benchmark's section of docs/benchmarks.md")
    p.add_argument(
        "--mark-stale",
        action="store_true",
        help="run nothing: say in each section of docs/benchmarks.md whether the code changed since it ran",
    )
    p.add_argument("--controlplane-runs", type=int, default=controlplane.MIN_RUNS)
    p.add_argument("--emergency-runs", type=int, default=emergency.MIN_RUNS, help="runs per server")
    p.add_argument(
        "--emergency-others",
        type=int,
        default=emergency.DEFAULT_OTHERS,
        help=f"other WebhookCertificates present (default {emergency.DEFAULT_OTHERS})",
    )
    p.add_argument(
        "--emergency-node-runs", type=int, default=emergency_node.MIN_RUNS, help="runs of the emergency on the node"
    )
    p.add_argument(
        "--emergency-node-others",
        type=int,
        default=emergency_node.DEFAULT_OTHERS,
        help=f"other WebhookCertificates present on the node's run (default {emergency_node.DEFAULT_OTHERS})",
    )
    p.add_argument(
        "--emergency-node-idle",
        type=float,
        default=emergency_node.KUBELET_IDLE_S,
        metavar="SECONDS",
        help=f"the pod left idle before each run (default {emergency_node.KUBELET_IDLE_S:g}; 0: back to back)",
    )
    p.add_argument("--receiver-seconds", type=float, default=10.0, help="length of each receiver run")
    p.add_argument("--receiver-repeats", type=int, default=3, help="runs per receiver variant")
    p.add_argument(
        "--reporting-seconds",
        type=float,
        default=reporting.DEFAULT_SECONDS,
        help=f"length of the reporting receiver's run (default {reporting.DEFAULT_SECONDS:g})",
    )
    p.add_argument("--pod-reload-runs", type=int, default=pod_reload.MIN_RUNS, help="runs with and without the nudge")
    p.add_argument(
        "--pod-reload-sync",
        default=pod_reload.KUBELET_DEFAULT_SYNC,
        metavar="DURATION",
        help=f"the node's kubelet syncFrequency (default {pod_reload.KUBELET_DEFAULT_SYNC}, the kubelet's own)",
    )
    p.add_argument("--scale-n", type=int, default=scale.DEFAULT_N, help="WebhookCertificates in the scale benchmark")
    p.add_argument("--scale-idle", type=float, default=scale.IDLE_S, help="seconds of idle measured after all Ready")
    p.add_argument("--scale-containment-runs", type=int, default=scale.MIN_CONTAINMENT_RUNS)
    p.add_argument(
        "--scale-small-n",
        type=int,
        default=memory.SMALL_N,
        help=f"objects in the small burst the cost per object is taken from (default {memory.SMALL_N}; 0: none)",
    )
    p.add_argument("--no-scale-heap", action="store_true", help="skip the heap profile (an operator under tracemalloc)")
    p.add_argument("--chaos-kills", type=int, default=chaos.MIN_KILLS, help="operator SIGKILLs per rotation path")
    p.add_argument(
        "--chaos-objects", type=int, default=chaos_rounds.DEFAULT_OBJECTS, help="WebhookCertificates per round"
    )
    p.add_argument(
        "--chaos-stops", type=int, default=chaos.DEFAULT_STOPS, help="stops of kube-apiserver and of etcd, each"
    )
    p.add_argument("--servers-runs", type=int, default=servers.MIN_RUNS, help="runs per real server")
    p.add_argument("--chaos-seed", type=int, default=chaos_rounds.DEFAULT_SEED, help="seed of the random kill moments")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.mark_stale:
        report.DOC.write_text(report.mark_stale(report.DOC.read_text()))
        return 0
    names = args.names or list(NAMES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if args.write and (args.controlplane_runs < controlplane.MIN_RUNS or args.emergency_runs < emergency.MIN_RUNS):
        print(
            f"--write needs at least {controlplane.MIN_RUNS} control plane and {emergency.MIN_RUNS} emergency runs",
            file=sys.stderr,
        )
        return 2
    if args.write and emergency.NAME in names and args.emergency_others < emergency.DEFAULT_OTHERS:
        print(f"--write needs at least {emergency.DEFAULT_OTHERS} other objects present", file=sys.stderr)
        return 2
    node_runs, node_others = args.emergency_node_runs, args.emergency_node_others
    if (
        args.write
        and emergency_node.NAME in names
        and (node_runs < emergency_node.MIN_RUNS or node_others < emergency_node.DEFAULT_OTHERS)
    ):
        print(
            f"--write needs at least {emergency_node.MIN_RUNS} runs of the emergency on the node and "
            f"{emergency_node.DEFAULT_OTHERS} other objects present",
            file=sys.stderr,
        )
        return 2
    if args.write and scale.NAME in names and args.scale_containment_runs < scale.MIN_CONTAINMENT_RUNS:
        print(f"--write needs at least {scale.MIN_CONTAINMENT_RUNS} containment runs", file=sys.stderr)
        return 2
    if args.write and chaos.NAME in names and (args.chaos_kills < chaos.MIN_KILLS or args.chaos_stops < 1):
        print(
            f"--write needs at least {chaos.MIN_KILLS} kills per path and one stop of each component", file=sys.stderr
        )
        return 2
    if args.write and servers.NAME in names and args.servers_runs < servers.MIN_RUNS:
        print(f"--write needs at least {servers.MIN_RUNS} runs per server", file=sys.stderr)
        return 2
    if args.write and reporting.NAME in names and args.reporting_seconds < reporting.MIN_SECONDS:
        print(f"--write needs a reporting run of at least {reporting.MIN_SECONDS:g} s", file=sys.stderr)
        return 2
    if args.write and args.pod_reload_runs < pod_reload.MIN_RUNS:
        print(f"--write needs at least {pod_reload.MIN_RUNS} pod reload runs", file=sys.stderr)
        return 2
    command = shlex.join(["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            work = pathlib.Path(tmp)
            if name == controlplane.NAME:
                result = controlplane.measure(work, runs=args.controlplane_runs)
                body = controlplane.section(result, command)
            elif name == emergency.NAME:
                result = emergency.measure(work, runs=args.emergency_runs, others=args.emergency_others)
                body = emergency.section(result, command)
            elif name == emergency_node.NAME:
                result = emergency_node.measure(work, runs=node_runs, others=node_others, idle=args.emergency_node_idle)
                body = emergency_node.section(result, command)
            elif name == renewal.NAME:
                result = renewal.measure(work)
                body = renewal.section(result, command)
            elif name == scale.NAME:
                result = scale.measure(
                    work,
                    n=args.scale_n,
                    idle=args.scale_idle,
                    containment_runs=args.scale_containment_runs,
                    small_n=args.scale_small_n,
                    heap=not args.no_scale_heap,
                )
                body = scale.section(result, command)
            elif name == chaos.NAME:
                result = chaos.measure(
                    work,
                    kills=args.chaos_kills,
                    objects=args.chaos_objects,
                    stops=args.chaos_stops,
                    seed=args.chaos_seed,
                )
                body = chaos.section(result, command)
            elif name == servers.NAME:
                result = servers.measure(work, runs=args.servers_runs)
                body = servers.section(result, command)
            elif name == pod_reload.NAME:
                result = pod_reload.measure(work, runs=args.pod_reload_runs, sync_frequency=args.pod_reload_sync)
                body = pod_reload.section(result, command)
            elif name == reporting.NAME:
                result = reporting.measure(work, seconds=args.reporting_seconds)
                body = reporting.section(result, command)
            else:
                result = receiver.measure(work, seconds=args.receiver_seconds, repeats=args.receiver_repeats)
                body = receiver.section(result, command)
        print(harness.dump(result), flush=True)
        if args.write:
            report.write_section(name, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``webhookcerts devcluster up|down|status``: the local cluster from the command line."""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
from types import FrameType

from webhookcerts.devcluster import cluster


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "devcluster", help="a local Kubernetes cluster (etcd, kube-apiserver and a node) for development and tests"
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb, text in (
        (
            "up",
            "start etcd, kube-apiserver and a node (containerd, kubelet, controller-manager, scheduler); "
            "write <dir>/kubeconfig",
        ),
        ("down", "stop every process, container and mount, and remove the state"),
        ("status", "say what runs, and the node's conditions"),
    ):
        sub = verbs.add_parser(verb, help=text, description=text)
        sub.add_argument("--dir", type=pathlib.Path, default=pathlib.Path(".devcluster"), help="state directory")
        if verb == "up":
            sub.add_argument("--apiserver-port", type=int, default=None, help="default: a free loopback port")
            sub.add_argument(
                "--no-node",
                dest="node",
                action="store_false",
                help="the API server alone (etcd + kube-apiserver): starts in seconds, runs no Pods",
            )
    parser.set_defaults(func=run)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    dev = cluster.DevCluster(args.dir)
    if args.verb == "up":
        # A `kill` of a half-started cluster cleans up as Ctrl-C does, instead of leaving it half up.
        signal.signal(signal.SIGTERM, _interrupt)
        state = dev.up(apiserver_port=args.apiserver_port, node=args.node, log=lambda m: print(m, file=sys.stderr))
        print(f"API server: {state.apiserver_url}")
        for name, ref in sorted(state.images.items()):
            print(f"image {name}: {ref}")
        print("point a shell at it (the pinned kubectl and helm first on the PATH):")
        print(f"  export KUBECONFIG={dev.kubeconfig.resolve()} PATH={cluster.bin_dir()}:$PATH")
        if dev.chart_values.exists():
            print("install the chart on its node:")
            print(
                "  helm install webhookcerts charts/webhookcerts -n webhookcerts --create-namespace "
                f"-f {dev.chart_values} --wait"
            )
        print(f"stop it with: webhookcerts devcluster down --dir {args.dir}")
    elif args.verb == "down":
        print("stopped and removed" if dev.down() else f"no cluster in {dev.directory}")
    else:
        for line in dev.status():
            print(line)
    return 0

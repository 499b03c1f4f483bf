"""Arguments every cluster-facing command shares, spelled as kubectl spells them."""

from __future__ import annotations

import argparse


def add_cluster_arguments(
    parser: argparse.ArgumentParser, *, namespace_help: str = "the namespace", repeat_namespace: bool = False
) -> None:
    parser.add_argument(
        "--kubeconfig", default=None, help="path to a kubeconfig (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", default=None, help="the kubeconfig context to use")
    if repeat_namespace:
        parser.add_argument("-n", "--namespace", action="append", default=None, help=namespace_help)
    else:
        parser.add_argument("-n", "--namespace", default=None, help=namespace_help)

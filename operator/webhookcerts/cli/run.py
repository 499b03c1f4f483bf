"""``webhookcerts run``: start the operator (Kopf) against a cluster."""

from __future__ import annotations

import argparse
import logging
import os

from webhookcerts.cli import common


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the operator")
    common.add_cluster_arguments(parser, namespace_help="watch only this namespace (repeatable)", repeat_namespace=True)
    parser.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--liveness", default=None, help="Kopf health endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--standalone", action="store_true", help="no Kopf peering (one replica, or tests)")
    parser.add_argument("--peering", default=None, help="Kopf peering name when several replicas run")
    parser.add_argument("--priority", type=int, default=0, help="Kopf peering priority of this replica")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Kopf imports are heavy and only this command needs them.
    import kopf

    from webhookcerts.handlers import operator
    from webhookcerts.kube import client as kube_client
    from webhookcerts.service import reconcile

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.kubeconfig:
        # Kopf's own login reads KUBECONFIG; the service's clients get the same file.
        os.environ["KUBECONFIG"] = args.kubeconfig
    operator.configure(reconcile.Context(kube_client.load(args.kubeconfig, args.context)))
    namespaces = args.namespace or []
    kopf.run(
        standalone=args.standalone or None,
        peering_name=args.peering,
        priority=args.priority,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0

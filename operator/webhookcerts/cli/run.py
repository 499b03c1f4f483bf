"""``webhookcerts run``: start the operator (Kopf) against a cluster."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import uuid

from webhookcerts.cli import common
from webhookcerts.service import metrics

LOG_FORMATS = ("text", "json")
# Kopf names a peer after $POD_ID (the chart sets it to the pod's name), and so does the priority below.
POD_ID_ENV = "POD_ID"
# Kopf pauses every operator that shares the highest priority, so "auto" draws from a range wide enough
# that two replicas practically never collide.
PRIORITY_RANGE = 2**31 - 1
# Mirrors service.engine.DEFAULT_RESYNC without importing the service for --help.
DEFAULT_RESYNC = 600.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the operator")
    common.add_cluster_arguments(parser, namespace_help="watch only this namespace (repeatable)", repeat_namespace=True)
    parser.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--liveness", default=None, help="Kopf health endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--standalone", action="store_true", help="no Kopf peering (one replica, or tests)")
    parser.add_argument("--peering", default=None, help="Kopf peering name when several replicas run")
    parser.add_argument(
        "--priority",
        type=parse_priority,
        default=0,
        help="Kopf peering priority of this replica: a number, or 'auto' (derived from $POD_ID, distinct per pod)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=metrics.DEFAULT_PORT,
        help=f"serve Prometheus metrics on this port at /metrics (default {metrics.DEFAULT_PORT}; 0 turns it off)",
    )
    parser.add_argument(
        "--metrics-address",
        default="0.0.0.0",  # noqa: S104 - Prometheus scrapes from outside the pod
        help="the address the metrics endpoint listens on (default 0.0.0.0)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("WEBHOOKCERTS_LOG_FORMAT", "text"),
        help="text (the default) or json: one JSON object per line, for log collectors",
    )
    parser.add_argument(
        "--resync-interval",
        type=positive_seconds,
        default=DEFAULT_RESYNC,
        help="seconds between safety-net passes over an object with nothing due (default 600); "
        "they read only memory and write nothing while nothing changed",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="reconcile workers beside the one kept for emergencies (default: twice the cores, at least 4)",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.set_defaults(func=run)


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {value!r}")
    return seconds


def parse_priority(value: str) -> int:
    if value == "auto":
        return auto_priority(os.environ.get(POD_ID_ENV))
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', not {value!r}") from None


def auto_priority(pod_id: str | None) -> int:
    """A priority that is the same for one pod across restarts of its container and differs between pods."""
    seed = pod_id or uuid.uuid4().hex
    return 1 + int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % PRIORITY_RANGE


def configure_logging(log_format: str, verbose: bool) -> None:
    if log_format == "json":
        import kopf

        # Kopf's JSON formatter adds the object reference of its per-object messages.
        kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON)
        # Python warnings would otherwise reach stderr as plain text between the JSON lines.
        logging.captureWarnings(True)
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def run(args: argparse.Namespace) -> int:
    # Kopf imports are heavy and only this command needs them.
    import kopf

    from webhookcerts.handlers import operator
    from webhookcerts.kube import client as kube_client
    from webhookcerts.service import engine, reconcile

    configure_logging(args.log_format, args.verbose)
    if args.kubeconfig:
        # Kopf's own login reads KUBECONFIG; the service's clients get the same file.
        os.environ["KUBECONFIG"] = args.kubeconfig
    context = reconcile.Context(kube_client.load(args.kubeconfig, args.context))
    operator.configure(engine.Engine(context, workers=args.workers, resync=args.resync_interval))
    if args.metrics_port:
        try:
            metrics.serve(args.metrics_port, args.metrics_address)
        except OSError as exc:
            # Loud and early: an operator whose metrics silently vanished would silence its alerts too.
            print(
                f"webhookcerts: cannot serve metrics on {args.metrics_address}:{args.metrics_port}: {exc}",
                file=sys.stderr,
            )
            return 1
        logging.getLogger(__name__).info("serving metrics on %s:%d/metrics", args.metrics_address, args.metrics_port)
    namespaces = args.namespace or []
    try:
        kopf.run(
            standalone=args.standalone or None,
            peering_name=args.peering,
            priority=args.priority,
            namespaces=namespaces,
            clusterwide=not namespaces,
            liveness_endpoint=args.liveness,
        )
    except Exception:
        # Through logging, so that even the last words are a JSON line when the format is json.
        logging.getLogger(__name__).exception("the operator stopped on an error")
        return 1
    return 0

"""``webhookcerts run``: start the operator (Kopf) against a cluster."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys

from webhookcerts.cli import common
from webhookcerts.service import metrics

LOG_FORMATS = ("text", "json")
# A namespace name (an RFC 1123 label), as -n must give one.
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A replica is named in the Lease after $POD_ID (the chart sets it to the pod's name).
POD_ID_ENV = "POD_ID"
# Where the Lease lives: $POD_NAMESPACE (the chart sets it), else the service account's namespace.
POD_NAMESPACE_ENV = "POD_NAMESPACE"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Mirrors service.leader.DEFAULT_DURATION without importing the service for --help.
DEFAULT_LEASE_DURATION = 15
# Mirrors service.engine.DEFAULT_RESYNC without importing the service for --help.
DEFAULT_RESYNC = 600.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the operator")
    common.add_cluster_arguments(
        parser, namespace_help="watch only this namespace, by name (repeatable)", repeat_namespace=True
    )
    parser.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    parser.add_argument(
        "--liveness",
        default=None,
        help="health endpoint, e.g. http://0.0.0.0:8080/healthz: 200 while the workers and the leader election "
        "run (leading or standing by), 500 once one of them has stopped",
    )
    parser.add_argument("--standalone", action="store_true", help="the only replica: no leader election (the default)")
    parser.add_argument(
        "--peering",
        default=None,
        metavar="LEASE",
        help="several replicas: they elect the one that reconciles with this coordination.k8s.io Lease; "
        "the others keep watching and take over when it stops or its lease expires",
    )
    parser.add_argument(
        "--lease-namespace",
        default=None,
        help=f"the namespace of the Lease (default ${POD_NAMESPACE_ENV}, else the service account's, else default)",
    )
    parser.add_argument(
        "--lease-duration",
        type=int,
        default=DEFAULT_LEASE_DURATION,
        help=f"seconds an unrenewed Lease is waited for before a standby takes over (default {DEFAULT_LEASE_DURATION})",
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


def lease_namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get(POD_NAMESPACE_ENV):
        return os.environ[POD_NAMESPACE_ENV]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def identity() -> str:
    """This replica's name in the Lease: the pod's name, else host and process (several on one host)."""
    return os.environ.get(POD_ID_ENV) or f"{socket.gethostname()}-{os.getpid()}"


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
    namespaces = list(dict.fromkeys(args.namespace or []))
    wrong = [n for n in namespaces if not NAMESPACE.fullmatch(n)]
    if wrong:
        # Kopf would take a pattern (team-*); the operator's Secret reflector reads each namespace by
        # name, so a pattern would leave its view without Secrets: refused before anything starts.
        print(f"webhookcerts: not a namespace name: {', '.join(wrong)} (patterns are not supported)", file=sys.stderr)
        return 2
    # Kopf imports are heavy and only this command needs them.
    import kopf

    from webhookcerts.handlers import operator
    from webhookcerts.kube import client as kube_client
    from webhookcerts.kube import report_reads as kube_reports
    from webhookcerts.kube import secretinformer
    from webhookcerts.service import engine, reconcile

    configure_logging(args.log_format, args.verbose)
    if args.kubeconfig:
        # Kopf's own login reads KUBECONFIG; the service's clients get the same file.
        os.environ["KUBECONFIG"] = args.kubeconfig
    context = reconcile.Context(kube_client.load(args.kubeconfig, args.context))
    the_engine = engine.Engine(context, workers=args.workers, resync=args.resync_interval)
    elector = None
    if args.peering:
        from webhookcerts.service import leader

        the_engine.follow()
        elector = leader.Elector(
            context.clients,
            lease_namespace(args.lease_namespace),
            args.peering,
            identity(),
            on_started=the_engine.lead,
            on_stopped=the_engine.follow,
            duration=args.lease_duration,
        )
    # The view is complete once both the WebhookCertificates (Kopf) and the Secrets (the reflector)
    # are listed.
    the_engine.expect(engine.CERTIFICATES, engine.SECRETS)
    secrets = secretinformer.SecretInformer(
        context.clients,
        namespaces,
        on_put=the_engine.secret_seen,
        on_delete=the_engine.secret_gone,
        on_synced=lambda: the_engine.synced(engine.SECRETS),
        on_listed=the_engine.secrets_listed,
    )
    operator.configure(the_engine, elector, secrets)
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
    try:
        why = kube_reports.unreadable(context.clients, namespaces)
        if why is None:
            operator.watch_reports()
        else:
            # Not fatal: status says nothing of presentations, and an observed cut-over, which needs
            # them, waits. Restart once the chart grants get/list/watch on them.
            logging.getLogger(__name__).warning(
                "not watching presentationreports.webhookcerts.io: %s; no object sees what the provider presents",
                why,
            )
        kopf.run(
            # Kopf only watches here; which replica reconciles is the Lease's decision.
            standalone=True,
            namespaces=namespaces,
            clusterwide=not namespaces,
            liveness_endpoint=args.liveness,
        )
    except Exception:
        # Through logging, so that even the last words are a JSON line when the format is json.
        logging.getLogger(__name__).exception("the operator stopped on an error")
        return 1
    return 0

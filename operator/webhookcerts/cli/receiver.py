"""``webhookcerts receiver``: run the reference mTLS webhook receiver.

With ``--report-trust-secret`` it also writes its PresentationReport (receiver/reporting.py): the only
time it talks to the API server. Without it, it needs no Kubernetes access at all.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import pathlib
import signal
import sys
import threading
from types import FrameType

from webhookcerts.cli import common
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import reports as kube_reports
from webhookcerts.receiver import provider_scheme, reporting, server, signatures, signing, tlscontexts


def _interval(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError("expected seconds between 1 and 3600")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "receiver",
        help="the reference webhook endpoint: mTLS, hot-reloaded trust store, optional message signatures",
        description="Accept webhooks over mutual TLS (TLS >= 1.2, client certificate required) and reload "
        "the trust store within a second of a change to the trust directory, without a restart.",
    )
    parser.add_argument("--cert", type=pathlib.Path, required=True, help="serving certificate (PEM, may hold a chain)")
    parser.add_argument("--key", type=pathlib.Path, required=True, help="serving private key (PEM)")
    parser.add_argument(
        "--trust-dir", type=pathlib.Path, required=True, help="directory the trust Secret is mounted at"
    )
    parser.add_argument("--trust-file", default="ca.crt", help="file in --trust-dir (default: ca.crt)")
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default: 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=8443, help="listen port (default: 8443; 0 picks a free one)")
    parser.add_argument(
        "--signature-key",
        action="append",
        default=[],
        metavar="[KEYID=]PATH",
        help="the provider's public key(s), PEM: require signatures. Repeat it, or name a directory (a mounted "
        "Secret) holding one key per file; the keyid is KEYID, else the file name without .pem/.pub/.crt",
    )
    parser.add_argument("--signature-key-id", help="the keyid of a single --signature-key PATH")
    parser.add_argument(
        "--signature-scheme",
        choices=signing.SCHEMES,
        default=signing.DEFAULT_SCHEME,
        help=f"default {signing.DEFAULT_SCHEME}: the provider's webhooks (draft-06, unquoted keys, digest "
        "SHA-256); provider-v15: quoted keys, content-digest sha-512; rfc9421: the standard",
    )
    parser.add_argument(
        "--signature-algorithm",
        choices=signatures.ALGORITHM_NAMES,
        help="rfc9421 only; default: the usual one for the key type (RSA: rsa-pss-sha512)",
    )
    parser.add_argument(
        "--signature-max-age",
        type=float,
        default=300.0,
        help="oldest signature (rfc9421) or longest validity window (provider schemes) accepted, s (default 300)",
    )
    parser.add_argument(
        "--signature-clock-skew",
        type=float,
        default=float(provider_scheme.DEFAULT_SKEW),
        help="provider schemes: clock difference tolerated at created and expires, s "
        f"(default {provider_scheme.DEFAULT_SKEW})",
    )
    limits = parser.add_argument_group("limits", "what a client gets before it has sent a whole request")
    limits.add_argument(
        "--max-connections",
        type=int,
        default=server.MAX_CONNECTIONS,
        help=f"open connections at most; at the cap a newcomer replaces the oldest unfinished handshake "
        f"(default {server.MAX_CONNECTIONS})",
    )
    limits.add_argument(
        "--handshake-timeout",
        type=float,
        default=server.HANDSHAKE_TIMEOUT,
        help=f"seconds for the whole TLS handshake (default {server.HANDSHAKE_TIMEOUT:g})",
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=server.IDLE_TIMEOUT,
        help=f"seconds a connection may wait for its next request (default {server.IDLE_TIMEOUT:g})",
    )
    report = parser.add_argument_group(
        "reporting",
        "write a PresentationReport (which client certificates were presented, counts and a heartbeat) for "
        "the operator; the pod's identity comes from POD_NAME, POD_NAMESPACE and POD_UID (the downward API)",
    )
    report.add_argument(
        "--report-trust-secret",
        metavar="NAME",
        help="report, naming the trust Secret (in the pod's namespace) whose ca.crt --trust-dir holds; "
        "default: no report and no API access",
    )
    report.add_argument(
        "--report-interval",
        type=_interval,
        default=reporting.DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"the heartbeat: write the report at least this often (default {reporting.DEFAULT_INTERVAL:g}); "
        f"a new certificate is written sooner, at most every {reporting.DEFAULT_MIN_GAP:g} s",
    )
    common.add_cluster_arguments(parser, namespace=False)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(func=run)


def _reporting(args: argparse.Namespace) -> tuple[reporting.Tally, kube_reports.Writer] | None:
    """The tally and the report's writer, or None when not reporting; raises ReportingError."""
    if args.report_trust_secret is None:
        return None
    pod = reporting.PodIdentity.from_env()
    try:
        clients = kube_client.load(args.kubeconfig, args.context)
    except kube_client.ConfigError as exc:
        raise reporting.ReportingError(str(exc)) from None
    writer = kube_reports.Writer(clients, namespace=pod.namespace, pod_name=pod.name, pod_uid=pod.uid)
    return reporting.Tally(), writer


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(message)s", stream=sys.stderr)
    config = server.Config(
        cert=args.cert,
        key=args.key,
        trust_dir=args.trust_dir,
        trust_file=args.trust_file,
        host=args.host,
        port=args.port,
        signature_keys=tuple(args.signature_key[:-1]) if args.signature_key_id else tuple(args.signature_key),
        signature_key=pathlib.Path(args.signature_key[-1]) if args.signature_key_id and args.signature_key else None,
        signature_key_id=args.signature_key_id,
        signature_scheme=args.signature_scheme,
        signature_algorithm=args.signature_algorithm,
        signature_max_age=datetime.timedelta(seconds=args.signature_max_age),
        signature_skew=args.signature_clock_skew,
        max_connections=args.max_connections,
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
    )
    try:
        wanted = _reporting(args)
        receiver = server.Receiver(config, tally=wanted[0] if wanted else None)
        reporter = None
        if wanted is not None:
            reporter = reporting.Reporter(
                wanted[0],
                wanted[1],
                trust_secret_name=args.report_trust_secret,
                trust_hash=receiver.served_trust_hash,
                interval=args.report_interval,
            )
    except (tlscontexts.ReceiverError, reporting.ReportingError, OSError) as exc:
        print(f"webhookcerts receiver: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, which runs on this very thread.
        threading.Thread(target=receiver.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if reporter is not None:
        reporter.start()
    try:
        receiver.serve_forever()
    finally:
        if reporter is not None:
            reporter.stop()  # the last counts, bounded in time
    return 0

"""``webhookcerts trust-sync``: keep a directory in step with the trust Secret (a sidecar)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib
import re
import shlex
import signal
import sys
from types import FrameType

from webhookcerts.cli import common
from webhookcerts.domain import reports, trust, truststores
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import reports as kube_reports
from webhookcerts.receiver import accesslog, logreporting, trustsync
from webhookcerts.receiver import reporting as reporting_core


def _secret(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError("expected NAMESPACE/NAME")
    return namespace, name


def _mode(text: str) -> int:
    return int(text, 8)


def _file_name(text: str) -> str:
    # The names the atomic layout accepts (the kubelet's own rule): no path, none of its hidden names.
    if not text or "/" in text or text in (".", "..") or text.startswith(".."):
        raise argparse.ArgumentTypeError(f"not a file name for the directory: {text!r}")
    return text


def _command(text: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split the command: {exc}") from None
    if not argv:
        raise argparse.ArgumentTypeError("an empty command")
    return argv


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("expected a positive number of seconds")
    return value


def _reporter(text: str) -> str:
    if not re.fullmatch(reports.REPORTER, text) or len(text) > 63:
        raise argparse.ArgumentTypeError("a lower-case name: letters, digits and '-' (at most 63)")
    return text


def _read_password(path: pathlib.Path) -> str:
    """The file's content without one trailing newline (what ``echo`` and most editors add)."""
    text = path.read_text(encoding="utf-8")
    return text.removesuffix("\n").removesuffix("\r")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "trust-sync",
        help="watch the trust Secret and write it to a directory in the kubelet's atomic layout",
        description="A sidecar for servers that need trust changes faster than the kubelet delivers them "
        "(the kubelet refreshes Secret volumes only every minute or so). It can add a PKCS#12 or JKS "
        "truststore for the JVM and run a reload command after each change.",
    )
    parser.add_argument("--secret", type=_secret, required=True, metavar="NS/NAME", help="the trust Secret")
    parser.add_argument("--dir", type=pathlib.Path, required=True, help="directory to keep in step")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        help="copy this key of the Secret (repeatable; default: the --source-key, ca.crt); never a "
        "private key: tls.key, *.key and any content that holds a private key are refused",
    )
    parser.add_argument("--mode", type=_mode, default=0o644, help="file mode, octal (default 0644)")
    parser.add_argument(
        "--format",
        choices=truststores.FORMATS,
        default="pem",
        help="pem (default): the Secret's files as they are; pkcs12, jks: also a truststore of the "
        "certificates of --source-key, for the JVM, re-encoded only when those certificates change",
    )
    password = parser.add_mutually_exclusive_group()
    password.add_argument(
        "--password",
        help=f"the truststore password (default {trustsync.DEFAULT_PASSWORD!r}; '' writes a PKCS#12 "
        "without encryption); visible in the process list: prefer --password-file",
    )
    password.add_argument(
        "--password-file",
        type=pathlib.Path,
        metavar="PATH",
        help="read the truststore password from this file (one trailing newline dropped)",
    )
    parser.add_argument(
        "--store-name",
        type=_file_name,
        metavar="NAME",
        help="the truststore's file name in --dir (default truststore.p12 or truststore.jks)",
    )
    parser.add_argument(
        "--source-key",
        default=trust.KEY,
        metavar="KEY",
        help=f"the Secret key whose PEM certificates go into the truststore (default {trust.KEY})",
    )
    parser.add_argument(
        "--exec",
        dest="exec_argv",
        type=_command,
        default=(),
        metavar="CMD",
        help="run this command (split like a shell would, but run without one) after each change "
        "written, e.g. 'nginx -s reload'; a failure is logged and trust-sync goes on; a run still going "
        "when the next change is written is killed and the command run again for it at once",
    )
    parser.add_argument(
        "--exec-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="kill the command after this many seconds (default 60)",
    )
    parser.add_argument("--once", action="store_true", help="write the current version and exit")
    reporting = parser.add_argument_group(
        "reporting presentations",
        "Read the server's own access log and write what it says of the client certificates presented (SHA-1, "
        "accepted or refused) as this pod's PresentationReport (named after POD_NAME, owned by POD_UID, in "
        "POD_NAMESPACE: the downward API). docs/receivers/ gives each server's log format.",
    )
    reporting.add_argument(
        "--access-log",
        metavar="PATH",
        help="the server's access log: a file (followed from its end, across rotation), a FIFO, - (stdin), or "
        "udp://127.0.0.1:PORT (the server's syslog target; loopback only)",
    )
    reporting.add_argument(
        "--access-log-format",
        choices=accesslog.FORMATS,
        help="nginx, haproxy, or line (webhookcerts-presentation sha256=...|sha1=... verdict=accepted|refused)",
    )
    reporting.add_argument(
        "--reporter",
        type=_reporter,
        metavar="NAME",
        help="the server's name in the report (default: nginx, haproxy; 'server' for --access-log-format line)",
    )
    reporting.add_argument(
        "--report-interval",
        type=_seconds,
        default=reporting_core.DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"write the report at least this often: its heartbeat (default {reporting_core.DEFAULT_INTERVAL:g})",
    )
    # The Secret names its own namespace (--secret NS/NAME): no -n.
    common.add_cluster_arguments(parser, namespace=False)
    parser.set_defaults(func=run)


def _password(args: argparse.Namespace) -> str | None:
    """The password asked for, None (with a message printed) when it cannot be used."""
    if args.format == "pem":
        if args.password is not None or args.password_file is not None or args.store_name:
            print(
                "webhookcerts trust-sync: --password, --password-file and --store-name need --format pkcs12 or jks",
                file=sys.stderr,
            )
            return None
        return trustsync.DEFAULT_PASSWORD
    if args.password_file is not None:
        try:
            password = _read_password(args.password_file)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"webhookcerts trust-sync: cannot read --password-file: {exc}", file=sys.stderr)
            return None
    else:
        password = trustsync.DEFAULT_PASSWORD if args.password is None else str(args.password)
    if args.format == "pkcs12" and not password.isascii():
        print("webhookcerts trust-sync: the JDK opens a PKCS#12 only with an ASCII password", file=sys.stderr)
        return None
    return password


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    namespace, name = args.secret
    password = _password(args)
    if password is None:
        return 2
    store_name = args.store_name or trustsync.STORE_NAMES.get(args.format, "")
    if store_name and store_name in args.key:
        print(f"webhookcerts trust-sync: --store-name {store_name} is also a --key", file=sys.stderr)
        return 2
    if args.format != "pem" and args.key and args.source_key not in args.key:
        print(f"webhookcerts trust-sync: --source-key {args.source_key} is not among the --key", file=sys.stderr)
        return 2
    try:
        config = trustsync.Config(
            namespace=namespace,
            name=name,
            directory=args.dir,
            keys=tuple(args.key) or (args.source_key,),
            mode=args.mode,
            format=args.format,
            password=password,
            store_name=store_name,
            source_key=args.source_key,
            exec_argv=tuple(args.exec_argv),
            exec_timeout=args.exec_timeout,
        )
    except ValueError as exc:
        print(f"webhookcerts trust-sync: {exc}", file=sys.stderr)
        return 2
    try:
        clients = kube_client.load(args.kubeconfig, args.context)
    except kube_client.ConfigError as exc:
        print(f"webhookcerts trust-sync: {exc}", file=sys.stderr)
        return 1
    log_reporting = _log_reporting(args, clients)
    if isinstance(log_reporting, int):
        return log_reporting

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # The watch blocks in a socket read for minutes; only an exception gets out of it. A write cut
        # short is harmless: readers still see the previous version and the next write tidies up.
        raise _Stopped

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    on_synced = None
    if log_reporting is not None:
        log_reporting.start()
        on_synced = log_reporting.synced
    try:
        with contextlib.suppress(_Stopped):
            trustsync.sync(clients, config, once=args.once, on_synced=on_synced)
    finally:
        if log_reporting is not None:
            log_reporting.stop()  # one last report: what was counted up to now
    return 0


def _log_reporting(args: argparse.Namespace, clients: kube_client.Clients) -> logreporting.LogReporting | int | None:
    """Reporting as asked (None: not asked), or the exit status after a message saying what is wrong."""
    if args.access_log is None:
        if args.access_log_format or args.reporter:
            print("webhookcerts trust-sync: --access-log-format and --reporter need --access-log", file=sys.stderr)
            return 2
        return None
    if args.access_log_format is None:
        print("webhookcerts trust-sync: --access-log needs --access-log-format", file=sys.stderr)
        return 2
    if args.once:
        print("webhookcerts trust-sync: --access-log reports while trust-sync runs: not with --once", file=sys.stderr)
        return 2
    namespace, name = args.secret
    try:
        pod = reporting_core.PodIdentity.from_env()
        if pod.namespace != namespace:
            # A report names its trust Secret without a namespace: it is the pod's own.
            raise reporting_core.ReportingError(
                f"the trust Secret is in {namespace}, the pod in {pod.namespace}: a report can name only a "
                "trust Secret of its pod's namespace"
            )
        settings = logreporting.Settings(
            args.access_log, args.access_log_format, args.reporter or "", args.report_interval
        )
        writer = kube_reports.Writer(clients, namespace=pod.namespace, pod_name=pod.name, pod_uid=pod.uid)
        return logreporting.LogReporting(settings, writer, name)
    except (reporting_core.ReportingError, ValueError) as exc:
        print(f"webhookcerts trust-sync: {exc}", file=sys.stderr)
        return 2


class _Stopped(BaseException):
    """SIGTERM or SIGINT: stop watching (a BaseException, so no ``except Exception`` on the way eats it)."""

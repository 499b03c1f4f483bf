"""``webhookcerts trust-sync``: keep a directory in step with the trust Secret (a sidecar)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib
import signal
import sys
from types import FrameType

from webhookcerts.kube import client as kube_client
from webhookcerts.receiver import trustsync


def _secret(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError("expected NAMESPACE/NAME")
    return namespace, name


def _mode(text: str) -> int:
    return int(text, 8)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "trust-sync",
        help="watch the trust Secret and write it to a directory in the kubelet's atomic layout",
        description="A sidecar for receivers that need trust changes faster than the kubelet delivers them "
        "(the kubelet refreshes Secret volumes only every minute or so).",
    )
    parser.add_argument("--secret", type=_secret, required=True, metavar="NS/NAME", help="the trust Secret")
    parser.add_argument("--dir", type=pathlib.Path, required=True, help="directory to keep in step")
    parser.add_argument(
        "--key", action="append", default=[], help="only this key of the Secret (repeatable; default: all)"
    )
    parser.add_argument("--mode", type=_mode, default=0o644, help="file mode, octal (default 0644)")
    parser.add_argument("--once", action="store_true", help="write the current version and exit")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, then in-cluster")
    parser.add_argument("--context", help="kubeconfig context")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    namespace, name = args.secret
    try:
        clients = kube_client.load(args.kubeconfig, args.context)
    except kube_client.ConfigError as exc:
        print(f"webhookcerts trust-sync: {exc}", file=sys.stderr)
        return 1

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # The watch blocks in a socket read for minutes; only an exception gets out of it. A write cut
        # short is harmless: readers still see the previous version and the next write tidies up.
        raise _Stopped

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    config = trustsync.Config(namespace=namespace, name=name, directory=args.dir, keys=tuple(args.key), mode=args.mode)
    with contextlib.suppress(_Stopped):
        trustsync.sync(clients, config, once=args.once)
    return 0


class _Stopped(BaseException):
    """SIGTERM or SIGINT: stop watching (a BaseException, so no ``except Exception`` on the way eats it)."""

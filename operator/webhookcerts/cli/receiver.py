"""``webhookcerts receiver``: run the reference mTLS webhook receiver."""

from __future__ import annotations

import argparse
import datetime
import logging
import pathlib
import signal
import sys
import threading
from types import FrameType

from webhookcerts.receiver import server, signatures, tlscontexts


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "receiver",
        help="the reference webhook endpoint: mTLS, hot-reloaded trust store, optional RFC 9421 signatures",
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
        "--signature-key", type=pathlib.Path, help="the provider's public key (PEM): require RFC 9421 signatures"
    )
    parser.add_argument("--signature-key-id", help="accept only signatures with this keyid")
    parser.add_argument(
        "--signature-algorithm",
        choices=signatures.ALGORITHM_NAMES,
        help="default: the usual one for the key type (RSA: rsa-pss-sha512)",
    )
    parser.add_argument(
        "--signature-max-age", type=float, default=300.0, help="oldest signature accepted, seconds (default 300)"
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(message)s", stream=sys.stderr)
    config = server.Config(
        cert=args.cert,
        key=args.key,
        trust_dir=args.trust_dir,
        trust_file=args.trust_file,
        host=args.host,
        port=args.port,
        signature_key=args.signature_key,
        signature_key_id=args.signature_key_id,
        signature_algorithm=args.signature_algorithm,
        signature_max_age=datetime.timedelta(seconds=args.signature_max_age),
    )
    try:
        receiver = server.Receiver(config)
    except (tlscontexts.ReceiverError, OSError) as exc:
        print(f"webhookcerts receiver: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, which runs on this very thread.
        threading.Thread(target=receiver.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    receiver.serve_forever()
    return 0

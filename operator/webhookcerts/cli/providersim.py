"""``webhookcerts provider-sim``: deliver signed webhooks over mTLS as the provider does, then report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import signal
import sys
import threading
from types import FrameType

from webhookcerts.receiver import providersim, signatures, signing


def _rate(text: str) -> float:
    value = float(text.removesuffix("/s"))
    if value <= 0:
        raise argparse.ArgumentTypeError("the rate must be positive")
    return value


def _share(text: str) -> float:
    value = float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("the share is 0 to 1 (or 0% to 100%)")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "provider-sim",
        help="play the webhook provider: signed deliveries over mTLS with retries, then a JSON summary",
        description="Deliver webhooks to --url at --rate for --duration, presenting the certificate from a "
        "PKCS#12 bundle, retrying non-200 answers with exponential backoff. Prints a JSON summary and exits "
        "non-zero if any delivery finally failed.",
    )
    parser.add_argument("--bundle", type=pathlib.Path, required=True, help="PKCS#12 bundle (.p12)")
    password = parser.add_mutually_exclusive_group(required=True)
    password.add_argument("--password-file", type=pathlib.Path, help="file holding the bundle's password")
    password.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    parser.add_argument("--url", required=True, help="https://host:port/path of the receiver")
    parser.add_argument("--ca", type=pathlib.Path, help="CA that signed the receiver's certificate (PEM)")
    parser.add_argument("--rate", type=_rate, default=10.0, help="deliveries per second, e.g. 50 or 50/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to deliver for (default 10)")
    parser.add_argument("--count", type=int, help="number of deliveries (default: rate x duration)")
    parser.add_argument(
        "--signing-key", type=pathlib.Path, help="private key (PEM) to sign deliveries with (default: unsigned)"
    )
    parser.add_argument("--key-id", default="provider-sim", help="keyid in the signature (default provider-sim)")
    parser.add_argument(
        "--signature-scheme",
        choices=signing.SCHEMES,
        default=signing.DEFAULT_SCHEME,
        help=f"how to sign (default {signing.DEFAULT_SCHEME}, as the provider signs webhooks; "
        "provider-v15 and rfc9421 for receivers set to those)",
    )
    parser.add_argument(
        "--signature-algorithm", choices=signatures.ALGORITHM_NAMES, help="rfc9421 only (default: from the key)"
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse connections (default: a new TLS connection per delivery, so every one meets the trust store)",
    )
    parser.add_argument("--max-attempts", type=int, default=6, help="attempts per delivery (default 6)")
    parser.add_argument("--backoff-initial", type=float, default=0.1, help="first retry delay, s (default 0.1)")
    parser.add_argument("--backoff-max", type=float, default=2.0, help="longest retry delay, s (default 2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-attempt socket timeout, s (default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="deliveries in flight at most (default 32)")
    parser.add_argument(
        "--mix-bundle",
        type=pathlib.Path,
        help="a second PKCS#12 bundle (same password), presented with --mix of the deliveries: a provider "
        "part-way through switching to the next certificate",
    )
    parser.add_argument(
        "--mix",
        type=_share,
        default=0.5,
        help="share of the deliveries presenting --mix-bundle, 0.3 or 30%% (default 0.5)",
    )
    parser.add_argument(
        "--tls-max",
        choices=sorted(providersim.TLS_VERSIONS),
        help="highest TLS version offered (default: 1.3); with 1.2 a receiver can name a certificate it refused",
    )
    parser.set_defaults(func=run)


def _password(args: argparse.Namespace) -> bytes:
    password_file: pathlib.Path | None = args.password_file
    if password_file is not None:
        try:
            return password_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise providersim.SimulatorError(f"cannot read the password file: {exc.strerror}") from None
    value: str | None = os.environ.get(args.password_env)
    if value is None:
        raise providersim.SimulatorError(f"environment variable {args.password_env} is not set")
    return value.encode()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    stop = threading.Event()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        stop.set()

    try:
        config = providersim.Config(
            url=args.url,
            bundle=args.bundle,
            password=_password(args),
            ca=args.ca,
            rate=args.rate,
            duration=args.duration,
            count=args.count,
            signing_key=args.signing_key,
            key_id=args.key_id,
            signature_scheme=args.signature_scheme,
            signature_algorithm=args.signature_algorithm,
            keep_alive=args.keep_alive,
            max_attempts=args.max_attempts,
            backoff_initial=args.backoff_initial,
            backoff_max=args.backoff_max,
            timeout=args.timeout,
            concurrency=args.concurrency,
            mix_bundle=args.mix_bundle,
            mix=args.mix if args.mix_bundle is not None else 0.0,
            tls_max=args.tls_max,
        )
        simulator = providersim.Simulator(config)
    except providersim.SimulatorError as exc:
        print(f"webhookcerts provider-sim: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    summary = simulator.run(stop)
    print(json.dumps(summary, indent=2))
    return 0 if summary["failed"] == 0 and summary["delivered"] == summary["sent"] else 1

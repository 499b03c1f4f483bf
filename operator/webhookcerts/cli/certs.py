"""``webhookcerts status|export|rotate|cutover|history``: day-to-day work on WebhookCertificates.

Also reachable as ``kubectl webhookcerts ...``. The operator does the work; these verbs read status,
set the annotations the operator acts on (``rotate`` and ``cutover``), wait for the result and say what
happened in words. This module only declares them; each verb's work is in ``show`` (status, history),
``export`` and ``rotation`` (rotate, cutover). Nothing here prints key material or the bundle password.
"""

from __future__ import annotations

import argparse
import pathlib

from webhookcerts.cli import common, output, rotation, show
from webhookcerts.cli import export as export_cli

DEFAULT_TIMEOUT = rotation.DEFAULT_TIMEOUT


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = subparsers.add_parser(
        "status", help="a table of WebhookCertificates: expiry, renewal time, stage, pending serial"
    )
    status.add_argument("name", nargs="?", help="only this WebhookCertificate")
    common.add_cluster_arguments(status)
    status.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    status.add_argument(
        "-o",
        "--output",
        choices=("wide", "name", *output.DOCUMENT_FORMATS),
        default=None,
        help="wide: more columns; name: resource/name; yaml, json: the objects, as kubectl get prints them",
    )
    status.set_defaults(func=show.run_status)

    export = subparsers.add_parser(
        "export",
        help="write the bundle files (password-protected, sealed) and their manifest to a directory (mode 0600)",
        description="Write the bundle files to submit to the provider: <env>-<name>-<serial>.p12, .crt.pem and "
        ".key.enc.pem with a password, .<recipient>.p7m or .pgp sealed to each recipient, and .manifest.txt. "
        "The password stays in its Secret and is never printed.",
    )
    export.add_argument("name")
    export.add_argument("--next", action="store_true", help="the pending next certificate instead of the current")
    export.add_argument("--out", type=pathlib.Path, metavar="DIR", help="directory to write to")
    export.add_argument(
        "--print-manifest",
        action="store_true",
        help="print the manifest (serial, SHA-256 of certificate and public key, validity, files) and write nothing",
    )
    common.add_cluster_arguments(export)
    export.set_defaults(func=export_cli.run_export)

    rotate = subparsers.add_parser(
        "rotate",
        help="start an emergency rotation: the current key is treated as compromised",
        description="Annotates the WebhookCertificate with webhookcerts.io/emergency-rotation=REF and waits "
        "until the operator has issued the replacement. Planned rotations start on their own.",
    )
    rotate.add_argument("name")
    rotate.add_argument("--emergency", action="store_true", help="required: say that this is an emergency")
    rotate.add_argument("--reason", required=True, metavar="REF", help="the incident reference, e.g. INC-1234")
    _add_wait_arguments(rotate)
    common.add_cluster_arguments(rotate)
    rotate.set_defaults(func=rotation.run_rotate)

    cutover = subparsers.add_parser(
        "cutover",
        help="make the pending next certificate the current one (once the provider uses it)",
        description="Annotates the WebhookCertificate with webhookcerts.io/cutover=SERIAL and waits until the "
        "operator has cut over; the old certificate is retired, its key destroyed, and no longer trusted.",
    )
    cutover.add_argument("name")
    cutover.add_argument("--serial", default=None, help="the serial to cut over to (default: the pending one)")
    _add_wait_arguments(cutover)
    common.add_cluster_arguments(cutover)
    cutover.set_defaults(func=rotation.run_cutover)

    history = subparsers.add_parser("history", help="the retired certificates and the revoked fingerprints")
    history.add_argument("name")
    history.add_argument(
        "-o", "--output", choices=output.DOCUMENT_FORMATS, default=None, help="a document instead of a table"
    )
    common.add_cluster_arguments(history)
    history.set_defaults(func=show.run_history)


def _add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="set the annotation and return")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the operator (default {DEFAULT_TIMEOUT:g})",
    )

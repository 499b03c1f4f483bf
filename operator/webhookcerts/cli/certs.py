"""``webhookcerts status|export|rotate|cutover|history``: day-to-day work on WebhookCertificates.

Also reachable as ``kubectl webhookcerts ...``. The operator does the work; these verbs read status,
set the annotations the operator acts on (``rotate`` and ``cutover``), wait for the result and say what
happened in words. They refuse up front what the operator would refuse, so a typo never becomes a
condition to clean up. Nothing here prints key material or the bundle password.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pydantic

from webhookcerts.cli import common
from webhookcerts.domain import conditions, models, names, pki, policy
from webhookcerts.kube import cli_support

T = TypeVar("T")

CommandError = cli_support.CommandError
POLL_SECONDS = 0.5
DEFAULT_TIMEOUT = 180.0
# A fingerprint is 64 hex digits; 16 tell certificates apart in a table, the full ones follow below it.
SHORT_FINGERPRINT = 16


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = subparsers.add_parser(
        "status", help="a table of WebhookCertificates: expiry, renewal time, stage, pending serial"
    )
    status.add_argument("name", nargs="?", help="only this WebhookCertificate")
    common.add_cluster_arguments(status)
    status.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    status.add_argument("-o", "--output", choices=("wide", "json"), default=None, help="more columns, or JSON")
    status.set_defaults(func=run_status)

    export = subparsers.add_parser(
        "export",
        help="write the password-protected bundle files to a directory (mode 0600)",
        description="Write the bundle files to submit to the provider: <env>-<name>-<serial>.p12, .crt.pem and "
        ".key.enc.pem. The password stays in its Secret and is never printed.",
    )
    export.add_argument("name")
    export.add_argument("--next", action="store_true", help="the pending next certificate instead of the current")
    export.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR", help="directory to write to")
    common.add_cluster_arguments(export)
    export.set_defaults(func=run_export)

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
    rotate.set_defaults(func=run_rotate)

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
    cutover.set_defaults(func=run_cutover)

    history = subparsers.add_parser("history", help="the retired certificates and the revoked fingerprints")
    history.add_argument("name")
    history.add_argument("-o", "--output", choices=("json",), default=None, help="JSON instead of a table")
    common.add_cluster_arguments(history)
    history.set_defaults(func=run_history)


def _add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="set the annotation and return")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the operator (default {DEFAULT_TIMEOUT:g})",
    )


# --- reading objects -------------------------------------------------------------------------------


def _session(args: argparse.Namespace) -> cli_support.Session:
    return cli_support.connect(args.kubeconfig, args.context, args.namespace)


def _status(obj: dict[str, Any]) -> models.WebhookCertificateStatus:
    try:
        return models.WebhookCertificateStatus.model_validate(obj.get("status") or {})
    except pydantic.ValidationError:
        # Status the operator has not written (or a newer operator's) still gets a row, with dashes.
        return models.WebhookCertificateStatus()


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    # Read as written: the table must show an object even when its spec would not validate.
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _time(value: datetime.datetime | None) -> str | None:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _same_serial(a: str, b: str) -> bool:
    # As the operator compares them: serials are copied from openssl (colons, lower case) as often as from status.
    def canon(serial: str) -> str:
        return serial.replace(":", "").strip().upper().lstrip("0")

    return canon(a) == canon(b)


def _settled(status: models.WebhookCertificateStatus) -> bool:
    """Whether the operator has finished its pass: a step records itself before the stage is derived."""
    return status.stage == policy.stage_of(status)


def _hint(session: cli_support.Session, command: str) -> str:
    return f"webhookcerts {command} -n {session.namespace}"


# --- status ----------------------------------------------------------------------------------------


def _row(obj: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj.get("metadata") or {}, _spec(obj), _status(obj)
    ready = conditions.get(status.conditions, names.READY)
    current, pending = status.current, status.next
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "environment": spec.get("environment"),
        "stage": status.stage,
        "ready": ready.status if ready else None,
        "readyReason": ready.reason if ready else None,
        "current": None
        if current is None
        else {
            "serial": current.serial,
            "fingerprint": current.fingerprint,
            "notBefore": _time(current.not_before),
            "notAfter": _time(current.not_after),
            "secretName": current.secret_name,
            "compromisedBy": current.compromised_by,
        },
        "renewalTime": _time(status.renewal_time),
        "next": None
        if pending is None
        else {
            "serial": pending.serial,
            "fingerprint": pending.fingerprint,
            "reason": pending.reason,
            "notAfter": _time(pending.not_after),
            "secretName": pending.secret_name,
        },
        "revision": status.revision,
        "trustSecret": (spec.get("trust") or {}).get("secretName"),
        "bundleSecret": status.bundle.secret_name if status.bundle else None,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> list[str]:
    cells = [list(header), *([c or "-" for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def run_status(args: argparse.Namespace) -> int:
    session = _session(args)
    if args.name:
        objects = [cli_support.get(session, args.name)]
    else:
        objects = cli_support.list_objects(session, all_namespaces=args.all_namespaces)
    rows = sorted((_row(o) for o in objects), key=lambda r: (r["namespace"] or "", r["name"] or ""))
    if args.output == "json":
        print(json.dumps({"items": rows}, indent=2))
        return 0
    if not rows:
        where = "any namespace" if args.all_namespaces else f"namespace {session.namespace}"
        print(f"No webhookcertificates found in {where}.", file=sys.stderr)
        return 0
    header = ["NAME", "ENVIRONMENT", "EXPIRES", "RENEWAL", "STAGE", "NEXT"]
    if args.output == "wide":
        header += ["NEXT-REASON", "READY", "SERIAL", "SECRET", "TRUST", "REVISION"]
    if args.all_namespaces:
        header.insert(0, "NAMESPACE")
    table = []
    for row in rows:
        current, pending = row["current"] or {}, row["next"] or {}
        cells = [row["name"], row["environment"], current.get("notAfter"), row["renewalTime"], row["stage"]]
        cells.append(pending.get("serial"))
        if args.output == "wide":
            ready = row["ready"] and (
                row["ready"] if row["ready"] == "True" else f"{row['ready']}/{row['readyReason']}"
            )
            secret = current.get("secretName")
            cells += [pending.get("reason"), ready, current.get("serial"), secret, row["trustSecret"]]
            cells.append(str(row["revision"]))
        if args.all_namespaces:
            cells.insert(0, row["namespace"])
        table.append(cells)
    for line in _table(header, table):
        print(line)
    return 0


# --- history ---------------------------------------------------------------------------------------


def run_history(args: argparse.Namespace) -> int:
    session = _session(args)
    status = _status(cli_support.get(session, args.name))
    if args.output == "json":
        document = {
            "history": [h.model_dump(by_alias=True, mode="json") for h in status.history],
            "revokedFingerprints": status.revoked_fingerprints,
        }
        print(json.dumps(document, indent=2))
        return 0
    if status.history:
        header = ["SERIAL", "FINGERPRINT", "NOT AFTER", "REASON", "RETIRED AT", "INCIDENT"]
        rows = [
            [h.serial, h.fingerprint[:SHORT_FINGERPRINT], _time(h.not_after), h.reason, _time(h.retired_at), h.incident]
            for h in status.history
        ]
        for line in _table(header, rows):
            print(line)
    else:
        print(f"{args.name} has retired no certificate yet.")
    print()
    if status.revoked_fingerprints:
        print(f"Revoked fingerprints ({len(status.revoked_fingerprints)}), never trusted again:")
        for fingerprint in status.revoked_fingerprints:
            print(f"  {fingerprint}")
    else:
        print("Revoked fingerprints: none.")
    return 0


# --- export ----------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    session = _session(args)
    obj = cli_support.get(session, args.name)
    spec, status = _spec(obj), _status(obj)
    bundle_spec = spec.get("bundle") or {}
    ref = bundle_spec.get("passwordSecretRef") or {}
    if not ref:
        raise CommandError(
            f"{args.name} has no bundle: set spec.bundle.passwordSecretRef to a Secret holding the bundle "
            f"password (e.g. kubectl -n {session.namespace} patch whc {args.name} --type merge -p "
            '\'{"spec":{"bundle":{"passwordSecretRef":{"name":"SECRET","key":"password"}}}}\'), '
            "and the operator writes the password-protected bundle"
        )
    if status.bundle is None:
        written = conditions.get(status.conditions, names.BUNDLE_READY)
        why = f": {written.message}" if written is not None and written.status != "True" else ""
        raise CommandError(f"the bundle of {args.name} has not been written yet{why}")

    record: models.CertificateRecord
    if args.next:
        if status.next is None:
            raise CommandError(f"{args.name} has no pending next certificate: there is nothing to export with --next")
        record = status.next
    else:
        if status.current is None:
            raise CommandError(f"{args.name} has no certificate yet (stage {status.stage or 'Issuing'})")
        record = status.current

    bundle = cli_support.read_secret(session, status.bundle.secret_name)
    stem = pki.bundle_stem(str(spec.get("environment")), args.name, record.serial)
    files = {key: value for key, value in bundle.data.items() if key.startswith(f"{stem}.")}
    if not files:
        if not args.next and record.compromised_by:
            raise CommandError(
                f"serial {record.serial} is compromised (incident {record.compromised_by}): its bundle was "
                "withdrawn; export the replacement with --next"
            )
        raise CommandError(
            f"Secret {bundle.name} holds no files for serial {record.serial} yet; the operator writes them "
            "after each rotation: try again in a moment"
        )
    args.out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for filename, content in sorted(files.items()):
        path = args.out / filename
        _write_private(path, content)
        print(path)
    print(
        f"serial {record.serial} ({'next' if args.next else 'current'}); the password is in Secret "
        f"{ref.get('name')}, key {ref.get('key', 'password')!r} (not shown)"
    )
    return 0


def _write_private(path: pathlib.Path, content: bytes) -> None:
    """Write ``content`` with mode 0600 from the first byte, replacing any older file atomically."""
    # mkstemp creates the file 0600, so the bytes are never readable by others, even for a moment.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


# --- rotate and cut over ---------------------------------------------------------------------------


def _wait(
    session: cli_support.Session,
    name: str,
    timeout: float,
    what: str,
    done: Callable[[dict[str, Any]], T | None],
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = done(cli_support.get(session, name))
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise CommandError(
                f"timed out after {timeout:g} s waiting for {what}; is the operator running? "
                f"(kubectl -n {session.namespace} describe whc {name})"
            )
        time.sleep(POLL_SECONDS)


def run_rotate(args: argparse.Namespace) -> int:
    if not args.emergency:
        raise CommandError(
            "only an emergency rotation is started by hand (rotate NAME --emergency --reason REF); "
            "a planned rotation starts on its own at the renewal time"
        )
    problem = policy.validate_reference(args.reason)
    if problem is not None:
        raise CommandError(f"--reason: {problem}")
    session = _session(args)
    before = _status(cli_support.get(session, args.name))
    handled = before.last_emergency_rotation
    if handled is not None and handled.reference == args.reason:
        raise CommandError(
            f"incident {args.reason} was already handled at {_time(handled.handled_at)}: "
            "a new incident needs a new reference"
        )
    cli_support.annotate(session, args.name, {names.EMERGENCY_ANNOTATION: args.reason})
    if not args.wait:
        print(
            f"emergency rotation of {args.name} for incident {args.reason} requested; "
            f"follow it with: {_hint(session, 'status ' + args.name)}"
        )
        return 0

    def handled_now(obj: dict[str, Any]) -> models.WebhookCertificateStatus | None:
        status = _status(obj)
        record = status.last_emergency_rotation
        # Containment is recorded first; the command waits on until the replacement is issued too.
        issued = status.next is not None and status.next.reason == "Emergency"
        return (
            status if record is not None and record.reference == args.reason and issued and _settled(status) else None
        )

    after = _wait(session, args.name, args.timeout, f"the emergency rotation for {args.reason}", handled_now)
    assert after.last_emergency_rotation is not None
    handled_at = _time(after.last_emergency_rotation.handled_at)
    print(f"emergency rotation of {args.name} for incident {args.reason} done at {handled_at}")
    if after.current is not None:
        revoked = after.current.fingerprint in after.revoked_fingerprints
        fate = "removed from the trust store" if revoked else "still trusted until the cut-over (KeepUntilCutover)"
        print(f"  compromised: serial {after.current.serial}, {fate}")
    if after.next is not None:
        print(
            f"  new:         serial {after.next.serial}, expires {_time(after.next.not_after)}, "
            f"key in Secret {after.next.secret_name} (pending)"
        )
    print(
        f"Next: submit the new bundle to the provider ({_hint(session, 'export ' + args.name)} --next --out DIR), "
        f"then cut over ({_hint(session, 'cutover ' + args.name)})."
    )
    return 0


def run_cutover(args: argparse.Namespace) -> int:
    session = _session(args)
    before = _status(cli_support.get(session, args.name))
    current, pending = before.current, before.next
    if args.serial and pending is None and current is not None and _same_serial(args.serial, current.serial):
        print(f"serial {current.serial} is already the current certificate of {args.name}")
        return 0
    if pending is None:
        raise CommandError(
            f"no rotation is pending for {args.name} (stage {before.stage or '-'}): "
            "there is no next certificate to cut over to"
        )
    if args.serial and not _same_serial(args.serial, pending.serial):
        raise CommandError(
            f"serial {args.serial} is not the pending next certificate of {args.name}: that is serial {pending.serial}"
        )
    ready = conditions.get(before.conditions, names.READY)
    if ready is not None and ready.status == "False":
        raise CommandError(
            f"{args.name} is not ready ({ready.reason}), the operator will not cut over: {ready.message}"
        )
    cli_support.annotate(session, args.name, {names.CUTOVER_ANNOTATION: pending.serial})
    if not args.wait:
        print(
            f"cut-over of {args.name} to serial {pending.serial} requested; "
            f"follow it with: {_hint(session, 'status ' + args.name)}"
        )
        return 0

    def cut_over(obj: dict[str, Any]) -> models.WebhookCertificateStatus | None:
        status = _status(obj)
        if status.current is not None and _same_serial(status.current.serial, pending.serial) and _settled(status):
            return status
        refused = conditions.get(status.conditions, names.CUTOVER_REFUSED)
        if refused is not None and refused.status == "True" and pending.serial in refused.message:
            raise CommandError(f"the operator refused the cut-over: {refused.message}")
        not_ready = conditions.get(status.conditions, names.READY)
        if not_ready is not None and not_ready.status == "False":
            raise CommandError(f"the operator cannot cut over {args.name} ({not_ready.reason}): {not_ready.message}")
        return None

    after = _wait(session, args.name, args.timeout, f"the cut-over to serial {pending.serial}", cut_over)
    assert after.current is not None
    print(
        f"cut over {args.name}: serial {after.current.serial} is now current (expires {_time(after.current.not_after)})"
    )
    if current is not None:
        retired = next((h for h in after.history if h.fingerprint == current.fingerprint), None)
        how = (
            f"{retired.reason}{f', incident {retired.incident}' if retired.incident else ''}" if retired else "retired"
        )
        print(f"  retired: serial {current.serial} ({how}); its key is destroyed and it is no longer trusted")
    return 0

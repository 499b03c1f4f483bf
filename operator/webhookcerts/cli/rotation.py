"""``webhookcerts rotate`` and ``cutover``: set the annotation the operator acts on, then wait for it.

They refuse up front what the operator would refuse, so a typo never becomes a condition to clean up,
and once the operator has acted they say in words what changed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

from webhookcerts.cli import objects
from webhookcerts.domain import conditions, models, names, policy
from webhookcerts.kube import cli_support

T = TypeVar("T")

CommandError = objects.CommandError
POLL_SECONDS = 0.5
DEFAULT_TIMEOUT = 180.0


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


def _request(session: cli_support.Session, args: argparse.Namespace, annotation: str, value: str, what: str) -> bool:
    """Set the annotation the operator acts on; whether to wait for it (with --no-wait, say how to follow it)."""
    cli_support.annotate(session, args.name, {annotation: value})
    if not args.wait:
        print(f"{what} requested; follow it with: {objects.hint(session, 'status ' + args.name)}")
    return bool(args.wait)


def run_rotate(args: argparse.Namespace) -> int:
    if not args.emergency:
        raise CommandError(
            "only an emergency rotation is started by hand (rotate NAME --emergency --reason REF); "
            "a planned rotation starts on its own at the renewal time"
        )
    problem = policy.validate_reference(args.reason)
    if problem is not None:
        raise CommandError(f"--reason: {problem}")
    session = objects.session(args)
    before = objects.status_of(cli_support.get(session, args.name))
    handled = before.last_emergency_rotation
    if handled is not None and handled.reference == args.reason:
        raise CommandError(
            f"incident {args.reason} was already handled at {objects.stamp(handled.handled_at)}: "
            "a new incident needs a new reference"
        )
    what = f"emergency rotation of {args.name} for incident {args.reason}"
    if not _request(session, args, names.EMERGENCY_ANNOTATION, args.reason, what):
        return 0

    def handled_now(obj: dict[str, Any]) -> models.WebhookCertificateStatus | None:
        status = objects.status_of(obj)
        record = status.last_emergency_rotation
        # Containment is recorded first; the command waits on until the replacement is issued too.
        issued = status.next is not None and status.next.reason == "Emergency"
        return (
            status
            if record is not None and record.reference == args.reason and issued and objects.settled(status)
            else None
        )

    after = _wait(session, args.name, args.timeout, f"the emergency rotation for {args.reason}", handled_now)
    assert after.last_emergency_rotation is not None
    handled_at = objects.stamp(after.last_emergency_rotation.handled_at)
    print(f"emergency rotation of {args.name} for incident {args.reason} done at {handled_at}")
    if after.current is not None:
        revoked = after.current.fingerprint in after.revoked_fingerprints
        fate = "removed from the trust store" if revoked else "still trusted until the cut-over (KeepUntilCutover)"
        print(f"  compromised: serial {after.current.serial}, {fate}")
    if after.next is not None:
        print(
            f"  new:         serial {after.next.serial}, expires {objects.stamp(after.next.not_after)}, "
            f"key in Secret {after.next.secret_name} (pending)"
        )
    export, cutover = objects.hint(session, "export " + args.name), objects.hint(session, "cutover " + args.name)
    print(f"Next: submit the new bundle to the provider ({export} --next --out DIR), then cut over ({cutover}).")
    return 0


def run_cutover(args: argparse.Namespace) -> int:
    session = objects.session(args)
    before = objects.status_of(cli_support.get(session, args.name))
    current, pending = before.current, before.next
    if args.serial and pending is None and current is not None and objects.same_serial(args.serial, current.serial):
        print(f"serial {current.serial} is already the current certificate of {args.name}")
        return 0
    if pending is None:
        raise CommandError(
            f"no rotation is pending for {args.name} (stage {before.stage or '-'}): "
            "there is no next certificate to cut over to"
        )
    if args.serial and not objects.same_serial(args.serial, pending.serial):
        raise CommandError(
            f"serial {args.serial} is not the pending next certificate of {args.name}: that is serial {pending.serial}"
        )
    ready = conditions.get(before.conditions, names.READY)
    if ready is not None and ready.status == "False":
        raise CommandError(
            f"{args.name} is not ready ({ready.reason}), the operator will not cut over: {ready.message}"
        )
    what = f"cut-over of {args.name} to serial {pending.serial}"
    if not _request(session, args, names.CUTOVER_ANNOTATION, pending.serial, what):
        return 0

    def cut_over(obj: dict[str, Any]) -> models.WebhookCertificateStatus | None:
        status = objects.status_of(obj)
        if (
            status.current is not None
            and objects.same_serial(status.current.serial, pending.serial)
            and objects.settled(status)
        ):
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
    expires = objects.stamp(after.current.not_after)
    print(f"cut over {args.name}: serial {after.current.serial} is now current (expires {expires})")
    if current is not None:
        retired = next((h for h in after.history if h.fingerprint == current.fingerprint), None)
        how = (
            f"{retired.reason}{f', incident {retired.incident}' if retired.incident else ''}" if retired else "retired"
        )
        print(f"  retired: serial {current.serial} ({how}); its key is destroyed and it is no longer trusted")
    return 0

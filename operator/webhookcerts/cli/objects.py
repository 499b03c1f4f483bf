"""What the WebhookCertificate verbs share: the session, objects read leniently, times and serials.

The verbs read objects the operator may not have finished writing (or a newer operator wrote), so a
missing or unreadable status becomes an empty one rather than an error, and the spec is read as
written rather than validated.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Sequence
from typing import Any

import pydantic

from webhookcerts.domain import models, policy
from webhookcerts.kube import cli_support

CommandError = cli_support.CommandError


def session(args: argparse.Namespace) -> cli_support.Session:
    return cli_support.connect(args.kubeconfig, args.context, args.namespace)


def status_of(obj: dict[str, Any]) -> models.WebhookCertificateStatus:
    try:
        return models.WebhookCertificateStatus.model_validate(obj.get("status") or {})
    except pydantic.ValidationError:
        # Status the operator has not written (or a newer operator's) still gets a row, with dashes.
        return models.WebhookCertificateStatus()


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    # Read as written: the table must show an object even when its spec would not validate.
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def stamp(value: datetime.datetime | None) -> str | None:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def same_serial(a: str, b: str) -> bool:
    # As the operator compares them: serials are copied from openssl (colons, lower case) as often as from status.
    def canon(serial: str) -> str:
        return serial.replace(":", "").strip().upper().lstrip("0")

    return canon(a) == canon(b)


def settled(status: models.WebhookCertificateStatus) -> bool:
    """Whether the operator has finished its pass: a step records itself before the stage is derived."""
    return status.stage == policy.stage_of(status)


def hint(session: cli_support.Session, command: str) -> str:
    return f"webhookcerts {command} -n {session.namespace}"


def table(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> list[str]:
    cells = [list(header), *([c or "-" for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]

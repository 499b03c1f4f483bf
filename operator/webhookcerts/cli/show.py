"""``webhookcerts status`` and ``history``: what the WebhookCertificates hold, as tables or documents.

Only the WebhookCertificate objects are read, never a Secret: the key material stays where it is, and
these verbs print nothing the RBAC for the custom resource alone would not show.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhookcerts.cli import objects, output
from webhookcerts.domain import conditions, names
from webhookcerts.kube import cli_support

# A fingerprint is 64 hex digits; 16 tell certificates apart in a table, the full ones follow below it.
SHORT_FINGERPRINT = 16


def _row(obj: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj.get("metadata") or {}, objects.spec_of(obj), objects.status_of(obj)
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
            "notBefore": objects.stamp(current.not_before),
            "notAfter": objects.stamp(current.not_after),
            "secretName": current.secret_name,
            "compromisedBy": current.compromised_by,
            "lastPresented": objects.stamp(current.last_presented),
            "presentations": current.presentations,
        },
        "renewalTime": objects.stamp(status.renewal_time),
        "next": None
        if pending is None
        else {
            "serial": pending.serial,
            "fingerprint": pending.fingerprint,
            "reason": pending.reason,
            "notAfter": objects.stamp(pending.not_after),
            "secretName": pending.secret_name,
            "lastPresented": objects.stamp(pending.last_presented),
            "presentations": pending.presentations,
        },
        "revision": status.revision,
        "trustSecret": (spec.get("trust") or {}).get("secretName"),
        "bundleSecret": status.bundle.secret_name if status.bundle else None,
    }


def _seen(record: dict[str, Any]) -> str | None:
    if not record.get("lastPresented"):
        return None
    return f"{record['lastPresented']}({record.get('presentations') or 0})"


def _place(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def run_status(args: argparse.Namespace) -> int:
    session = objects.session(args)
    if args.name:
        found = [cli_support.get(session, args.name)]
    else:
        found = cli_support.list_objects(session, all_namespaces=args.all_namespaces)
    found = sorted(found, key=_place)
    if args.output in output.DOCUMENT_FORMATS:
        printable = [output.printable(o) for o in found]
        # As kubectl get: the object itself when it was named, else a List (an empty one too).
        print(output.dump(printable[0] if args.name else output.as_list(printable), args.output))
        return 0
    rows = [_row(o) for o in found]
    if not rows:
        where = "any namespace" if args.all_namespaces else f"namespace {session.namespace}"
        print(f"No webhookcertificates found in {where}.", file=sys.stderr)
        return 0
    if args.output == "name":
        for obj in found:
            print(output.name_of(obj))
        return 0
    header = ["NAME", "ENVIRONMENT", "EXPIRES", "RENEWAL", "STAGE", "NEXT"]
    if args.output == "wide":
        header += ["NEXT-REASON", "READY", "SERIAL", "SECRET", "TRUST", "REVISION", "CURRENT-SEEN", "NEXT-SEEN"]
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
            # When an endpoint last accepted each certificate, with how often (issue 24's reports).
            cells += [_seen(current), _seen(pending)]
        if args.all_namespaces:
            cells.insert(0, row["namespace"])
        table.append(cells)
    for line in objects.table(header, table):
        print(line)
    return 0


def run_history(args: argparse.Namespace) -> int:
    session = objects.session(args)
    status = objects.status_of(cli_support.get(session, args.name))
    if args.output in output.DOCUMENT_FORMATS:
        document = {
            "history": [h.model_dump(by_alias=True, mode="json") for h in status.history],
            "revokedFingerprints": status.revoked_fingerprints,
            "revokedPresentations": [r.model_dump(by_alias=True, mode="json") for r in status.revoked_presentations],
        }
        print(output.dump(document, args.output))
        return 0
    if status.history:
        # A retired certificate presented again (the provider late, or someone holding its key).
        presented = {r.fingerprint: r.last_seen for r in status.revoked_presentations}
        header = ["SERIAL", "FINGERPRINT", "NOT AFTER", "REASON", "RETIRED AT", "INCIDENT", "LAST PRESENTED"]
        rows = [
            [
                h.serial,
                h.fingerprint[:SHORT_FINGERPRINT],
                objects.stamp(h.not_after),
                h.reason,
                objects.stamp(h.retired_at),
                h.incident,
                objects.stamp(presented.get(h.fingerprint)),
            ]
            for h in status.history
        ]
        for line in objects.table(header, rows):
            print(line)
    else:
        print(f"{args.name} has retired no certificate yet.")
    print()
    if status.revoked_fingerprints:
        print(f"Revoked fingerprints ({len(status.revoked_fingerprints)}), never trusted again:")
        for fingerprint in status.revoked_fingerprints:
            print(f"  {fingerprint}")
        for record in status.revoked_presentations:
            print(f"  presented after revocation: {record.fingerprint}, last at {objects.stamp(record.last_seen)}")
    else:
        print("Revoked fingerprints: none.")
    return 0

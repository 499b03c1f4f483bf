"""``webhookcerts export``: the bundle files to submit to the provider, written 0600 to a directory.

The only verb that writes key material anywhere, and only encrypted (the PKCS#12 and the encrypted
PEM key); the password stays in its Secret and is never printed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import tempfile

from webhookcerts.cli import objects
from webhookcerts.domain import conditions, models, names, pki
from webhookcerts.kube import cli_support

CommandError = objects.CommandError


def run_export(args: argparse.Namespace) -> int:
    session = objects.session(args)
    obj = cli_support.get(session, args.name)
    spec, status = objects.spec_of(obj), objects.status_of(obj)
    bundle_spec = spec.get("bundle") or {}
    ref = bundle_spec.get("passwordSecretRef") or {}
    if not ref:
        raise CommandError(
            f"{args.name} has no bundle: set spec.bundle.passwordSecretRef to a Secret holding the bundle "
            f"password (e.g. kubectl -n {session.namespace} patch whc {args.name} --type merge -p "
            '\'{"spec":{"bundle":{"passwordSecretRef":{"name":"SECRET","key":"password"}}}}\'), '
            "and the operator writes the password-protected bundle"
        )
    record: models.CertificateRecord
    if args.next:
        if status.next is None:
            raise CommandError(f"{args.name} has no pending next certificate: there is nothing to export with --next")
        record = status.next
    else:
        if status.current is None:
            raise CommandError(f"{args.name} has no certificate yet (stage {status.stage or 'Issuing'})")
        record = status.current
        if record.compromised_by:
            # Never handed out, whatever the bundle Secret still holds: submitting a compromised key
            # again would undo the emergency rotation.
            replacement = (
                f"export its replacement, serial {status.next.serial}"
                if status.next is not None
                else "its replacement is not issued yet; once it is, export it"
            )
            raise CommandError(
                f"serial {record.serial} of {args.name} is compromised (incident {record.compromised_by}) and is "
                f"not exported: {replacement} with: {objects.hint(session, 'export ' + args.name)} --next "
                f"--out {shlex.quote(str(args.out))}"
            )

    if status.bundle is None:
        written = conditions.get(status.conditions, names.BUNDLE_READY)
        why = f": {written.message}" if written is not None and written.status != "True" else ""
        raise CommandError(f"the bundle of {args.name} has not been written yet{why}")
    bundle = cli_support.read_secret(session, status.bundle.secret_name)
    stem = pki.bundle_stem(str(spec.get("environment")), args.name, record.serial)
    files = {key: value for key, value in bundle.data.items() if key.startswith(f"{stem}.")}
    if not files:
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

"""``webhookcerts export``: the bundle files to submit to the provider, written 0600 to a directory.

The only verb that writes key material anywhere, and only encrypted: the PKCS#12 and the encrypted
PEM key (the password stays in its Secret and is never printed), and the files sealed to the
provider's public keys. Each export also writes the certificate's manifest (``domain.manifest``),
which ``--print-manifest`` prints instead of writing anything.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import tempfile

from webhookcerts.cli import objects
from webhookcerts.domain import conditions, manifest, models, names, pki
from webhookcerts.kube import cli_support

CommandError = objects.CommandError


def run_export(args: argparse.Namespace) -> int:
    session = objects.session(args)
    obj = cli_support.get(session, args.name)
    spec, status = objects.spec_of(obj), objects.status_of(obj)
    bundle_spec = spec.get("bundle") or {}
    ref = bundle_spec.get("passwordSecretRef") or {}
    if not ref and not bundle_spec.get("recipients"):
        raise CommandError(
            f"{args.name} has no bundle: set spec.bundle.recipients to the provider's public keys, or "
            "spec.bundle.passwordSecretRef to a Secret holding the bundle "
            f"password (e.g. kubectl -n {session.namespace} patch whc {args.name} --type merge -p "
            '\'{"spec":{"bundle":{"passwordSecretRef":{"name":"SECRET","key":"password"}}}}\'), '
            "and the operator writes the bundle"
        )
    if args.out is None and not args.print_manifest:
        raise CommandError("say where to write the files with --out DIR (or print the manifest with --print-manifest)")
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
                f"--out {shlex.quote(str(args.out or 'DIR'))}"
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
    cert_pem = files.get(f"{stem}.crt.pem", b"")
    try:
        held = pki.inspect(cert_pem).fingerprint
    except pki.InvalidKeyMaterial:
        held = None
    if held != record.fingerprint:
        raise CommandError(
            f"Secret {bundle.name} does not hold the certificate of serial {record.serial} as status records it: "
            "not exported; the operator rewrites the bundle on its next pass"
        )
    text = manifest.render(
        environment=str(spec.get("environment")),
        namespace=session.namespace,
        name=args.name,
        role="next" if args.next else "current",
        cert_pem=cert_pem,
        files=files,
    )
    if args.print_manifest:
        print(text, end="")
        return 0
    args.out.mkdir(mode=0o700, parents=True, exist_ok=True)
    files[manifest.file_name(stem)] = text.encode()
    for filename, content in sorted(files.items()):
        path = args.out / filename
        _write_private(path, content)
        print(path)
    password = (
        f"; the password is in Secret {ref.get('name')}, key {ref.get('key', 'password')!r} (not shown)" if ref else ""
    )
    sealed = "; send the manifest with it, so the provider can check what it installs"
    print(f"serial {record.serial} ({'next' if args.next else 'current'}){password}{sealed}")
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

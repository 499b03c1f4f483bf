"""The receiver's own certificate and key, read once per change and kept in memory.

Kept in memory because a trust change must be able to build a new TLS context while the files on disk
are broken (a renewal half-written, a key that does not match): the last pair that loaded is used
again. OpenSSL (through Python) loads a pair only from a path, so the bytes go through an anonymous
memory file (``memfd_create``), never a file on disk; where there is none, a file in a private
temporary directory, removed at once.

Both files are read through one resolution of the kubelet's ``..data`` link when they live in such a
directory (a mounted ``kubernetes.io/tls`` Secret), so a swap between the two reads cannot pair the new
key with the old certificate and be taken for a broken pair.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import ssl
import tempfile

from webhookcerts.receiver import trustdir

_READ_ATTEMPTS = 5


class ServingPairError(ValueError):
    """A serving certificate and key that cannot be used (unreadable, not PEM, not a pair)."""


@dataclasses.dataclass(frozen=True)
class Pair:
    cert_pem: bytes
    key_pem: bytes = dataclasses.field(repr=False)


def read(cert: pathlib.Path, key: pathlib.Path) -> Pair:
    """The pair on disk, checked by loading it; ServingPairError (naming the file, never its content)."""
    pair = _read_consistent(cert, key)
    load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pair, name=cert.name)
    return pair


def _read_consistent(cert: pathlib.Path, key: pathlib.Path) -> Pair:
    links = {cert.parent / trustdir.DATA_LINK, key.parent / trustdir.DATA_LINK}
    for _ in range(_READ_ATTEMPTS):
        before = {link: _readlink(link) for link in links}
        try:
            pair = Pair(cert.read_bytes(), key.read_bytes())
        except OSError as exc:
            raise ServingPairError(f"cannot read the serving pair {cert.name}, {key.name}: {exc.strerror}") from None
        if {link: _readlink(link) for link in links} == before:
            return pair
    return pair


def _readlink(link: pathlib.Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def load(ctx: ssl.SSLContext, pair: Pair, *, name: str = "serving certificate") -> None:
    """Load ``pair`` into ``ctx`` from memory."""
    content = pair.cert_pem.rstrip(b"\n") + b"\n" + pair.key_pem
    try:
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            _load_memfd(ctx, content)
        else:
            _load_tempfile(ctx, content)
    except (OSError, ssl.SSLError) as exc:
        # ssl.SSLError says what is wrong (no certificate, key values mismatch), never the bytes.
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise ServingPairError(f"cannot load the serving certificate {name}: {reason}") from None


def _load_memfd(ctx: ssl.SSLContext, content: bytes) -> None:
    fd = os.memfd_create("webhookcerts-serving-pair", os.MFD_CLOEXEC)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _load_tempfile(ctx: ssl.SSLContext, content: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="webhookcerts-") as directory:
        path = pathlib.Path(directory) / "pair.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        ctx.load_cert_chain(path)

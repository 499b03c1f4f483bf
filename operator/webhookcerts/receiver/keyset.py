"""The provider's public signing keys, by keyid, read from files, directories or a mounted Secret.

A provider rolls its signing key by publishing the new key before it signs with it, and withdraws the
old one after: a receiver that holds one key has an outage at every roll. So the receiver holds a set.
Each source is ``KEYID=PATH`` (that file is that keyid), a file (its name without a .pem/.pub/.crt
suffix is the keyid) or a directory (each file in it, named the same way: a Secret with one key per
data key, mounted as a volume, is such a directory). Hidden entries (the kubelet's ``..data`` and
timestamped directories) are skipped.

The set re-reads its sources when what they point at changes (checked on each lookup by stat, which
is cheap next to a signature check), so a key added to or removed from the Secret takes effect without
a restart. A source that becomes unreadable keeps the last good keys for it: a half-written update must
not turn every delivery away.
"""

from __future__ import annotations

import os
import pathlib
import threading

from webhookcerts.receiver import signatures

_SUFFIXES = (".pem", ".pub", ".crt", ".key")


def _key_id_for(path: pathlib.Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


class KeySet:
    """Public keys by keyid."""

    def __init__(self, sources: tuple[str, ...]) -> None:
        if not sources:
            raise signatures.SignatureError("no signature key given")
        self._sources = tuple(self._parse(s) for s in sources)
        self._lock = threading.Lock()
        self._stamp: tuple[object, ...] | None = None
        self._keys: dict[str, signatures.PublicKey] = {}
        self._load(strict=True)

    @staticmethod
    def _parse(source: str) -> tuple[str | None, pathlib.Path]:
        key_id, sep, path = source.partition("=")
        if sep and key_id and "/" not in key_id:
            return key_id, pathlib.Path(path)
        return None, pathlib.Path(source)

    def _files(self) -> list[tuple[str, pathlib.Path]]:
        found: list[tuple[str, pathlib.Path]] = []
        for key_id, path in self._sources:
            if path.is_dir():
                for entry in sorted(path.iterdir()):
                    if not entry.name.startswith(".") and entry.is_file():
                        found.append((_key_id_for(entry), entry))
            else:
                found.append((key_id or _key_id_for(path), path))
        return found

    def _stat_stamp(self) -> tuple[object, ...]:
        stamp: list[object] = []
        for _, path in self._sources:
            try:
                st = os.stat(path)
                stamp.append((st.st_ino, st.st_mtime_ns, st.st_size))
                if path.is_dir():
                    # The kubelet swaps the ..data symlink: the directory's own mtime changes with it.
                    for entry in sorted(path.iterdir()):
                        est = os.stat(entry)
                        stamp.append((entry.name, est.st_ino, est.st_mtime_ns, est.st_size))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def _load(self, *, strict: bool) -> None:
        stamp = self._stat_stamp()
        keys: dict[str, signatures.PublicKey] = {}
        try:
            for key_id, path in self._files():
                if key_id in keys:
                    raise signatures.SignatureError(f"keyid {key_id!r} is given twice")
                keys[key_id] = signatures.load_public_key(path)
        except (OSError, signatures.SignatureError) as exc:
            if strict:
                raise signatures.SignatureError(str(exc)) from None
            return  # keep the last good set; the next lookup tries again
        if strict and not keys:
            raise signatures.SignatureError("the signature key sources hold no key")
        self._keys, self._stamp = keys, stamp

    def resolve(self, key_id: str) -> signatures.PublicKey | None:
        """The key for ``key_id``, re-reading the sources first if they changed."""
        with self._lock:
            if self._stat_stamp() != self._stamp:
                self._load(strict=False)
            return self._keys.get(key_id)

    def key_ids(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._keys))

    def public_keys(self) -> tuple[signatures.PublicKey, ...]:
        with self._lock:
            return tuple(self._keys.values())

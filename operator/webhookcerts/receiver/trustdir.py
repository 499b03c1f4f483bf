"""A directory in the kubelet's atomic layout: written in one rename, read and watched without tearing.

The kubelet projects a Secret into a volume with its AtomicWriter: the files live in a hidden
``..<timestamp>`` directory, a ``..data`` symlink points at it, and every user-visible name is a symlink
``name -> ..data/name``. An update writes a fresh timestamped directory and renames a new ``..data`` link
over the old one, so a reader sees either the old set of files or the new one, never a mix. This module
writes that layout the same way (trust-sync and the tests stand in for the kubelet with it) and watches
it. A watcher must follow the ``..data`` link rather than a single file: the user-visible file's inode
never changes, only what the link resolves to. Plain directories (a file copied or edited in place) are
watched too, by the target's inode, size and mtime, so the receiver also works outside Kubernetes.
"""

from __future__ import annotations

import collections.abc
import datetime
import logging
import os
import pathlib
import shutil
import tempfile
import threading

DATA_LINK = "..data"
_TMP_LINK = "..data_tmp"
_READ_ATTEMPTS = 5

_log = logging.getLogger(__name__)

Files = collections.abc.Mapping[str, bytes]


class TrustDirError(ValueError):
    """A payload that cannot be written in the atomic layout (a bad file name)."""


def _validate(files: Files) -> None:
    for name in files:
        # Secret keys are already restricted to [-._a-zA-Z0-9]; this keeps a bad caller from escaping
        # the directory or colliding with the layout's own hidden names.
        if not name or "/" in name or name in (".", "..") or name.startswith(".."):
            raise TrustDirError(f"invalid file name in payload: {name!r}")


def read(directory: pathlib.Path) -> dict[str, bytes]:
    """The user-visible files of ``directory`` read through one resolution of ``..data``.

    Reading every file through the same resolved data directory gives a consistent snapshot even if a
    swap happens half-way; if the writer removes that directory under us, resolve again.
    """
    data_link = directory / DATA_LINK
    for _ in range(_READ_ATTEMPTS - 1):
        try:
            return _read_once(directory, data_link)
        except FileNotFoundError:
            continue
    return _read_once(directory, data_link)


def _read_once(directory: pathlib.Path, data_link: pathlib.Path) -> dict[str, bytes]:
    if not data_link.is_symlink():
        names = [p.name for p in directory.iterdir() if not p.name.startswith(".") and p.is_file()]
        return {name: (directory / name).read_bytes() for name in sorted(names)}
    target = os.readlink(data_link)
    base = directory / target
    names = [p.name for p in base.iterdir() if not p.name.startswith(".")]
    files = {name: (base / name).read_bytes() for name in sorted(names)}
    # The writer deletes the old data directory only after the swap: if the link still points where
    # it did, nothing we read was being deleted.
    if os.readlink(data_link) != target:
        raise FileNotFoundError(target)
    return files


def write_atomic(directory: pathlib.Path, files: Files, *, mode: int = 0o644) -> bool:
    """Make ``directory`` hold exactly ``files``, the way the kubelet's AtomicWriter does.

    Returns False, having written nothing, when the directory already holds these bytes. Either way
    the user-visible links are (re)made and leftovers of an interrupted earlier write removed.
    """
    _validate(files)
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / DATA_LINK
    if data_link.is_symlink():
        try:
            if read(directory) == dict(files):
                _tidy(directory, files, os.readlink(data_link))
                return False
        except OSError:
            pass  # a damaged layout is rewritten below

    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    new_data_dir = pathlib.Path(tempfile.mkdtemp(prefix=stamp, dir=directory))
    try:
        new_data_dir.chmod(0o755)
        for name, content in files.items():
            target = new_data_dir / name
            with open(target, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            target.chmod(mode)
        tmp_link = directory / _TMP_LINK
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        # Relative, as the kubelet writes it, so the volume can be mounted anywhere.
        os.symlink(new_data_dir.name, tmp_link)
        os.replace(tmp_link, data_link)  # the one atomic step readers observe
    except BaseException:
        shutil.rmtree(new_data_dir, ignore_errors=True)
        raise
    _fsync_dir(directory)
    _tidy(directory, files, new_data_dir.name)
    return True


def _tidy(directory: pathlib.Path, files: Files, data_dir: str) -> None:
    """User-visible links for ``files``, none for other names, no data directory but ``data_dir``."""
    for name in files:
        visible = directory / name
        if not visible.is_symlink():
            if visible.exists():
                visible.unlink()  # a plain file left by someone else: replace with the layout's link
            os.symlink(os.path.join(DATA_LINK, name), visible)
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in (DATA_LINK, _TMP_LINK, data_dir) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            continue
        stale = entry.is_symlink() and entry.name not in files
        if stale and os.readlink(entry).startswith(DATA_LINK + os.sep):
            entry.unlink()


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fingerprint(paths: collections.abc.Sequence[pathlib.Path]) -> tuple[object, ...]:
    """What changes when any watched path changes: the ``..data`` target of its directory and the
    identity of the file it resolves to."""
    parts: list[object] = []
    for path in paths:
        data_link = path.parent / DATA_LINK
        try:
            parts.append(os.readlink(data_link))
        except OSError:
            parts.append(None)
        try:
            st = path.stat()
            parts.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            parts.append(None)
    return tuple(parts)


class Watcher:
    """Polls files (usually inside kubelet-style directories) and calls back once per change.

    Polling is portable and cheap (a readlink and a stat per file) and, at the default 0.1 s
    interval, well inside the one second a reload may take. The callback runs on the watcher's
    thread; an exception from it is logged and the watcher keeps going, so a bad update cannot stop
    later good ones from being picked up.
    """

    def __init__(
        self,
        paths: collections.abc.Sequence[pathlib.Path],
        callback: collections.abc.Callable[[], object],
        *,
        interval: float = 0.1,
    ) -> None:
        self._paths = list(paths)
        self._callback = callback
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = _fingerprint(self._paths)

    def start(self) -> Watcher:
        self._last = _fingerprint(self._paths)
        self._thread = threading.Thread(target=self._run, name="trustdir-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def poll(self) -> bool:
        """Check once; call back and return True if anything changed since the last check."""
        current = _fingerprint(self._paths)
        if current == self._last:
            return False
        self._last = current
        try:
            self._callback()
        except Exception:
            _log.exception("trust reload callback failed")
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

"""Where a server's access log comes from: a file to follow, a FIFO or stdin, or syslog datagrams.

Each source yields bytes as they come (``b""`` when idle, so that the reader can do its periodic work;
None when what follows starts a new file and a partial line before it is void) until ``stop``:

- a regular file, from its end at start (counts are since the report's ``startTime``), followed across
  rotation (a new inode at the path: the old file is read to its end, then the new one from its start)
  and truncation (copytruncate: read again from the start); one that does not exist yet is waited for
  and read from its start when it appears;
- a FIFO, opened for reading and writing, so that it never ends when a server restarts and never
  blocks a server that writes to it while trust-sync starts; ``-``, stdin, until it ends;
- ``udp://127.0.0.1:PORT``: syslog datagrams, one line each (nginx ``access_log syslog:...``, HAProxy
  ``log 127.0.0.1:PORT``): nothing shared but the pod's loopback, and a server's write never blocks.
  Only a loopback address is accepted: whoever can send there can forge presentations.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import select
import socket
import stat
import threading
from collections.abc import Iterator

_log = logging.getLogger("webhookcerts.trust_sync.access_log")
_READ_SIZE = 65536


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _file_chunks(path: str, stop: threading.Event, poll: float, from_end: bool) -> Iterator[bytes | None]:
    """The bytes appended to the file at ``path``, across rotation and truncation; ``b""`` when idle,
    None when what follows starts a new file (a partial line before it is void)."""
    fd: int | None = None
    identity = (0, 0)
    said: str | None = None
    try:
        while not stop.is_set():
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    # Not there yet (the server creates it at its first request), or not readable: wait.
                    # A file that appears later was written after the start: read from its beginning.
                    if isinstance(exc, FileNotFoundError):
                        from_end = False
                    if said != exc.strerror:
                        said = exc.strerror
                        _log.warning(json.dumps({"event": "access_log_unavailable", "path": path, "error": said}))
                    stop.wait(poll)
                    yield b""
                    continue
                said = None
                identity = _identity(os.fstat(fd))
                if from_end:
                    os.lseek(fd, 0, os.SEEK_END)
                record = {"event": "access_log_opened", "path": path, "from": "end" if from_end else "start"}
                _log.info(json.dumps(record))
                from_end = False
                yield None
            chunk = os.read(fd, _READ_SIZE)
            if chunk:
                yield chunk
                continue
            if os.fstat(fd).st_size < os.lseek(fd, 0, os.SEEK_CUR):
                # Truncated (copytruncate): the new content starts at 0. Seen only while the file is shorter
                # than what was read: what is written between the truncation and the next look (one
                # ``poll``) beyond that length is read from the old offset, as ``tail -F`` does.
                os.lseek(fd, 0, os.SEEK_SET)
                _log.info(json.dumps({"event": "access_log_truncated", "path": path}))
                yield None
                continue
            with contextlib.suppress(OSError):
                if _identity(os.stat(path)) != identity:
                    # Rotated: the old file has been read to its end (the read above); the new one from 0.
                    os.close(fd)
                    fd = None
                    continue
            stop.wait(poll)
            yield b""
    finally:
        if fd is not None:
            os.close(fd)


def _stream_chunks(fd: int, stop: threading.Event, poll: float) -> Iterator[bytes | None]:
    """The bytes read from a pipe or FIFO until it ends (stdin closed); ``b""`` when idle."""
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], poll)
        if not ready:
            yield b""
            continue
        chunk = os.read(fd, _READ_SIZE)
        if not chunk:
            _log.warning(json.dumps({"event": "access_log_ended", "action": "no more presentations to count"}))
            return
        yield chunk


def udp_address(source: str) -> tuple[str, int] | None:
    """``udp://127.0.0.1:5140`` as (host, port); None for another kind of source. Raises ValueError for
    an address that is not the loopback: whoever can send to it can forge presentations, and on the
    loopback that is only the pod's own containers."""
    if not source.startswith("udp://"):
        return None
    host, sep, port = source.removeprefix("udp://").rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected udp://127.0.0.1:PORT, not {source!r}")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host!r} is not a loopback address: only the pod itself may send presentations")
    return host, int(port)


def _datagram_chunks(address: tuple[str, int], stop: threading.Event, poll: float) -> Iterator[bytes | None]:
    """Syslog datagrams (a server's log target), one line each; ``b""`` when idle. Lossy by design: a
    server's log write to UDP never blocks it, whatever trust-sync does."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        _log.info(json.dumps({"event": "access_log_listening", "address": f"udp://{address[0]}:{address[1]}"}))
        while not stop.is_set():
            ready, _, _ = select.select([sock], [], [], poll)
            if not ready:
                yield b""
                continue
            datagram = sock.recv(_READ_SIZE)
            yield datagram if datagram.endswith(b"\n") else datagram + b"\n"


def chunks(source: str, stop: threading.Event, poll: float, from_end: bool) -> Iterator[bytes | None]:
    address = udp_address(source)
    if address is not None:
        yield from _datagram_chunks(address, stop, poll)
        return
    if source == "-":
        yield from _stream_chunks(0, stop, poll)
        return
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.stat(source).st_mode):
            # Read and write: we hold a writer ourselves, so a server that restarts and reopens the FIFO
            # never makes it end (no EOF), and a writer never blocks on a FIFO with no reader.
            fd = os.open(source, os.O_RDWR | os.O_CLOEXEC)
            _log.info(json.dumps({"event": "access_log_opened", "path": source, "from": "fifo"}))
            try:
                yield from _stream_chunks(fd, stop, poll)
            finally:
                os.close(fd)
            return
    yield from _file_chunks(source, stop, poll, from_end)

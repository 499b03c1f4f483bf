"""What a server's own access log says about the client certificates presented to it.

trust-sync runs beside servers that are not the reference receiver (nginx, HAProxy, anything else) and
cannot see their TLS handshakes; their access logs can. Each server is configured to end its log line
with a few ``key=value`` fields this module reads (docs/receivers/ gives the exact formats):

- ``nginx``: ``webhookcerts fp=$ssl_client_fingerprint verify="$ssl_client_verify"``: the SHA-1 of the
  client certificate and ``SUCCESS``, ``FAILED:<reason>`` or ``NONE``. nginx completes the handshake
  for a certificate it refuses and answers 400, so a refusal is an access-log line like any other.
- ``haproxy``: ``webhookcerts fp=%[ssl_c_sha1,hex] verify=%[ssl_c_verify] err=%[ssl_c_err]
  ca_err=%[ssl_c_ca_err]`` as both ``log-format`` and ``error-log-format``. With ``verify required``
  HAProxy aborts the handshake of a certificate it refuses and logs it only through
  ``error-log-format``, where ``ssl_c_verify`` is empty but ``ssl_c_err``/``ssl_c_ca_err`` hold the
  verification error and ``ssl_c_sha1`` still the certificate (HAProxy 2.6, seen with the real one).
  Any non-zero error is a refusal; ``verify=0`` with no error is an acceptance; a handshake that failed
  after the certificate verified (no error, no verify result) is neither.
- ``line``: for any other server, one line per presentation:
  ``webhookcerts-presentation sha256=<hex> verdict=accepted`` (or ``sha1=<hex>``, or both; ``refused``).

The fields are looked for from the END of the line (the last marker wins): a log line also carries
what the client sent (the request line, headers), and a client must not be able to forge a
presentation by sending text that looks like the fields. That is why the docs say to put them last.
A line without a client certificate (``-``, ``NONE``) is not a presentation and is skipped; a line
that does not carry the fields is malformed and counted, never echoed (it may hold anything the client
sent): ``Malformed`` carries a fixed reason, never the line.

``follow`` reads a source (``logsources``: a file followed across rotation from its end at start, a
FIFO, stdin, syslog datagrams) with bounded memory: a line longer than ``line_cap`` is cut and counted
as malformed. trust-sync runs it on a thread of its own (``start``), beside its watch: a slow or silent
log never delays a trust update.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator

from webhookcerts.receiver import logsources

_log = logging.getLogger("webhookcerts.trust_sync.access_log")

FORMATS = ("nginx", "haproxy", "line")
DEFAULT_LINE_CAP = 16384  # bytes; HAProxy and nginx lines with headers stay far below
MALFORMED_REPORT_SECONDS = 60.0
_READ_SIZE = 65536

_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_INTEGER = re.compile(r"^-?[0-9]+$")
_EMPTY = ("", "-")
_SERVER_HEAD, _SERVER_MARKER = "webhookcerts ", "webhookcerts fp="
_LINE_MARKER = "webhookcerts-presentation "


class Malformed(ValueError):
    """A line that does not carry the fields; the message is a fixed reason, never the line's text."""


@dataclasses.dataclass(frozen=True)
class Presentation:
    """One client certificate presented, by its fingerprint(s) (lower-case hex of the DER), and the verdict."""

    accepted: bool
    sha256: str | None = None
    sha1: str | None = None


def _fields(line: str, marker: str, head: str) -> dict[str, str]:
    """The ``key=value`` fields from the LAST ``marker`` in ``line`` on (a value may be double-quoted);
    ``head``, the marker's start, is not a field."""
    at = line.rfind(marker)
    if at < 0:
        raise Malformed(f"no {marker!r} fields")
    rest, fields = line[at + len(head) :], dict[str, str]()
    while rest:
        rest = rest.lstrip()
        key, sep, rest = rest.partition("=")
        if not sep or not key or " " in key:
            break
        if rest.startswith('"'):
            value, closed, rest = rest[1:].partition('"')
            if not closed:
                raise Malformed("an unclosed quote")  # not the key: the line's text stays out
        else:
            value, _, rest = rest.partition(" ")
        fields.setdefault(key, value)
    return fields


def _fingerprint(value: str, pattern: re.Pattern[str], name: str) -> str | None:
    """Lower-case hex; None for empty (``-``); openssl's colons are dropped."""
    if value in _EMPTY:
        return None
    normal = value.replace(":", "").lower()
    if not pattern.match(normal):
        raise Malformed(f"{name} is not a fingerprint")
    return normal


def parse_nginx(line: str) -> Presentation | None:
    """``... webhookcerts fp=$ssl_client_fingerprint verify="$ssl_client_verify"``."""
    fields = _fields(line, _SERVER_MARKER, _SERVER_HEAD)
    fingerprint = _fingerprint(fields["fp"], _SHA1, "fp")
    if "verify" not in fields:
        raise Malformed("no verify= field")
    verify = fields["verify"]
    if verify in (*_EMPTY, "NONE"):
        return None
    if verify == "SUCCESS":
        accepted = True
    elif verify.startswith("FAILED"):
        accepted = False
    else:
        raise Malformed("verify= is not SUCCESS, FAILED:<reason> or NONE")
    return None if fingerprint is None else Presentation(accepted, sha1=fingerprint)


def _error_code(fields: dict[str, str], key: str) -> int | None:
    value = fields.get(key, "")
    if value in _EMPTY:
        return None
    if not _INTEGER.match(value):
        raise Malformed(f"{key}= is not a number")
    return int(value)


def parse_haproxy(line: str) -> Presentation | None:
    """``... webhookcerts fp=%[ssl_c_sha1,hex] verify=%[ssl_c_verify] err=%[ssl_c_err] ca_err=%[ssl_c_ca_err]``."""
    fields = _fields(line, _SERVER_MARKER, _SERVER_HEAD)
    fingerprint = _fingerprint(fields["fp"], _SHA1, "fp")
    if "verify" not in fields:
        raise Malformed("no verify= field")
    verify = _error_code(fields, "verify")
    errors = [code for code in (verify, _error_code(fields, "err"), _error_code(fields, "ca_err")) if code]
    if fingerprint is None:
        return None
    if errors:
        return Presentation(False, sha1=fingerprint)
    if verify == 0:
        return Presentation(True, sha1=fingerprint)
    return None  # the handshake failed after the certificate verified: no verdict on it


def parse_line(line: str) -> Presentation | None:
    """``webhookcerts-presentation sha256=<hex> sha1=<hex> verdict=accepted|refused`` (one fingerprint or both)."""
    fields = _fields(line, _LINE_MARKER, _LINE_MARKER)
    sha256 = _fingerprint(fields.get("sha256", ""), _SHA256, "sha256")
    sha1 = _fingerprint(fields.get("sha1", ""), _SHA1, "sha1")
    if sha256 is None and sha1 is None:
        raise Malformed("neither sha256= nor sha1=")
    verdict = fields.get("verdict")
    if verdict not in ("accepted", "refused"):
        raise Malformed("verdict= is not accepted or refused")
    return Presentation(verdict == "accepted", sha256=sha256, sha1=sha1)


PARSERS: dict[str, Callable[[str], Presentation | None]] = {
    "nginx": parse_nginx,
    "haproxy": parse_haproxy,
    "line": parse_line,
}


class MalformedLines:
    """Counts malformed lines and says so at most once per ``every`` seconds (a count and the reasons,
    never a line: it may hold whatever a client sent)."""

    def __init__(
        self, source: str, *, every: float = MALFORMED_REPORT_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self._source, self._every, self._clock = source, every, clock
        self._count, self._reasons = 0, set[str]()
        self._last_said: float | None = None
        self.total = 0

    def add(self, reason: str) -> None:
        self._count += 1
        self.total += 1
        self._reasons.add(reason)
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        now = self._clock()
        if not self._count or not (force or self._last_said is None or now - self._last_said >= self._every):
            return
        record = {
            "event": "access_log_malformed",
            "source": self._source,
            "lines": self._count,
            "reasons": sorted(self._reasons),
            "action": "skipped: see docs/receivers/ for the fields the log line must end with",
        }
        _log.warning(json.dumps(record))
        self._count, self._reasons, self._last_said = 0, set(), now


class _Lines:
    """Bytes in, whole lines out, holding at most ``cap`` bytes of a line: a longer one is cut (None)."""

    def __init__(self, cap: int) -> None:
        self._cap, self._buffer, self._skipping = cap, bytearray(), False

    def reset(self) -> None:
        """The file was replaced or truncated: its partial last line is gone."""
        self._buffer.clear()
        self._skipping = False

    def feed(self, chunk: bytes) -> Iterator[str | None]:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self._skipping:
                self._skipping = end < 0
            elif len(self._buffer) + len(piece) > self._cap:
                self._buffer.clear()
                self._skipping = end < 0  # skip the rest of it, in the chunks to come
                yield None
            elif end < 0:
                self._buffer += piece
            else:
                line = bytes(self._buffer + piece)
                self._buffer.clear()
                yield line.decode(errors="replace").rstrip("\r")
            if end < 0:
                return
            start = end + 1


def follow(
    source: str,
    format: str,
    record: Callable[[Presentation], None],
    *,
    stop: threading.Event,
    line_cap: int = DEFAULT_LINE_CAP,
    poll: float = 0.5,
    from_end: bool = True,
) -> None:
    """Hand each presentation in ``source`` (a file, a FIFO, ``-`` for stdin) to ``record`` until ``stop``."""
    parse = PARSERS[format]
    malformed = MalformedLines(source)
    lines = _Lines(line_cap)
    for chunk in logsources.chunks(source, stop, poll, from_end):
        if chunk is None:
            lines.reset()
            continue
        for line in lines.feed(chunk):
            if line is None:
                malformed.add(f"a line longer than {line_cap} bytes")
                continue
            if not line.strip():
                continue
            try:
                presentation = parse(line)
            except Malformed as exc:
                malformed.add(str(exc))
                continue
            if presentation is not None:
                record(presentation)
        malformed.flush()
    malformed.flush(force=True)


def start(
    source: str,
    format: str,
    record: Callable[[Presentation], None],
    *,
    stop: threading.Event,
    line_cap: int = DEFAULT_LINE_CAP,
    poll: float = 0.5,
) -> threading.Thread:
    """``follow`` on a daemon thread of its own; an unexpected error is logged (by type) and ends it."""

    def run() -> None:
        try:
            follow(source, format, record, stop=stop, line_cap=line_cap, poll=poll)
        except Exception as exc:  # the thread's last word; trust-sync goes on syncing
            _log.error(json.dumps({"event": "access_log_failed", "error": type(exc).__name__}))

    thread = threading.Thread(target=run, name="trust-sync-access-log", daemon=True)
    thread.start()
    return thread

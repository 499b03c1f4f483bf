"""HTTP/1.1 message framing for the receiver, strict where a lenient reading lets two parties disagree.

The receiver usually sits behind nothing, but a delivery can cross a proxy, and a request whose length
two parsers read differently is how requests are smuggled past the one in front. So the framing rules
of RFC 9112 are applied as a careful server applies them, and whatever is ambiguous is refused with 400
and the connection closed (the next message's start is unknowable once framing is in doubt):

- exactly one ``Content-Length`` field, its value ``1*DIGIT`` and at most 19 digits (Python's ``int()``
  takes ``+5``, ``1_0``, ``-0`` and ``5`` wrapped in vertical tabs or no-break spaces); a list such as
  ``5, 5`` is refused, not merged;
- ``Transfer-Encoding`` together with ``Content-Length`` (RFC 9112 section 6.3: the classic smuggling
  pair), or the field more than once; alone, chunked is answered 411 (bodies carry their length here),
  any other coding 501;
- a request target that is neither a path (origin-form) nor an ``http``/``https`` absolute URI: the
  absolute-form, which RFC 9112 section 3.2.2 says a server MUST accept, is taken as its path and
  query, and its authority replaces the ``Host`` field (which the server MUST then ignore), so that the
  signature's ``@path`` and ``@authority`` are read from what the client really named;
- whitespace between a field name and its colon, obsolete line folding, a field name that is not a
  token, control characters in a value, a bare CR or LF, a request line that is not exactly three parts,
  a missing or repeated ``Host`` in HTTP/1.1;
- limits on the request line, each header line, the header count and the body, so that none of them
  is unbounded memory.

Optional whitespace around a field value (a space or tab after the colon, RFC 9110 section 5.5) is not
part of the value and is allowed: ``Content-Length:  5`` is 5. What the parser reads from is an
``Source`` (the receiver's TLS stream); the pure part (``parse_head``) is what the unit tests feed directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email.utils
import http
import re
from typing import Protocol

MAX_LINE = 8192  # request line and each header line, CRLF excluded
MAX_HEADERS = 100
MAX_HEAD = 64 * 1024
MAX_LEADING_EMPTY_LINES = 4  # RFC 9112 section 2.2: a server SHOULD ignore at least one
MAX_CONTENT_LENGTH_DIGITS = 19  # refused before int() ever sees a 10,000-digit number

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(rb"[0-9]+")
# A field value: visible ASCII, obs-text (bytes >= 0x80), space and tab inside; no other control byte.
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(rb"/[!-~]*")  # origin-form; no spaces, no control bytes
# absolute-form: scheme, an authority without userinfo, then an optional path and query.
_ABSOLUTE = re.compile(rb"(?i:https?)://([!$&-.0-9;=A-Z_a-z~:\[\]]+)(/[!-~]*|\?[!-~]*)?")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_OWS = b" \t"


class FramingError(Exception):
    """A request the receiver refuses to read: answered with ``status`` and the connection closed."""

    def __init__(self, status: http.HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    content_length: int
    keep_alive: bool
    expect_continue: bool

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for n, v in self.headers if n.lower() == lowered), None)


def _bad(reason: str) -> FramingError:
    return FramingError(http.HTTPStatus.BAD_REQUEST, reason)


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    """``method SP request-target SP HTTP-version`` exactly (``line`` without its CRLF)."""
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise _bad("malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise _bad("malformed method")
    if version not in _VERSIONS:
        if re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
            raise FramingError(http.HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/1.1 or HTTP/1.0 only")
        raise _bad("malformed HTTP version")
    if not _TARGET.fullmatch(target) and not _ABSOLUTE.fullmatch(target):
        raise _bad("the request target must be a path or an http(s) URI")
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")


def origin_form(target: str, headers: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """An absolute-form target as its path and query, its authority as the one ``Host`` (RFC 9112
    section 3.2.2); an origin-form one as it is."""
    absolute = _ABSOLUTE.fullmatch(target.encode("ascii"))
    if absolute is None:
        return target, headers
    rest = (absolute.group(2) or b"").decode("ascii")
    path = rest if rest.startswith("/") else f"/{rest}"
    authority = absolute.group(1).decode("ascii")
    return path, [("Host", authority) if n.lower() == "host" else (n, v) for n, v in headers]


def parse_field(line: bytes) -> tuple[str, str]:
    """One header line (without its CRLF) as (name, value), the value stripped of optional whitespace."""
    if line[:1] in (b" ", b"\t"):
        raise _bad("obsolete line folding")
    name, colon, value = line.partition(b":")
    if not colon:
        raise _bad("a header line without a colon")
    if not _TOKEN.fullmatch(name):
        # Includes "Content-Length :" (RFC 9112 section 5.1: MUST be rejected with 400).
        raise _bad("malformed header name")
    value = value.strip(_OWS)
    if not _VALUE.fullmatch(value):
        raise _bad("a control character in a header value")
    return name.decode("ascii"), value.decode("latin-1")


def _content_length(values: list[str]) -> int:
    if len(values) > 1:
        raise _bad("Content-Length more than once")
    raw = values[0].encode("latin-1")
    if not _DIGITS.fullmatch(raw):
        raise _bad("Content-Length is not a decimal number")
    if len(raw) > MAX_CONTENT_LENGTH_DIGITS:
        raise _bad("Content-Length out of range")
    return int(raw)


def frame(method: str, version: str, headers: list[tuple[str, str]]) -> tuple[int, bool, bool]:
    """(body length, keep-alive, expects 100-continue) of a request with these headers, or FramingError."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    lengths = by_name.get("content-length", [])
    codings = by_name.get("transfer-encoding", [])
    if codings and lengths:
        raise _bad("Transfer-Encoding together with Content-Length")
    if len(codings) > 1:
        raise _bad("Transfer-Encoding more than once")
    if codings:
        if version == "HTTP/1.0":
            raise _bad("Transfer-Encoding in an HTTP/1.0 request")
        if codings[0].lower() == "chunked":
            raise FramingError(http.HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted")
        raise FramingError(http.HTTPStatus.NOT_IMPLEMENTED, "unsupported transfer coding")
    hosts = by_name.get("host", [])
    if version == "HTTP/1.1" and len(hosts) != 1:
        raise _bad("HTTP/1.1 needs exactly one Host")
    if not lengths:
        if method == "POST":
            raise FramingError(http.HTTPStatus.LENGTH_REQUIRED, "missing Content-Length")
        length = 0
    else:
        length = _content_length(lengths)
    tokens = {t.strip().lower() for v in by_name.get("connection", []) for t in v.split(",")}
    # HTTP/1.0 keep-alive would need a "Connection: keep-alive" answer; one request per connection is simpler.
    keep_alive = version == "HTTP/1.1" and "close" not in tokens
    expect = [v.lower() for v in by_name.get("expect", [])]
    if expect and (expect != ["100-continue"] or version != "HTTP/1.1"):
        raise FramingError(http.HTTPStatus.EXPECTATION_FAILED, "only Expect: 100-continue is understood")
    return length, keep_alive, bool(expect)


def parse_head(lines: list[bytes]) -> Request:
    """A request head from its lines (CRLF removed), request line first."""
    method, target, version = parse_request_line(lines[0])
    headers = [parse_field(line) for line in lines[1:]]
    if len(headers) > MAX_HEADERS:
        raise FramingError(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields")
    length, keep_alive, expect = frame(method, version, headers)
    target, headers = origin_form(target, headers)
    return Request(method, target, version, tuple(headers), length, keep_alive, expect)


class LineTooLong(Exception):
    """No line end within the limit a Source was given."""


class Source(Protocol):
    """Where requests are read from (tlsstream.TlsStream): a line up to and including its LF, at most
    ``limit`` bytes (else LineTooLong), asyncio.IncompleteReadError at the end of the stream."""

    async def readline(self, limit: int) -> bytes: ...


async def _line(reader: Source, too_long: http.HTTPStatus) -> bytes:
    try:
        raw = await reader.readline(MAX_LINE + 2)
    except LineTooLong:
        raise FramingError(too_long, "line too long") from None
    if not raw.endswith(b"\r\n") or b"\r" in raw[:-2] or b"\x00" in raw:
        raise _bad("a line not ended by CRLF, or a bare CR")
    return raw[:-2]


async def read_request_line(reader: Source) -> bytes | None:
    """The request line, skipping a few empty lines before it; None if the client closed first."""
    for _ in range(MAX_LEADING_EMPTY_LINES + 1):
        try:
            line = await _line(reader, http.HTTPStatus.REQUEST_URI_TOO_LONG)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise _bad("the connection closed inside the request line") from None
            return None
        if line:
            return line
    raise _bad("too many empty lines before the request")


async def read_head(reader: Source, request_line: bytes) -> Request:
    """The header section after ``request_line``, framed and checked."""
    lines = [request_line]
    size = len(request_line)
    while True:
        try:
            line = await _line(reader, http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        except asyncio.IncompleteReadError:
            raise _bad("the connection closed inside the header section") from None
        if not line:
            return parse_head(lines)
        size += len(line)
        if size > MAX_HEAD or len(lines) > MAX_HEADERS:
            raise FramingError(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header section too large")
        lines.append(line)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def response(
    status: http.HTTPStatus, body: bytes, *, close: bool, server: str, content_type: str = "application/json"
) -> bytes:
    """A complete response with its length, ``Connection: close`` when the connection ends after it."""
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Server: {server}",
        f"Date: {email.utils.format_datetime(datetime.datetime.now(datetime.UTC), usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body

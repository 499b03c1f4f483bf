"""The running receiver refuses every request whose length two HTTP parsers could read differently.

Real sockets and real TLS: each request is written byte for byte as an attacker would write it (no HTTP
client would produce most of them), and the receiver's answer is read off the wire. A refusal must be
the right status, say ``Connection: close`` and really close (the next message's start is unknown once
framing is in doubt), and nothing of the request may reach the application: a smuggled second request
hidden in a body is never delivered. Every case has a positive control: the same request with its
framing made right is delivered.
"""

from __future__ import annotations

import pathlib
import socket
import ssl
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from tests.unit import conftest as unit
from tests.unit import mtls_pki
from webhookcerts.receiver import http1, server

BODY = b'{"event": 1}'
CHUNKED = b"0\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
SMUGGLED = b"POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


@pytest.fixture
def delivered() -> list[server.Delivery]:
    return []


@pytest.fixture
def rx(pki: mtls_pki.Pki, trust_dir: pathlib.Path, delivered: list[server.Delivery]) -> Iterator[server.Receiver]:
    receiver = unit.start(pki, trust_dir, on_delivery=delivered.append)
    yield receiver
    receiver.close()


def connect(rx: server.Receiver, pki: mtls_pki.Pki) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(pki.server_ca.cert_path))
    ctx.load_cert_chain(pki.alpha.cert_path, pki.alpha.key_path)
    raw = socket.create_connection(("127.0.0.1", rx.port), timeout=30)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def read_response(stream: BinaryIO) -> tuple[int, dict[str, str]] | None:
    """One response off the wire (a 100 Continue skipped); None if the receiver closed the connection."""
    try:
        line = stream.readline()
        if not line:
            return None
        status = int(line.split()[1])
        headers = {}
        while (field := stream.readline()) not in (b"\r\n", b""):
            name, _, value = field.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        stream.read(int(headers.get("content-length", "0")))
    except (ConnectionResetError, ssl.SSLError):
        return None
    return read_response(stream) if status == 100 else (status, headers)


def exchange(
    rx: server.Receiver, pki: mtls_pki.Pki, request: bytes, *, then: int = 0
) -> tuple[int, str | None, bool, list[int]]:
    """Send ``request`` as it is and read the answer and ``then`` more; if the answer says close, see
    whether it did: (status, Connection header, closed by the receiver, statuses of the further answers)."""
    with connect(rx, pki) as tls, tls.makefile("rb") as stream:
        tls.sendall(request)
        first = read_response(stream)
        assert first is not None, "no answer at all"
        status, headers = first
        more = []
        for _ in range(then):
            follow = read_response(stream)
            assert follow is not None
            more.append(follow[0])
        closed = False
        if headers.get("connection") == "close":
            follow = read_response(stream)
            closed = follow is None
            more += [follow[0]] if follow else []
        return status, headers.get("connection"), closed, more


def post(*header_lines: str, body: bytes = BODY, version: str = "HTTP/1.1", host: bool = True) -> bytes:
    lines = [f"POST /webhooks {version}"]
    if host:
        lines.append("Host: 127.0.0.1")
    lines += ["Content-Type: application/json", *header_lines]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


N = str(len(BODY))

REFUSED = {
    # Content-Length that int() takes but RFC 9110 section 8.6 (1*DIGIT) does not.
    "content-length +N": (post(f"Content-Length: +{N}"), 400),
    "content-length with an underscore": (post(f"Content-Length: {N[0]}_{N[1:]}"), 400),
    "content-length after a vertical tab": (post(f"Content-Length: \x0b{N}"), 400),
    "content-length before a no-break space": (post(f"Content-Length: {N}\xa0"), 400),
    "content-length in hex": (post(f"Content-Length: 0x{len(BODY):x}"), 400),
    "content-length negative": (post(f"Content-Length: -{N}"), 400),
    "content-length huge": (post("Content-Length: " + "9" * 40), 400),
    "content-length with 20 digits, leading zeros": (post("Content-Length: " + N.zfill(20)), 400),
    "content-length as a list": (post(f"Content-Length: {N}, {N}"), 400),
    "content-length twice, the same": (post(f"Content-Length: {N}", f"Content-Length: {N}"), 400),
    "content-length twice, different": (post("Content-Length: 0", f"Content-Length: {N}"), 400),
    "content-length space before the colon": (post(f"Content-Length : {N}"), 400),
    # Transfer-Encoding with Content-Length, in every disguise: RFC 9112 section 6.3's smuggling pair.
    "transfer-encoding chunked with content-length": (
        post("Transfer-Encoding: chunked", f"Content-Length: {len(CHUNKED)}", body=CHUNKED),
        400,
    ),
    "transfer-encoding identity with a length": (
        post("Transfer-Encoding: identity", f"Content-Length: {N}"),
        400,
    ),
    "transfer-encoding xchunked with a length": (
        post("Transfer-Encoding: xchunked", f"Content-Length: {N}"),
        400,
    ),
    "transfer-encoding twice": (post("Transfer-Encoding: identity", "Transfer-Encoding: chunked"), 400),
    "transfer-encoding chunked alone": (post("Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 411),
    "transfer-encoding gzip alone": (post("Transfer-Encoding: gzip"), 501),
    "transfer-encoding in HTTP/1.0": (post("Transfer-Encoding: chunked", version="HTTP/1.0"), 400),
    # Whatever else a careful HTTP/1.1 server refuses.
    "no content-length on a POST": (post(), 411),
    "no Host in HTTP/1.1": (post(f"Content-Length: {N}", host=False), 400),
    "two Hosts": (post("Host: elsewhere", f"Content-Length: {N}"), 400),
    "obsolete line folding": (post(f"Content-Length: {N}", "X-Folded: a", " b"), 400),
    "a bare LF ending a header line": (post(f"Content-Length: {N}\nX-After-Bare-LF: 1"), 400),
    "a bare CR inside a header line": (post(f"Content-Length: {N}", "X-Bare: a\rb"), 400),
    "a NUL in a header value": (post(f"Content-Length: {N}", "X-Nul: a\x00b"), 400),
    "a header name that is not a token": (post(f"Content-Length: {N}", "X(y): 1"), 400),
    "a header line without a colon": (post(f"Content-Length: {N}", "X-No-Colon"), 400),
    "two spaces in the request line": (b"POST  /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400),
    "a request target that is neither a path nor an http(s) URI": (
        b"POST ftp://x/webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: " + N.encode() + b"\r\n\r\n" + BODY,
        400,
    ),
    "an absolute-form target with userinfo": (
        b"POST https://u@x/webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: " + N.encode() + b"\r\n\r\n" + BODY,
        400,
    ),
    "HTTP/2.0 on the request line": (post(f"Content-Length: {N}", version="HTTP/2.0"), 505),
    "an expectation other than 100-continue": (post(f"Content-Length: {N}", "Expect: 200-ok"), 417),
    "a header line past the limit": (post(f"Content-Length: {N}", "X-Long: " + "a" * 9000), 431),
    "more than 100 header fields": (post(f"Content-Length: {N}", *[f"X-{i}: {i}" for i in range(101)]), 431),
    "a body past the limit": (post(f"Content-Length: {server.MAX_BODY + 1}", body=b""), 413),
}


@pytest.mark.parametrize(("request_bytes", "status"), REFUSED.values(), ids=REFUSED.keys())
def test_a_request_with_ambiguous_or_broken_framing_is_refused_and_the_connection_closed(
    rx: server.Receiver, pki: mtls_pki.Pki, delivered: list[server.Delivery], request_bytes: bytes, status: int
) -> None:
    got, connection, closed, more = exchange(rx, pki, request_bytes + SMUGGLED)

    assert got == status
    assert connection == "close"
    assert closed, "the receiver kept reading after a request it could not frame"
    assert more == []
    assert delivered == []


ACCEPTED = {
    "content-length": post(f"Content-Length: {N}"),
    "content-length without a space after the colon": post(f"Content-Length:{N}"),
    "content-length with optional whitespace around it": post(f"Content-Length: \t{N} \t"),
    "content-length with leading zeros": post("Content-Length: " + N.zfill(19)),
    "HTTP/1.0 without Host": post(f"Content-Length: {N}", version="HTTP/1.0", host=False),
    "expect 100-continue": post(f"Content-Length: {N}", "Expect: 100-continue"),
    "an empty line before the request": b"\r\n" + post(f"Content-Length: {N}"),
    # RFC 9112 section 3.2.2: a server MUST accept the absolute-form (its Host is then ignored).
    "an absolute-form request target": (
        b"POST https://x/webhooks HTTP/1.1\r\nHost: y\r\nContent-Length: " + N.encode() + b"\r\n\r\n" + BODY
    ),
}


@pytest.mark.parametrize("request_bytes", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_positive_controls_are_delivered(
    rx: server.Receiver, pki: mtls_pki.Pki, delivered: list[server.Delivery], request_bytes: bytes
) -> None:
    with connect(rx, pki) as tls, tls.makefile("rb") as stream:
        tls.sendall(request_bytes)
        response = read_response(stream)

    assert response is not None
    assert response[0] == 200
    assert [d.body for d in delivered] == [BODY]


def test_a_request_pipelined_behind_a_well_framed_one_is_read_as_the_next_request(
    rx: server.Receiver, pki: mtls_pki.Pki, delivered: list[server.Delivery]
) -> None:
    # The control for "nothing after a refused request is read": after a good one, the next is.
    status, _, _, more = exchange(rx, pki, post(f"Content-Length: {N}") + SMUGGLED, then=1)

    assert status == 200
    assert more == [200]
    assert [d.path for d in delivered] == ["/webhooks", "/smuggled"]


@pytest.mark.parametrize(
    ("target", "path", "host"),
    [
        (b"https://a.example:8443/webhooks?x=1", "/webhooks?x=1", "a.example:8443"),
        (b"HTTP://a.example", "/", "a.example"),
        (b"https://[::1]:8443?q", "/?q", "[::1]:8443"),
        (b"/webhooks", "/webhooks", "other"),
    ],
)
def test_an_absolute_form_target_is_read_as_its_path_and_its_authority_replaces_host(
    target: bytes, path: str, host: str
) -> None:
    request = http1.parse_head([b"POST " + target + b" HTTP/1.1", b"Host: other", b"Content-Length: 0"])
    assert (request.target, request.header("Host")) == (path, host)
    assert [n for n, _ in request.headers if n.lower() == "host"] == ["Host"]

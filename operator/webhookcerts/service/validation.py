"""The provider's "integration and validation" step, done by the operator against the real endpoint.

After a next certificate is issued, connect to ``spec.validation.url`` presenting it: the endpoint must
accept it before anyone cuts over. After an emergency, connect presenting the compromised certificate:
the endpoint must refuse it. Both conditions gate decisions people take (a cut-over, closing an
incident), so an outcome is only what the endpoint said, read at the stage it said it:

- **Accepted**: the application layer answered, with a 2xx or a status the user names
  (``acceptStatus``: a webhook path that answers GET with 405, say). Any other answer proves nothing.
- **Refused**: a refusal after our certificate was sent: a TLS alert (in the handshake with TLS 1.2,
  after it with TLS 1.3, whose client sends its certificate in its last flight and learns the server's
  verdict only on the next read), a close without an answer, or nginx's answer to a certificate it
  did not verify (``ssl_verify_client on`` completes the handshake and answers 400 "The SSL
  certificate error"; 495 and 496 where an ``error_page`` exposes them).
- **Unreachable**: nothing was refused because nothing got as far as our certificate: no connection
  (refused, timed out, a name that does not resolve), the endpoint's own certificate not trusted by
  ``caSecretRef`` (a misconfiguration, said so), a TLS failure before our certificate was sent (no
  common protocol version, a server that is not TLS), or no answer before the timeout.
- **Inconclusive**: an answer that is neither (a 404 from a wrong path, a 503): evidence of nothing.

Whether our certificate was sent is read from the bytes the probe itself writes: the handshake runs
over memory buffers, one flight at a time, and a flight after the first that is not a ClientHello (a
HelloRetryRequest's second one) carries the certificate (TLS 1.2: in the clear, TLS 1.3: encrypted).

Python's ssl module loads a key only from a file: the key goes to a private temporary directory for
the duration of loading it and is removed at once; it never reaches a log or an exception message.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import socket
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Collection

from webhookcerts.domain import models

# nginx's refusals of a client certificate: 400 as the client sees it, 495 (verification failed) and
# 496 (none sent) where error_page shows the internal codes. Never an acceptance, whatever is named.
REFUSAL_STATUSES = models.CERTIFICATE_REFUSAL_STATUSES
_MAX_HEAD = 8192  # bytes read while looking for the status line
_RECORD_CHANGE_CIPHER_SPEC, _RECORD_HANDSHAKE, _CLIENT_HELLO = 20, 22, 1


class Outcome(enum.Enum):
    ACCEPTED = "Accepted"
    REFUSED = "Refused"
    UNREACHABLE = "Unreachable"
    INCONCLUSIVE = "Inconclusive"


@dataclasses.dataclass(frozen=True)
class Probe:
    outcome: Outcome
    detail: str


class _Closed(Exception):
    """The endpoint closed the connection (EOF or reset)."""


class _Conversation:
    """One TLS connection driven by hand over memory buffers, so the probe knows what it has sent."""

    def __init__(self, raw: socket.socket, context: ssl.SSLContext, host: str, deadline: float) -> None:
        self._raw, self._deadline = raw, deadline
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=host)
        self.flights = 0
        self.certificate_sent = False

    def _flush(self) -> None:
        data = self._out.read()
        if not data:
            return
        self.flights += 1
        if self.flights > 1 and not _carries_client_hello(data):
            self.certificate_sent = True
        try:
            self._raw.sendall(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Closed(str(exc)) from None

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._raw.settimeout(remaining)
        try:
            data = self._raw.recv(16384)
        except ConnectionResetError as exc:
            raise _Closed(str(exc)) from None
        if not data:
            raise _Closed("end of stream")
        self._in.write(data)

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            else:
                self._flush()
                return

    def request(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def status_line(self) -> bytes:
        """The answer's first line; raises _Closed for a close before one, ssl.SSLError for an alert."""
        head = b""
        while b"\r\n" not in head and len(head) < _MAX_HEAD:
            try:
                chunk = self.tls.read(_MAX_HEAD)
            except ssl.SSLWantReadError:
                self._flush()  # TLS 1.3: nothing to send here, but a key update would be
                self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                if head:
                    break
                raise _Closed("closed without an answer")
            head += chunk
        return head.split(b"\r\n", 1)[0]


def _carries_client_hello(flight: bytes) -> bool:
    """Whether a flight is a ClientHello: its first record but ChangeCipherSpecs (TLS 1.3 sends one
    before the second ClientHello after a HelloRetryRequest) is a plaintext handshake record of that
    type. Only that record is looked at: the records after it may be encrypted, and an encrypted
    Finished whose first byte happens to be 1 is no ClientHello (1 run in 256 of the TLS 1.2 refusal
    test read the certificate as never sent, before this)."""
    at = 0
    while at + 5 < len(flight):
        kind, length = flight[at], int.from_bytes(flight[at + 3 : at + 5], "big")
        if kind != _RECORD_CHANGE_CIPHER_SPEC:
            return kind == _RECORD_HANDSHAKE and flight[at + 5] == _CLIENT_HELLO
        at += 5 + length
    return False


class _UnusableCA(Exception):
    """The CA named by validation.caSecretRef is not a PEM certificate OpenSSL can load."""


def _context(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem else None)
    except (ssl.SSLError, ValueError) as exc:
        raise _UnusableCA(getattr(exc, "reason", None) or type(exc).__name__) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="webhookcerts-probe-") as tmp:
        cert_file, key_file = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        for path_, data in ((cert_file, cert_pem), (key_file, key_pem)):
            fd = os.open(path_, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_file, key_file)
    return context


def probe(
    url: str,
    cert_pem: bytes,
    key_pem: bytes,
    *,
    ca_pem: bytes | None,
    timeout: float,
    accept_status: Collection[int] = (),
) -> Probe:
    """Present ``cert_pem`` to the endpoint at ``url`` and read what it makes of it (see the module)."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or 443
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    try:
        context = _context(cert_pem, key_pem, ca_pem)
    except _UnusableCA as exc:
        return Probe(Outcome.UNREACHABLE, f"misconfiguration: validation.caSecretRef holds no usable CA ({exc})")
    deadline = time.monotonic() + timeout
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Probe(Outcome.UNREACHABLE, f"cannot connect to {host}:{port}: {exc.strerror or exc}")
    with raw:
        talk = _Conversation(raw, context, host, deadline)
        try:
            talk.handshake()
            talk.request(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            line = talk.status_line()
        except ssl.SSLCertVerificationError as exc:
            return Probe(
                Outcome.UNREACHABLE,
                f"misconfiguration: the endpoint's own certificate is not trusted by validation.caSecretRef "
                f"({exc.verify_message}); the client certificate was never presented",
            )
        except ssl.SSLError as exc:
            reason = exc.reason or type(exc).__name__
            if talk.certificate_sent:
                return Probe(Outcome.REFUSED, f"TLS alert from the endpoint after the client certificate: {reason}")
            return Probe(Outcome.UNREACHABLE, f"TLS failed before the client certificate was sent: {reason}")
        except _Closed as exc:
            if talk.certificate_sent:
                return Probe(
                    Outcome.REFUSED, f"the endpoint closed the connection after the client certificate ({exc})"
                )
            return Probe(
                Outcome.UNREACHABLE, f"the endpoint closed the connection before the client certificate ({exc})"
            )
        except TimeoutError:
            stage = "after the client certificate" if talk.certificate_sent else "before the client certificate"
            return Probe(Outcome.UNREACHABLE, f"no answer within {timeout:g} s {stage}")
        except OSError as exc:
            return Probe(Outcome.UNREACHABLE, f"{host}:{port}: {exc.strerror or exc}")
    return _read_status(line.decode("latin-1"), accept_status)


def _read_status(line: str, accept_status: Collection[int]) -> Probe:
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (parts[1].isascii() and parts[1].isdigit()):
        return Probe(Outcome.INCONCLUSIVE, f"the endpoint answered something other than HTTP: {line[:64]!r}")
    status = int(parts[1])
    answered = f"the endpoint answered {line[:64]!r}"
    if status in REFUSAL_STATUSES:
        return Probe(Outcome.REFUSED, f"{answered}: nginx's refusal of a client certificate")
    if 200 <= status < 300 or status in accept_status:
        return Probe(Outcome.ACCEPTED, answered)
    return Probe(
        Outcome.INCONCLUSIVE,
        f"{answered}: neither a 2xx nor a status in validation.acceptStatus, nor a refusal of the certificate",
    )

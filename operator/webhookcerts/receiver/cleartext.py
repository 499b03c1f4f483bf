"""The client certificate a TLS 1.2 client sent in the clear, read from its bytes: who knocked when refused.

Python's ssl gives no verify callback: when OpenSSL refuses a client certificate, the handshake fails
and the certificate is gone. But in TLS 1.2 the client's Certificate message travels unencrypted, in the
very bytes the receiver hands to OpenSSL, so the receiver can read which certificate was refused, and a
revoked certificate knocking can be named (issue 24's alarm). In TLS 1.3 the client's certificate is
encrypted: nothing is read, and only a server that logs it (nginx, HAProxy, through trust-sync) can say.

This only watches: it never decides trust (OpenSSL did), and it stops at the first record that is not a
plaintext handshake record (the ChangeCipherSpec that ends the clear part, or any encrypted record), or
after ``LIMIT`` bytes, so a client cannot make it hold more than that.
"""

from __future__ import annotations

LIMIT = 16 * 1024  # a ClientHello and a client chain of a few certificates; a connection holds no more
_HANDSHAKE = 22
_CERTIFICATE = 11
_RECORD_HEADER = 5
_MESSAGE_HEADER = 4


def _u24(data: bytes | bytearray, at: int) -> int:
    return int.from_bytes(data[at : at + 3], "big")


class CertificateWitness:
    """Feed it the client's bytes in order; ``certificate`` is the leaf the client sent in the clear."""

    def __init__(self) -> None:
        self._records = bytearray()  # unparsed record bytes
        self._messages = bytearray()  # handshake message bytes, records' headers removed
        self._seen = 0
        self._done = False
        self.certificate: bytes | None = None

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> None:
        if self._done or not data:
            return
        self._seen += len(data)
        if self._seen > LIMIT:
            self._stop()
            return
        self._records += data
        while len(self._records) >= _RECORD_HEADER:
            kind = self._records[0]
            length = int.from_bytes(self._records[3:5], "big")
            if kind != _HANDSHAKE:
                self._stop()  # ChangeCipherSpec or an encrypted record: the clear part is over
                return
            if len(self._records) < _RECORD_HEADER + length:
                return
            self._messages += self._records[_RECORD_HEADER : _RECORD_HEADER + length]
            del self._records[: _RECORD_HEADER + length]
            self._read_messages()
            if self._done:
                return

    def _read_messages(self) -> None:
        while len(self._messages) >= _MESSAGE_HEADER:
            kind = self._messages[0]
            length = _u24(self._messages, 1)
            if len(self._messages) < _MESSAGE_HEADER + length:
                return
            body = bytes(self._messages[_MESSAGE_HEADER : _MESSAGE_HEADER + length])
            del self._messages[: _MESSAGE_HEADER + length]
            if kind == _CERTIFICATE:
                self.certificate = _leaf(body)
                self._stop()
                return

    def _stop(self) -> None:
        self._done = True
        self._records.clear()
        self._messages.clear()


def _leaf(body: bytes) -> bytes | None:
    """The first certificate of a TLS 1.2 Certificate message (an empty list: None)."""
    if len(body) < 6:
        return None
    total = _u24(body, 0)
    first = _u24(body, 3)
    if total > len(body) - 3 or first == 0 or 6 + first > len(body):
        return None
    return body[6 : 6 + first]

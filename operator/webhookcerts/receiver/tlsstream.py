"""TLS over an asyncio TCP stream, driven by hand through a memory BIO.

asyncio's own TLS transport drops what OpenSSL wrote last when a handshake fails, so a refused client
never sees the alert that says why (``unknown ca``, ``protocol version``): it sees the connection
reset. Endpoint validation and the people reading a provider's error both rely on that alert, so the
receiver drives the ``SSLObject`` itself and flushes the alert before closing. It also decides when
bytes are read at all, so a client can push no more into memory than the parser asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from webhookcerts.receiver.cleartext import CertificateWitness
from webhookcerts.receiver.http1 import LineTooLong

_CHUNK = 64 * 1024
_LINGER_BYTES = 1 << 20


class TlsStream:
    """A server-side TLS connection on ``reader``/``writer`` with ``context``, wrapped at construction
    (the context's session cache and generation are the ones in force when the connection came in)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
        self._reader, self._writer = reader, writer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._buffer = bytearray()
        self._eof = False
        # Reads the client's certificate if it comes in the clear (TLS 1.2), to name a refused one.
        self.witness: CertificateWitness | None = CertificateWitness()

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _receive(self) -> None:
        data = await self._reader.read(_CHUNK)
        if data:
            if self.witness is not None:
                self.witness.feed(data)
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def handshake(self) -> None:
        """Complete the handshake, or raise (ssl.SSLError, OSError) after sending the alert, if any."""
        while True:
            try:
                self.ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._receive()
                continue
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    await self._flush()
                raise
            await self._flush()
            self.witness = None  # past the handshake: nothing more to watch, nothing kept
            return

    async def _fill(self) -> bool:
        """More plaintext into the buffer; False at the end of the stream (close_notify or TCP EOF)."""
        if self._eof:
            return False
        while True:
            try:
                chunk = self.ssl.read(_CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._receive()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                self._eof = True
                return False
            self._buffer += chunk
            return True

    async def readline(self, limit: int) -> bytes:
        """Up to and including the next LF; IncompleteReadError at the end, LineTooLong past ``limit``."""
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                if end + 1 > limit:
                    raise LineTooLong
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > limit:
                raise LineTooLong
            start = len(self._buffer)
            if not await self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, None)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not await self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def write(self, data: bytes) -> None:
        self.ssl.write(data)
        await self._flush()

    async def close(self, *, linger: float) -> None:
        """close_notify, then a lingering close: stop sending, and read and drop what the client still
        sends for up to ``linger`` seconds before closing. Closing a socket with unread input makes the
        kernel send a reset, which can destroy the answer the client has not read yet (a 400 for a request
        it is still sending)."""
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.ssl.unwrap()
        try:
            await self._flush()
            if self._writer.can_write_eof():
                self._writer.write_eof()
            async with asyncio.timeout(linger):
                dropped = 0
                while dropped < _LINGER_BYTES:
                    data = await self._reader.read(_CHUNK)
                    if not data:
                        break
                    dropped += len(data)
        except (OSError, TimeoutError):
            pass
        self._writer.close()

    def abort(self) -> None:
        self._writer.transport.abort()

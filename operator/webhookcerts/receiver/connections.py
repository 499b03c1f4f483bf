"""The receiver's connections: accepted, handshaken and read on one event loop, never a thread each.

A thread per TCP connection lets anyone who can open sockets exhaust the process before proving who
they are: 500 connections that never finish their handshake were 500 threads. Here a connection costs
a coroutine and its buffers until it has sent a whole request; only the application's delivery handler,
which may block, goes to a bounded pool of threads.

Every stage has a deadline, each counted from the stage's start, not per read: the handshake, the wait
for a request on an idle connection, the rest of a request once its first line came, and a response the
client does not read. The number of open connections is capped; when the cap is reached, a new
connection takes the place of the oldest one still handshaking (the one an attacker holds longest),
else of the oldest one closing or idle between requests; a connection with a request in hand is never
dropped for a newcomer.

A keep-alive connection made under an older trust store may go on only while its certificate is still
trusted, judged by fingerprint; otherwise its next request is answered 421 and the connection closed,
so a revoked certificate cannot ride an old connection. A resumed TLS 1.2 session skipped verification,
so it is only as good as the context whose session cache it came from: the one the connection was
wrapped with, even if ``sni_callback`` moved the handshake onto a newer one.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import http
import json
import logging
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509 import oid

from webhookcerts.receiver import http1, tlscontexts, tlsstream

if TYPE_CHECKING:
    from webhookcerts.receiver.server import Receiver

_log = logging.getLogger("webhookcerts.receiver")

HANDSHAKING, IDLE, BUSY, CLOSING = "handshaking", "idle", "busy", "closing"
_LINGER = 2.0


@dataclasses.dataclass
class Peer:
    """Who is on an authenticated connection, and which trust generation vouched for them."""

    client_fingerprint: str
    client_cn: str | None
    tls_version: str | None
    trust_generation: int
    client_sha1: str | None = None


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(oid.NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) else None


@dataclasses.dataclass(eq=False)
class _Slot:
    task: asyncio.Task[None]
    stream: tlsstream.TlsStream
    state: str = HANDSHAKING


class _Table:
    """The open connections, oldest first, capped at ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[_Slot, None] = {}
        self.evicted = 0

    def admit(self, slot: _Slot) -> bool:
        if len(self._slots) >= self._limit:
            victim = next((s for s in self._slots if s.state == HANDSHAKING), None)
            victim = victim or next((s for s in self._slots if s.state in (CLOSING, IDLE)), None)
            if victim is None:
                return False
            self.drop(victim)
            _log.warning(json.dumps({"event": "connection_evicted", "state": victim.state, "open": self._limit}))
            victim.stream.abort()
            victim.task.cancel()
            self.evicted += 1
        self._slots[slot] = None
        return True

    def drop(self, slot: _Slot) -> None:
        self._slots.pop(slot, None)

    def counts(self) -> dict[str, int]:
        counted = collections.Counter(s.state for s in self._slots)
        return {state: counted[state] for state in (HANDSHAKING, IDLE, BUSY, CLOSING)}

    def slots(self) -> list[_Slot]:
        return list(self._slots)


class Listener:
    """Serves ``receiver`` on ``sock`` until stop(); run() blocks the calling thread on the event loop."""

    def __init__(self, receiver: Receiver, sock: socket.socket) -> None:
        self.receiver = receiver
        self.config = receiver.config
        self._rx = receiver
        self._config = receiver.config
        self._sock = sock
        self._table = _Table(self._config.max_connections)
        self._pool = concurrent.futures.ThreadPoolExecutor(self._config.workers, thread_name_prefix="delivery")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._counts: dict[str, int] = self._table.counts()

    def connection_states(self) -> dict[str, int]:
        """How many connections are handshaking, idle between requests, busy with one, closing (any
        thread), and how many were evicted."""
        return {**self._counts, "evicted": self._table.evicted}

    def run(self, ready: threading.Event | None = None) -> None:
        try:
            asyncio.run(self._serve(ready))
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._sock.close()

    def discard(self) -> None:
        """Close the socket of a listener that never ran."""
        if self._loop is None:
            self._sock.close()
            self._pool.shutdown(wait=False)

    def stop(self) -> None:
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopping.set)

    async def _serve(self, ready: threading.Event | None) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._accepted, sock=self._sock, backlog=self._config.backlog)
        if ready is not None:
            ready.set()
        if not self._stop_requested.is_set():
            await self._stopping.wait()
        server.close()
        for slot in self._table.slots():
            slot.stream.abort()
            slot.task.cancel()
        await server.wait_closed()

    def set_state(self, slot: _Slot, state: str) -> None:
        slot.state = state
        self._counts = self._table.counts()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        accepted_with = self._rx.trust.current.context
        stream = tlsstream.TlsStream(reader, writer, accepted_with)
        self._rx.stats.connection()
        slot = _Slot(task, stream)
        if not self._table.admit(slot):
            stream.abort()
            return
        self.set_state(slot, HANDSHAKING)
        remote = writer.get_extra_info("peername") or ("?", 0)
        try:
            try:
                async with asyncio.timeout(self._config.handshake_timeout):
                    await stream.handshake()
            except (ssl.SSLError, OSError) as exc:
                witnessed = stream.witness.certificate if stream.witness is not None else None
                self._rx.handshake_failed(remote, exc, witnessed)
                stream.abort()
                return
            peer = self._peer(stream.ssl, accepted_with)
            await _Conversation(self, slot, peer, str(remote[0])).run()
        except asyncio.CancelledError:
            # Evicted for a newcomer, or the receiver is stopping. Ending normally rather than as
            # cancelled keeps asyncio from logging the task as failed.
            stream.abort()
        except OSError as exc:
            # A client that goes away mid-request is routine, not a bug: one line, no traceback.
            record = {"event": "connection_error", "remote": str(remote[0]), "error": type(exc).__name__}
            _log.warning(json.dumps(record))
            stream.abort()
        finally:
            self._table.drop(slot)
            self._counts = self._table.counts()

    def _peer(self, sslobj: ssl.SSLObject, accepted_with: ssl.SSLContext) -> Peer:
        der = sslobj.getpeercert(binary_form=True)
        # CERT_REQUIRED guarantees a verified peer certificate after the handshake.
        assert der is not None
        verified_by = accepted_with if sslobj.session_reused else sslobj.context
        return Peer(
            client_fingerprint=tlscontexts.fingerprint(der),
            client_cn=_common_name(x509.load_der_x509_certificate(der)),
            tls_version=sslobj.version(),
            trust_generation=self._rx.trust.generation_of(verified_by),
            client_sha1=tlscontexts.sha1_fingerprint(der),
        )

    async def run_blocking(self, call: functools.partial[Any]) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._pool, call)


class _Conversation:
    """The requests of one authenticated connection, one at a time."""

    def __init__(self, listener: Listener, slot: _Slot, peer: Peer, remote: str) -> None:
        self._listener, self._slot, self._peer, self._remote = listener, slot, peer, remote
        self._rx = listener._rx
        self._config = listener._config
        self._stream = slot.stream
        self._close = False
        self._request: http1.Request | None = None

    async def run(self) -> None:
        while not self._close:
            self._listener.set_state(self._slot, IDLE)
            self._request = None
            try:
                async with asyncio.timeout(self._config.idle_timeout):
                    line = await http1.read_request_line(self._stream)
            except TimeoutError:
                break
            except http1.FramingError as exc:
                await self._refuse(exc)
                break
            if line is None:
                break
            self._listener.set_state(self._slot, BUSY)
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._config.request_timeout):
                    await self._one(line, started)
            except http1.FramingError as exc:
                await self._refuse(exc)
                break
            except TimeoutError:
                self._stream.abort()  # a request or an answer that does not move: nothing more to say
                return
        self._listener.set_state(self._slot, CLOSING)
        try:
            async with asyncio.timeout(_LINGER + 1):
                await self._stream.close(linger=_LINGER)
        except TimeoutError:
            self._stream.abort()  # an answer the client does not read

    async def _one(self, line: bytes, started: float) -> None:
        request = self._request = await http1.read_head(self._stream, line)
        self._close = not request.keep_alive
        trusted = self._still_trusted()
        # One presentation per request, as nginx and HAProxy log them: a keep-alive connection
        # presents its certificate with every delivery, and the last one is what a cut-over waits on.
        self._rx.presented(self._peer, accepted=trusted)
        if not trusted:
            self._rx.stats.stale_closed()
            self._close = True
            reason = "the trust store changed since this connection was made; retry on a new connection"
            await self._respond(http.HTTPStatus.MISDIRECTED_REQUEST, reason)
            return
        if request.content_length > self._config.max_body:
            self._close = True
            await self._respond(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large", started=started)
            return
        if request.method not in ("GET", "POST"):
            self._close = True
            await self._respond(http.HTTPStatus.NOT_IMPLEMENTED, "GET and POST only")
            return
        if request.expect_continue:
            await self._stream.write(http1.CONTINUE)
        try:
            body = await self._stream.readexactly(request.content_length)
        except asyncio.IncompleteReadError:
            self._close = True
            return  # the client went away mid-body: nobody to answer
        if request.method == "GET":
            if request.target.split("?", 1)[0] != self._rx.health_path:
                await self._respond(http.HTTPStatus.NOT_FOUND, "not found")
                return
            await self._respond(http.HTTPStatus.OK, "ok", body=self._rx.health(), log=False)
            return
        host = request.header("Host") or f"{self._rx.host}:{self._rx.port}"
        call = functools.partial(
            self._rx.check, request.method, f"https://{host}{request.target}", request.target,
            list(request.headers), body, self._peer,
        )  # fmt: skip
        if self._rx.has_delivery_handler:
            status, reason, verified = await self._listener.run_blocking(call)
        else:
            # Only CPU-bound work is left (a signature check, a JSON parse of at most max_body): under
            # the GIL a thread would not run it sooner, and the hand-off cost half the throughput.
            status, reason, verified = call()
        await self._respond(status, reason, started=started, verified=verified, size=len(body))

    def _still_trusted(self) -> bool:
        """Whether this connection may go on: made under the current trust store, or its certificate
        is still listed in it."""
        current = self._rx.trust.current
        if self._peer.trust_generation == current.generation:
            return True
        if self._peer.client_fingerprint in current.fingerprints:
            self._peer.trust_generation = current.generation
            return True
        return False

    async def _refuse(self, exc: http1.FramingError) -> None:
        self._close = True
        record = {"event": "http_error", "remote": self._remote, "status": exc.status.value, "detail": exc.reason}
        _log.warning(json.dumps(record))
        self._rx.stats.response(exc.status.value)
        self._rx.stats.framing_refused(exc.reason)
        payload = json.dumps({"status": exc.status.value, "reason": exc.reason}).encode()
        async with asyncio.timeout(self._config.request_timeout):
            await self._stream.write(http1.response(exc.status, payload, close=True, server=self._rx.server_version))

    async def _respond(
        self,
        status: http.HTTPStatus,
        reason: str,
        *,
        body: dict[str, Any] | None = None,
        started: float | None = None,
        verified: Any = None,
        size: int | None = None,
        log: bool = True,
    ) -> None:
        # Count and log the decision before answering, so whoever sees the answer also finds the record.
        self._rx.stats.response(status.value)
        request = self._request
        assert request is not None
        if log:
            record: dict[str, Any] = {
                "event": "delivery" if request.method == "POST" else "request",
                "status": status.value,
                "reason": reason,
                "method": request.method,
                "path": request.target,
                "remote": self._remote,
                "client_fingerprint": self._peer.client_fingerprint,
                "client_cn": self._peer.client_cn,
                "tls": self._peer.tls_version,
                "trust_generation": self._peer.trust_generation,
            }
            if size is not None:
                record["bytes"] = size
            if verified is not None:
                record["signature_keyid"] = verified.key_id
                record["signature_alg"] = verified.algorithm
            if started is not None:
                record["ms"] = round((time.monotonic() - started) * 1000, 2)
            _log.info(json.dumps(record))
        payload = json.dumps(body if body is not None else {"status": status.value, "reason": reason}).encode()
        await self._stream.write(http1.response(status, payload, close=self._close, server=self._rx.server_version))

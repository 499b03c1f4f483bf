"""The reference webhook receiver: an mTLS endpoint whose client trust store reloads without a restart.

It shows what the operator expects of a webhook endpoint and is the endpoint the end-to-end tests
rotate certificates against. TLS 1.2 is the floor and a client certificate is required and validated
against the trust directory the trust Secret is mounted at (the kubelet's ``..data`` layout).

Reloading is the subtle part: every change of the trust store builds a fresh TLS context
(tlscontexts.py says how a handshake always lands on the newest). Connections and requests already
under way are not touched, so nothing in flight is dropped. A keep-alive connection made under an
older trust store may go on only while its certificate is still trusted, judged by fingerprint;
otherwise its next request is answered 421 and the connection closed, so a revoked certificate cannot
ride an old connection.

Resumed sessions skip certificate verification, so they get the same treatment. Session tickets are
off; TLS 1.2 session IDs live in the cache of the context that accepted the connection, one cache per
trust generation, and a session resumed from an older generation counts as verified by that one.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import http
import http.server
import json
import logging
import pathlib
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.x509 import oid

from webhookcerts.receiver import provider_scheme, signatures, signing, tlscontexts, trustdir

_log = logging.getLogger("webhookcerts.receiver")

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
MAX_BODY = 1 << 20
HEALTH_PATH = "/healthz"


@dataclasses.dataclass(frozen=True)
class Config:
    cert: pathlib.Path
    key: pathlib.Path
    trust_dir: pathlib.Path
    trust_file: str = "ca.crt"
    host: str = "0.0.0.0"  # noqa: S104 - a server listens on every interface unless told otherwise
    port: int = 8443
    # The provider's public keys, each "[KEYID=]PATH" (a file or a directory of them): see keyset.py.
    signature_keys: tuple[str, ...] = ()
    signature_key: pathlib.Path | None = None  # one more key, named signature_key_id (or by its file name)
    signature_key_id: str | None = None
    signature_scheme: str = signing.DEFAULT_SCHEME
    signature_algorithm: str | None = None  # RFC 9421 only: the provider's schemes take it from the key
    signature_max_age: datetime.timedelta = datetime.timedelta(minutes=5)
    signature_skew: float = provider_scheme.DEFAULT_SKEW
    reload_interval: float = 0.1


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What a delivery handler is told about a delivery that passed every check."""

    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    client_fingerprint: str
    client_cn: str | None
    signature: signatures.Verified | None


DeliveryHandler = Callable[[Delivery], None]


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(oid.NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) else None


class Stats:
    """Counters for tests, benchmarks and the health page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: collections.Counter[int] = collections.Counter()
        self.handshake_failures: collections.Counter[str] = collections.Counter()
        self.stale_connections_closed = 0
        self.connections = 0

    def connection(self) -> None:
        with self._lock:
            self.connections += 1

    def response(self, status: int) -> None:
        with self._lock:
            self.responses[status] += 1

    def handshake_failure(self, reason: str) -> None:
        with self._lock:
            self.handshake_failures[reason] += 1

    def stale_closed(self) -> None:
        with self._lock:
            self.stale_connections_closed += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "responses": {str(k): v for k, v in sorted(self.responses.items())},
                "handshake_failures": dict(self.handshake_failures),
                "stale_connections_closed": self.stale_connections_closed,
                "connections": self.connections,
            }


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """One thread per connection; the TLS handshake happens in that thread, never in the accept loop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, receiver: Receiver, address: tuple[str, int]) -> None:
        self.receiver = receiver
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.receiver.stats.connection()
        trust = self.receiver.trust.current
        try:
            conn = trust.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError):
            request.close()
            return
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            try:
                conn.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.receiver.handshake_failed(client_address, exc)
                return
            conn.settimeout(IDLE_TIMEOUT)
            _Handler(conn, client_address, self, accepted_with=trust.context)
        finally:
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            # A client that goes away mid-request is routine, not a bug: one line, no traceback.
            record = {"event": "connection_error", "remote": str(client_address[0]), "error": type(exc).__name__}
            _log.warning(json.dumps(record))
            return
        _log.exception("unexpected error serving %s", client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True
    server_version = "webhookcerts-receiver"
    sys_version = ""
    server: _Server
    connection: ssl.SSLSocket

    def __init__(
        self, request: Any, client_address: Any, server: _Server, *, accepted_with: ssl.SSLContext | None = None
    ) -> None:
        self._accepted_with = accepted_with
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        der = self.connection.getpeercert(binary_form=True)
        # CERT_REQUIRED guarantees a verified peer certificate after the handshake.
        assert der is not None
        self.client_fingerprint = tlscontexts.fingerprint(der)
        self.client_cn = _common_name(x509.load_der_x509_certificate(der))
        self.tls_version = self.connection.version()
        # Which trust store vouched for this peer. A full handshake is verified by the context it ended
        # on; a resumed session skips verification, so it is only as good as the context whose session
        # cache it came from (the one the connection was accepted with, even if sni_callback moved it).
        verified_by = self.connection.context
        if self.connection.session_reused and self._accepted_with is not None:
            verified_by = self._accepted_with
        self.trust_generation = self.server.receiver.trust.generation_of(verified_by)

    def log_message(self, format: str, *args: Any) -> None:
        # Our own one line per request replaces http.server's access log.
        pass

    def log_error(self, format: str, *args: Any) -> None:
        record = {"event": "http_error", "remote": self.client_address[0], "detail": format % args}
        _log.warning(json.dumps(record))

    def _still_trusted(self) -> bool:
        """Whether this connection may go on: made under the current trust store, or its certificate
        is still listed in it."""
        current = self.server.receiver.trust.current
        if self.trust_generation == current.generation:
            return True
        if self.client_fingerprint in current.fingerprints:
            self.trust_generation = current.generation
            return True
        return False

    def do_GET(self) -> None:
        if not self._still_trusted():
            self._refuse_stale()
            return
        if self.path.split("?", 1)[0] != HEALTH_PATH:
            self._respond(http.HTTPStatus.NOT_FOUND, "not found")
            return
        self._respond(http.HTTPStatus.OK, "ok", body=self.server.receiver.health(), log=False)

    def do_POST(self) -> None:
        started = time.monotonic()
        if not self._still_trusted():
            self._refuse_stale()
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._respond(http.HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted", started=started)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._respond(http.HTTPStatus.LENGTH_REQUIRED, "missing or bad Content-Length", started=started)
            return
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._respond(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large", started=started)
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return  # the client went away mid-body: nobody to answer
        status, reason, verified = self.server.receiver.check(
            self.command, self._url(), self.path, list(self.headers.items()), body, self
        )
        self._respond(status, reason, started=started, verified=verified, size=len(body))

    def _url(self) -> str:
        host = self.headers.get("Host") or f"{self.server.server_name}:{self.server.server_port}"
        return f"https://{host}{self.path}"

    def _refuse_stale(self) -> None:
        self.server.receiver.stats.stale_closed()
        self.close_connection = True
        self._respond(
            http.HTTPStatus.MISDIRECTED_REQUEST,
            "the trust store changed since this connection was made; retry on a new connection",
        )

    def _respond(
        self,
        status: http.HTTPStatus,
        reason: str,
        *,
        body: dict[str, Any] | None = None,
        started: float | None = None,
        verified: signatures.Verified | None = None,
        size: int | None = None,
        log: bool = True,
    ) -> None:
        # Count and log the decision before answering, so whoever sees the answer also finds the record.
        self.server.receiver.stats.response(status.value)
        if log:
            record: dict[str, Any] = {
                "event": "delivery" if self.command == "POST" else "request",
                "status": status.value,
                "reason": reason,
                "method": self.command,
                "path": self.path,
                "remote": self.client_address[0],
                "client_fingerprint": self.client_fingerprint,
                "client_cn": self.client_cn,
                "tls": self.tls_version,
                "trust_generation": self.trust_generation,
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
        self.send_response(status.value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


class Receiver:
    """The server, its trust store and its watcher; start() for tests, serve_forever() for the CLI."""

    def __init__(self, config: Config, *, on_delivery: DeliveryHandler | None = None) -> None:
        self.config = config
        self.stats = Stats()
        self.trust = tlscontexts.TrustStore(config.cert, config.key, config.trust_dir / config.trust_file)
        self._on_delivery = on_delivery
        try:
            self._verifier = signing.verifier(config)
        except (OSError, signatures.SignatureError) as exc:
            raise tlscontexts.ReceiverError(f"signature key: {exc}") from None
        self._watcher = trustdir.Watcher(self.trust.watched_paths(), self.reload, interval=config.reload_interval)
        self._server = _Server(self, (config.host, config.port))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def host(self) -> str:
        return self._server.server_name

    def reload(self) -> bool:
        return self.trust.reload()

    def start(self) -> Receiver:
        """Serve on a background thread (tests, benchmarks)."""
        self._watcher.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="receiver", daemon=True
        )
        self._thread.start()
        self._log_listening()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until shutdown() is called from another (the CLI's signal handler)."""
        self._watcher.start()
        self._log_listening()
        try:
            self._server.serve_forever()
        finally:
            self._watcher.stop()
            self._server.server_close()

    def shutdown(self) -> None:
        self._server.shutdown()

    def close(self) -> None:
        self._watcher.stop()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log_listening(self) -> None:
        state = self.trust.current
        _log.info(
            json.dumps(
                {
                    "event": "listening",
                    "address": f"{self.host}:{self.port}",
                    "trust_file": str(self.trust.trust_path),
                    "trusted": [dataclasses.asdict(c) for c in state.trusted],
                    "signatures": self._signature_mode(),
                }
            )
        )

    def health(self) -> dict[str, Any]:
        state = self.trust.current
        return {
            "status": "ok",
            "trust_generation": state.generation,
            "trusted": [dataclasses.asdict(c) for c in state.trusted],
            "trust_error": self.trust.last_error,
            "signatures": self._signature_mode(),
            **self.stats.snapshot(),
        }

    def _signature_mode(self) -> str:
        return f"required ({self.config.signature_scheme})" if self._verifier is not None else "off"

    def handshake_failed(self, client_address: Any, exc: BaseException) -> None:
        reason = _handshake_reason(exc)
        self.stats.handshake_failure(reason)
        record = {"event": "handshake_failed", "remote": str(client_address[0]), "reason": reason}
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
            record["detail"] = exc.verify_message
        _log.warning(json.dumps(record))

    def check(
        self,
        method: str,
        url: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        handler: _Handler,
    ) -> tuple[http.HTTPStatus, str, signatures.Verified | None]:
        """Decide a delivery's answer: 200 only when it is well-formed, signed (if required) and handled."""
        verified: signatures.Verified | None = None
        if self._verifier is not None:
            try:
                verified = self._verifier.verify(method, url, headers, body)
            except signatures.SignatureError as exc:
                return http.HTTPStatus.UNAUTHORIZED, f"signature: {exc}", None
        elif any(name.lower() == "content-digest" for name, _ in headers):
            digest = ", ".join(v for n, v in headers if n.lower() == "content-digest")
            try:
                signatures.check_digest(digest, body)
            except signatures.SignatureError as exc:
                return http.HTTPStatus.BAD_REQUEST, f"content-digest: {exc}", None
        if not body:
            return http.HTTPStatus.BAD_REQUEST, "empty body", verified
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return http.HTTPStatus.BAD_REQUEST, "body is not JSON", verified
        if self._on_delivery is not None:
            delivery = Delivery(
                path=path,
                headers=dict(headers),
                body=body,
                payload=payload,
                client_fingerprint=handler.client_fingerprint,
                client_cn=handler.client_cn,
                signature=verified,
            )
            try:
                self._on_delivery(delivery)
            except Exception as exc:
                _log.warning(json.dumps({"event": "handler_failed", "error": type(exc).__name__}))
                return http.HTTPStatus.INTERNAL_SERVER_ERROR, "delivery handler failed", verified
        return http.HTTPStatus.OK, "delivered", verified


def _handshake_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate_verify_failed"
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or type(exc).__name__).lower()
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "connection_reset"
    return type(exc).__name__.lower()

"""The reference webhook receiver: an mTLS endpoint whose client trust store reloads without a restart.

It shows what the operator expects of a webhook endpoint and is the endpoint the end-to-end tests
rotate certificates against. TLS 1.2 is the floor and a client certificate is required and validated
against the trust directory the trust Secret is mounted at (the kubelet's ``..data`` layout).

Reloading is the subtle part: every change of the trust store builds a fresh TLS context
(tlscontexts.py says how a handshake always lands on the newest, and how trust and the serving pair
reload independently). Connections and requests already under way are not touched, so nothing in flight
is dropped; connections.py says how a connection made under an older trust store is judged, and how
connections are served without a thread each. http1.py is the strict HTTP/1.1 framing. This module
holds the configuration, the counters and the decision on a delivery.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import http
import json
import logging
import pathlib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from webhookcerts.domain import trust
from webhookcerts.receiver import connections, provider_scheme, reporting, signatures, signing, tlscontexts, trustdir

_log = logging.getLogger("webhookcerts.receiver")

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0
MAX_BODY = 1 << 20
MAX_CONNECTIONS = 1024
WORKERS = 8
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
    # Abuse limits (connections.py): each deadline counts from its stage's start, not per read.
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT  # between requests on a keep-alive connection
    request_timeout: float = REQUEST_TIMEOUT  # a request's head and body once its first line came
    max_connections: int = MAX_CONNECTIONS
    workers: int = WORKERS  # threads for the delivery handler (on_delivery), which may block
    backlog: int = 1024
    max_body: int = MAX_BODY


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


class Stats:
    """Counters for tests, benchmarks and the health page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: collections.Counter[int] = collections.Counter()
        self.handshake_failures: collections.Counter[str] = collections.Counter()
        self.stale_connections_closed = 0
        self.connections = 0
        self.framing_refusals: collections.Counter[str] = collections.Counter()

    def connection(self) -> None:
        with self._lock:
            self.connections += 1

    def response(self, status: int) -> None:
        with self._lock:
            self.responses[status] += 1

    def handshake_failure(self, reason: str) -> None:
        with self._lock:
            self.handshake_failures[reason] += 1

    def framing_refused(self, reason: str) -> None:
        with self._lock:
            self.framing_refusals[reason] += 1

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
                "framing_refusals": dict(self.framing_refusals),
            }


class Receiver:
    """The server, its trust store and its watcher; start() for tests, serve_forever() for the CLI."""

    def __init__(
        self, config: Config, *, on_delivery: DeliveryHandler | None = None, tally: reporting.Tally | None = None
    ) -> None:
        self.config = config
        self.tally = tally  # counts presentations for a PresentationReport (reporting.py); None: not reporting
        self.stats = Stats()
        self.trust = tlscontexts.TrustStore(config.cert, config.key, config.trust_dir / config.trust_file)
        self._on_delivery = on_delivery
        try:
            self._verifier = signing.verifier(config)
        except (OSError, signatures.SignatureError) as exc:
            raise tlscontexts.ReceiverError(f"signature key: {exc}") from None
        self._watcher = trustdir.Watcher(self.trust.watched_paths(), self.reload, interval=config.reload_interval)
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.create_server((config.host, config.port), family=family, backlog=config.backlog)
        self.host, self.port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
        self._listener = connections.Listener(self, sock)
        self._thread: threading.Thread | None = None

    @property
    def has_delivery_handler(self) -> bool:
        return self._on_delivery is not None

    health_path = HEALTH_PATH
    server_version = "webhookcerts-receiver"

    def connection_states(self) -> dict[str, int]:
        """Open connections by state (handshaking, idle, busy) and how many were evicted for newcomers."""
        return self._listener.connection_states()

    def reload(self) -> bool:
        return self.trust.reload()

    def presented(self, peer: connections.Peer, *, accepted: bool) -> None:
        """A request came with ``peer``'s certificate: accepted, or refused as no longer trusted."""
        if self.tally is not None:
            self.tally.record(sha256=peer.client_fingerprint, sha1=peer.client_sha1, accepted=accepted)

    def served_trust_hash(self) -> str | None:
        """The trust Secret's trust-hash annotation for the ca.crt served now, when this receiver can know it.

        The operator's annotation is the SHA-256 of ca.crt's bytes (domain.trust.trust_hash), which the
        kubelet and trust-sync copy unchanged: the hash of the file the current trust was built from.
        Another file (``--trust-file``) is not ca.crt, and its hash would be no annotation's value.
        """
        if self.config.trust_file != trust.KEY:
            return None
        return self.trust.current.source_hash or None

    def start(self) -> Receiver:
        """Serve on a background thread (tests, benchmarks); returns once connections are accepted."""
        self._watcher.start()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._listener.run, args=(ready,), name="receiver", daemon=True)
        self._thread.start()
        ready.wait()
        self._log_listening()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until shutdown() is called from another (the CLI's signal handler)."""
        self._watcher.start()
        self._log_listening()
        try:
            self._listener.run()
        finally:
            self._watcher.stop()

    def shutdown(self) -> None:
        self._listener.stop()

    def close(self) -> None:
        self._watcher.stop()
        self._listener.stop()
        if self._thread is not None:
            self._thread.join()
        else:
            self._listener.discard()

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
            "serving_error": self.trust.serving_error,
            "open_connections": self.connection_states(),
            "signatures": self._signature_mode(),
            **self.stats.snapshot(),
        }

    def _signature_mode(self) -> str:
        return f"required ({self.config.signature_scheme})" if self._verifier is not None else "off"

    def handshake_failed(self, client_address: Any, exc: BaseException, presented: bytes | None = None) -> None:
        """A handshake failed; ``presented`` is the client certificate (DER) it sent in the clear, if any.

        Python's ssl has no verify callback: when OpenSSL refuses a certificate, the bytes a TLS 1.2
        client sent (cleartext.py) are the only way to say which one was refused, and a refusal is a
        presentation the report counts (a revoked certificate knocking). Only a verification failure is
        a refusal of the certificate: a handshake that failed otherwise says nothing about it.
        """
        reason = _handshake_reason(exc)
        self.stats.handshake_failure(reason)
        record = {"event": "handshake_failed", "remote": str(client_address[0]), "reason": reason}
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
            record["detail"] = exc.verify_message
        if presented is not None and isinstance(exc, ssl.SSLCertVerificationError):
            sha256, sha1 = tlscontexts.fingerprint(presented), tlscontexts.sha1_fingerprint(presented)
            record["client_fingerprint"] = sha256
            if self.tally is not None:
                self.tally.record(sha256=sha256, sha1=sha1, accepted=False)
        _log.warning(json.dumps(record))

    def check(
        self,
        method: str,
        url: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        peer: connections.Peer,
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
                client_fingerprint=peer.client_fingerprint,
                client_cn=peer.client_cn,
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

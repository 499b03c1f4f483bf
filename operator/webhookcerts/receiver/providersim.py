"""The provider simulator: delivers signed webhooks over mTLS the way the webhook provider does.

It proves a rotation from the provider's side. It presents the certificate from the bundle the client
would submit (PKCS#12 and its password), sends at a steady rate, retries anything but 200 with
exponential backoff as a provider does, and counts what happened, handshake refusals by reason. By
default every delivery opens a new TLS connection, so each one is checked against the receiver's trust
store as it is at that moment; keep-alive is an option.

A provider that switches certificates does not switch every sender at once: with a second bundle and a
share (``mix_bundle``, ``mix``) that share of the deliveries presents the second bundle's certificate
and the rest the first's, spread evenly over the sequence (every delivery keeps its certificate through
its retries), and the summary counts each certificate's deliveries by its SHA-256 fingerprint. Many
providers' HTTP clients speak TLS 1.2 only (``tls_max``): that is also where a receiver can read which
certificate it refused (the client's certificate travels in the clear), which TLS 1.3 hides.

The key from the bundle reaches OpenSSL through a private temporary directory, encrypted with a
one-time passphrase, and is removed as soon as it is loaded: Python's ssl module reads keys only from
files, and the bundle's own password must not become a second copy of the key in the clear.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import hashlib
import http.client
import json
import logging
import os
import pathlib
import secrets
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from webhookcerts.receiver import signatures, signing

_log = logging.getLogger("webhookcerts.provider_sim")


class SimulatorError(RuntimeError):
    """A bundle, key or URL the simulator cannot use; the message never carries secret material."""


@dataclasses.dataclass(frozen=True)
class Config:
    url: str
    bundle: pathlib.Path
    password: bytes = dataclasses.field(repr=False)
    ca: pathlib.Path | None = None
    rate: float = 10.0
    duration: float = 10.0
    count: int | None = None  # default: rate * duration
    signing_key: pathlib.Path | None = None
    key_id: str = "provider-sim"
    signature_scheme: str = signing.DEFAULT_SCHEME  # what the real provider's webhooks use
    signature_algorithm: str | None = None
    keep_alive: bool = False
    max_attempts: int = 6
    backoff_initial: float = 0.1
    backoff_max: float = 2.0
    timeout: float = 10.0
    concurrency: int = 32
    mix_bundle: pathlib.Path | None = None  # presented with ``mix`` of the deliveries (same password)
    mix: float = 0.0
    tls_max: str | None = None  # "1.2" or "1.3"; None: what OpenSSL offers (1.3)

    def total(self) -> int:
        return self.count if self.count is not None else max(1, round(self.rate * self.duration))

    def mixed(self, sequence: int) -> bool:
        """Whether delivery ``sequence`` presents the mix bundle: ``mix`` of them, spread evenly."""
        return self.mix_bundle is not None and int((sequence + 1) * self.mix) > int(sequence * self.mix)


TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client_context(
    bundle: bytes, password: bytes, ca: pathlib.Path | None, tls_max: str | None = None
) -> ssl.SSLContext:
    """A TLS client context presenting the bundle's certificate (and chain) and verifying the server,
    offering TLS up to ``tls_max`` ("1.2", "1.3"; None: what OpenSSL offers)."""
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(bundle, password)
    except ValueError:
        raise SimulatorError("cannot open the bundle: wrong password or not a PKCS#12 file") from None
    if key is None or cert is None:
        raise SimulatorError("the bundle holds no private key and certificate")
    ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls_max is not None:
        if tls_max not in TLS_VERSIONS:
            raise SimulatorError(f"TLS maximum {tls_max!r}: one of {', '.join(TLS_VERSIONS)}")
        ctx.maximum_version = TLS_VERSIONS[tls_max]
    one_time = secrets.token_urlsafe(32).encode()
    with tempfile.TemporaryDirectory(prefix="provider-sim-") as tmp:
        os.chmod(tmp, 0o700)
        chain_path = pathlib.Path(tmp, "chain.pem")
        key_path = pathlib.Path(tmp, "key.pem")
        chain_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *extra)))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(one_time),
                )
            )
        try:
            ctx.load_cert_chain(chain_path, key_path, password=one_time)
        except ssl.SSLError:
            raise SimulatorError("the bundle's key does not match its certificate") from None
    return ctx


@dataclasses.dataclass
class _Outcome:
    ok: bool
    status: int | None = None
    handshake: str | None = None  # a refusal at the TLS layer, by reason
    error: str | None = None  # anything else on the way


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.attempts = 0
        self.handshake_failures: collections.Counter[str] = collections.Counter()
        self.http_errors: collections.Counter[str] = collections.Counter()
        self.connection_errors: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        # sent, delivered, failed per certificate presented (its SHA-256 fingerprint)
        self.by_certificate: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def bundle_fingerprint(bundle: bytes, password: bytes) -> str:
    """The SHA-256 fingerprint (lower-case hex of the DER) of the certificate a bundle presents."""
    try:
        _key, cert, _extra = pkcs12.load_key_and_certificates(bundle, password)
    except ValueError:
        raise SimulatorError("cannot open the bundle: wrong password or not a PKCS#12 file") from None
    if cert is None:
        raise SimulatorError("the bundle holds no certificate")
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return round(sorted_values[index] * 1000, 2)


def _handshake_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "server_certificate_verify_failed"
    if isinstance(exc, ssl.SSLEOFError):
        return "unexpected_eof"
    return (exc.reason or type(exc).__name__).lower()


class Simulator:
    """Runs one delivery campaign; ``run()`` returns the summary the CLI prints."""

    def __init__(self, config: Config) -> None:
        self.config = config
        parsed = urllib.parse.urlsplit(config.url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise SimulatorError(f"the URL must be https://host[:port]/path, not {config.url!r}")
        self._host = parsed.hostname
        self._port = parsed.port or 443
        self._path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        if not 0.0 <= config.mix <= 1.0:
            raise SimulatorError(f"the mix is a share of the deliveries, 0 to 1, not {config.mix}")
        # The bundle presented, then the mix bundle: (context, fingerprint) each.
        self._presented: list[tuple[ssl.SSLContext, str]] = []
        for path in (config.bundle, *([config.mix_bundle] if config.mix_bundle is not None else [])):
            try:
                bundle = path.read_bytes()
            except OSError as exc:
                raise SimulatorError(f"cannot read the bundle {path.name}: {exc.strerror}") from None
            context = client_context(bundle, config.password, config.ca, config.tls_max)
            self._presented.append((context, bundle_fingerprint(bundle, config.password)))
        self._signer: signing.Signer | None = None
        if config.signing_key is not None:
            try:
                key = signatures.load_private_key(config.signing_key)
                self._signer = signing.signer(
                    config.signature_scheme, key, key_id=config.key_id, algorithm=config.signature_algorithm
                )
            except (OSError, signatures.SignatureError) as exc:
                raise SimulatorError(f"signing key: {exc}") from None
        self._tally = _Tally()
        self._local = threading.local()
        self._kept: set[http.client.HTTPSConnection] = set()

    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        stop = stop or threading.Event()
        total = self.config.total()
        interval = 1.0 / self.config.rate if self.config.rate > 0 else 0.0
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.concurrency, thread_name_prefix="deliver"
        ) as pool:
            futures = []
            for sequence in range(total):
                due = started + sequence * interval
                if stop.wait(max(0.0, due - time.monotonic())):
                    break
                futures.append(pool.submit(self._deliver, sequence, stop))
            for future in futures:
                future.result()
        self._close_kept()
        return self._summary(time.monotonic() - started)

    def _deliver(self, sequence: int, stop: threading.Event) -> None:
        tally = self._tally
        which = 1 if self.config.mixed(sequence) else 0
        fingerprint = self._presented[which][1]
        with tally.lock:
            tally.sent += 1
            tally.by_certificate[fingerprint]["sent"] += 1
        delivery_id = str(uuid.uuid4())
        body = json.dumps(
            {
                "id": delivery_id,
                "type": "provider_sim.test",
                "sequence": sequence,
                "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            }
        ).encode()
        first = time.monotonic()
        for attempt in range(1, self.config.max_attempts + 1):
            outcome = self._attempt(body, delivery_id, which)
            with tally.lock:
                tally.attempts += 1
                if outcome.handshake is not None:
                    tally.handshake_failures[outcome.handshake] += 1
                elif outcome.error is not None:
                    tally.connection_errors[outcome.error] += 1
                elif not outcome.ok:
                    tally.http_errors[str(outcome.status)] += 1
                if outcome.ok:
                    tally.delivered += 1
                    tally.by_certificate[fingerprint]["delivered"] += 1
                    tally.latencies.append(time.monotonic() - first)
            if outcome.ok:
                return
            if attempt < self.config.max_attempts:
                delay = min(self.config.backoff_max, self.config.backoff_initial * 2 ** (attempt - 1))
                if stop.wait(delay):
                    break
        with tally.lock:
            tally.failed += 1
            tally.by_certificate[fingerprint]["failed"] += 1
        _log.info(json.dumps({"event": "delivery_failed", "id": delivery_id, "sequence": sequence}))

    def _attempt(self, body: bytes, delivery_id: str, which: int) -> _Outcome:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "webhookcerts-provider-sim",
            "X-Webhook-Id": delivery_id,
        }
        if self._signer is not None:
            authority = self._host if self._port == 443 else f"{self._host}:{self._port}"
            if ":" in self._host:
                authority = f"[{self._host}]" + ("" if self._port == 443 else f":{self._port}")
            headers = self._signer.sign("POST", f"https://{authority}{self._path}", headers, body)
        conn = self._connection(which)
        keep = False
        try:
            if conn.sock is None:
                conn.connect()  # TLS 1.2 refusals show up here, TLS 1.3 ones on the first read
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            keep = self.config.keep_alive and not response.will_close
            return _Outcome(ok=response.status == 200, status=response.status)
        except ssl.SSLError as exc:
            return _Outcome(ok=False, handshake=_handshake_reason(exc))
        except (OSError, http.client.HTTPException) as exc:
            return _Outcome(ok=False, error=_error_reason(exc))
        finally:
            if not keep:
                self._drop(conn, which)

    def _connection(self, which: int) -> http.client.HTTPSConnection:
        """A new connection presenting certificate ``which``, or this thread's kept one for it."""
        kept: dict[int, http.client.HTTPSConnection] = self._local.__dict__.setdefault("conns", {})
        conn = kept.get(which)
        if conn is None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, context=self._presented[which][0], timeout=self.config.timeout
            )
            if self.config.keep_alive:
                kept[which] = conn
                with self._tally.lock:
                    self._kept.add(conn)
        return conn

    def _drop(self, conn: http.client.HTTPSConnection, which: int) -> None:
        conn.close()
        self._local.__dict__.setdefault("conns", {}).pop(which, None)
        with self._tally.lock:
            self._kept.discard(conn)

    def _close_kept(self) -> None:
        with self._tally.lock:
            kept, self._kept = self._kept, set()
        for conn in kept:
            conn.close()

    def _summary(self, elapsed: float) -> dict[str, Any]:
        tally = self._tally
        with tally.lock:
            latencies = sorted(tally.latencies)
            return {
                "sent": tally.sent,
                "delivered": tally.delivered,
                "failed": tally.failed,
                "attempts": tally.attempts,
                "retries": tally.attempts - tally.sent,
                "handshake_failures": dict(sorted(tally.handshake_failures.items())),
                "http_errors": dict(sorted(tally.http_errors.items())),
                "connection_errors": dict(sorted(tally.connection_errors.items())),
                "latency_ms": {"p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95)},
                "duration_s": round(elapsed, 3),
                "delivered_per_s": round(tally.delivered / elapsed, 2) if elapsed > 0 else None,
                "keep_alive": self.config.keep_alive,
                "by_certificate": {fp: dict(sorted(c.items())) for fp, c in sorted(tally.by_certificate.items())},
            }


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "remote_disconnected"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        # Under TLS 1.3 a server that refuses the certificate may close before its alert is read.
        return "connection_reset"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    return type(exc).__name__.lower()


def run(config: Config, stop: threading.Event | None = None) -> dict[str, Any]:
    """Deliver as configured and return the summary (the library entry point for tests and benchmarks)."""
    return Simulator(config).run(stop)

"""The receiver's TLS contexts: one per generation of the trust store, built afresh at every change.

Python's SSLContext can add trusted certificates but never remove them, so every change builds a fresh
context. New connections are wrapped with the newest context and, in case a swap lands between accept
and ClientHello, ``sni_callback`` (which OpenSSL calls with or without SNI) moves the handshake onto
the newest context again; every context has the same verify mode, which OpenSSL keeps from the first
one. A change that cannot be used (no certificate in the file, an unreadable serving pair) keeps the
generation before it, so a bad write never leaves the endpoint trusting nobody or everybody.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import ssl
import threading
import weakref

from cryptography import x509
from cryptography.hazmat.primitives import serialization

_log = logging.getLogger("webhookcerts.receiver")


class ReceiverError(RuntimeError):
    """A configuration the receiver cannot start with (unreadable certificate, empty trust store)."""


@dataclasses.dataclass(frozen=True)
class TrustedCert:
    fingerprint: str
    subject: str
    not_after: str


@dataclasses.dataclass(frozen=True)
class TrustState:
    """One generation of the trust store and the context built from it."""

    generation: int
    context: ssl.SSLContext
    trusted: tuple[TrustedCert, ...]

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(c.fingerprint for c in self.trusted)


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint the operator records: lowercase hex of the DER, no colons."""
    return hashlib.sha256(der).hexdigest()


class TrustStore:
    """Builds a fresh server SSLContext per change of the trust directory (or serving pair)."""

    def __init__(self, cert: pathlib.Path, key: pathlib.Path, trust_path: pathlib.Path) -> None:
        self._cert, self._key, self.trust_path = cert, key, trust_path
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._generations: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()
        self._state = self._build(generation=1)

    @property
    def current(self) -> TrustState:
        return self._state

    def generation_of(self, context: ssl.SSLContext) -> int:
        """The generation a context was built for (0 if unknown)."""
        return self._generations.get(context, 0)

    def reload(self) -> bool:
        """Rebuild from disk; keep the previous generation (and say why) if the new files are unusable."""
        with self._lock:
            try:
                state = self._build(generation=self._state.generation + 1)
            except ReceiverError as exc:
                self.last_error = str(exc)
                _log.error(json.dumps({"event": "trust_reload_failed", "error": str(exc)}))
                return False
            self._state = state
            self.last_error = None
        _log.info(
            json.dumps(
                {
                    "event": "trust_reloaded",
                    "generation": state.generation,
                    "trusted": [dataclasses.asdict(c) for c in state.trusted],
                }
            )
        )
        return True

    def _read_trust(self) -> tuple[str, tuple[TrustedCert, ...]]:
        try:
            pem = self.trust_path.read_bytes()
        except OSError as exc:
            raise ReceiverError(f"cannot read the trust store {self.trust_path}: {exc.strerror}") from None
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ReceiverError(f"the trust store {self.trust_path} holds no PEM certificate") from None
        trusted = tuple(
            TrustedCert(
                fingerprint=fingerprint(c.public_bytes(serialization.Encoding.DER)),
                subject=c.subject.rfc4514_string(),
                not_after=c.not_valid_after_utc.isoformat(),
            )
            for c in certs
        )
        # Only the certificates go to OpenSSL: anything else in the file (comments, keys by mistake)
        # never reaches it, and never a log.
        cadata = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)
        return cadata, trusted

    def _build(self, *, generation: int) -> TrustState:
        cadata, trusted = self._read_trust()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        # The trust store lists the client certificates themselves (or their CA): any certificate in it
        # is an anchor, whether or not it is self-signed.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
        try:
            ctx.load_cert_chain(self._cert, self._key)
        except (OSError, ssl.SSLError) as exc:
            name = self._cert.name
            raise ReceiverError(f"cannot load the serving certificate {name}: {exc}") from None
        try:
            ctx.load_verify_locations(cadata=cadata)
        except ssl.SSLError as exc:
            raise ReceiverError(f"cannot use the trust store {self.trust_path}: {exc}") from None
        ctx.sni_callback = self._on_client_hello
        self._generations[ctx] = generation
        return TrustState(generation=generation, context=ctx, trusted=trusted)

    def _on_client_hello(
        self, sock: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        current = self._state.context
        if sock.context is not current:
            sock.context = current

    def watched_paths(self) -> list[pathlib.Path]:
        return [self.trust_path, self._cert, self._key]

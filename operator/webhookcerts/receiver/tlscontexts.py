"""The receiver's TLS contexts: one per generation of the trust store, built afresh at every change.

Python's SSLContext can add trusted certificates but never remove them, so every change builds a fresh
context. New connections are wrapped with the newest context and, in case a swap lands between accept
and ClientHello, ``sni_callback`` (which OpenSSL calls with or without SNI) moves the handshake onto
the newest context again; every context has the same verify mode, which OpenSSL keeps from the first
one. A change that cannot be used (no certificate in the file, an unreadable serving pair) keeps the
generation's part before it (trust and serving pair each on its own), so a bad write never leaves the
endpoint trusting nobody or everybody, and a broken serving pair never holds a revocation back.
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

from webhookcerts.receiver import servingpair

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
    cadata: str = dataclasses.field(repr=False, default="")
    # SHA-256 of the trust file's bytes this generation was built from: for ca.crt written by the
    # operator, the trust Secret's webhookcerts.io/trust-hash annotation (domain.trust.trust_hash).
    source_hash: str = ""

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(c.fingerprint for c in self.trusted)


def _read_serving(cert: pathlib.Path, key: pathlib.Path) -> servingpair.Pair:
    try:
        return servingpair.read(cert, key)
    except servingpair.ServingPairError as exc:
        raise ReceiverError(str(exc)) from None


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint the operator records: lowercase hex of the DER, no colons."""
    return hashlib.sha256(der).hexdigest()


def sha1_fingerprint(der: bytes) -> str:
    """The SHA-1 fingerprint nginx and HAProxy log; only ever a name for a certificate, never a check."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


class TrustStore:
    """Builds a fresh server SSLContext per change of the trust directory or of the serving pair.

    The two are read and kept apart: a trust store that cannot be used keeps the previous trust (and
    takes a new serving pair), a serving pair that cannot be loaded keeps the previous pair (and takes
    the new trust). Revocation must not depend on the health of the server's own certificate: an
    emergency's trust change lands even while a renewal of the serving pair is half-written or broken.
    """

    def __init__(self, cert: pathlib.Path, key: pathlib.Path, trust_path: pathlib.Path) -> None:
        self._cert, self._key, self.trust_path = cert, key, trust_path
        self._lock = threading.Lock()
        self.last_error: str | None = None  # the trust store's
        self.serving_error: str | None = None
        self._generations: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()
        cadata, trusted, source_hash = self._read_trust()
        self._serving = _read_serving(cert, key)
        self._state = self._build(1, cadata, trusted, self._serving, source_hash)

    @property
    def current(self) -> TrustState:
        return self._state

    def generation_of(self, context: ssl.SSLContext) -> int:
        """The generation a context was built for (0 if unknown)."""
        return self._generations.get(context, 0)

    def reload(self) -> bool:
        """Rebuild from disk; whichever of trust and serving pair is unusable is kept as it was (and
        said why). True if the trust store now in use is the one on disk."""
        with self._lock:
            old = self._state
            try:
                cadata, trusted, source_hash = self._read_trust()
                trust_error = None
            except ReceiverError as exc:
                cadata, trusted, source_hash, trust_error = old.cadata, old.trusted, old.source_hash, str(exc)
            try:
                serving = _read_serving(self._cert, self._key)
                serving_error = None
            except ReceiverError as exc:
                serving, serving_error = self._serving, str(exc)
            if trust_error is not None:
                _log.error(json.dumps({"event": "trust_reload_failed", "error": trust_error}))
            if serving_error is not None:
                _log.error(json.dumps({"event": "serving_pair_reload_failed", "error": serving_error}))
            self.last_error, self.serving_error = trust_error, serving_error
            if cadata == old.cadata and serving == self._serving:
                # Other bytes, the same certificates: nothing to rebuild, but the hash is the file's.
                self._state = dataclasses.replace(old, source_hash=source_hash)
                return trust_error is None
            state = self._build(old.generation + 1, cadata, trusted, serving, source_hash)
            self._state, self._serving = state, serving
        record = {
            "event": "trust_reloaded",
            "generation": state.generation,
            "trusted": [dataclasses.asdict(c) for c in state.trusted],
        }
        if serving_error is not None:
            record["serving_pair"] = "kept the previous one"
        _log.info(json.dumps(record))
        return trust_error is None

    def _read_trust(self) -> tuple[str, tuple[TrustedCert, ...], str]:
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
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cadata)
        except ssl.SSLError as exc:
            raise ReceiverError(f"cannot use the trust store {self.trust_path}: {exc}") from None
        return cadata, trusted, hashlib.sha256(pem).hexdigest()

    def _build(
        self,
        generation: int,
        cadata: str,
        trusted: tuple[TrustedCert, ...],
        serving: servingpair.Pair,
        source_hash: str,
    ) -> TrustState:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        # The trust store lists the client certificates themselves (or their CA): any certificate in it
        # is an anchor, whether or not it is self-signed.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
        servingpair.load(ctx, serving)
        ctx.load_verify_locations(cadata=cadata)
        ctx.sni_callback = self._on_client_hello
        self._generations[ctx] = generation
        return TrustState(generation=generation, context=ctx, trusted=trusted, cadata=cadata, source_hash=source_hash)

    def _on_client_hello(
        self, sock: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        current = self._state.context
        if sock.context is not current:
            sock.context = current

    def watched_paths(self) -> list[pathlib.Path]:
        return [self.trust_path, self._cert, self._key]

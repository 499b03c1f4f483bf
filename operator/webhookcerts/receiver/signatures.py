"""HTTP Message Signatures (RFC 9421) for webhooks: one place that signs and one that verifies.

The provider simulator signs and the receiver verifies with the ``http-message-signatures`` package;
keeping both sides here means they agree on the covered components, the algorithm chosen for a key
type and the body digest (RFC 9530 ``Content-Digest``), which the signature must cover so that a
tampered body fails verification rather than slipping past a valid header signature.

``@authority`` must be covered too, so that a delivery signed for one receiver cannot be replayed to
another, and a signature is accepted once: the receiver remembers it (by nonce, or by its value when
it has none) until it is too old to pass the age check anyway. This is the scheme of RFC 9421; the
provider's own draft-06 scheme is in provider_scheme.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import http_message_signatures
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import algorithms, structures

from webhookcerts.receiver import replay

# What the simulator signs. The receiver requires at least REQUIRED_COMPONENTS (and the package itself
# requires the digest to be covered whenever there is a body).
SIGNED_COMPONENTS = ("@method", "@authority", "@path", "content-type", "content-digest")
REQUIRED_COMPONENTS = ("@method", "@authority", "@path", "content-digest")

_ALGORITHMS: dict[str, type[http_message_signatures.HTTPSignatureAlgorithm]] = {
    cls.algorithm_id: cls
    for cls in (
        algorithms.RSA_PSS_SHA512,
        algorithms.RSA_V1_5_SHA256,
        algorithms.ECDSA_P256_SHA256,
        algorithms.ECDSA_P384_SHA384,
        algorithms.ED25519,
    )
}
ALGORITHM_NAMES = tuple(sorted(_ALGORITHMS))

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class SignatureError(ValueError):
    """A signature or digest that does not verify, or a key this module cannot use."""


@dataclasses.dataclass
class Message:
    """The request view the package resolves components from: method, absolute URL, header lines."""

    method: str
    url: str
    headers: object


def algorithm_for(
    key: PublicKey | PrivateKey, name: str | None = None
) -> type[http_message_signatures.HTTPSignatureAlgorithm]:
    """The named algorithm, or the usual one for the key's type (RSA keys default to RSA-PSS)."""
    if name is not None:
        try:
            return _ALGORITHMS[name]
        except KeyError:
            known = ", ".join(ALGORITHM_NAMES)
            raise SignatureError(f"unknown signature algorithm {name!r}; known: {known}") from None
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return algorithms.RSA_PSS_SHA512
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return algorithms.ED25519
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return algorithms.ECDSA_P256_SHA256
        if isinstance(key.curve, ec.SECP384R1):
            return algorithms.ECDSA_P384_SHA384
    raise SignatureError(f"no RFC 9421 algorithm for a {type(key).__name__}")


def load_public_key(path: pathlib.Path) -> PublicKey:
    """A public key from a PEM file (SubjectPublicKeyInfo, or a certificate's key)."""
    data = path.read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        # A certificate is a common way to hand over a public key.
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except ValueError:
            raise SignatureError(f"{path.name}: not a PEM public key or certificate") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path.name}: unsupported public key type {type(key).__name__}")
    return key


def load_private_key(path: pathlib.Path, password: bytes | None = None) -> PrivateKey:
    """A private key from a PEM file; errors name the file, never its content."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=password)
    except (ValueError, TypeError):
        raise SignatureError(f"{path.name}: not a readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path.name}: unsupported private key type {type(key).__name__}")
    return key


def check_digest(value: str, body: bytes) -> None:
    """Check a ``Content-Digest`` field against the body (for unsigned deliveries that carry one)."""
    try:
        http_message_signatures.ContentDigest.verify(value, body)
    except http_message_signatures.HTTPMessageSignaturesException as exc:
        raise SignatureError(str(exc)) from None


class _OneKey(http_message_signatures.HTTPSignatureKeyResolver):
    """Resolves the single configured key, for its key id only when one is configured."""

    def __init__(self, key: PublicKey | PrivateKey, key_id: str | None) -> None:
        self._key = key
        self._key_id = key_id

    def resolve_public_key(self, key_id: str) -> PublicKey | None:
        if self._key_id is not None and key_id != self._key_id:
            return None
        return self._key if not isinstance(self._key, PrivateKey) else self._key.public_key()

    def resolve_private_key(self, key_id: str) -> PrivateKey:
        if not isinstance(self._key, PrivateKey):
            raise SignatureError("a public key cannot sign")
        return self._key


class Signer:
    """Adds ``Content-Digest``, ``Signature-Input`` and ``Signature`` to an outgoing webhook."""

    def __init__(self, key: PrivateKey, *, key_id: str, algorithm: str | None = None) -> None:
        self._key_id = key_id
        self._signer = http_message_signatures.HTTPMessageSigner(
            signature_algorithm=algorithm_for(key, algorithm), key_resolver=_OneKey(key, key_id)
        )

    def sign(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        created: datetime.datetime | None = None,
    ) -> dict[str, str]:
        """The headers to send: the given ones plus the digest and the signature."""
        fields = structures.CaseInsensitiveDict(headers)  # type: ignore[no-untyped-call]
        message = Message(method, url, fields)
        self._signer.sign(
            message,
            key_id=self._key_id,
            created=created or datetime.datetime.now(datetime.UTC),
            # A fresh nonce per signature: a retry is a new signature, not a replay of the last one.
            nonce=secrets.token_urlsafe(12),
            covered_component_ids=SIGNED_COMPONENTS,
            body=body,
        )
        return dict(fields.items())


@dataclasses.dataclass(frozen=True)
class Verified:
    key_id: str
    algorithm: str
    covered: tuple[str, ...]


class KeyResolver(Protocol):
    """Where a verifier finds the key for a keyid (keyset.KeySet)."""

    def resolve(self, key_id: str) -> PublicKey | None: ...

    def public_keys(self) -> tuple[PublicKey, ...]: ...


class _SetResolver(http_message_signatures.HTTPSignatureKeyResolver):
    def __init__(self, keys: KeyResolver) -> None:
        self._keys = keys

    def resolve_public_key(self, key_id: str) -> PublicKey | None:
        return self._keys.resolve(key_id)

    def resolve_private_key(self, key_id: str) -> PrivateKey:
        raise SignatureError("a verifier does not sign")


class Verifier:
    """Checks a delivery's RFC 9421 signature, that its signed digest matches the body, and that it was
    not accepted before. Every key in the set must suit the one algorithm (the package verifies with
    one)."""

    def __init__(
        self,
        keys: KeyResolver,
        *,
        algorithm: str | None = None,
        max_age: datetime.timedelta = datetime.timedelta(minutes=5),
        clock: Callable[[], float] = time.time,
        seen: replay.ReplayCache | None = None,
    ) -> None:
        self._max_age = max_age
        self._clock = clock
        self._seen = seen if seen is not None else replay.ReplayCache()
        chosen = {algorithm_for(key, algorithm) for key in keys.public_keys()}
        if len(chosen) != 1:
            raise SignatureError("RFC 9421 keys must all be of one type, or name --signature-algorithm")
        self._verifier = http_message_signatures.HTTPMessageVerifier(
            signature_algorithm=chosen.pop(), key_resolver=_SetResolver(keys)
        )

    def verify(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> Verified:
        # Keep repeated field lines: the package joins them itself, as RFC 9421 says.
        lines = list(headers)
        message = Message(method, url, _FieldLines(lines))
        try:
            results = self._verifier.verify(
                message, max_age=self._max_age, require_components=REQUIRED_COMPONENTS, body=body
            )
        except http_message_signatures.HTTPMessageSignaturesException as exc:
            raise SignatureError(str(exc)) from None
        result = results[0]
        key_id = str(result.parameters.get("keyid", ""))
        created = result.parameters.get("created")
        nonce = result.parameters.get("nonce")
        token = str(nonce) if nonce is not None else ", ".join(v for n, v in lines if n.lower() == "signature")
        until = (int(created) if isinstance(created, int) else self._clock()) + self._max_age.total_seconds()
        try:
            # The package allows its clock skew past max_age: remember that much longer.
            skew = self._verifier.max_clock_skew.total_seconds()
            self._seen.remember(key_id, token, until=until + skew, now=self._clock())
        except replay.ReplayError as exc:
            raise SignatureError(str(exc)) from None
        return Verified(
            key_id=key_id,
            algorithm=result.algorithm.algorithm_id,
            covered=tuple(k for k in result.covered_components if k != '"@signature-params"'),
        )


class _FieldLines:
    """A read-only header view that keeps every field line in wire order."""

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self._lines = lines

    def items(self) -> list[tuple[str, str]]:
        return list(self._lines)

    def __iter__(self) -> Iterable[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._lines)

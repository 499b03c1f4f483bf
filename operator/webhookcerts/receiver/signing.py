"""Which signature scheme a receiver verifies and the simulator signs with, chosen by name.

The provider signs webhooks with its draft-06 scheme ("provider-v6", provider_scheme.py); its API
calls may use "provider-v15"; "rfc9421" is the standard (signatures.py). The receiver and the
simulator default to the same scheme, the one the real provider's webhooks use, so that a demo or a
test that turns signatures on without naming a scheme delivers.
"""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import Iterable, Mapping
from typing import Protocol

from webhookcerts.receiver import keyset, provider_scheme, signatures

SCHEMES = ("provider-v6", "provider-v15", "rfc9421")
DEFAULT_SCHEME = "provider-v6"


class Verifier(Protocol):
    def verify(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> signatures.Verified: ...


class Signer(Protocol):
    def sign(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]: ...


def key_sources(keys: Iterable[str], key: pathlib.Path | None, key_id: str | None) -> tuple[str, ...]:
    """The key set's sources: ``keys`` plus the single ``key`` (named ``key_id`` when given)."""
    sources = list(keys)
    if key is not None:
        sources.append(f"{key_id}={key}" if key_id else str(key))
    elif key_id is not None:
        raise signatures.SignatureError("a signature key id needs --signature-key")
    return tuple(sources)


class _Config(Protocol):
    """The receiver's settings this needs (server.Config; a protocol, as server imports this module)."""

    @property
    def signature_keys(self) -> tuple[str, ...]: ...
    @property
    def signature_key(self) -> pathlib.Path | None: ...
    @property
    def signature_key_id(self) -> str | None: ...
    @property
    def signature_scheme(self) -> str: ...
    @property
    def signature_algorithm(self) -> str | None: ...
    @property
    def signature_max_age(self) -> datetime.timedelta: ...
    @property
    def signature_skew(self) -> float: ...


def verifier(config: _Config) -> Verifier | None:
    """The receiver's verifier for its configured scheme and keys, or None when no key is configured."""
    sources = key_sources(config.signature_keys, config.signature_key, config.signature_key_id)
    if not sources:
        return None
    keys = keyset.KeySet(sources)
    if config.signature_scheme == "rfc9421":
        return signatures.Verifier(keys, algorithm=config.signature_algorithm, max_age=config.signature_max_age)
    variant = provider_scheme.VARIANTS.get(config.signature_scheme)
    if variant is None:
        raise signatures.SignatureError(f"unknown signature scheme {config.signature_scheme!r}; known: {SCHEMES}")
    if config.signature_algorithm is not None:
        raise signatures.SignatureError(f"{variant.name} takes the algorithm from the key, not --signature-algorithm")
    return provider_scheme.ProviderVerifier(
        variant, keys, skew=config.signature_skew, max_lifetime=config.signature_max_age.total_seconds()
    )


class _ProviderUrlSigner:
    """Adapts ProviderSigner (which signs a request target) to the simulator's (method, url, ...) call."""

    def __init__(self, signer: provider_scheme.ProviderSigner) -> None:
        self._signer = signer

    def sign(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        parts = url.split("/", 3)
        target = "/" + (parts[3] if len(parts) > 3 else "")
        return self._signer.sign(method, target, headers, body)


def signer(scheme: str, key: signatures.PrivateKey, *, key_id: str, algorithm: str | None = None) -> Signer:
    if scheme == "rfc9421":
        return signatures.Signer(key, key_id=key_id, algorithm=algorithm)
    variant = provider_scheme.VARIANTS.get(scheme)
    if variant is None:
        raise signatures.SignatureError(f"unknown signature scheme {scheme!r}; known: {SCHEMES}")
    if algorithm is not None:
        raise signatures.SignatureError(f"{scheme} takes the algorithm from the key, not --signature-algorithm")
    return _ProviderUrlSigner(provider_scheme.ProviderSigner(key, key_id=key_id, variant=variant))

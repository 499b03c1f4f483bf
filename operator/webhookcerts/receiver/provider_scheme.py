"""The provider's own HTTP message signatures: draft-ietf-httpbis-message-signatures-06 with its quirks.

The provider signs webhooks with draft 06, not RFC 9421, and its documentation fixes details a generic
library gets wrong for it:
- the signature base is one ``component-key: value`` line per covered component, in the order of the
  ``signature-input`` list, joined by ``\\n``, ending with ``@signature-params: <the signature-input
  value>``; in "v6" the keys are NOT in double quotes (a bug the provider keeps for compatibility), in
  "v15" they are;
- the body checksum is ``digest: SHA-256=<base64>`` in v6 and ``content-digest: sha-512=:<base64>:``
  in v15;
- the parameters are ``keyid``, ``created``, ``expires`` and ``nonce``;
- ECDSA signs the SHA-512 hash of the base with an ASN.1 DER signature (as its signing proxy does),
  or Ed25519 signs the base.

Verification is strict because each relaxation is a way in: every listed component must be present, the
fields that say what the body is and where it goes must be covered, the digest must match the body, the
signature must be inside its window (with a small clock skew) and not seen before, and the key is found
by keyid in a set so that the provider can roll its key. Each refusal names its check. The signer is here
for the provider simulator, so that it sends what the real provider sends.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from webhookcerts.receiver import keyset, replay, sfv, signatures
from webhookcerts.receiver.signatures import SignatureError, Verified


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    quoted_keys: bool
    digest_field: str


V6 = Variant("provider-v6", quoted_keys=False, digest_field="digest")
V15 = Variant("provider-v15", quoted_keys=True, digest_field="content-digest")
VARIANTS = {v.name: v for v in (V6, V15)}

REQUIRED_PARAMS = ("keyid", "created", "expires", "nonce")
# Covered whenever present: what the body is (type, length, checksum) and what is asked of whom.
MUST_COVER_IF_PRESENT = ("content-type", "content-length")
DEFAULT_SKEW = 10
DEFAULT_MAX_LIFETIME = 300
# Not signed by the provider's proxy (added or rewritten on the way), nor by the simulator.
_UNSIGNED_PREFIXES = ("x-", "cf-", "cdn-", "cookie", "signature", "host")


def digest_value(variant: Variant, body: bytes) -> str:
    if variant.digest_field == "digest":
        return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    return "sha-512=:" + base64.b64encode(hashlib.sha512(body).digest()).decode() + ":"


def check_digest(variant: Variant, value: str, body: bytes) -> None:
    """Every SHA-256/SHA-512 entry of the digest field must match the body; at least one must be there."""
    seen = False
    for item in value.split(","):
        alg, sep, encoded = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"{variant.digest_field} is malformed")
        if variant.digest_field == "content-digest":
            if len(encoded) < 2 or encoded[0] != ":" or encoded[-1] != ":":
                raise SignatureError("content-digest value must be a byte sequence, sha-512=:<base64>:")
            encoded = encoded[1:-1]
        algorithm = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}.get(alg.lower())
        if algorithm is None:
            continue
        try:
            expected = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise SignatureError(f"{variant.digest_field} {alg} is not base64") from None
        if not hmac.compare_digest(expected, algorithm(body).digest()):
            raise SignatureError(f"{variant.digest_field} {alg} does not match the body (body changed?)")
        seen = True
    if not seen:
        raise SignatureError(f"{variant.digest_field} has no SHA-256 or SHA-512 value")


@dataclasses.dataclass(frozen=True)
class Request:
    """What the components are resolved from: the request as it arrived."""

    method: str
    path: str
    query: str | None  # without the "?", None when the target has none
    authority: str | None
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def from_url(cls, method: str, url: str, headers: Iterable[tuple[str, str]]) -> Request:
        parts = urllib.parse.urlsplit(url)
        return cls(method, parts.path or "/", parts.query or None, parts.netloc or None, tuple(headers))

    def field(self, name: str) -> str | None:
        values = [v.strip() for n, v in self.headers if n.lower() == name]
        return ", ".join(values) if values else None

    def component(self, name: str) -> str | None:
        if name == "@method":
            return self.method
        if name == "@path":
            return self.path
        if name == "@query":
            return None if self.query is None else "?" + self.query
        if name == "@authority":
            return None if self.authority is None else self.authority.lower()
        if name == "@request-target":
            return self.path + ("" if self.query is None else "?" + self.query)
        if name.startswith("@"):
            raise SignatureError(f"unsupported derived component {name}")
        return self.field(name)


def signature_base(components: Iterable[tuple[str, str]], params: str, *, quoted: bool) -> bytes:
    """The lines the signature is over; ``quoted`` is the variant's rule (an argument so that a failed
    check can tell a sender on the other variant apart from a forgery)."""

    def key(name: str) -> str:
        return f'"{name}"' if quoted else name

    lines = [f"{key(name)}: {value}" for name, value in components]
    lines.append(f"{key('@signature-params')}: {params}")
    return "\n".join(lines).encode()


def algorithm_name(key: signatures.PublicKey | signatures.PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"ecdsa-p{key.curve.key_size}-sha512"
    raise SignatureError(f"wrong algorithm for the key: a {type(key).__name__} cannot sign provider signatures")


def _check_alg(alg: object, key: signatures.PublicKey, key_id: str) -> None:
    """The key decides the algorithm; an ``alg`` parameter that names another one is refused."""
    name = algorithm_name(key)  # refuses RSA and anything else the provider does not sign with
    if alg is None:
        return
    family = "ed25519" if name == "ed25519" else "ecdsa"
    if alg not in (name, family, family.upper(), "ecdsa-sha512" if family == "ecdsa" else "Ed25519"):
        raise SignatureError(f"wrong algorithm for the key: alg {alg!r} but keyid {key_id!r} is an {name} key")


def _verify_raw(key: signatures.PublicKey, signature: bytes, base: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, base)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, base, ec.ECDSA(hashes.SHA512()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


class ProviderVerifier:
    """Verifies the provider's v6 or v15 signatures against a key set, refusing replays."""

    def __init__(
        self,
        variant: Variant,
        keys: keyset.KeySet,
        *,
        skew: float = DEFAULT_SKEW,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
        clock: Callable[[], float] = time.time,
        seen: replay.ReplayCache | None = None,
    ) -> None:
        self.variant = variant
        self._keys = keys
        self._skew = skew
        self._max_lifetime = max_lifetime
        self._clock = clock
        self._seen = seen if seen is not None else replay.ReplayCache()

    def verify(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> Verified:
        request = Request.from_url(method, url, headers)
        v = self.variant
        label, components, params, raw_params = self._signature_input(request)
        signature = self._signature(request, label)
        now = self._clock()
        key_id, created, expires, nonce = self._params(params)
        if created > now + self._skew:
            raise SignatureError(f"created {created} is in the future (now {int(now)})")
        if expires <= now - self._skew:
            raise SignatureError(f"expired at {expires} (now {int(now)})")
        if expires < created or expires - created > self._max_lifetime:
            raise SignatureError(f"validity window {created}..{expires} is not 0..{int(self._max_lifetime)} s")
        digest = request.field(v.digest_field)
        if digest is None and body:
            other = "content-digest" if v.digest_field == "digest" else "digest"
            hint = f" (found {other}: is the sender on another scheme?)" if request.field(other) else ""
            raise SignatureError(f"{v.digest_field} header missing{hint}")
        if digest is not None:
            check_digest(v, digest, body)
        self._check_coverage(request, components, body)
        values = []
        for name in components:
            value = request.component(name)
            if value is None:
                raise SignatureError(f"listed component {name} is absent from the request")
            values.append((name, value))
        key = self._keys.resolve(key_id)
        if key is None:
            raise SignatureError(f"unknown keyid {key_id!r}")
        _check_alg(params.get("alg"), key, key_id)
        base = signature_base(values, raw_params, quoted=v.quoted_keys)
        if not _verify_raw(key, signature, base):
            if _verify_raw(key, signature, signature_base(values, raw_params, quoted=not v.quoted_keys)):
                how = "quoted" if not v.quoted_keys else "unquoted"
                raise SignatureError(f"signature base has {how} component keys, which {v.name} does not use")
            raise SignatureError("signature does not verify (a covered component, the body or the key differs)")
        try:
            self._seen.remember(key_id, nonce, until=expires + self._skew, now=now)
        except replay.ReplayError as exc:
            raise SignatureError(str(exc)) from None
        return Verified(key_id=key_id, algorithm=algorithm_name(key), covered=tuple(components))

    def _signature_input(self, request: Request) -> tuple[str, tuple[str, ...], dict[str, int | str], str]:
        value = request.field("signature-input")
        if value is None:
            raise SignatureError("signature-input header missing")
        try:
            members = sfv.dictionary_members(value)
            if len(members) != 1:
                raise SignatureError(f"signature-input has {len(members)} signatures; expected one")
            label, raw = members[0]
            components, params = sfv.inner_list(raw)
        except sfv.ParseError as exc:
            raise SignatureError(f"signature-input: {exc}") from None
        if len(set(components)) != len(components) or "@signature-params" in components:
            raise SignatureError("signature-input lists a component twice or lists @signature-params")
        if any(c != c.lower() for c in components):
            raise SignatureError("signature-input component names must be lowercase")
        return label, tuple(components), params, raw

    def _signature(self, request: Request, label: str) -> bytes:
        value = request.field("signature")
        if value is None:
            raise SignatureError("signature header missing")
        try:
            members = dict(sfv.dictionary_members(value))
            if label not in members:
                raise SignatureError(f"signature header has no {label!r}")
            return sfv.byte_sequence(members[label])
        except sfv.ParseError as exc:
            raise SignatureError(f"signature: {exc}") from None

    @staticmethod
    def _params(params: Mapping[str, int | str]) -> tuple[str, int, int, str]:
        for name in REQUIRED_PARAMS:
            if name not in params:
                raise SignatureError(f"signature parameter {name} missing")
        key_id, created, expires, nonce = (params[n] for n in REQUIRED_PARAMS)
        if not isinstance(key_id, str) or not isinstance(nonce, str):
            raise SignatureError("keyid and nonce must be strings")
        if not isinstance(created, int) or not isinstance(expires, int):
            raise SignatureError("created and expires must be integers")
        return key_id, created, expires, nonce

    def _check_coverage(self, request: Request, components: tuple[str, ...], body: bytes) -> None:
        must = ["@method", "@path"]
        if request.query is not None:
            must.append("@query")
        if body or request.field(self.variant.digest_field) is not None:
            must.append(self.variant.digest_field)
        must += [name for name in MUST_COVER_IF_PRESENT if request.field(name) is not None]
        for name in must:
            if name not in components:
                what = "component" if name.startswith("@") else "header"
                raise SignatureError(f"{what} {name} is not listed in signature-input (not covered)")


class ProviderSigner:
    """Signs as the provider does (the simulator's side): digest, the covered components, DER ECDSA over
    SHA-512 or Ed25519."""

    def __init__(
        self,
        key: signatures.PrivateKey,
        *,
        key_id: str,
        variant: Variant,
        lifetime: int = 60,
        quoted: bool | None = None,
        covered: tuple[str, ...] | None = None,
    ) -> None:
        algorithm_name(key)  # refuses a key type the provider does not sign with
        self._key = key
        self._key_id = key_id
        self._variant = variant
        self._lifetime = lifetime
        # Only tests set these: a sender on the wrong quoting, or one that leaves a field uncovered.
        self._quoted = variant.quoted_keys if quoted is None else quoted
        self._covered = covered

    def sign(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        created: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        out = dict(headers)
        if body:
            out["Content-Length"] = str(len(body))
            out[self._variant.digest_field.title()] = digest_value(self._variant, body)
        request = Request.from_url(method, "https://signer" + target, list(out.items()))
        names = ["@method", "@path"] + (["@query"] if request.query is not None else [])
        names += [n.lower() for n in out if not n.lower().startswith(_UNSIGNED_PREFIXES)]
        if self._covered is not None:
            names = list(self._covered)
        created = int(time.time()) if created is None else created
        nonce = secrets.token_urlsafe(12) if nonce is None else nonce
        params = (
            "(" + " ".join(f'"{n}"' for n in names) + ")"
            f';keyid="{self._key_id}";created={created};expires={created + self._lifetime};nonce="{nonce}"'
        )
        values = [(n, request.component(n) or "") for n in names]
        base = signature_base(values, params, quoted=self._quoted)
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            raw = self._key.sign(base)
        elif isinstance(self._key, ec.EllipticCurvePrivateKey):
            raw = self._key.sign(base, ec.ECDSA(hashes.SHA512()))
        else:  # pragma: no cover - algorithm_name refused it
            raise SignatureError("unsupported key")
        out["Signature-Input"] = f"sig1={params}"
        out["Signature"] = f"sig1=:{base64.b64encode(raw).decode()}:"
        return out

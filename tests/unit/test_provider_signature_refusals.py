"""Each way a provider-signed delivery can be wrong is refused, with a reason that names it.

Every test starts from a delivery that verifies (a positive control in the same test), changes one
thing, and expects the refusal for that thing: so a check that stopped working shows up as the wrong
reason or as an acceptance, not as a pass for another reason.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.unit import provider_signing as ps
from webhookcerts.receiver import keyset, provider_scheme, signatures

V6, V15 = provider_scheme.V6, provider_scheme.V15
SKEW = provider_scheme.DEFAULT_SKEW


@pytest.fixture(scope="module")
def vectors() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in ps.go_vectors()}


@pytest.fixture
def keys(vectors: dict[str, dict[str, Any]], tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    dirs = {"provider-v6": tmp_path / "v6", "provider-v15": tmp_path / "v15"}
    for d in dirs.values():
        d.mkdir()
    for vector in vectors.values():
        ps.write_public(dirs[vector["scheme"]], vector["keyid"], vector["public_key"])
    return dirs


def refusal(v: provider_scheme.ProviderVerifier, d: ps.Delivery) -> str:
    with pytest.raises(signatures.SignatureError) as caught:
        ps.verify(v, d)
    return str(caught.value)


def _case(
    name: str, vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path], *, now: float | None = None
) -> tuple[ps.Delivery, provider_scheme.Variant, ps.Clock, pathlib.Path]:
    vector = vectors[name]
    variant = provider_scheme.VARIANTS[vector["scheme"]]
    clock = ps.Clock(vector["created"] if now is None else now)
    return ps.from_vector(vector), variant, clock, keys[vector["scheme"]]


@pytest.mark.parametrize("name", ["provider-v6/ecdsa-p521", "provider-v15/ed25519"])
def test_tampered_body_and_digest_are_refused(
    name: str, vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]
) -> None:
    d, variant, clock, key_dir = _case(name, vectors, keys)
    field = variant.digest_field
    other_digest = provider_scheme.digest_value(variant, b'{"hello": "mallory"}')
    ps.verify(ps.verifier(variant, key_dir, clock), d)  # positive control

    changed_body = refusal(
        ps.verifier(variant, key_dir, clock), ps.Delivery(d.method, d.url, d.headers, b'{"hello": "mallory"}')
    )
    missing = refusal(ps.verifier(variant, key_dir, clock), d.without(field))
    wrong = refusal(ps.verifier(variant, key_dir, clock), d.replacing(field, other_digest))

    assert f"{field} " in changed_body and "does not match the body" in changed_body
    assert missing == f"{field} header missing"
    assert f"{field} " in wrong and "does not match the body" in wrong


def test_an_empty_body_without_digest_still_needs_the_rest(
    vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]
) -> None:
    d, variant, clock, key_dir = _case("provider-v6/ecdsa-p256", vectors, keys)

    reason = refusal(ps.verifier(variant, key_dir, clock), ps.Delivery(d.method, d.url, d.headers, b""))

    assert "digest" in reason and "does not match the body" in reason


def test_a_listed_component_absent_is_refused(
    vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]
) -> None:
    d, variant, clock, key_dir = _case("provider-v6/ecdsa-p384", vectors, keys)

    reason = refusal(ps.verifier(variant, key_dir, clock), d.without("Idempotency-Key"))
    no_query = refusal(
        ps.verifier(variant, key_dir, clock), ps.Delivery(d.method, d.url.split("?")[0], d.headers, d.body)
    )

    assert reason == "listed component idempotency-key is absent from the request"
    assert no_query == "listed component @query is absent from the request"


@pytest.mark.parametrize("variant", [V6, V15])
@pytest.mark.parametrize("uncovered", ["content-type", "content-length", "@method", "@path", "@query"])
def test_a_field_present_but_not_listed_is_refused(
    variant: provider_scheme.Variant, uncovered: str, tmp_path: pathlib.Path
) -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    ps.write_public(tmp_path, "k1", key)
    every = ("@method", "@path", "@query", "content-type", "content-length", variant.digest_field)
    fine = provider_scheme.ProviderSigner(key, key_id="k1", variant=variant, covered=every)
    partial = provider_scheme.ProviderSigner(
        key, key_id="k1", variant=variant, covered=tuple(c for c in every if c != uncovered)
    )
    headers = {"Content-Type": "application/json"}
    body = b'{"event": 1}'
    url = "https://receiver.example/webhooks?x=1"
    clock = ps.Clock(1_700_000_000)
    ps.verify(
        ps.verifier(variant, tmp_path, clock),
        ps.Delivery(
            "POST", url, tuple(fine.sign("POST", "/webhooks?x=1", headers, body, created=1_700_000_000).items()), body
        ),
    )  # positive control: everything covered verifies

    signed = partial.sign("POST", "/webhooks?x=1", headers, body, created=1_700_000_000)
    reason = refusal(ps.verifier(variant, tmp_path, clock), ps.Delivery("POST", url, tuple(signed.items()), body))

    what = "component" if uncovered.startswith("@") else "header"
    assert reason == f"{what} {uncovered} is not listed in signature-input (not covered)"


@pytest.mark.parametrize(("variant", "wrong_quoting", "word"), [(V6, True, "quoted"), (V15, False, "unquoted")])
def test_the_other_quoting_of_component_keys_is_refused_and_named(
    variant: provider_scheme.Variant, wrong_quoting: bool, word: str, tmp_path: pathlib.Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    ps.write_public(tmp_path, "k1", key)
    right = provider_scheme.ProviderSigner(key, key_id="k1", variant=variant)
    wrong = provider_scheme.ProviderSigner(key, key_id="k1", variant=variant, quoted=wrong_quoting)
    body, clock = b'{"event": 1}', ps.Clock(1_700_000_000)

    def delivery(signer: provider_scheme.ProviderSigner) -> ps.Delivery:
        signed = signer.sign("POST", "/webhooks", {"Content-Type": "application/json"}, body, created=1_700_000_000)
        return ps.Delivery("POST", "https://receiver.example/webhooks", tuple(signed.items()), body)

    ps.verify(ps.verifier(variant, tmp_path, clock), delivery(right))  # positive control
    reason = refusal(ps.verifier(variant, tmp_path, clock), delivery(wrong))

    assert reason == f"signature base has {word} component keys, which {variant.name} does not use"


def test_expired_and_future_signatures_are_refused(
    vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]
) -> None:
    vector = vectors["provider-v15/ecdsa-p256"]
    created, expires = vector["created"], vector["created"] + 5
    d, variant, _, key_dir = _case("provider-v15/ecdsa-p256", vectors, keys)
    # Positive controls at the edges of the window, the skew included.
    ps.verify(ps.verifier(variant, key_dir, ps.Clock(created - SKEW)), d)
    ps.verify(ps.verifier(variant, key_dir, ps.Clock(expires + SKEW - 1)), d)

    future = refusal(ps.verifier(variant, key_dir, ps.Clock(created - SKEW - 1)), d)
    expired = refusal(ps.verifier(variant, key_dir, ps.Clock(expires + SKEW)), d)

    assert future.startswith(f"created {created} is in the future")
    assert expired.startswith(f"expired at {expires}")


def test_a_window_longer_than_allowed_is_refused(tmp_path: pathlib.Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ps.write_public(tmp_path, "k1", key)
    body = b"{}"
    for lifetime, ok in ((300, True), (301, False)):
        signer = provider_scheme.ProviderSigner(key, key_id="k1", variant=V6, lifetime=lifetime)
        signed = signer.sign("POST", "/w", {"Content-Type": "application/json"}, body, created=1_700_000_000)
        d = ps.Delivery("POST", "https://r.example/w", tuple(signed.items()), body)
        v = ps.verifier(V6, tmp_path, ps.Clock(1_700_000_000))
        if ok:
            ps.verify(v, d)
        else:
            assert refusal(v, d) == "validity window 1700000000..1700000301 is not 0..300 s"


def test_a_replayed_nonce_is_refused(vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]) -> None:
    d, variant, clock, key_dir = _case("provider-v6/ed25519", vectors, keys)
    v = ps.verifier(variant, key_dir, clock)
    ps.verify(v, d)

    clock.now += 3  # still inside the signature's window
    reason = refusal(v, d)

    assert reason == "replayed: this signature's nonce was already accepted"


def test_an_unknown_keyid_is_refused(vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]) -> None:
    d, variant, clock, key_dir = _case("provider-v6/ecdsa-p256", vectors, keys)
    ps.verify(ps.verifier(variant, key_dir, clock), d)
    (key_dir / "ecdsa-p256.pem").rename(key_dir / "someone-else.pem")

    reason = refusal(ps.verifier(variant, key_dir, clock), d)

    assert reason == "unknown keyid 'ecdsa-p256'"


def test_a_signature_by_another_key_under_the_keyid_is_refused(
    vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]
) -> None:
    d, variant, clock, key_dir = _case("provider-v6/ecdsa-p256", vectors, keys)
    ps.verify(ps.verifier(variant, key_dir, clock), d)
    ps.write_public(key_dir, "ecdsa-p256", ec.generate_private_key(ec.SECP256R1()))

    reason = refusal(ps.verifier(variant, key_dir, clock), d)

    assert reason == "signature does not verify (a covered component, the body or the key differs)"


def test_a_wrong_algorithm_for_the_key_is_refused(
    vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]
) -> None:
    d, variant, clock, key_dir = _case("provider-v6/ecdsa-p521", vectors, keys)
    ps.verify(ps.verifier(variant, key_dir, clock), d)
    with_alg = d.replacing("Signature-Input", d.header("Signature-Input") + ';alg="ed25519"')
    (key_dir / "ecdsa-p521.pem").unlink()
    ps.write_public(key_dir, "ecdsa-p521", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    rsa_reason = refusal(ps.verifier(variant, key_dir, clock), d)
    ps.write_public(key_dir, "ecdsa-p521", vectors["provider-v6/ecdsa-p521"]["public_key"])

    alg_reason = refusal(ps.verifier(variant, key_dir, clock), with_alg)

    assert rsa_reason == "wrong algorithm for the key: a RSAPublicKey cannot sign provider signatures"
    assert alg_reason == "wrong algorithm for the key: alg 'ed25519' but keyid 'ecdsa-p521' is an ecdsa-p521-sha512 key"


def test_the_other_schemes_digest_is_named(vectors: dict[str, dict[str, Any]], keys: dict[str, pathlib.Path]) -> None:
    d, _, clock, _ = _case("provider-v15/ecdsa-p256", vectors, keys)

    reason = refusal(ps.verifier(V6, keys["provider-v15"], clock), d)

    assert reason == "digest header missing (found content-digest: is the sender on another scheme?)"


def test_the_provider_rolls_its_key_without_a_restart(tmp_path: pathlib.Path) -> None:
    old, new = ec.generate_private_key(ec.SECP521R1()), ed25519.Ed25519PrivateKey.generate()
    secret = tmp_path / "provider-keys"
    secret.mkdir()
    ps.write_public(secret, "2025-key", old)
    clock = ps.Clock(1_700_000_000)
    v = provider_scheme.ProviderVerifier(V6, keyset.KeySet((str(secret),)), clock=clock)

    def delivery(key: signatures.PrivateKey, key_id: str) -> ps.Delivery:
        signed = provider_scheme.ProviderSigner(key, key_id=key_id, variant=V6).sign(
            "POST", "/w", {"Content-Type": "application/json"}, b"{}", created=int(clock.now)
        )
        return ps.Delivery("POST", "https://r.example/w", tuple(signed.items()), b"{}")

    ps.verify(v, delivery(old, "2025-key"))
    assert refusal(v, delivery(new, "2026-key")) == "unknown keyid '2026-key'"  # not published yet
    ps.write_public(secret, "2026-key", new)  # published beside the old one: both verify
    ps.verify(v, delivery(new, "2026-key"))
    ps.verify(v, delivery(old, "2025-key"))
    (secret / "2025-key.pem").unlink()  # withdrawn

    assert refusal(v, delivery(old, "2025-key")) == "unknown keyid '2025-key'"
    ps.verify(v, delivery(new, "2026-key"))

"""The provider's webhook signatures as its documentation and an independent signer make them.

Two sources nobody here wrote: the worked examples of the provider's public documentation (digests,
signature base lines, the signature-input header), reproduced byte for byte; and deliveries signed by a
small Go program (tests/unit/provider_vectors, standard library only: ECDSA SignASN1 over SHA-512 as
the provider's signing proxy does, and Ed25519) that builds its own digest and base.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest

from tests.unit import provider_signing as ps
from webhookcerts.receiver import provider_scheme, sfv

# docs.upvest.co, concepts/api_concepts/http_signatures/v6/v6_content_digest: the `digest` examples.
DOC_V6_DIGESTS = {
    b'{"hello": "world"}': "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
    b'{"key": "value"}': "SHA-256=lyTB4g5uPk1/V+0l+dTvsAblCFkNUoyQ2ll/andcE+U=",
}
# docs.upvest.co, getting_started/http_signatures/upgrading_http_signatures_v6_v15: `content-digest`
# (the page prints a stray leading double quote on the first value; the value itself is this).
DOC_V15_DIGESTS = {
    b'{"hello": "world"}': "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWX"
    "vJwew==:",
    b'{"key": "value"}': "sha-512=:Hd9/AvGZkbjitW1+Ml8Fg1ux1mtcDYe6mLQjDyoowIWa3LM/PmwN2v9O+MjtQGrCA3EQWUL54dlgxKHyYbru"
    "cw==:",
}
# The same page, "Example for V15": the component lines of the signature base for its request.
DOC_V15_LINES = """\
"@method": POST
"@path": /endpoint
"@query": ?a=b
"accept": application/json
"authorization": Bearer access-token
"content-length": 16
"content-type": application/json
"content-digest": sha-512=:Hd9/AvGZkbjitW1+Ml8Fg1ux1mtcDYe6mLQjDyoowIWa3LM/PmwN2v9O+MjtQGrCA3EQWUL54dlgxKHyYbrucw==:
"idempotency-key": 2133825797664cad
"upvest-client-id": 5ec16164-6173-461d-b90d-116d68f55b40"""
# concepts/api_concepts/http_signatures/v6/v6_signature_components and v6_calculation_of_the_signature.
DOC_V6_PARAMS = (
    '("@method" "@path" "@query" "accept" "authorization" "content-length" "content-type" "digest" '
    '"idempotency-key" "upvest-client-id");keyid="8d4997a8-cf7a-4e51-adbb-401656a3e5c2";created=1633529659;'
    'expires=1633529664;nonce="o085M4cMgpbicuOL"'
)
DOC_V6_SIGNATURE_INPUT = "sig1=" + DOC_V6_PARAMS
DOC_V6_LINES = [  # the components table's examples, in its order
    "@method: POST",
    "@path: /endpoint",
    "@query: ?param=value&foo-bar",
    "accept: application/json",
    "content-length: 15",
    "content-type: application/json",
]


@pytest.mark.parametrize(("body", "expected"), DOC_V6_DIGESTS.items())
def test_v6_digest_is_the_documented_one(body: bytes, expected: str) -> None:
    assert provider_scheme.digest_value(provider_scheme.V6, body) == expected
    provider_scheme.check_digest(provider_scheme.V6, expected, body)


@pytest.mark.parametrize(("body", "expected"), DOC_V15_DIGESTS.items())
def test_v15_content_digest_is_the_documented_one(body: bytes, expected: str) -> None:
    assert provider_scheme.digest_value(provider_scheme.V15, body) == expected
    provider_scheme.check_digest(provider_scheme.V15, expected, body)


def test_v15_base_lines_are_the_documented_ones() -> None:
    body = b'{"key": "value"}'
    request = provider_scheme.Request.from_url(
        "POST",
        "https://api.example/endpoint?a=b",
        [
            ("Accept", "application/json"),
            ("Authorization", "Bearer access-token"),
            ("Content-Length", str(len(body))),
            ("Content-Type", "application/json"),
            ("Content-Digest", DOC_V15_DIGESTS[body]),
            ("Idempotency-Key", "2133825797664cad"),
            ("Upvest-Client-Id", "5ec16164-6173-461d-b90d-116d68f55b40"),
        ],
    )
    names = [line.split('"')[1] for line in DOC_V15_LINES.splitlines()]
    values = [(n, request.component(n) or "") for n in names]
    base = provider_scheme.signature_base(values, "()", quoted=True).decode()

    assert base == DOC_V15_LINES + '\n"@signature-params": ()'


def test_v6_signature_input_and_base_are_the_documented_ones() -> None:
    [(label, raw)] = sfv.dictionary_members(DOC_V6_SIGNATURE_INPUT)
    components, params = sfv.inner_list(raw)
    request = provider_scheme.Request.from_url(
        "POST",
        "https://api.example/endpoint?param=value&foo-bar",
        [("Accept", "application/json"), ("Content-Length", "15"), ("Content-Type", "application/json")],
    )
    names = [line.split(":")[0] for line in DOC_V6_LINES]
    values = [(n, request.component(n) or "") for n in names]
    base = provider_scheme.signature_base(values, raw, quoted=False).decode()

    assert label == "sig1"
    assert components[:4] == ["@method", "@path", "@query", "accept"] and components[7] == "digest"
    assert params == {
        "keyid": "8d4997a8-cf7a-4e51-adbb-401656a3e5c2",
        "created": 1633529659,
        "expires": 1633529664,
        "nonce": "o085M4cMgpbicuOL",
    }
    # The documented lines, keys unquoted, and the documented @signature-params line, byte for byte.
    assert base.splitlines() == [*DOC_V6_LINES, "@signature-params: " + DOC_V6_PARAMS]


@pytest.fixture(scope="module")
def vectors() -> list[dict[str, Any]]:
    return ps.go_vectors()


@pytest.fixture(scope="module")
def go_keys(vectors: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """One key directory per scheme, as a mounted Secret would hold them: <keyid>.pem each."""
    dirs: dict[str, pathlib.Path] = {}
    for vector in vectors:
        directory = dirs.setdefault(vector["scheme"], tmp_path_factory.mktemp(vector["scheme"]))
        ps.write_public(directory, vector["keyid"], vector["public_key"])
    return dirs


NAMES = [
    f"{scheme}/{key}"
    for scheme in ("provider-v6", "provider-v15")
    for key in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519")
]


@pytest.mark.parametrize("name", NAMES)
def test_go_signed_delivery_verifies(
    name: str, vectors: list[dict[str, Any]], go_keys: dict[str, pathlib.Path]
) -> None:
    vector = next(v for v in vectors if v["name"] == name)
    variant = provider_scheme.VARIANTS[vector["scheme"]]
    delivery = ps.from_vector(vector)
    [(_, raw)] = sfv.dictionary_members(delivery.header("Signature-Input"))
    components, _ = sfv.inner_list(raw)
    request = provider_scheme.Request.from_url(delivery.method, delivery.url, delivery.headers)
    ours = provider_scheme.signature_base(
        [(c, request.component(c) or "") for c in components], raw, quoted=variant.quoted_keys
    )

    verified = ps.verify(ps.verifier(variant, go_keys[vector["scheme"]], ps.Clock(vector["created"])), delivery)

    assert ours == vector["base"].encode()  # our base is the Go program's, byte for byte
    assert verified.key_id == vector["keyid"]
    assert verified.algorithm == vector["keyid"] + ("-sha512" if vector["keyid"].startswith("ecdsa") else "")
    assert (
        delivery.header("Digest" if variant is provider_scheme.V6 else "Content-Digest")
        == (DOC_V6_DIGESTS if variant is provider_scheme.V6 else DOC_V15_DIGESTS)[b'{"hello": "world"}']
    )


def test_the_example_in_docs_receiver_md_is_what_the_verifier_builds() -> None:
    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "receiver.md").read_text()
    section = page[page.index("## Message signatures: the provider's scheme") :]
    http = re.search(r"```http\n(.*?)\n```", section, re.S)
    text = re.search(r"```text\n(.*?)\n```", section, re.S)
    assert http is not None and text is not None
    head, body = http.group(1).split("\n\n", 1)
    request_line, *lines = head.splitlines()
    method, target, _ = request_line.split(" ")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    delivery = ps.Delivery(method, f"https://{ps.AUTHORITY}{target}", tuple((n, v) for n, v in headers), body.encode())
    [(_, raw)] = sfv.dictionary_members(delivery.header("Signature-Input"))
    components, _ = sfv.inner_list(raw)
    request = provider_scheme.Request.from_url(delivery.method, delivery.url, delivery.headers)
    base = provider_scheme.signature_base([(c, request.component(c) or "") for c in components], raw, quoted=False)

    assert base.decode() == text.group(1)
    provider_scheme.check_digest(provider_scheme.V6, delivery.header("Digest"), delivery.body)

"""The signature scheme chosen per receiver: RFC 9421's extra checks, and the simulator and receiver
agreeing on each scheme (and on the default, the provider's v6) over real mTLS deliveries."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import signal
import subprocess
import sys

import http_message_signatures
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from http_message_signatures import algorithms, structures

from tests.unit import conftest as unit
from tests.unit import mtls_pki
from tests.unit import provider_signing as ps
from tests.unit.test_providersim import PASSWORD, REPO, FlakyHandler, _cli, sim_config
from webhookcerts.cli import main as cli
from webhookcerts.receiver import keyset, providersim, signatures, signing

URL = "https://receiver.example:8443/webhooks"


class _Key(http_message_signatures.HTTPSignatureKeyResolver):
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key

    def resolve_private_key(self, key_id: str) -> ec.EllipticCurvePrivateKey:
        return self.key


def _rfc9421(key: ec.EllipticCurvePrivateKey, components: tuple[str, ...], body: bytes) -> list[tuple[str, str]]:
    """An RFC 9421 signature made with the package directly, covering exactly ``components``."""
    fields = structures.CaseInsensitiveDict({"Content-Type": "application/json"})  # type: ignore[no-untyped-call]
    message = signatures.Message("POST", URL, fields)
    signer = http_message_signatures.HTTPMessageSigner(
        signature_algorithm=algorithms.ECDSA_P256_SHA256, key_resolver=_Key(key)
    )
    signer.sign(
        message,
        key_id="k1",
        created=datetime.datetime.now(datetime.UTC),
        covered_component_ids=components,
        body=body,
    )
    return list(fields.items())


def _verifier(tmp_path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> signatures.Verifier:
    ps.write_public(tmp_path, "k1", key)
    return signatures.Verifier(keyset.KeySet((str(tmp_path),)))


def test_rfc9421_requires_authority(tmp_path: pathlib.Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    v = _verifier(tmp_path, key)
    body = b'{"event": 1}'
    v.verify("POST", URL, _rfc9421(key, ("@method", "@authority", "@path", "content-digest"), body), body)

    with pytest.raises(signatures.SignatureError) as caught:
        v.verify("POST", URL, _rfc9421(key, ("@method", "@path", "content-digest"), body), body)

    assert "@authority" in str(caught.value)


@pytest.mark.parametrize("with_nonce", [True, False])
def test_rfc9421_refuses_a_replay_but_not_a_retry(tmp_path: pathlib.Path, with_nonce: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    v = _verifier(tmp_path, key)
    body = b'{"event": 1}'
    if with_nonce:  # the simulator's signer: a fresh nonce per signature
        signer = signatures.Signer(key, key_id="k1")
        first = list(signer.sign("POST", URL, {"Content-Type": "application/json"}, body).items())
        retry = list(signer.sign("POST", URL, {"Content-Type": "application/json"}, body).items())
    else:  # no nonce: the signature itself is what is remembered
        first = _rfc9421(key, ("@method", "@authority", "@path", "content-digest"), body)
        retry = _rfc9421(key, ("@method", "@authority", "@path", "content-digest"), body)
    v.verify("POST", URL, first, body)
    v.verify("POST", URL, retry, body)  # a new signature for the same delivery is not a replay

    with pytest.raises(signatures.SignatureError) as caught:
        v.verify("POST", URL, first, body)

    assert str(caught.value) == "replayed: this signature's nonce was already accepted"


def test_receiver_and_simulator_default_to_the_providers_webhook_scheme() -> None:
    rx = cli.parse_args(["receiver", "--cert", "c", "--key", "k", "--trust-dir", "t"])
    sim = cli.parse_args(["provider-sim", "--bundle", "b", "--password-env", "P", "--url", "https://h/"])

    assert rx.signature_scheme == sim.signature_scheme == signing.DEFAULT_SCHEME == "provider-v6"
    assert providersim.Config(url="", bundle=pathlib.Path(), password=b"").signature_scheme == "provider-v6"


@pytest.fixture(scope="module")
def bundle(pki: mtls_pki.Pki) -> pathlib.Path:
    return pki.alpha.p12(pki.directory, PASSWORD)


@pytest.mark.parametrize("scheme", [*signing.SCHEMES, None])
def test_the_simulator_delivers_to_a_receiver_on_the_same_scheme(
    scheme: str | None, pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundle: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    private, public = mtls_pki.signing_key(tmp_path, "provider")
    chosen = {} if scheme is None else {"signature_scheme": scheme}
    handler = FlakyHandler(failures=0)
    rx = unit.start(pki, trust_dir, signature_keys=(f"sim={public}",), on_delivery=handler, **chosen)
    try:
        summary = providersim.run(sim_config(rx, pki, bundle, count=3, signing_key=private, key_id="sim", **chosen))
        health = rx.health()
    finally:
        rx.close()

    assert summary["delivered"] == 3 and summary["http_errors"] == {}
    assert health["signatures"] == f"required ({scheme or signing.DEFAULT_SCHEME})"


def test_a_simulator_on_another_scheme_is_refused(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundle: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    private = tmp_path / "provider.key"
    private.write_bytes(
        key.private_bytes(
            signatures.serialization.Encoding.PEM,
            signatures.serialization.PrivateFormat.PKCS8,
            signatures.serialization.NoEncryption(),
        )
    )
    ps.write_public(tmp_path, "sim", key)
    rx = unit.start(pki, trust_dir, signature_keys=(str(tmp_path / "sim.pem"),), signature_scheme="provider-v15")
    try:
        summary = providersim.run(
            sim_config(rx, pki, bundle, count=1, max_attempts=1, signing_key=private, key_id="sim")
        )
    finally:
        rx.close()

    assert summary["http_errors"] == {"401": 1}


def test_the_two_commands_agree_by_default_across_processes(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundle: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """``webhookcerts receiver`` with a key directory (as a Secret mount) and ``webhookcerts provider-sim``
    with the private key, neither told a scheme: the deliveries verify; a simulator on v15 is refused."""
    keys = tmp_path / "provider-keys"
    keys.mkdir()
    private, public = mtls_pki.signing_key(tmp_path, "signing")
    public.rename(keys / "provider-sim.pem")  # the simulator's default keyid
    argv = ["receiver", "--cert", str(pki.server.cert_path), "--key", str(pki.server.key_path)]
    argv += ["--trust-dir", str(trust_dir), "--host", "127.0.0.1", "--port", "0", "--signature-key", str(keys)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    proc = subprocess.Popen([sys.executable, "-m", "webhookcerts", *argv], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        listening = json.loads(proc.stderr.readline())
        url = "https://" + listening["address"] + "/webhooks"
        common = ["--bundle", str(bundle), "--url", url, "--ca", str(pki.server_ca.cert_path), "--count", "3"]
        common += ["--rate", "20/s", "--max-attempts", "1", "--signing-key", str(private)]
        default = _cli(common, PASSWORD.decode())
        v15 = _cli([*common, "--signature-scheme", "provider-v15"], PASSWORD.decode())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert listening["signatures"] == "required (provider-v6)"
    assert default.returncode == 0, default.stdout + default.stderr
    assert json.loads(default.stdout)["delivered"] == 3
    assert v15.returncode == 1 and json.loads(v15.stdout)["http_errors"] == {"401": 3}

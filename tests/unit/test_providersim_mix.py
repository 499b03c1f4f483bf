"""The provider simulator part-way through a switch (two certificates mixed) and speaking TLS 1.2 only.

What the end-to-end tests of issue 24 build on: a share of the deliveries presents the next
certificate, exactly that share and each with its own certificate (the real receiver says which one it
saw), and a simulator held to TLS 1.2 really negotiates it (the receiver logs the protocol).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from tests.unit import conftest as unit
from tests.unit import mtls_pki
from webhookcerts.receiver import providersim, server, trustdir

REPO = pathlib.Path(__file__).resolve().parents[2]
PASSWORD = b"bundle-pass-5d1e"


@pytest.fixture(scope="module")
def bundles(pki: mtls_pki.Pki) -> dict[str, pathlib.Path]:
    return {p.name: p.p12(pki.directory, PASSWORD) for p in (pki.alpha, pki.beta)}


class Seen:
    """The application behind the receiver: which client certificate carried each delivery."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_certificate: collections.Counter[str] = collections.Counter()
        self.sequences: dict[int, str] = {}

    def __call__(self, delivery: server.Delivery) -> None:
        with self.lock:
            self.by_certificate[delivery.client_fingerprint] += 1
            self.sequences[delivery.payload["sequence"]] = delivery.client_fingerprint


def config(rx: server.Receiver, pki: mtls_pki.Pki, bundle: pathlib.Path, **overrides: object) -> providersim.Config:
    values: dict[str, object] = {
        "url": f"https://127.0.0.1:{rx.port}/webhooks",
        "bundle": bundle,
        "password": PASSWORD,
        "ca": pki.server_ca.cert_path,
        "rate": 100.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return providersim.Config(**values)  # type: ignore[arg-type]


def test_a_mix_presents_the_second_certificate_with_exactly_its_share_spread_over_the_deliveries(
    pki: mtls_pki.Pki, tmp_path: pathlib.Path, bundles: dict[str, pathlib.Path]
) -> None:
    trust = tmp_path / "both"
    trustdir.write_atomic(trust, {"ca.crt": pki.alpha.cert_pem + pki.beta.cert_pem})
    seen = Seen()
    rx = unit.start(pki, trust, on_delivery=seen)
    try:
        summary = providersim.run(config(rx, pki, bundles["alpha"], count=20, mix_bundle=bundles["beta"], mix=0.25))
    finally:
        rx.close()

    alpha, beta = pki.alpha.fingerprint, pki.beta.fingerprint
    assert (summary["delivered"], summary["failed"]) == (20, 0)
    assert seen.by_certificate == {alpha: 15, beta: 5}
    assert summary["by_certificate"] == {alpha: {"sent": 15, "delivered": 15}, beta: {"sent": 5, "delivered": 5}}
    # Spread, not bunched: every fourth delivery, as a provider's senders switching one by one.
    assert sorted(s for s, fp in seen.sequences.items() if fp == beta) == [3, 7, 11, 15, 19]


def test_a_mix_whose_second_certificate_is_not_trusted_fails_only_its_share(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    # The receiver trusts alpha alone (the unit conftest's trust_dir).
    summary = providersim.run(
        config(receiver, pki, bundles["alpha"], count=10, mix_bundle=bundles["beta"], mix=0.5, max_attempts=2)
    )

    alpha, beta = pki.alpha.fingerprint, pki.beta.fingerprint
    assert (summary["delivered"], summary["failed"]) == (5, 5)
    assert summary["by_certificate"] == {
        alpha: {"sent": 5, "delivered": 5},
        beta: {"sent": 5, "failed": 5},
    }


def test_without_a_mix_every_delivery_presents_the_bundle_and_a_bad_share_is_refused(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    summary = providersim.run(config(receiver, pki, bundles["alpha"], count=4, mix=0.5))
    assert summary["by_certificate"] == {pki.alpha.fingerprint: {"sent": 4, "delivered": 4}}
    with pytest.raises(providersim.SimulatorError, match="share"):
        providersim.Simulator(config(receiver, pki, bundles["alpha"], mix_bundle=bundles["beta"], mix=1.5))


@pytest.mark.parametrize(("tls_max", "negotiated"), [("1.2", "TLSv1.2"), (None, "TLSv1.3")])
def test_tls_max_holds_the_simulator_to_that_version(
    receiver: server.Receiver,
    pki: mtls_pki.Pki,
    bundles: dict[str, pathlib.Path],
    caplog: pytest.LogCaptureFixture,
    tls_max: str | None,
    negotiated: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="webhookcerts.receiver"):
        summary = providersim.run(config(receiver, pki, bundles["alpha"], count=3, tls_max=tls_max))
    assert summary["delivered"] == 3
    records = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]
    versions = [r["tls"] for r in records if r.get("event") == "delivery"]
    assert versions == [negotiated] * 3


def test_the_cli_takes_a_mix_and_a_tls_maximum(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "SIM_PASSWORD": PASSWORD.decode()}
    args = ["--bundle", str(bundles["alpha"]), "--mix-bundle", str(bundles["beta"]), "--mix", "50%"]
    args += ["--tls-max", "1.2", "--url", f"https://127.0.0.1:{receiver.port}/webhooks"]
    args += ["--ca", str(pki.server_ca.cert_path), "--rate", "20/s", "--count", "4", "--max-attempts", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "webhookcerts", "provider-sim", "--password-env", "SIM_PASSWORD", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # alpha is trusted, beta is not: half delivered, and the exit status says some failed.
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["by_certificate"][pki.alpha.fingerprint] == {"sent": 2, "delivered": 2}
    assert summary["by_certificate"][pki.beta.fingerprint] == {"sent": 2, "failed": 2}

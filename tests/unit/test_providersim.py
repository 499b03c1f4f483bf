"""The provider simulator against the real receiver: its counts, retries, refusals and signatures."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from tests import conftest
from tests.unit import conftest as unit
from tests.unit import mtls_pki
from webhookcerts.receiver import providersim, server, trustdir

REPO = pathlib.Path(__file__).resolve().parents[2]
PASSWORD = b"bundle-pass-7f3a"


@pytest.fixture(scope="module")
def bundles(pki: mtls_pki.Pki) -> dict[str, pathlib.Path]:
    return {p.name: p.p12(pki.directory, PASSWORD) for p in (pki.alpha, pki.beta, pki.stranger)}


class FlakyHandler:
    """The application behind the receiver: fails the first ``failures`` deliveries, records ids."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.delivered: set[str] = set()

    def __call__(self, delivery: server.Delivery) -> None:
        with self.lock:
            delivery_id = delivery.payload["id"]
            self.calls[delivery_id] += 1
            if self.failures > 0:
                self.failures -= 1
                raise RuntimeError("the application is briefly down")
            self.delivered.add(delivery_id)


def sim_config(rx: server.Receiver, pki: mtls_pki.Pki, bundle: pathlib.Path, **overrides: object) -> providersim.Config:
    values: dict[str, object] = {
        "url": f"https://127.0.0.1:{rx.port}/webhooks",
        "bundle": bundle,
        "password": PASSWORD,
        "ca": pki.server_ca.cert_path,
        "rate": 50.0,
        "count": 10,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return providersim.Config(**values)  # type: ignore[arg-type]


def test_every_delivery_arrives_once(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    summary = providersim.run(sim_config(receiver, pki, bundles["alpha"], count=25))

    assert summary["sent"] == 25
    assert summary["delivered"] == 25
    assert summary["failed"] == 0
    assert summary["retries"] == 0
    assert summary["handshake_failures"] == {}
    assert summary["latency_ms"]["p50"] is not None
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]
    assert receiver.stats.responses[200] == 25
    # A new TLS connection per delivery by default: each one meets the current trust store.
    assert receiver.stats.connections == 25


def test_500_answers_are_retried_until_delivered(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundles: dict[str, pathlib.Path]
) -> None:
    handler = FlakyHandler(failures=3)
    rx = unit.start(pki, trust_dir, on_delivery=handler)
    try:
        summary = providersim.run(sim_config(rx, pki, bundles["alpha"], count=10))
    finally:
        rx.close()

    assert summary["sent"] == 10
    assert summary["delivered"] == 10
    assert summary["failed"] == 0
    assert summary["retries"] == 3
    assert summary["attempts"] == 13
    assert summary["http_errors"] == {"500": 3}
    assert len(handler.delivered) == 10
    assert sum(handler.calls.values()) == 13


def test_a_delivery_that_never_succeeds_is_counted_failed(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundles: dict[str, pathlib.Path]
) -> None:
    handler = FlakyHandler(failures=10**6)
    rx = unit.start(pki, trust_dir, on_delivery=handler)
    try:
        summary = providersim.run(sim_config(rx, pki, bundles["alpha"], count=4, max_attempts=3))
    finally:
        rx.close()

    assert summary["sent"] == 4
    assert summary["delivered"] == 0
    assert summary["failed"] == 4
    assert summary["retries"] == 8
    assert summary["http_errors"] == {"500": 12}
    assert summary["latency_ms"] == {"p50": None, "p95": None}


def test_an_untrusted_certificate_is_counted_as_handshake_failures(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    summary = providersim.run(sim_config(receiver, pki, bundles["stranger"], count=3, max_attempts=2))

    assert summary["delivered"] == 0
    assert summary["failed"] == 3
    # Under TLS 1.3 the refusal may surface as an alert or a closed connection; both are counted.
    refusals = sum(summary["handshake_failures"].values()) + sum(summary["connection_errors"].values())
    assert refusals == 6
    assert sum(summary["handshake_failures"].values()) >= 1
    assert conftest.poll(lambda: receiver.stats.handshake_failures["certificate_verify_failed"] == 6)


def test_keep_alive_reuses_connections(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    summary = providersim.run(sim_config(receiver, pki, bundles["alpha"], count=20, keep_alive=True, concurrency=2))

    assert summary["delivered"] == 20
    assert receiver.stats.connections <= 2


def test_a_planned_rotation_loses_nothing(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundles: dict[str, pathlib.Path]
) -> None:
    # While both certificates are trusted (the overlap) and around it, the current one keeps working.
    # The deliveries go on until the receiver has taken five new trust stores while they ran (counted by
    # the receiver itself, however the machine schedules the threads), then stop.
    stop = threading.Event()
    result: dict[str, object] = {}

    def deliver() -> None:
        result.update(providersim.run(sim_config(receiver, pki, bundles["alpha"], count=100_000, rate=100.0), stop))

    thread = threading.Thread(target=deliver)
    thread.start()
    try:
        assert conftest.poll(lambda: receiver.stats.responses[200] > 0), "no delivery before the swaps"
        start = receiver.trust.current.generation
        swaps = 0
        while receiver.trust.current.generation < start + 5:
            bundle = (pki.alpha, pki.beta) if swaps % 2 == 0 else (pki.beta, pki.alpha)
            trustdir.write_atomic(trust_dir, {"ca.crt": b"".join(p.cert_pem for p in bundle)})
            swaps += 1
            assert _wait_for_generation(receiver, receiver.trust.current.generation + 1), "no reload"
        during = receiver.stats.responses[200]
        assert conftest.poll(lambda: receiver.stats.responses[200] > during), "no delivery after the swaps"
    finally:
        stop.set()
        thread.join()

    assert result["delivered"] == result["sent"]
    assert result["failed"] == 0
    assert result["handshake_failures"] == {}


def test_an_emergency_revocation_refuses_the_old_certificate_at_once(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundles: dict[str, pathlib.Path]
) -> None:
    first = providersim.run(sim_config(receiver, pki, bundles["alpha"], count=5))
    trustdir.write_atomic(trust_dir, {"ca.crt": pki.beta.cert_pem})
    deadline_ok = _wait_for_generation(receiver, 2)
    after = providersim.run(sim_config(receiver, pki, bundles["alpha"], count=5, max_attempts=2))
    replacement = providersim.run(sim_config(receiver, pki, bundles["beta"], count=5))

    assert deadline_ok
    assert first["delivered"] == 5
    assert after["delivered"] == 0
    assert after["failed"] == 5
    assert replacement["delivered"] == 5


def _wait_for_generation(rx: server.Receiver, generation: int) -> bool:
    return conftest.poll(lambda: rx.trust.current.generation >= generation)


def test_signed_deliveries_verify(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, bundles: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    private, public = mtls_pki.signing_key(tmp_path, "signing")
    impostor, _ = mtls_pki.signing_key(tmp_path, "impostor")
    handler = FlakyHandler(failures=0)
    rx = unit.start(pki, trust_dir, signature_key=public, signature_key_id="sim", on_delivery=handler)
    try:
        good = providersim.run(sim_config(rx, pki, bundles["alpha"], count=5, signing_key=private, key_id="sim"))
        bad = providersim.run(
            sim_config(rx, pki, bundles["alpha"], count=2, signing_key=impostor, key_id="sim", max_attempts=2)
        )
    finally:
        rx.close()

    assert good["delivered"] == 5
    assert bad["failed"] == 2
    assert bad["http_errors"] == {"401": 4}
    assert len(handler.delivered) == 5


def test_a_wrong_password_is_reported_without_the_password(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    with pytest.raises(providersim.SimulatorError) as raised:
        providersim.Simulator(sim_config(receiver, pki, bundles["alpha"], password=b"not-the-password"))

    assert "wrong password" in str(raised.value)
    assert "not-the-password" not in str(raised.value)


def _cli(args: list[str], password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "SIM_PASSWORD": password}
    return subprocess.run(
        [sys.executable, "-m", "webhookcerts", "provider-sim", "--password-env", "SIM_PASSWORD", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_cli_prints_a_summary_and_exits_by_outcome(
    receiver: server.Receiver, pki: mtls_pki.Pki, bundles: dict[str, pathlib.Path]
) -> None:
    common = ["--url", f"https://127.0.0.1:{receiver.port}/webhooks", "--ca", str(pki.server_ca.cert_path)]
    common += ["--rate", "20/s", "--count", "5", "--max-attempts", "2", "--backoff-initial", "0.01"]

    ok = _cli(["--bundle", str(bundles["alpha"]), *common], PASSWORD.decode())
    refused = _cli(["--bundle", str(bundles["stranger"]), *common], PASSWORD.decode())
    locked = _cli(["--bundle", str(bundles["alpha"]), *common], "wrong-pass-123")

    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["delivered"] == 5
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["failed"] == 5
    assert locked.returncode == 2
    for result, password in ((ok, PASSWORD.decode()), (refused, PASSWORD.decode()), (locked, "wrong-pass-123")):
        assert password not in result.stdout + result.stderr

"""The reference receiver names the certificate it refused when a TLS 1.2 client sent it in the clear.

Python's ssl has no verify callback, so a certificate OpenSSL refused is gone with the handshake; the
bytes a TLS 1.2 client sends (receiver/cleartext.py) still say which it was. The refusal is then a
presentation in the receiver's report (a revoked certificate knocking) and its fingerprint is in the
``handshake_failed`` record. TLS 1.3 encrypts the client's certificate: nothing is counted there
(test_receiver_reporting.py's own test), so every case below runs the same client at both versions.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl

import pytest
from cryptography.hazmat.primitives import serialization

from tests import conftest
from tests.unit import mtls_pki
from tests.unit.test_receiver import post

# The in-process receiver with a tally, as the reporting tests run it.
from tests.unit.test_receiver_reporting import receiver, sha1, tally  # noqa: F401
from webhookcerts.receiver import reporting, server


def context(pki: mtls_pki.Pki, client: mtls_pki.Pair, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.server_ca.cert_path))
    ctx.maximum_version = version
    ctx.load_cert_chain(client.cert_path, client.key_path)
    return ctx


def knock(rx: server.Receiver, ctx: ssl.SSLContext) -> None:
    """One delivery the receiver refuses in the handshake (however the client learns of it)."""
    conn = http.client.HTTPSConnection("127.0.0.1", rx.port, context=ctx, timeout=10)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            post(conn)
    finally:
        conn.close()


def handshake_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    found = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]
    return [r for r in found if r.get("event") == "handshake_failed"]


def test_a_certificate_refused_over_tls_1_2_is_counted_and_logged_by_its_fingerprints(
    receiver: server.Receiver,  # noqa: F811
    tally: reporting.Tally,  # noqa: F811
    pki: mtls_pki.Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = pki.stranger
    with caplog.at_level(logging.INFO, logger="webhookcerts.receiver"):
        for _ in range(2):
            knock(receiver, context(pki, stranger, ssl.TLSVersion.TLSv1_2))
        assert conftest.poll(lambda: len(handshake_records(caplog)) == 2)

    [entry] = tally.snapshot()
    assert (entry.sha256, entry.sha1) == (stranger.fingerprint, sha1(stranger))
    assert (entry.accepted, entry.refused) == (0, 2)
    assert entry.last_refused is not None and entry.last_accepted is None
    records = handshake_records(caplog)
    assert [r["client_fingerprint"] for r in records] == [stranger.fingerprint] * 2
    assert {r["reason"] for r in records} == {"certificate_verify_failed"}


def test_over_tls_1_3_the_same_refusal_names_nothing(
    receiver: server.Receiver,  # noqa: F811
    tally: reporting.Tally,  # noqa: F811
    pki: mtls_pki.Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="webhookcerts.receiver"):
        knock(receiver, context(pki, pki.stranger, ssl.TLSVersion.TLSv1_3))
        # The refusal happened (the positive control): the certificate was encrypted, so none is named.
        assert conftest.poll(lambda: len(handshake_records(caplog)) == 1)
    assert "client_fingerprint" not in handshake_records(caplog)[0]
    assert tally.snapshot() == []


def test_a_handshake_that_fails_for_another_reason_counts_no_refusal(
    receiver: server.Receiver,  # noqa: F811
    tally: reporting.Tally,  # noqa: F811
    pki: mtls_pki.Pki,
) -> None:
    # The trusted certificate, sent in the clear: its handshake failing otherwise refuses nothing.
    der = pki.alpha.cert.public_bytes(serialization.Encoding.DER)
    receiver.handshake_failed(("127.0.0.1", 1), ConnectionResetError(), der)
    receiver.handshake_failed(("127.0.0.1", 1), TimeoutError(), der)
    assert tally.snapshot() == []

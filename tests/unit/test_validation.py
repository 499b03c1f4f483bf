"""The endpoint probe against the reference receiver: each answer it can give, and the condition it makes.

The receiver is the real one (TLS >= 1.2, client certificate required, its own trust directory); the
probe presents a certificate the way the operator does, from PEM bytes.
"""

from __future__ import annotations

import socket

from tests.unit import mtls_pki
from webhookcerts.receiver import server
from webhookcerts.service import probes, validation


def url(rx: server.Receiver) -> str:
    return f"https://127.0.0.1:{rx.port}/healthz"


def probe(rx_url: str, client: mtls_pki.Pair, ca: bytes | None) -> validation.Probe:
    return validation.probe(rx_url, client.cert_pem, client.key_path.read_bytes(), ca_pem=ca, timeout=10)


def test_a_trusted_certificate_is_accepted(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    result = probe(url(receiver), pki.alpha, pki.server_ca.cert_pem)
    assert result.outcome is validation.Outcome.ACCEPTED, result.detail
    assert probes.verdict(result, want_accept=True) == ("True", "Accepted")
    # The compromised certificate still accepted after an emergency: the endpoint has not reloaded.
    assert probes.verdict(result, want_accept=False) == ("False", "StillAccepted")


def test_a_certificate_the_endpoint_does_not_trust_is_refused(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    result = probe(url(receiver), pki.stranger, pki.server_ca.cert_pem)
    assert result.outcome is validation.Outcome.REFUSED, result.detail
    assert probes.verdict(result, want_accept=True) == ("False", "Refused")
    assert probes.verdict(result, want_accept=False) == ("True", "Refused")


def test_nothing_listening_is_unreachable_never_refused(pki: mtls_pki.Pki) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on that port any more: a refusal would wrongly count as "compromised rejected".
    result = probe(f"https://127.0.0.1:{port}/", pki.alpha, pki.server_ca.cert_pem)
    assert result.outcome is validation.Outcome.UNREACHABLE, result.detail
    assert probes.verdict(result, want_accept=False) == ("Unknown", "Unreachable")


def test_an_endpoint_whose_own_certificate_is_not_trusted_is_unreachable(
    receiver: server.Receiver, pki: mtls_pki.Pki
) -> None:
    # No CA given: the system store does not know the test's server CA.
    result = probe(url(receiver), pki.alpha, None)
    assert result.outcome is validation.Outcome.UNREACHABLE
    assert "not trusted" in result.detail


def test_the_key_never_appears_in_what_a_probe_reports(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    for client in (pki.alpha, pki.stranger):
        detail = probe(url(receiver), client, pki.server_ca.cert_pem).detail
        assert "PRIVATE KEY" not in detail

"""Endpoint validation against the servers users run: nginx and HAProxy, configured as the receiver
guides configure them, each reached in all three outcomes by ``validation.probe`` itself (no operator:
tests/e2e/test_validation.py runs the operator end to end against the reference receiver).

- nginx (``ssl_verify_client on``) completes the handshake with a certificate it does not trust and
  answers 400 "The SSL certificate error": Refused, never Accepted for being an HTTP answer;
- HAProxy (``verify required``) refuses with a TLS alert, after the handshake under TLS 1.3; it answers
  a GET with 405 (its webhook path takes POST): Inconclusive unless the user names 405 in
  ``acceptStatus``;
- nothing listening, or a server whose certificate ``caSecretRef`` does not vouch for: Unreachable,
  never evidence that the compromised certificate is refused.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from tests import servers as launchers
from tests.unit import mtls_pki
from webhookcerts.domain import names
from webhookcerts.service import probes, validation

pytestmark = pytest.mark.e2e

Start = Callable[[launchers.Workspace, pathlib.Path], launchers.Launched]
SERVERS: dict[str, tuple[Start, tuple[int, ...]]] = {
    # The status each answers a trusted GET with, named as the user would name it (none for 2xx).
    "nginx": (launchers.start_nginx, ()),
    "haproxy": (launchers.start_haproxy, (405,)),
}


def probe(port: int, client: mtls_pki.Pair, ca: mtls_pki.Pair | None, accept: tuple[int, ...] = ()) -> validation.Probe:
    return validation.probe(
        f"https://127.0.0.1:{port}/webhooks",
        client.cert_pem,
        client.key_path.read_bytes(),
        ca_pem=ca.cert_pem if ca is not None else None,
        timeout=30,
        accept_status=accept,
    )


@pytest.mark.parametrize("kind", list(SERVERS))
def test_each_outcome_read_from_the_real_server(kind: str, workspace: launchers.Workspace) -> None:
    start, accept = SERVERS[kind]
    made = workspace.material.pki
    trust_file = workspace.directory / names.TRUST_KEY
    trust_file.write_bytes(made.alpha.cert_pem)
    server = start(workspace, trust_file)

    accepted = probe(server.port, made.alpha, made.server_ca, accept)
    assert accepted.outcome is validation.Outcome.ACCEPTED, accepted.detail
    assert probes.verdict(accepted, want_accept=True) == ("True", "Accepted")
    if accept:
        # The same answer without the status named is no acceptance: only a 2xx is, by itself.
        plain = probe(server.port, made.alpha, made.server_ca)
        assert plain.outcome is validation.Outcome.INCONCLUSIVE, plain.detail
        assert probes.verdict(plain, want_accept=True) == ("Unknown", "Inconclusive")

    refused = probe(server.port, made.stranger, made.server_ca, accept)
    assert refused.outcome is validation.Outcome.REFUSED, refused.detail
    assert probes.verdict(refused, want_accept=True) == ("False", "Refused")
    assert probes.verdict(refused, want_accept=False) == ("True", "Refused")
    if server.refusal == launchers.HTTP_400:
        assert "400" in refused.detail
    else:
        assert "alert" in refused.detail

    # The endpoint's own certificate not vouched for by caSecretRef: a misconfiguration, and no
    # refusal, though the server is up and would refuse the stranger.
    untrusted = probe(server.port, made.stranger, made.alpha, accept)
    assert untrusted.outcome is validation.Outcome.UNREACHABLE, untrusted.detail
    assert "misconfiguration" in untrusted.detail
    assert probes.verdict(untrusted, want_accept=False) == ("Unknown", "Unreachable")

    # Stopped: nothing listens on its port any more. The positive control is the refusal above,
    # read from the same port.
    workspace.stop()
    assert not launchers.accepting(server.port)
    down = probe(server.port, made.stranger, made.server_ca, accept)
    assert down.outcome is validation.Outcome.UNREACHABLE, down.detail
    assert probes.verdict(down, want_accept=False) == ("Unknown", "Unreachable")

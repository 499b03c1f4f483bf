"""The receiver reloads its trust store and its own serving pair independently: a serving pair that
cannot be loaded (a renewal half-written, a key that does not match) is logged and the previous one
kept, and a trust change (an emergency's revocation) is applied all the same.

Both directories are written the way the kubelet writes a mounted Secret (trustdir.write_atomic), and
everything is judged from outside: which client certificates a fresh connection gets in with, and which
serving certificate a client is shown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests import conftest
from tests.unit import mtls_pki
from webhookcerts.receiver import server, trustdir


@pytest.fixture
def tls_dir(tmp_path: pathlib.Path, pki: mtls_pki.Pki) -> pathlib.Path:
    directory = tmp_path / "tls"
    trustdir.write_atomic(directory, pair_files(pki.server))
    return directory


@pytest.fixture
def rx(pki: mtls_pki.Pki, trust_dir: pathlib.Path, tls_dir: pathlib.Path) -> Iterator[server.Receiver]:
    config = server.Config(
        cert=tls_dir / "tls.crt", key=tls_dir / "tls.key", trust_dir=trust_dir, host="127.0.0.1", port=0
    )
    receiver = server.Receiver(config).start()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def renewed(pki: mtls_pki.Pki) -> mtls_pki.Pair:
    """The receiver's next serving certificate, from the same CA."""
    return mtls_pki.issued(pki.directory, "server-renewed", pki.server_ca, server=True)


def pair_files(pair: mtls_pki.Pair, key_of: mtls_pki.Pair | None = None) -> dict[str, bytes]:
    return {"tls.crt": pair.cert_pem, "tls.key": (key_of or pair).key_path.read_bytes()}


def visit(rx: server.Receiver, pki: mtls_pki.Pki, client: mtls_pki.Pair) -> tuple[bool, str]:
    """(whether a fresh connection with ``client`` gets an answer, the serving certificate's fingerprint)."""
    ctx = ssl.create_default_context(cafile=str(pki.server_ca.cert_path))
    ctx.load_cert_chain(client.cert_path, client.key_path)
    with (
        socket.create_connection(("127.0.0.1", rx.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        served = hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()
        try:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return tls.recv(12) == b"HTTP/1.1 200", served
        except (ssl.SSLError, ConnectionError):
            return False, served  # refused after the handshake (TLS 1.3 reports the alert on read)


def test_a_trust_change_is_applied_while_the_serving_pair_cannot_be_loaded(
    rx: server.Receiver,
    pki: mtls_pki.Pki,
    trust_dir: pathlib.Path,
    tls_dir: pathlib.Path,
    renewed: mtls_pki.Pair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.receiver")
    assert visit(rx, pki, pki.alpha) == (True, pki.server.fingerprint)
    assert visit(rx, pki, pki.beta)[0] is False

    # A renewal gone wrong: the new certificate beside a key that is not its own.
    trustdir.write_atomic(tls_dir, pair_files(renewed, key_of=pki.stranger))
    assert conftest.poll(lambda: rx.trust.serving_error is not None)
    # Then the emergency: alpha is compromised, beta replaces it.
    trustdir.write_atomic(trust_dir, {"ca.crt": pki.beta.cert_pem})

    assert conftest.poll(lambda: visit(rx, pki, pki.beta)[0]), "the trust change was dropped"
    assert visit(rx, pki, pki.alpha)[0] is False
    assert visit(rx, pki, pki.beta) == (True, pki.server.fingerprint)  # the pair that loaded, kept
    assert rx.trust.last_error is None
    assert "serving certificate tls.crt" in (rx.trust.serving_error or "")
    assert any('"serving_pair_reload_failed"' in r.getMessage() for r in caplog.records)
    assert "PRIVATE KEY" not in caplog.text
    assert "PRIVATE KEY" not in json.dumps(rx.health())

    # Repaired: the renewed pair is served, trust untouched, the error gone.
    trustdir.write_atomic(tls_dir, pair_files(renewed))
    assert conftest.poll(lambda: visit(rx, pki, pki.beta) == (True, renewed.fingerprint))
    assert rx.trust.serving_error is None
    assert visit(rx, pki, pki.alpha)[0] is False


def test_a_trust_change_and_a_broken_serving_pair_in_the_same_moment(
    rx: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path, tls_dir: pathlib.Path
) -> None:
    # Both changed before the watcher looks again: one reload sees both.
    trustdir.write_atomic(tls_dir, {"tls.crt": b"not a certificate", "tls.key": b"not a key"})
    trustdir.write_atomic(trust_dir, {"ca.crt": pki.beta.cert_pem})

    assert conftest.poll(lambda: visit(rx, pki, pki.beta)[0]), "the trust change was dropped"
    assert visit(rx, pki, pki.alpha)[0] is False
    assert rx.trust.serving_error is not None


def test_a_new_serving_pair_is_taken_while_the_trust_file_is_unusable(
    rx: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path, tls_dir: pathlib.Path, renewed: mtls_pki.Pair
) -> None:
    trustdir.write_atomic(trust_dir, {"ca.crt": b"not a certificate"})
    assert conftest.poll(lambda: rx.trust.last_error is not None)
    trustdir.write_atomic(tls_dir, pair_files(renewed))

    assert conftest.poll(lambda: visit(rx, pki, pki.alpha) == (True, renewed.fingerprint)), "pair not taken"
    assert visit(rx, pki, pki.beta)[0] is False  # the trust before the bad write, kept
    assert rx.trust.serving_error is None
    assert "no PEM certificate" in (rx.trust.last_error or "")

"""The probe's outcome read at the stage the endpoint spoke, against a tiny TLS server for each case
nginx and HAProxy cannot be made to produce (tests/e2e/test_validation_servers.py has those two).

Each stub serves one behaviour: a refusal in the handshake (TLS 1.2) or after it (TLS 1.3), a close
right after the client certificate, a close before any TLS, a server that is not TLS, silence, and an
HTTP answer of a given status. A refusal is Refused only once the certificate was sent; everything
before it is Unreachable; an answer proves acceptance only when it is a 2xx or a status the user named.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pydantic
import pytest

from tests.unit import mtls_pki
from webhookcerts.domain import models
from webhookcerts.service import probes, validation

Serve = Callable[[socket.socket], None]


class Stub:
    """A loopback listener that hands each connection to ``serve`` on a thread of its own."""

    def __init__(self, serve: Serve) -> None:
        self._serve = serve
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.released = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._serve(conn)

    def close(self) -> None:
        self.released.set()
        self._listener.close()


def _linger_until_the_client_closes(sock: socket.socket) -> None:
    """End our side and read until the client hangs up: closing with its bytes unread would send a
    reset, and the client would never read the alert the stub sent."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        while sock.recv(4096):
            pass


def tls_server(pki: mtls_pki.Pki, *, version: ssl.TLSVersion, answer: bytes | None, trusted: mtls_pki.Pair) -> Serve:
    """Requires a client certificate that ``trusted`` is; after the handshake reads the request and
    sends ``answer`` (None: closes without one)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = context.maximum_version = version
    context.load_cert_chain(pki.server.cert_path, pki.server.key_path)
    context.load_verify_locations(cadata=trusted.cert_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED

    def serve(conn: socket.socket) -> None:
        tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except ssl.SSLError:
            _linger_until_the_client_closes(tls)
            return
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = tls.recv(4096)
            if not chunk:
                return
            request += chunk
        if answer is not None:
            tls.sendall(answer)
        _linger_until_the_client_closes(tls)

    return serve


@pytest.fixture
def stubs() -> Iterator[Callable[[Serve], Stub]]:
    started: list[Stub] = []

    def start(serve: Serve) -> Stub:
        started.append(Stub(serve))
        return started[-1]

    yield start
    for stub in started:
        stub.close()


def probe(
    stub: Stub, client: mtls_pki.Pair, pki: mtls_pki.Pki, *, timeout: float = 30, accept: tuple[int, ...] = ()
) -> validation.Probe:
    url = f"https://127.0.0.1:{stub.port}/hook"
    key = client.key_path.read_bytes()
    return validation.probe(
        url, client.cert_pem, key, ca_pem=pki.server_ca.cert_pem, timeout=timeout, accept_status=accept
    )


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_a_tls_alert_after_the_certificate_is_a_refusal_in_either_version(
    version: ssl.TLSVersion, stubs: Callable[[Serve], Stub], pki: mtls_pki.Pki
) -> None:
    """TLS 1.2: the alert ends the handshake. TLS 1.3: the client's handshake is over when it sends
    its certificate; the alert is what the next read finds."""
    stub = stubs(tls_server(pki, version=version, answer=b"HTTP/1.1 200 OK\r\n\r\n", trusted=pki.alpha))
    accepted = probe(stub, pki.alpha, pki)
    assert accepted.outcome is validation.Outcome.ACCEPTED, accepted.detail  # the stub does accept
    refused = probe(stub, pki.stranger, pki)
    assert refused.outcome is validation.Outcome.REFUSED, refused.detail
    assert "alert" in refused.detail
    assert probes.verdict(refused, want_accept=False) == ("True", "Refused")


def test_a_close_without_an_answer_right_after_the_certificate_is_a_refusal(
    stubs: Callable[[Serve], Stub], pki: mtls_pki.Pki
) -> None:
    stub = stubs(tls_server(pki, version=ssl.TLSVersion.TLSv1_2, answer=None, trusted=pki.alpha))
    result = probe(stub, pki.alpha, pki)
    assert result.outcome is validation.Outcome.REFUSED, result.detail
    assert "closed" in result.detail


def test_a_close_before_any_tls_is_unreachable_never_a_refusal(
    stubs: Callable[[Serve], Stub], pki: mtls_pki.Pki
) -> None:
    """A port-forward or load balancer whose backend is down: it accepts the connection and drops it."""
    stub = stubs(lambda conn: None)  # closed as soon as accepted
    result = probe(stub, pki.stranger, pki)
    assert result.outcome is validation.Outcome.UNREACHABLE, result.detail
    assert probes.verdict(result, want_accept=False) == ("Unknown", "Unreachable")


def test_a_server_that_is_not_tls_is_unreachable(stubs: Callable[[Serve], Stub], pki: mtls_pki.Pki) -> None:
    """Plain HTTP on the port (http:// behind https://): even its 400 is no refusal of a certificate."""

    def plain(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        _linger_until_the_client_closes(conn)

    result = probe(stubs(plain), pki.stranger, pki)
    assert result.outcome is validation.Outcome.UNREACHABLE, result.detail
    assert "before the client certificate" in result.detail


def test_silence_is_unreachable(stubs: Callable[[Serve], Stub], pki: mtls_pki.Pki) -> None:
    """A black hole after the TCP handshake: the probe's own timeout ends it (short here: the outcome
    is what is checked, not how long it took)."""
    holder: list[Stub] = []

    def silent(conn: socket.socket) -> None:
        holder[0].released.wait(60)

    holder.append(stubs(silent))
    result = probe(holder[0], pki.stranger, pki, timeout=1)
    assert result.outcome is validation.Outcome.UNREACHABLE, result.detail
    assert "no answer" in result.detail


@pytest.mark.parametrize(
    ("status", "accept", "outcome"),
    [
        (204, (), validation.Outcome.ACCEPTED),
        (405, (), validation.Outcome.INCONCLUSIVE),
        (405, (405,), validation.Outcome.ACCEPTED),
        (404, (), validation.Outcome.INCONCLUSIVE),
        (503, (), validation.Outcome.INCONCLUSIVE),
        (400, (), validation.Outcome.REFUSED),
        (495, (), validation.Outcome.REFUSED),
        (496, (), validation.Outcome.REFUSED),
    ],
)
def test_only_a_2xx_or_a_named_status_is_an_acceptance(
    status: int,
    accept: tuple[int, ...],
    outcome: validation.Outcome,
    stubs: Callable[[Serve], Stub],
    pki: mtls_pki.Pki,
) -> None:
    answer = f"HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n".encode()
    stub = stubs(tls_server(pki, version=ssl.TLSVersion.TLSv1_3, answer=answer, trusted=pki.alpha))
    result = probe(stub, pki.alpha, pki, accept=accept)
    assert result.outcome is outcome, result.detail
    if outcome is validation.Outcome.INCONCLUSIVE:
        # Evidence of nothing: neither the next's acceptance nor the compromised one's refusal.
        assert probes.verdict(result, want_accept=True) == ("Unknown", "Inconclusive")
        assert probes.verdict(result, want_accept=False) == ("Unknown", "Inconclusive")


def test_a_ca_secret_without_a_certificate_is_a_misconfiguration(pki: mtls_pki.Pki) -> None:
    result = validation.probe(
        "https://127.0.0.1:9/",
        pki.alpha.cert_pem,
        pki.alpha.key_path.read_bytes(),
        ca_pem=b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
        timeout=30,
    )
    assert result.outcome is validation.Outcome.UNREACHABLE
    assert "misconfiguration" in result.detail and "caSecretRef" in result.detail


def test_the_ca_key_defaults_to_ca_crt_and_accept_status_cannot_name_a_refusal() -> None:
    spec = models.ValidationSpec.model_validate({"url": "https://x.example/", "caSecretRef": {"name": "ca"}})
    assert spec.ca_secret_ref is not None and spec.ca_secret_ref.key == "ca.crt"
    assert models.ValidationSpec.model_validate({"url": "https://x/", "acceptStatus": [405]}).accept_status == [405]
    with pytest.raises(pydantic.ValidationError, match="acceptStatus may not name"):
        models.ValidationSpec.model_validate({"url": "https://x/", "acceptStatus": [405, 400]})


def test_only_a_flights_first_plaintext_record_says_client_hello() -> None:
    """A ClientHello is the first record of its flight (after a ChangeCipherSpec in TLS 1.3's second
    ClientHello); a later, encrypted record whose first byte happens to be 1 is not one."""

    def record(kind: int, body: bytes) -> bytes:
        return bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body

    hello, certificate = record(22, b"\x01\x00\x00\x00"), record(22, b"\x0b\x00\x00\x00")
    change_cipher_spec, encrypted_finished = record(20, b"\x01"), record(22, b"\x01\x9a\x33")
    assert validation._carries_client_hello(hello)
    assert validation._carries_client_hello(change_cipher_spec + hello)
    assert not validation._carries_client_hello(certificate + change_cipher_spec + encrypted_finished)
    assert not validation._carries_client_hello(change_cipher_spec + record(23, b"\x01\x02"))

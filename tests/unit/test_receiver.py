"""The reference receiver against real clients (curl, openssl s_client, Python's ssl): who gets in, who
is refused, and that the trust store reloads without a restart and without dropping requests."""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import http_message_signatures
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests import conftest
from tests.unit import conftest as unit
from tests.unit import mtls_pki
from webhookcerts.domain import trust
from webhookcerts.receiver import server, signatures, trustdir

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def trust_dir(tmp_path: pathlib.Path, pki: mtls_pki.Pki) -> pathlib.Path:
    directory = tmp_path / "trust"
    trustdir.write_atomic(directory, {"ca.crt": trust_bundle(pki.alpha, pki.expired, pki.client_ca)})
    return directory


def trust_bundle(*pairs: mtls_pki.Pair) -> bytes:
    return b"".join(p.cert_pem for p in pairs)


def curl(
    rx: server.Receiver, pki: mtls_pki.Pki, client: mtls_pki.Pair | None, *extra: str, body: str = '{"event": 1}'
) -> tuple[int, str, str]:
    """(curl exit code, HTTP status or 000, stderr)."""
    args = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.server_ca.cert_path)]
    if client is not None:
        args += ["--cert", str(client.cert_path), "--key", str(client.key_path)]
    args += ["-H", "Content-Type: application/json", "--data", body, "-o", os.devnull, "-w", "%{http_code}"]
    args += [*extra, f"https://127.0.0.1:{rx.port}/webhooks"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout.strip(), result.stderr


def client_context(pki: mtls_pki.Pki, client: mtls_pki.Pair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.server_ca.cert_path))
    ctx.load_cert_chain(client.cert_path, client.key_path)
    return ctx


def post(conn: http.client.HTTPSConnection, body: bytes = b'{"event": 1}') -> http.client.HTTPResponse:
    conn.request("POST", "/webhooks", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response


def accepted(rx: server.Receiver, pki: mtls_pki.Pki, client: mtls_pki.Pair) -> bool:
    code, status, _ = curl(rx, pki, client)
    return code == 0 and status == "200"


# --- who gets in ---------------------------------------------------------------------------------


def test_a_trusted_client_delivers_and_is_logged_by_fingerprint(
    receiver: server.Receiver, pki: mtls_pki.Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.receiver")

    code, status, stderr = curl(receiver, pki, pki.alpha)

    assert (code, status) == (0, "200"), stderr
    deliveries = [json.loads(r.getMessage()) for r in caplog.records if '"delivery"' in r.getMessage()]
    assert len(deliveries) == 1
    assert deliveries[0]["client_fingerprint"] == pki.alpha.fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", deliveries[0]["client_fingerprint"])
    assert deliveries[0]["client_cn"] == "alpha"
    assert deliveries[0]["status"] == 200
    assert "PRIVATE KEY" not in caplog.text


def test_a_client_issued_by_a_trusted_ca_is_accepted(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    assert accepted(receiver, pki, pki.ca_issued)


def test_a_client_without_a_certificate_is_refused(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    code, status, _ = curl(receiver, pki, None)

    assert code != 0
    assert status == "000"
    assert conftest.poll(lambda: receiver.stats.handshake_failures["peer_did_not_return_a_certificate"] == 1)


def test_a_self_signed_stranger_is_refused(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    code, status, _ = curl(receiver, pki, pki.stranger)

    assert code != 0
    assert status == "000"
    assert conftest.poll(lambda: receiver.stats.handshake_failures["certificate_verify_failed"] == 1)


@pytest.mark.parametrize("which", ["expired", "ca_issued_expired"])
def test_an_expired_certificate_is_refused_even_when_listed(
    receiver: server.Receiver, pki: mtls_pki.Pki, which: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.receiver")

    code, status, _ = curl(receiver, pki, getattr(pki, which))

    assert code != 0
    assert status == "000"
    # curl's own message depends on whether it reads the alert before the close; the receiver's log
    # says why it refused.
    assert conftest.poll(lambda: "certificate has expired" in caplog.text)


def test_tls_1_1_is_refused_by_the_server(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    # SECLEVEL=0 makes sure this machine's openssl really offers TLS 1.1 (its defaults may not), so
    # the refusal below is the receiver's.
    base = [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{receiver.port}",
        "-CAfile",
        str(pki.server_ca.cert_path),
        "-cert",
        str(pki.alpha.cert_path),
        "-key",
        str(pki.alpha.key_path),
        "-cipher",
        "DEFAULT@SECLEVEL=0",
    ]
    old = subprocess.run([*base, "-tls1_1"], input="", capture_output=True, text=True, timeout=30)
    current = subprocess.run([*base, "-tls1_2"], input="", capture_output=True, text=True, timeout=30)

    assert old.returncode != 0
    assert "alert protocol version" in old.stdout + old.stderr
    assert conftest.poll(lambda: receiver.stats.handshake_failures["unsupported_protocol"] == 1)
    assert current.returncode == 0, current.stderr
    assert "Protocol  : TLSv1.2" in current.stdout


def test_a_session_resumed_across_a_swap_does_not_bring_a_removed_certificate_back(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    # Resuming a TLS 1.2 session skips certificate verification. The worst case: a connection
    # accepted before the swap whose ClientHello, offering a session from before it, arrives after.
    ctx = client_context(pki, pki.alpha)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    first = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=ctx)
    assert post(first).status == 200  # kept open, so its session stays in the server's cache
    assert isinstance(first.sock, ssl.SSLSocket)
    session = first.sock.session
    waiting = socket.create_connection(("127.0.0.1", receiver.port), timeout=10)
    try:
        assert conftest.poll(lambda: receiver.stats.connections == 2)
        trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.beta)})
        assert conftest.poll(lambda: receiver.trust.current.generation == 2)

        resumed = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=ctx)
        resumed.sock = ctx.wrap_socket(waiting, server_hostname="127.0.0.1", session=session)
        assert resumed.sock.session_reused  # the case under test really happened
        response = post(resumed)

        assert response.status == 421
        assert receiver.stats.responses[200] == 1
    finally:
        waiting.close()
        first.close()


# --- reloading -------------------------------------------------------------------------------------


def test_a_swapped_trust_store_applies_to_new_connections_without_restart(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    assert accepted(receiver, pki, pki.alpha)
    assert not accepted(receiver, pki, pki.beta)
    port = receiver.port

    trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.beta)})

    assert conftest.poll(lambda: accepted(receiver, pki, pki.beta))
    assert not accepted(receiver, pki, pki.alpha)
    assert not accepted(receiver, pki, pki.ca_issued)
    assert receiver.port == port
    assert receiver.trust.current.generation == 2
    assert receiver.trust.current.fingerprints == {pki.beta.fingerprint}


def test_a_store_that_trusts_nobody_is_loaded_and_refuses_everyone(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    # An emergency contained before its replacement exists: the operator writes the placeholder, and
    # the receiver must take it (an empty file would be refused and the old trust kept).
    assert accepted(receiver, pki, pki.alpha)
    trustdir.write_atomic(trust_dir, {"ca.crt": trust.assemble([])})
    assert conftest.poll(lambda: receiver.trust.current.generation == 2)
    assert receiver.trust.last_error is None
    assert not accepted(receiver, pki, pki.alpha)
    assert not accepted(receiver, pki, pki.client_ca)


def test_an_in_flight_request_completes_across_a_swap(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    body = b'{"event": "in flight", "padding": "................"}'
    ctx = client_context(pki, pki.alpha)
    with (
        socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            b"POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.beta)})
        assert conftest.poll(lambda: receiver.trust.current.generation == 2)
        tls.sendall(body[10:])
        response = http.client.HTTPResponse(tls)
        response.begin()

        assert response.status == 200
    assert not accepted(receiver, pki, pki.alpha)


def test_a_handshake_that_races_a_swap_is_judged_by_the_new_trust_store(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    # Both TCP connections are accepted (and wrapped with the old context) before the swap; their
    # ClientHellos arrive after it. sni_callback must move them onto the new context.
    first = socket.create_connection(("127.0.0.1", receiver.port), timeout=10)
    second = socket.create_connection(("127.0.0.1", receiver.port), timeout=10)
    try:
        assert conftest.poll(lambda: receiver.stats.connections == 2)
        trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.beta)})
        assert conftest.poll(lambda: receiver.trust.current.generation == 2)

        conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.beta))
        conn.sock = client_context(pki, pki.beta).wrap_socket(first, server_hostname="127.0.0.1")
        assert post(conn).status == 200

        refused = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
        refused.sock = client_context(pki, pki.alpha).wrap_socket(second, server_hostname="127.0.0.1")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            post(refused)
    finally:
        first.close()
        second.close()


def test_a_keep_alive_connection_of_a_removed_certificate_is_closed(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
    assert post(conn).status == 200

    trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.beta)})
    assert conftest.poll(lambda: receiver.trust.current.generation == 2)
    response = post(conn)

    assert response.status == 421
    assert response.getheader("Connection") == "close"
    assert receiver.stats.stale_connections_closed == 1
    conn.close()


def test_a_keep_alive_connection_of_a_still_trusted_certificate_goes_on(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
    assert post(conn).status == 200
    sock = conn.sock

    trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.alpha, pki.beta)})
    assert conftest.poll(lambda: receiver.trust.current.generation == 2)

    assert post(conn).status == 200
    assert conn.sock is sock
    assert receiver.stats.connections == 1
    conn.close()


def test_an_unusable_trust_file_keeps_the_previous_trust_store(
    receiver: server.Receiver, pki: mtls_pki.Pki, trust_dir: pathlib.Path
) -> None:
    trustdir.write_atomic(trust_dir, {"ca.crt": b"not a certificate"})

    assert conftest.poll(lambda: receiver.trust.last_error is not None)
    assert receiver.trust.current.generation == 1
    assert accepted(receiver, pki, pki.alpha)
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
    conn.request("GET", "/healthz")
    health = json.loads(conn.getresponse().read())
    assert "no PEM certificate" in health["trust_error"]
    conn.close()

    trustdir.write_atomic(trust_dir, {"ca.crt": trust_bundle(pki.beta)})
    assert conftest.poll(lambda: receiver.trust.last_error is None and receiver.trust.current.generation == 2)


# --- what a delivery must look like ------------------------------------------------------------------


def test_health_lists_the_trusted_fingerprints(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    health = json.loads(response.read())
    conn.close()

    assert response.status == 200
    assert {t["fingerprint"] for t in health["trusted"]} == {
        pki.alpha.fingerprint,
        pki.expired.fingerprint,
        pki.client_ca.fingerprint,
    }


@pytest.mark.parametrize(("body", "status"), [(b"not json", 400), (b"", 400), (b'{"ok": true}', 200)])
def test_malformed_bodies_are_refused(receiver: server.Receiver, pki: mtls_pki.Pki, body: bytes, status: int) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
    assert post(conn, body).status == status
    conn.close()


def test_a_wrong_unsigned_content_digest_is_refused(receiver: server.Receiver, pki: mtls_pki.Pki) -> None:
    body = b'{"event": 1}'
    conn = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=client_context(pki, pki.alpha))
    digest = http_message_signatures.ContentDigest.create(b'{"event": 2}')
    conn.request("POST", "/webhooks", body=body, headers={"Content-Type": "application/json", "Content-Digest": digest})
    response = conn.getresponse()
    response.read()
    conn.close()

    assert response.status == 400


@pytest.fixture(scope="module")
def provider_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    return mtls_pki.signing_key(tmp_path_factory.mktemp("provider-key"), "signing")


@pytest.fixture
def signing_receiver(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, provider_key: tuple[pathlib.Path, pathlib.Path]
) -> Iterator[server.Receiver]:
    rx = unit.start(
        pki, trust_dir, signature_key=provider_key[1], signature_key_id="provider-1", signature_scheme="rfc9421"
    )
    yield rx
    rx.close()


def _signed_post(
    rx: server.Receiver,
    pki: mtls_pki.Pki,
    signer: signatures.Signer | None,
    signed_body: bytes,
    sent_body: bytes,
) -> int:
    headers = {"Content-Type": "application/json"}
    if signer is not None:
        headers = signer.sign("POST", f"https://127.0.0.1:{rx.port}/webhooks", headers, signed_body)
    conn = http.client.HTTPSConnection("127.0.0.1", rx.port, context=client_context(pki, pki.alpha))
    conn.request("POST", "/webhooks", body=sent_body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def test_a_valid_signature_is_accepted(
    signing_receiver: server.Receiver, pki: mtls_pki.Pki, provider_key: tuple[pathlib.Path, pathlib.Path]
) -> None:
    signer = signatures.Signer(signatures.load_private_key(provider_key[0]), key_id="provider-1")
    body = b'{"event": "signed"}'

    assert _signed_post(signing_receiver, pki, signer, body, body) == 200


def test_a_tampered_body_is_refused(
    signing_receiver: server.Receiver, pki: mtls_pki.Pki, provider_key: tuple[pathlib.Path, pathlib.Path]
) -> None:
    signer = signatures.Signer(signatures.load_private_key(provider_key[0]), key_id="provider-1")

    assert _signed_post(signing_receiver, pki, signer, b'{"amount": 1}', b'{"amount": 9}') == 401


def test_an_unsigned_delivery_is_refused_when_signatures_are_required(
    signing_receiver: server.Receiver, pki: mtls_pki.Pki
) -> None:
    assert _signed_post(signing_receiver, pki, None, b"{}", b"{}") == 401


def test_a_signature_by_another_key_or_key_id_is_refused(
    signing_receiver: server.Receiver, pki: mtls_pki.Pki, provider_key: tuple[pathlib.Path, pathlib.Path]
) -> None:
    other = signatures.Signer(ec.generate_private_key(ec.SECP256R1()), key_id="provider-1")
    wrong_id = signatures.Signer(signatures.load_private_key(provider_key[0]), key_id="someone-else")

    assert _signed_post(signing_receiver, pki, other, b"{}", b"{}") == 401
    assert _signed_post(signing_receiver, pki, wrong_id, b"{}", b"{}") == 401


def test_a_stale_signature_is_refused(
    signing_receiver: server.Receiver, pki: mtls_pki.Pki, provider_key: tuple[pathlib.Path, pathlib.Path]
) -> None:
    signer = signatures.Signer(signatures.load_private_key(provider_key[0]), key_id="provider-1")
    url = f"https://127.0.0.1:{signing_receiver.port}/webhooks"
    an_hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    headers = signer.sign("POST", url, {"Content-Type": "application/json"}, b"{}", created=an_hour_ago)

    conn = http.client.HTTPSConnection("127.0.0.1", signing_receiver.port, context=client_context(pki, pki.alpha))
    conn.request("POST", "/webhooks", body=b"{}", headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()

    assert response.status == 401


# --- the command line ---------------------------------------------------------------------------------


def test_the_cli_serves_and_stops_on_sigterm(pki: mtls_pki.Pki, trust_dir: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhookcerts",
            "receiver",
            "--cert",
            str(pki.server.cert_path),
            "--key",
            str(pki.server.key_path),
            "--trust-dir",
            str(trust_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        listening = json.loads(proc.stderr.readline())
        assert listening["event"] == "listening"
        port = int(listening["address"].rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(pki, pki.alpha))
        assert post(conn).status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

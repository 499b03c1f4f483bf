"""The running receiver under a slowloris: connections that are opened and then left idle, before or
after the TLS handshake, cost no thread and do not stop deliveries from a real client; a handshake that
never completes is closed at its deadline; the connection cap makes room for a newcomer.

Each test first proves that the idle connections are really there (the receiver counts them in the
state they were left in) and, after the deliveries, that they were held open the whole time (no EOF
on any of them), so "deliveries went through" cannot mean "the receiver had already dropped them".
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests import conftest, processes
from tests.unit import conftest as unit
from tests.unit import mtls_pki
from webhookcerts.receiver import server

IDLE = 500
# The first bytes of a TLS record carrying a ClientHello, and no more: the handshake can never finish.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def curl_delivery(rx: server.Receiver | int, pki: mtls_pki.Pki) -> str:
    """One delivery by curl, a client in its own process; its HTTP status (000 if none)."""
    port = rx if isinstance(rx, int) else rx.port
    args = ["curl", "-sS", "--max-time", "60", "--cacert", str(pki.server_ca.cert_path)]
    args += ["--cert", str(pki.alpha.cert_path), "--key", str(pki.alpha.key_path)]
    args += ["-H", "Content-Type: application/json", "--data", '{"event": "real"}', "-o", os.devnull]
    args += ["-w", "%{http_code}", f"https://127.0.0.1:{port}/webhooks"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120).stdout.strip()


def still_open(sock: socket.socket | ssl.SSLSocket) -> bool:
    """No EOF and no reset waiting on ``sock``: the receiver has not closed it."""
    raw = sock if not isinstance(sock, ssl.SSLSocket) else socket.socket(fileno=os.dup(sock.fileno()))
    raw.setblocking(False)
    try:
        raw.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        if raw is not sock:
            raw.close()
        else:
            raw.setblocking(True)
    return False  # b"": end of stream; or bytes: the receiver said something (an alert) to an idle peer


def open_raw(rx: server.Receiver | int, count: int, opened: list[socket.socket]) -> None:
    port = rx if isinstance(rx, int) else rx.port
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        opened.append(sock)
        if i % 2:
            sock.sendall(PARTIAL_CLIENT_HELLO)


def test_connections_that_never_finish_the_handshake_cost_no_thread_and_do_not_stop_deliveries(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, sockets: list[socket.socket]
) -> None:
    # A deadline far beyond the test, so that it is not the deadline that frees the receiver.
    rx = unit.start(pki, trust_dir, handshake_timeout=3600.0)
    try:
        threads = set(threading.enumerate())
        open_raw(rx, IDLE, sockets)  # half of them silent, half stuck in a ClientHello

        assert conftest.poll(lambda: rx.connection_states()["handshaking"] == IDLE, timeout=60)
        added = len(set(threading.enumerate()) - threads)
        assert added == 0, f"{added} threads for {IDLE} connections before authentication"
        statuses = [curl_delivery(rx, pki) for _ in range(5)]

        assert statuses == ["200"] * 5
        assert rx.connection_states()["handshaking"] == IDLE, rx.connection_states()
        assert all(still_open(s) for s in sockets), "the idle connections were not held open"
        assert rx.connection_states()["evicted"] == 0
    finally:
        rx.close()


def test_connections_that_finish_the_handshake_and_never_send_a_request_do_not_stop_deliveries(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, sockets: list[socket.socket]
) -> None:
    rx = unit.start(pki, trust_dir, idle_timeout=3600.0)
    ctx = ssl.create_default_context(cafile=str(pki.server_ca.cert_path))
    ctx.load_cert_chain(pki.alpha.cert_path, pki.alpha.key_path)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the handshake is over when wrap_socket returns
    try:
        threads = set(threading.enumerate())
        for _ in range(IDLE):
            raw = socket.create_connection(("127.0.0.1", rx.port), timeout=30)
            sockets.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))

        assert conftest.poll(lambda: rx.connection_states()["idle"] == IDLE, timeout=60)
        added = len(set(threading.enumerate()) - threads)
        assert added == 0, f"{added} threads for {IDLE} idle authenticated connections"
        statuses = [curl_delivery(rx, pki) for _ in range(5)]

        assert statuses == ["200"] * 5
        # curl's own connections were idle too for a moment, until the receiver read their close.
        assert conftest.poll(lambda: rx.connection_states()["idle"] == IDLE), rx.connection_states()
        assert all(still_open(s) for s in sockets), "the idle connections were not held open"
    finally:
        rx.close()


def test_a_handshake_that_never_completes_is_closed_at_its_deadline_under_load(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, sockets: list[socket.socket]
) -> None:
    rx = unit.start(pki, trust_dir, handshake_timeout=1.0)
    try:
        open_raw(rx, 200, sockets)

        # Each one ends from the receiver's side: EOF or a reset, whichever the kernel delivers.
        for sock in sockets:
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        assert conftest.poll(lambda: rx.stats.handshake_failures["timeout"] == 200)
        assert rx.connection_states()["handshaking"] == 0
        assert curl_delivery(rx, pki) == "200"
    finally:
        rx.close()


def test_at_the_connection_cap_a_newcomer_takes_the_place_of_the_oldest_unfinished_handshake(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, sockets: list[socket.socket]
) -> None:
    rx = unit.start(pki, trust_dir, handshake_timeout=3600.0, max_connections=50)
    try:
        open_raw(rx, 50, sockets)
        assert conftest.poll(lambda: rx.connection_states()["handshaking"] == 50)

        assert curl_delivery(rx, pki) == "200"

        assert rx.connection_states()["evicted"] == 1
        with contextlib.suppress(ConnectionResetError):
            assert sockets[0].recv(1) == b""  # the oldest went
        assert all(still_open(s) for s in sockets[1:])
    finally:
        rx.close()


def open_connections(port: int, pki: mtls_pki.Pki) -> dict[str, int]:
    ctx = ssl.create_default_context(cafile=str(pki.server_ca.cert_path))
    ctx.load_cert_chain(pki.alpha.cert_path, pki.alpha.key_path)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    try:
        conn.request("GET", "/healthz")
        states: dict[str, int] = json.loads(conn.getresponse().read())["open_connections"]
        return states
    finally:
        conn.close()


def test_the_command_line_sets_the_connection_cap(
    pki: mtls_pki.Pki, trust_dir: pathlib.Path, tmp_path: pathlib.Path, sockets: list[socket.socket]
) -> None:
    log = tmp_path / "receiver.log"
    proc = processes.receiver(
        pki.server.cert_path,
        pki.server.key_path,
        trust_dir,
        log,
        "--max-connections",
        "3",
        "--handshake-timeout",
        "3600",
    )
    try:
        port = processes.wait_for(lambda: processes.listening_port(proc, log), timeout=60, what="the receiver")
        open_raw(port, 2, sockets)
        # The positive control: both are held (the health request is the third connection).
        processes.wait_for(lambda: open_connections(port, pki)["handshaking"] == 2, timeout=60, what="2 held")
        open_raw(port, 1, sockets)

        assert curl_delivery(port, pki) == "200"  # the fourth: the oldest handshake makes room

        processes.wait_for(lambda: "connection_evicted" in log.read_text(), timeout=60, what="the eviction logged")
        with contextlib.suppress(ConnectionResetError):
            assert sockets[0].recv(1) == b""
        assert all(still_open(s) for s in sockets[1:])
    finally:
        processes.stop(proc)

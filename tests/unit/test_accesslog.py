"""The access-log reader without a server: the parsers' edges, forged fields, and following a log.

test_accesslog_servers.py parses what the real nginx and HAProxy write; here the cases a server does not
produce on demand: a client putting the fields in its request, malformed and overlong lines (counted,
never echoed), rotation by rename and by truncation, a log that appears after the start, a FIFO.
"""

from __future__ import annotations

import logging
import os
import pathlib
import threading
from collections.abc import Iterator

import pytest

from tests import conftest
from webhookcerts.receiver import accesslog, logsources

SHA1_A = "033e6098c61a4bb1589e95ccf167011dc31eaef0"
SHA1_B = "462301dbc7efd84e4de6f424ce1c20935a6c2f92"
SHA256_A = "7f177225a85ff7c8fa2a690be9d849d7923d3474bbea4a5cc841baa37c19ee3f"


def nginx(fp: str, verify: str, before: str = '127.0.0.1 [2026-12-06T10:42:34+00:00] "GET /x HTTP/1.1" 200') -> str:
    return f'{before} webhookcerts fp={fp} verify="{verify}"'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (nginx(SHA1_A, "SUCCESS"), accesslog.Presentation(True, sha1=SHA1_A)),
        (nginx(SHA1_B, "FAILED:self-signed certificate"), accesslog.Presentation(False, sha1=SHA1_B)),
        (nginx(SHA1_A.upper(), "FAILED:certificate has expired"), accesslog.Presentation(False, sha1=SHA1_A)),
        (nginx("-", "NONE"), None),
        (f"webhookcerts fp={SHA1_A} verify=SUCCESS", accesslog.Presentation(True, sha1=SHA1_A)),  # unquoted
        # A client's request line carrying the fields comes before the server's own: the last ones count.
        (
            nginx("-", "NONE", f'"GET /webhookcerts fp={SHA1_A} verify="SUCCESS" HTTP/1.1" 400'),
            None,
        ),
    ],
)
def test_nginx_lines(line: str, expected: accesslog.Presentation | None) -> None:
    assert accesslog.parse_nginx(line) == expected


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (f"fp={SHA1_A.upper()} verify=0 err=0 ca_err=0", accesslog.Presentation(True, sha1=SHA1_A)),
        (f"fp={SHA1_B.upper()} verify=- err=18 ca_err=0", accesslog.Presentation(False, sha1=SHA1_B)),
        (f"fp={SHA1_B.upper()} verify=- err=0 ca_err=20", accesslog.Presentation(False, sha1=SHA1_B)),
        (f"fp={SHA1_B.upper()} verify=18 err=18 ca_err=0", accesslog.Presentation(False, sha1=SHA1_B)),  # optional
        ("fp=- verify=- err=0 ca_err=0", None),  # no certificate
        (f"fp={SHA1_A.upper()} verify=- err=0 ca_err=0", None),  # verified, then the handshake failed
    ],
)
def test_haproxy_lines(tail: str, expected: accesslog.Presentation | None) -> None:
    assert (
        accesslog.parse_haproxy(f"127.0.0.1:35492 [06/Dec/2026:10:45:37.125] webhooks~ 200 webhookcerts {tail}")
        == expected
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"webhookcerts-presentation sha256={SHA256_A} verdict=accepted", accesslog.Presentation(True, SHA256_A)),
        (f"webhookcerts-presentation sha1={SHA1_A} verdict=refused", accesslog.Presentation(False, sha1=SHA1_A)),
        (
            f"2026-12-06T10:00:00Z envoy: webhookcerts-presentation sha256={SHA256_A.upper()} sha1={SHA1_A} "
            "verdict=accepted",
            accesslog.Presentation(True, SHA256_A, SHA1_A),
        ),
    ],
)
def test_line_format(line: str, expected: accesslog.Presentation) -> None:
    assert accesslog.parse_line(line) == expected


@pytest.mark.parametrize(
    ("format", "line"),
    [
        ("nginx", "127.0.0.1 - - GET / 200"),  # the fields not configured
        ("nginx", nginx("xyz", "SUCCESS")),
        ("nginx", nginx(SHA1_A, "MAYBE")),
        ("nginx", f'webhookcerts fp={SHA1_A} verify="SUCCESS'),
        ("nginx", f'webhookcerts fp={SHA1_A} verify=SUCCESS 127.0.0.1="x'),
        ("haproxy", f"webhookcerts fp={SHA1_A} err=0"),
        ("haproxy", f"webhookcerts fp={SHA1_A} verify=zero err=0 ca_err=0"),
        ("line", f"webhookcerts-presentation verdict=accepted sha256={SHA1_A}"),  # a sha1 is not a sha256
        ("line", f"webhookcerts-presentation sha1={SHA1_A} verdict=maybe"),
        ("line", "webhookcerts-presentation verdict=accepted"),
    ],
)
def test_malformed_lines_say_why_without_the_line(format: str, line: str) -> None:
    with pytest.raises(accesslog.Malformed) as raised:
        accesslog.PARSERS[format](line)
    assert "127.0.0.1" not in str(raised.value) and SHA1_A not in str(raised.value)


def test_malformed_lines_are_counted_once_a_minute_never_echoed(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    counter = accesslog.MalformedLines("access.log", every=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="webhookcerts.trust_sync.access_log")
    counter.add("no fields")  # the first is said at once
    for _ in range(500):
        counter.add("no fields")
    now[0] += 59
    counter.flush()
    assert len(caplog.records) == 1
    now[0] += 1
    counter.flush()
    assert len(caplog.records) == 2 and '"lines": 500' in caplog.records[1].getMessage()
    assert counter.total == 501


class Following:
    """``accesslog.follow`` of ``source`` on a thread, collecting what it records."""

    def __init__(self, source: str, format: str = "line", **options: object) -> None:
        self.seen: list[accesslog.Presentation] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=accesslog.follow,
            args=(source, format, self.seen.append),
            kwargs={"stop": self.stop, "poll": 0.02, **options},
            daemon=True,
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def following() -> Iterator[list[Following]]:
    started: list[Following] = []
    yield started
    for one in started:
        one.close()


def line(sha1: str, verdict: str = "accepted") -> bytes:
    return f"webhookcerts-presentation sha1={sha1} verdict={verdict}\n".encode()


def append(path: pathlib.Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def opened(caplog: pytest.LogCaptureFixture, how: str) -> int:
    return sum('"access_log_opened"' in r.getMessage() and f'"from": "{how}"' in r.getMessage() for r in caplog.records)


def test_a_file_is_read_from_its_end_and_followed_across_rotation_and_truncation(
    tmp_path: pathlib.Path, following: list[Following], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync.access_log")
    log = tmp_path / "access.log"
    log.write_bytes(line(SHA1_B) * 3)  # before the start: not counted
    reader = Following(str(log))
    following.append(reader)
    assert conftest.poll(lambda: opened(caplog, "end") == 1, timeout=30)
    # The line appended after the open is seen: a positive control for the three before it.
    append(log, line(SHA1_A))
    assert conftest.poll(lambda: len(reader.seen) == 1, timeout=30)
    assert reader.seen == [accesslog.Presentation(True, sha1=SHA1_A)]

    # Rotation by rename (logrotate's default): the rest of the old file, then the new one from its start.
    append(log, line(SHA1_A, "refused"))
    log.rename(tmp_path / "access.log.1")
    log.write_bytes(line(SHA1_B))
    assert conftest.poll(lambda: len(reader.seen) == 3, timeout=30)
    assert reader.seen[1:] == [accesslog.Presentation(False, sha1=SHA1_A), accesslog.Presentation(True, sha1=SHA1_B)]

    # copytruncate: the same file, emptied, written again from 0.
    with log.open("r+b") as out:
        out.truncate(0)
    assert conftest.poll(lambda: any('"access_log_truncated"' in r.getMessage() for r in caplog.records), 30)
    append(log, line(SHA1_A))
    assert conftest.poll(lambda: len(reader.seen) == 4, timeout=30)
    assert reader.seen[3] == accesslog.Presentation(True, sha1=SHA1_A)


def test_a_log_that_appears_later_is_read_from_its_start(
    tmp_path: pathlib.Path, following: list[Following], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync.access_log")
    log = tmp_path / "later.log"
    reader = Following(str(log))
    following.append(reader)
    assert conftest.poll(lambda: any('"access_log_unavailable"' in r.getMessage() for r in caplog.records), 30)
    log.write_bytes(line(SHA1_A) + line(SHA1_B, "refused"))
    assert conftest.poll(lambda: len(reader.seen) == 2, timeout=30)


def test_an_overlong_line_is_cut_and_counted_and_memory_stays_bounded(
    tmp_path: pathlib.Path, following: list[Following], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync.access_log")
    log = tmp_path / "access.log"
    log.touch()
    reader = Following(str(log), line_cap=256)
    following.append(reader)
    assert conftest.poll(lambda: opened(caplog, "end") == 1, timeout=30)
    append(log, line(SHA1_A))
    assert conftest.poll(lambda: len(reader.seen) == 1, timeout=30)
    # One megabyte without a newline, in pieces, then a good line: the good line still counts.
    for _ in range(16):
        append(log, b"x" * 65536)
    append(log, b"\n" + line(SHA1_B))
    assert conftest.poll(lambda: len(reader.seen) == 2, timeout=30)
    said = [r.getMessage() for r in caplog.records if "access_log_malformed" in r.getMessage()]
    assert said and "longer than 256 bytes" in said[0] and "xxxx" not in said[0]


def test_lines_lines_split_and_cut() -> None:
    lines = accesslog._Lines(8)
    assert list(lines.feed(b"abc")) == []
    assert list(lines.feed(b"de\nfg\n")) == ["abcde", "fg"]
    assert list(lines.feed(b"0123456789")) == [None]
    assert list(lines.feed(b"more\nok\n")) == ["ok"]


def test_a_fifo_is_read_as_a_stream_and_survives_its_writer_leaving(
    tmp_path: pathlib.Path, following: list[Following], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync.access_log")
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = Following(str(fifo))
    following.append(reader)
    assert conftest.poll(lambda: opened(caplog, "fifo") == 1, timeout=30)
    for expected in (1, 2):  # two writers, one after the other: the second is read too
        # Non-blocking: with no reader left the open fails (ENXIO) instead of waiting for one.
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(writer, line(SHA1_A))
        finally:
            os.close(writer)
        assert conftest.poll(lambda n=expected: len(reader.seen) == n, timeout=30)


def test_a_pipe_is_read_until_it_ends() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, line(SHA1_A) + b"partial")
        os.close(write_end)
        chunks = list(logsources._stream_chunks(read_end, threading.Event(), 0.02))
    finally:
        os.close(read_end)
    assert b"".join(c for c in chunks if c) == line(SHA1_A) + b"partial"


@pytest.mark.parametrize("source", ["udp://10.0.0.1:5140", "udp://0.0.0.0:5140", "udp://localhost", "udp://x:1"])
def test_syslog_is_taken_only_on_the_loopback(source: str) -> None:
    with pytest.raises(ValueError, match=r"loopback|expected"):
        logsources.udp_address(source)
    assert logsources.udp_address("udp://127.0.0.1:5140") == ("127.0.0.1", 5140)
    assert logsources.udp_address("/var/log/nginx/access.log") is None

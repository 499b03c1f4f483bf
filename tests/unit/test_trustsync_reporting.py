"""trust-sync's reporting options without an API server: what it refuses, the trust hash it hands on, and the
whole chain from a log line to a written report through the CLI (the writer replaced by a recorder).

tests/integration/test_trustsync_reports.py runs the same with a real API server, nginx and HAProxy.
"""

from __future__ import annotations

import logging
import pathlib
import signal
import threading
from collections.abc import Iterator
from typing import cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests import conftest, whc
from webhookcerts.cli import main as cli_main
from webhookcerts.domain import names, reports
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import reports as kube_reports
from webhookcerts.kube import secretwatch
from webhookcerts.receiver import trustsync

CLIENTS = cast(kube_client.Clients, object())
SHA1 = "033e6098c61a4bb1589e95ccf167011dc31eaef0"
POD = {"POD_NAME": "endpoint-0", "POD_NAMESPACE": "ns", "POD_UID": "0d6f1a9e-7c1b-4c56-9d55-0123456789ab"}


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in POD.items():
        monkeypatch.setenv(key, value)


def versions(monkeypatch: pytest.MonkeyPatch, *script: secretwatch.SecretVersion) -> None:
    def watch_secret(
        clients: kube_client.Clients, namespace: str, name: str, *, stop: threading.Event | None = None
    ) -> Iterator[secretwatch.SecretVersion]:
        yield from script

    monkeypatch.setattr(secretwatch, "watch_secret", watch_secret)


def test_the_trust_hash_is_that_of_the_version_written_as_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    pem = whc.self_signed_pem("client")
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    script = [
        secretwatch.SecretVersion("1", {"ca.crt": pem}, {names.TRUST_HASH_ANNOTATION: "one"}),
        secretwatch.SecretVersion("2", {"ca.crt": pem}, {}),  # unchanged bytes, no annotation: not known
        secretwatch.SecretVersion("3", {"ca.crt": pem + pem}, {names.TRUST_HASH_ANNOTATION: "three"}),
        # A private key in ca.crt is never written: the directory keeps version 3, which is not version 4.
        secretwatch.SecretVersion("4", {"ca.crt": key_pem}, {names.TRUST_HASH_ANNOTATION: "four"}),
    ]
    versions(monkeypatch, *script)
    told: list[str | None] = []
    config = trustsync.Config(namespace="ns", name="trust", directory=tmp_path / "trust")
    trustsync.sync(CLIENTS, config, on_synced=told.append)
    assert told == ["one", None, "three", None]


@pytest.mark.parametrize(
    ("extra", "env", "says"),
    [
        (["--access-log", "/x.log"], POD, "--access-log needs --access-log-format"),
        (["--access-log-format", "nginx"], POD, "need --access-log"),
        (["--access-log", "/x.log", "--access-log-format", "nginx", "--once"], POD, "not with --once"),
        (["--access-log", "/x.log", "--access-log-format", "nginx"], {}, "POD_NAME, POD_NAMESPACE, POD_UID not set"),
        (
            ["--access-log", "/x.log", "--access-log-format", "line"],
            {**POD, "POD_NAMESPACE": "elsewhere"},
            "a report can name only a trust Secret of its pod's namespace",
        ),
        (["--access-log", "udp://10.1.2.3:5140", "--access-log-format", "haproxy"], POD, "not a loopback address"),
    ],
)
def test_reporting_that_cannot_work_is_refused_at_start(
    extra: list[str],
    env: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
) -> None:
    for key in POD:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(kube_client, "load", lambda kubeconfig, context: CLIENTS)
    assert cli_main.main(["trust-sync", "--secret", "ns/trust", "--dir", str(tmp_path), *extra]) == 2
    assert says in capsys.readouterr().err


def test_a_log_line_reaches_the_report_through_the_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, pod_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The CLI wires the log reader, the tally, the reporter and the trust hash together; the watch is
    scripted, the API writer replaced by a recorder; the sync returns once the report holds the line."""
    log = tmp_path / "access.log"
    written: list[reports.PresentationReportSpec] = []

    class Recorder:
        def __init__(self, clients: kube_client.Clients, *, namespace: str, pod_name: str, pod_uid: str) -> None:
            assert (namespace, pod_name, pod_uid) == (POD["POD_NAMESPACE"], POD["POD_NAME"], POD["POD_UID"])

        def __call__(self, spec: reports.PresentationReportSpec) -> None:
            written.append(spec)

    def fake_sync(
        clients: kube_client.Clients,
        cfg: trustsync.Config,
        once: bool = False,
        on_synced: object = None,
    ) -> int:
        assert callable(on_synced)
        on_synced("hash-1")
        # The log is read from its end: a line is appended once the reader has it open.
        assert conftest.poll(lambda: '"access_log_opened"' in caplog.text, timeout=30)
        log.write_text(f"webhookcerts-presentation sha1={SHA1} verdict=accepted\n")
        assert conftest.poll(lambda: any(s.certificates for s in written), timeout=30)
        return 0

    log.touch()
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync.access_log")
    monkeypatch.setattr(kube_client, "load", lambda kubeconfig, context: CLIENTS)
    monkeypatch.setattr(kube_reports, "Writer", Recorder)
    monkeypatch.setattr(trustsync, "sync", fake_sync)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    argv = ["trust-sync", "--secret", "ns/trust", "--dir", str(tmp_path / "d"), "--access-log", str(log)]
    argv += ["--access-log-format", "line", "--reporter", "envoy", "--report-interval", "1"]
    assert cli_main.main(argv) == 0

    last = written[-1]  # the last write, at stop: what was counted up to then
    assert (last.reporter, last.trust_secret_name, last.trust_hash) == ("envoy", "trust", "hash-1")
    assert [(c.sha1, c.accepted, c.refused) for c in last.certificates] == [(SHA1, 1, 0)]


def test_a_report_write_that_hangs_never_holds_up_a_trust_update(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, pod_env: None
) -> None:
    """The API server hangs on the report (the writer blocks) while the Secret changes twice: both versions
    reach the directory while the write is still stuck."""
    directory, pems = tmp_path / "trust", [whc.self_signed_pem(f"client-{i}") for i in range(3)]
    entered, inside, release = threading.Event(), threading.Event(), threading.Event()
    written: list[tuple[bytes, bool]] = []  # each version in the directory, and whether the write was stuck then

    class Stuck:
        def __init__(self, clients: kube_client.Clients, **identity: str) -> None:
            pass

        def __call__(self, spec: reports.PresentationReportSpec) -> None:
            inside.set()
            entered.set()
            release.wait(10)  # bounded: were the write in the watch's way, the test fails, not hangs
            inside.clear()

    def watch_secret(
        clients: kube_client.Clients, namespace: str, name: str, *, stop: threading.Event | None = None
    ) -> Iterator[secretwatch.SecretVersion]:
        yield secretwatch.SecretVersion("1", {"ca.crt": pems[0]}, {names.TRUST_HASH_ANNOTATION: "one"})
        assert entered.wait(30), "the reporter never wrote"
        for number in (2, 3):
            yield secretwatch.SecretVersion(str(number), {"ca.crt": pems[number - 1]})
            written.append(((directory / "ca.crt").read_bytes(), inside.is_set()))
        release.set()

    monkeypatch.setattr(kube_client, "load", lambda kubeconfig, context: CLIENTS)
    monkeypatch.setattr(kube_reports, "Writer", Stuck)
    monkeypatch.setattr(secretwatch, "watch_secret", watch_secret)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    log = tmp_path / "access.log"
    log.touch()
    argv = ["trust-sync", "--secret", "ns/trust", "--dir", str(directory), "--access-log", str(log)]
    assert cli_main.main([*argv, "--access-log-format", "nginx"]) == 0
    assert written == [(pems[1], True), (pems[2], True)]

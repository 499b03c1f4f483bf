"""trust-sync's truststore formats and its reload command, driven by a scripted Secret watch.

The watch is replaced by a list of versions, so each test says exactly what the API server delivered
(repeats included, as after a re-list); the directory, the stores and the command are real.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests import processes, whc
from webhookcerts.cli import main as cli_main
from webhookcerts.devcluster import base as devbase
from webhookcerts.domain import trust, truststores
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secretwatch
from webhookcerts.receiver import trustdir, trustsync

KEYTOOL = shutil.which("keytool")
needs_keytool = pytest.mark.skipif(KEYTOOL is None, reason="keytool (a JDK) is not installed: nothing reads the stores")
CLIENTS = cast(kube_client.Clients, object())  # the scripted watch never uses it


def certificate(cn: str) -> bytes:
    return whc.self_signed_pem(cn)


@pytest.fixture(scope="module")
def certs() -> list[bytes]:
    return [certificate(f"client-{i}") for i in range(3)]


def fingerprints(pem: bytes) -> list[str]:
    return sorted(
        ":".join(f"{b:02X}" for b in c.fingerprint(hashes.SHA256())) for c in x509.load_pem_x509_certificates(pem)
    )


def scripted(
    monkeypatch: pytest.MonkeyPatch,
    versions: Sequence[dict[str, bytes] | None],
    before_next: Callable[[], None] | None = None,
) -> None:
    """Make the watch deliver exactly these Secret contents (None: the Secret is absent), then end;
    ``before_next`` runs before each version after the first (to let a reload command finish)."""

    def watch_secret(
        clients: kube_client.Clients, namespace: str, name: str, *, stop: threading.Event | None = None
    ) -> Iterator[secretwatch.SecretVersion]:
        for number, data in enumerate(versions, start=1):
            if number > 1 and before_next is not None:
                before_next()
            yield secretwatch.SecretVersion(str(number), data)

    monkeypatch.setattr(secretwatch, "watch_secret", watch_secret)


def sync(
    monkeypatch: pytest.MonkeyPatch,
    config: trustsync.Config,
    versions: Sequence[dict[str, bytes] | None],
    before_next: Callable[[], None] | None = None,
) -> int:
    scripted(monkeypatch, versions, before_next)
    return trustsync.sync(CLIENTS, config)


def config(directory: pathlib.Path, **kwargs: Any) -> trustsync.Config:
    return trustsync.Config(namespace="ns", name="trust", directory=directory, **kwargs)


def records(caplog: pytest.LogCaptureFixture, *events: str) -> list[dict[str, Any]]:
    found = []
    for record in caplog.records:
        try:
            parsed = json.loads(record.getMessage())
        except ValueError:
            continue
        if isinstance(parsed, dict) and parsed.get("event") in events:
            found.append({**parsed, "level": record.levelname})
    return found


def runs_ended(caplog: pytest.LogCaptureFixture) -> Callable[[], None]:
    """Waits until every reload command started has ended: a new version would kill one still going
    (test_trustsync_exec.py), and these tests look at each run to its end."""

    def wait() -> None:
        processes.wait_for(
            lambda: len(records(caplog, "exec", "exec_failed")) >= len(records(caplog, "exec_started")),
            timeout=60,
            what="the reload command to end",
        )

    return wait


def keytool_fingerprints(path: pathlib.Path, password: str, store_type: str) -> list[str]:
    assert KEYTOOL is not None
    listed = subprocess.run(
        [KEYTOOL, "-list", "-keystore", str(path), "-storepass", password, "-storetype", store_type],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    lines = listed.stdout.splitlines()
    entries = [line for line in lines if ", trustedCertEntry," in line]
    prints = [line.split(": ", 1)[1].strip() for line in lines if line.startswith("Certificate fingerprint (SHA-256)")]
    assert len(entries) == len(prints), listed.stdout
    return sorted(prints)


# --- formats ------------------------------------------------------------------------------------------


@needs_keytool
@pytest.mark.parametrize(
    ("fmt", "store_type", "name"), [("jks", "JKS", "truststore.jks"), ("pkcs12", "PKCS12", "truststore.p12")]
)
def test_the_truststore_follows_the_certificates(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, certs: list[bytes], fmt: str, store_type: str, name: str
) -> None:
    first, second = certs[0], certs[0] + certs[1] + trust.PLACEHOLDER_PEM

    assert sync(monkeypatch, config(tmp_path, format=fmt), [{"ca.crt": first}]) == 1
    assert os.readlink(tmp_path / name) == f"..data/{name}"  # in the atomic layout, beside the PEM
    assert (tmp_path / "ca.crt").read_bytes() == first
    assert keytool_fingerprints(tmp_path / name, "changeit", store_type) == fingerprints(first)

    assert sync(monkeypatch, config(tmp_path, format=fmt), [{"ca.crt": second}]) == 1
    assert keytool_fingerprints(tmp_path / name, "changeit", store_type) == fingerprints(second)


@pytest.mark.parametrize("fmt", ["pkcs12", "jks"])
def test_unchanged_certificates_are_not_encoded_again(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, certs: list[bytes], fmt: str
) -> None:
    # A PKCS#12 encoding differs every time: comparing encodings would swap the directory (and reload
    # the server) on every re-list. The PEM decides, within one run and across a restart.
    pem = certs[0] + certs[1]
    assert sync(monkeypatch, config(tmp_path, format=fmt), [{"ca.crt": pem}, {"ca.crt": pem}, {"ca.crt": pem}]) == 1
    data_dir, store = os.readlink(tmp_path / "..data"), (tmp_path / trustsync.STORE_NAMES[fmt]).read_bytes()

    assert sync(monkeypatch, config(tmp_path, format=fmt), [{"ca.crt": pem}]) == 0  # a restarted sidecar

    assert os.readlink(tmp_path / "..data") == data_dir
    assert (tmp_path / trustsync.STORE_NAMES[fmt]).read_bytes() == store


def test_a_new_password_encodes_again(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, certs: list[bytes]
) -> None:
    pem = certs[0]
    sync(monkeypatch, config(tmp_path, format="pkcs12", password="first-one"), [{"ca.crt": pem}])

    assert sync(monkeypatch, config(tmp_path, format="pkcs12", password="second-one"), [{"ca.crt": pem}]) == 1

    store = (tmp_path / "truststore.p12").read_bytes()
    assert len(truststores.certificates_of(store, "pkcs12", "second-one")) == 1


def test_a_version_without_certificates_keeps_the_last_store(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, certs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync")
    marker = tmp_path / "reloads"
    cfg = config(
        tmp_path / "trust",
        format="jks",
        keys=("ca.crt", "other"),  # the third version has a key to copy, but no ca.crt to encode
        exec_argv=(sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"),
    )

    writes = sync(monkeypatch, cfg, [{"ca.crt": certs[0]}, {"ca.crt": b"garbage"}, {"other": b"no ca.crt"}])

    assert writes == 1
    assert trustdir.read(tmp_path / "trust") == {
        "ca.crt": certs[0],
        "truststore.jks": truststores.jks(certs[0], "changeit"),
    }
    failed = records(caplog, "truststore_failed")
    assert [r["resource_version"] for r in failed] == ["2", "3"]
    assert {r["level"] for r in failed} == {"WARNING"}
    assert "no key ca.crt" in failed[1]["reason"]
    assert marker.read_text() == "x"  # the command ran for the one swap only


def test_pem_is_what_it_was(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default writes the Secret's bytes as they are, certificates or not, and nothing else.
    assert sync(monkeypatch, config(tmp_path), [{"ca.crt": b"version 1"}]) == 1
    assert trustdir.read(tmp_path) == {"ca.crt": b"version 1"}


# --- the reload command -------------------------------------------------------------------------------


def appender(log: pathlib.Path, directory: pathlib.Path) -> tuple[str, ...]:
    """A command that appends what ``ca.crt`` holds when it runs: proof it runs after the swap."""
    code = "import sys; open(sys.argv[1], 'a').write(open(sys.argv[2]).read() + '\\n')"
    return (sys.executable, "-c", code, str(log), str(directory / "ca.crt"))


def test_the_command_runs_once_per_change_and_never_for_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync")
    directory, log = tmp_path / "trust", tmp_path / "reloads.log"
    cfg = config(directory, exec_argv=appender(log, directory))
    versions: list[dict[str, bytes] | None] = [
        {"ca.crt": b"v1"},
        {"ca.crt": b"v1"},  # a re-list
        {"ca.crt": b"v2"},
        None,  # the Secret deleted: the files stay, nothing runs
        {"ca.crt": b"v2"},
        {"ca.crt": b"v3"},
    ]

    assert sync(monkeypatch, cfg, versions, runs_ended(caplog)) == 3

    assert log.read_text() == "v1\nv2\nv3\n"
    runs = records(caplog, "exec", "exec_failed")
    assert [(r["event"], r["exit_status"]) for r in runs] == [("exec", 0)] * 3
    assert all(isinstance(r["duration_s"], float) and r["duration_s"] >= 0 for r in runs)
    assert runs[0]["command"] == list(cfg.exec_argv)


def test_a_failing_command_is_logged_and_survived(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync")
    fails = (sys.executable, "-c", "import sys; print('nginx: [error] invalid PID number'); sys.exit(3)")
    cfg = config(tmp_path / "trust", exec_argv=fails)

    assert sync(monkeypatch, cfg, [{"ca.crt": b"v1"}, {"ca.crt": b"v1"}, {"ca.crt": b"v2"}], runs_ended(caplog)) == 2

    assert trustdir.read(tmp_path / "trust") == {"ca.crt": b"v2"}
    failed = records(caplog, "exec_failed")
    assert [(r["exit_status"], r["level"]) for r in failed] == [(3, "WARNING")] * 2  # once per change, no retry
    assert failed[0]["output"] == "nginx: [error] invalid PID number"
    assert "runs again at the next change" in failed[0]["action"]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (("/nonexistent/reload-me",), "FileNotFoundError"),
        ((sys.executable, "-c", "import time; time.sleep(30)"), "did not finish in 0.5 s"),
    ],
)
def test_a_command_that_cannot_run_or_hangs_is_survived(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    argv: tuple[str, ...],
    error: str,
) -> None:
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync")
    cfg = config(tmp_path / "trust", exec_argv=argv, exec_timeout=0.5)

    assert sync(monkeypatch, cfg, [{"ca.crt": b"v1"}, {"ca.crt": b"v2"}], runs_ended(caplog)) == 2

    failed = records(caplog, "exec_failed")
    assert len(failed) == 2
    assert error in failed[0]["error"]
    assert failed[0]["exit_status"] is None


def sync_in_thread(monkeypatch: pytest.MonkeyPatch, cfg: trustsync.Config) -> int:
    """One sync of one version, in a thread: should trust-sync hang, the test says so instead of hanging."""
    synced: list[int] = []
    thread = threading.Thread(target=lambda: synced.append(sync(monkeypatch, cfg, [{"ca.crt": b"v1"}])), daemon=True)
    thread.start()
    processes.wait_for(lambda: not thread.is_alive(), timeout=60, what="trust-sync to return")
    return synced[0]


def test_a_hung_command_is_killed_with_what_it_started(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The command starts a shell in the background that outlives it unless its whole session is killed;
    that shell also holds the output pipe open, which would keep trust-sync waiting. The command waits
    until the shell has written its pid, so that the timeout can only strike with both running (on a
    machine too slow for that, the timeout is doubled and the sync run again)."""
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync")
    pid_files: list[pathlib.Path] = []
    try:
        for attempt, timeout in enumerate((0.3, 0.6, 1.2, 2.4, 4.8, 9.6)):
            pid_file = tmp_path / f"grandchild-{attempt}.pid"
            pid_files.append(pid_file)
            script = (
                f"sh -c 'echo $$ > {pid_file}.new && mv {pid_file}.new {pid_file} && exec sleep 600' & "
                f"while [ ! -s {pid_file} ]; do sleep 0.01; done; wait"
            )
            caplog.clear()
            cfg = config(tmp_path / f"trust-{attempt}", exec_argv=("sh", "-c", script), exec_timeout=timeout)
            assert sync_in_thread(monkeypatch, cfg) == 1
            (failed,) = records(caplog, "exec_failed")
            assert "did not finish" in failed["error"]
            if pid_file.exists():
                break
        else:
            pytest.fail("the command never got its background shell started before the timeout")
        grandchild = int(pid_file.read_text())
        # Killed with the session: gone (had only the command been killed, it would sleep on).
        processes.wait_for(lambda: not devbase.pid_alive(grandchild), timeout=30, what="the background shell gone")
    finally:
        for path in pid_files:
            pid = int(path.read_text()) if path.exists() else None
            if pid is not None and devbase.pid_alive(pid) and "sleep" in devbase.cmdline(pid):
                os.kill(pid, signal.SIGKILL)


# --- the command line ---------------------------------------------------------------------------------


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[trustsync.Config]:
    """Run ``webhookcerts trust-sync ...`` up to the sync, and keep the Config it would sync with."""
    seen: list[trustsync.Config] = []

    def fake_sync(
        clients: kube_client.Clients, cfg: trustsync.Config, once: bool = False, on_synced: object = None
    ) -> int:
        seen.append(cfg)
        return 0

    monkeypatch.setattr(kube_client, "load", lambda kubeconfig, context: CLIENTS)
    monkeypatch.setattr(trustsync, "sync", fake_sync)
    # run() installs SIGTERM/SIGINT handlers for the sidecar; keep pytest's own.
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    return seen


def test_the_flags_reach_the_config(tmp_path: pathlib.Path, parsed: list[trustsync.Config]) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("from a file\n")
    argv = ["trust-sync", "--secret", "ns/trust", "--dir", str(tmp_path / "d"), "--format", "jks"]
    extra = ["--password-file", str(password_file), "--exec", "nginx -s reload -g 'pid /run/x.pid;'"]

    assert cli_main.main([*argv, *extra]) == 0

    (cfg,) = parsed
    assert (cfg.format, cfg.password, cfg.store_name, cfg.source_key) == (
        "jks",
        "from a file",
        "truststore.jks",
        "ca.crt",
    )
    assert cfg.exec_argv == ("nginx", "-s", "reload", "-g", "pid /run/x.pid;")  # split, never given to a shell
    assert "from a file" not in repr(cfg)


def test_the_default_password_is_changeit(tmp_path: pathlib.Path, parsed: list[trustsync.Config]) -> None:
    assert cli_main.main(["trust-sync", "--secret", "ns/trust", "--dir", str(tmp_path), "--format", "pkcs12"]) == 0
    assert (parsed[0].password, parsed[0].store_name) == ("changeit", "truststore.p12")


@pytest.mark.parametrize(
    "extra",
    [
        ["--password", "x"],  # a password without a truststore
        ["--format", "pkcs12", "--password", "s3cr\u00e9t"],  # the JDK cannot open it
        ["--format", "jks", "--key", "truststore.jks"],
        ["--format", "jks", "--key", "tls.crt"],  # --source-key ca.crt not selected
        ["--format", "jks", "--password-file", "/nonexistent/password"],
    ],
)
def test_flags_that_cannot_work_are_refused(
    tmp_path: pathlib.Path, parsed: list[trustsync.Config], extra: list[str]
) -> None:
    assert cli_main.main(["trust-sync", "--secret", "ns/trust", "--dir", str(tmp_path), *extra]) == 2
    assert parsed == []

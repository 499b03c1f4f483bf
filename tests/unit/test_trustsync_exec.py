"""trust-sync copies only what a trust store is, and a reload command never holds an update back.

- Only ``ca.crt`` by default; a key named like a private key is refused before anything runs, and a
  key whose content is or holds one is never written, whatever its name, with an error that names it
  and never its bytes.
- A reload command still running when the next version arrives (hung, or slow) is killed with what it
  started, and the command runs at once for the new version: an emergency's update waits for nothing.
  The order is read from trust-sync's own log records, never from a clock.

The watch is scripted as in test_trustsync_formats.py; the directory and the commands are real.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from tests import processes, whc
from tests.unit.test_trustsync_formats import CLIENTS, config, records, scripted
from webhookcerts.cli import main as cli_main
from webhookcerts.devcluster import base as devbase
from webhookcerts.domain import privatekeys, truststores
from webhookcerts.kube import client as kube_client
from webhookcerts.receiver import trustdir, trustsync

KEY = ec.generate_private_key(ec.SECP256R1())
NO_PASSWORD = serialization.NoEncryption()


def key_bytes(encoding: serialization.Encoding, fmt: serialization.PrivateFormat, password: bytes = b"") -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else NO_PASSWORD
    return KEY.private_bytes(encoding, fmt, encryption)


PEM_KEY = key_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8)


# --- what is copied -------------------------------------------------------------------------------------


def test_only_ca_crt_by_default(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout the design allows: the endpoint's serving pair beside our ca.crt in one Secret."""
    cert = whc.self_signed_pem("client")
    scripted(monkeypatch, [{"ca.crt": cert, "tls.crt": cert, "tls.key": PEM_KEY, "other": b"x"}])
    assert trustsync.sync(CLIENTS, config(tmp_path)) == 1
    assert trustdir.read(tmp_path) == {"ca.crt": cert}


@pytest.mark.parametrize("key", ["tls.key", "server.key", "ssh-privatekey"])
def test_a_key_named_like_a_private_key_is_refused_even_when_asked(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    def never(kubeconfig: object, context: object) -> kube_client.Clients:
        raise AssertionError("trust-sync went on to the API with a private key to copy")

    monkeypatch.setattr(kube_client, "load", never)
    argv = ["trust-sync", "--secret", "ns/trust", "--dir", str(tmp_path), "--key", "ca.crt", "--key", key]
    assert cli_main.main(argv) == 2
    error = capsys.readouterr().err
    assert f"{key}: the name of a private key" in error and "does not copy it even when asked" in error
    with pytest.raises(ValueError, match="the name of a private key"):
        config(tmp_path, keys=(key,))


def test_content_that_holds_a_private_key_is_never_written(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Named innocently, asked for explicitly: still refused, the rest written, the key never logged.
    A ca.crt with a key pasted into it is refused too, and the last good ca.crt stays."""
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync")
    cert = whc.self_signed_pem("client")
    versions: list[dict[str, bytes] | None] = [
        {"ca.crt": cert, "bundle.pem": cert + PEM_KEY},
        {"ca.crt": cert + PEM_KEY, "bundle.pem": cert},
    ]
    scripted(monkeypatch, versions)
    cfg = config(tmp_path, keys=("ca.crt", "bundle.pem"))

    assert trustsync.sync(CLIENTS, cfg) == 2

    assert trustdir.read(tmp_path) == {"ca.crt": cert, "bundle.pem": cert}
    refused = records(caplog, "key_refused")
    assert [(r["resource_version"], r["key"], r["level"]) for r in refused] == [
        ("1", "bundle.pem", "ERROR"),
        ("2", "ca.crt", "ERROR"),
    ]
    assert refused[0]["reason"] == "bundle.pem holds a PEM private key"
    assert "PRIVATE KEY" not in caplog.text and PEM_KEY.decode().splitlines()[1] not in caplog.text


def _jks_with_a_key(directory: pathlib.Path) -> bytes | None:
    keytool = shutil.which("keytool")
    if keytool is None:
        return None
    store = directory / "keys.jks"
    argv = [keytool, "-genkeypair", "-keystore", str(store), "-storetype", "JKS", "-storepass", "changeit"]
    argv += ["-keypass", "changeit", "-alias", "k", "-keyalg", "EC", "-dname", "CN=k"]
    subprocess.run(argv, capture_output=True, timeout=120, check=True, stdin=subprocess.DEVNULL)
    return store.read_bytes()


def test_every_form_of_a_private_key_is_recognised_and_a_truststore_is_not(tmp_path: pathlib.Path) -> None:
    pem_cert = whc.self_signed_pem("client")
    encoding, fmt = serialization.Encoding, serialization.PrivateFormat
    keys = {
        "PEM PKCS#8": PEM_KEY,
        "PEM PKCS#8 encrypted": key_bytes(encoding.PEM, fmt.PKCS8, b"pw"),
        "PEM SEC1": key_bytes(encoding.PEM, fmt.TraditionalOpenSSL),
        "OpenSSH": key_bytes(encoding.PEM, fmt.OpenSSH),
        "DER PKCS#8": key_bytes(encoding.DER, fmt.PKCS8),
        "DER PKCS#8 encrypted": key_bytes(encoding.DER, fmt.PKCS8, b"pw"),
        "DER SEC1": key_bytes(encoding.DER, fmt.TraditionalOpenSSL),
        "PKCS#12 with a key": pkcs12.serialize_key_and_certificates(
            b"k", KEY, None, None, serialization.BestAvailableEncryption(b"changeit")
        ),
        "OpenPGP": b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n...\n-----END PGP PRIVATE KEY BLOCK-----\n",
    }
    jks = _jks_with_a_key(tmp_path)
    if jks is not None:
        keys["JKS with a key entry"] = jks
    for form, data in keys.items():
        assert privatekeys.private_key_kind(data, ("changeit",)) is not None, form
    stores = {
        "PEM certificates": pem_cert,
        "PKCS#12 truststore": truststores.encode(pem_cert, "pkcs12", "changeit"),
        "JKS truststore": truststores.encode(pem_cert, "jks", "changeit"),
        "text": b"not a key",
    }
    for form, data in stores.items():
        assert privatekeys.private_key_kind(data, ("changeit",)) is None, form


# --- the reload command never holds an update back ---------------------------------------------------


def _kill_if_sleeping(pid_file: pathlib.Path) -> None:
    """A test that failed leaves no ``sleep 600`` behind (only the one its command started)."""
    pid = int(pid_file.read_text()) if pid_file.exists() and pid_file.read_text().strip() else None
    if pid is not None and devbase.pid_alive(pid) and "sleep" in devbase.cmdline(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_new_version_kills_a_running_command_and_runs_it_again_at_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The command hangs for the first version (its timeout, 600 s, is far beyond the test's waits:
    waiting for it would fail the test). The second version, an emergency's, is written at once; the
    hung run is killed with its child before the command runs for the new version, and that run ends."""
    caplog.set_level(logging.INFO, logger="webhookcerts.trust_sync")
    directory, started, ran = tmp_path / "trust", tmp_path / "hung.pid", tmp_path / "ran"
    script = (
        f'if [ "$(cat {directory}/ca.crt)" = v1 ]; then '
        f"sleep 600 & echo $! > {started}.new && mv {started}.new {started}; wait; "
        f"else cat {directory}/ca.crt > {ran}; fi"
    )
    cfg = config(directory, exec_argv=("sh", "-c", script), exec_timeout=600)

    def hung_run_under_way() -> None:
        # The positive control: the first run is running (its child sleeps) when the second version comes.
        processes.wait_for(lambda: started.exists() and started.read_text().strip(), timeout=60, what="the hung run")

    scripted(monkeypatch, [{"ca.crt": b"v1"}, {"ca.crt": b"v2"}], hung_run_under_way)
    writes: list[int] = []
    thread = threading.Thread(target=lambda: writes.append(trustsync.sync(CLIENTS, cfg)), daemon=True)
    thread.start()
    try:
        processes.wait_for(lambda: not thread.is_alive(), timeout=60, what="trust-sync to write v2 and reload it")
    finally:
        _kill_if_sleeping(started)

    assert writes == [2]
    assert trustdir.read(directory) == {"ca.crt": b"v2"}
    assert ran.read_text() == "v2"
    order = [
        (r["event"], r["resource_version"])
        for r in records(caplog, "synced", "exec_started", "exec_superseded", "exec", "exec_failed")
    ]
    assert order == [
        ("synced", "1"),
        ("exec_started", "1"),
        ("synced", "2"),
        ("exec_superseded", "1"),
        ("exec_started", "2"),
        ("exec", "2"),
    ]
    (superseded,) = records(caplog, "exec_superseded")
    assert superseded["superseded_by"] == "2" and superseded["level"] == "WARNING"
    hung = int(started.read_text())
    processes.wait_for(lambda: not devbase.pid_alive(hung), timeout=30, what="the hung run's child killed")


def test_stopping_trust_sync_takes_a_running_command_along(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = tmp_path / "child.pid"
    script = f"sleep 600 & echo $! > {started}.new && mv {started}.new {started}; wait"
    cfg = config(tmp_path / "trust", exec_argv=("sh", "-c", script), exec_timeout=600)

    class Stopped(BaseException):
        pass

    def then_stop() -> None:
        processes.wait_for(started.exists, timeout=60, what="the command's child")
        raise Stopped  # as the SIGTERM handler does, from inside the watch

    scripted(monkeypatch, [{"ca.crt": b"v1"}, {"ca.crt": b"v2"}], then_stop)
    try:
        with pytest.raises(Stopped):
            trustsync.sync(CLIENTS, cfg)
    finally:
        _kill_if_sleeping(started)
    child = int(started.read_text())
    processes.wait_for(lambda: not devbase.pid_alive(child), timeout=30, what="the command's child killed")


def test_the_command_line_says_how_exec_meets_a_new_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "webhookcerts", "trust-sync", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(processes.REPO / "operator"), "COLUMNS": "200"},
    )
    assert "killed and the command run again for it at once" in " ".join(done.stdout.split())
    assert shlex.quote("ca.crt") in done.stdout

"""trust-sync: mirror the trust Secret into a directory in the kubelet's atomic layout, quickly.

The kubelet refreshes mounted Secrets on its sync period plus its cache TTL, up to a minute or two.
For an emergency rotation that is too slow, so this sidecar watches the Secret through the API and
writes each new version the moment it arrives, in the same ``..data`` layout the kubelet would use;
the receiver cannot tell the two writers apart. It is also the kubelet's stand-in in tests.

Writes are skipped when the bytes are unchanged, so a re-list never triggers a reload. When the Secret
is deleted the directory keeps the last content: an endpoint that suddenly trusts nobody is an outage,
and deleting the trust store is not how trust is revoked (the operator rewrites it instead).

For servers that do not read PEM (the JVM), ``format`` adds a PKCS#12 or JKS truststore, built from
the PEM certificates of one key (``ca.crt``), to the same directory and the same swap. The PEM stays
beside it and is what decides whether the truststore is encoded again: a PKCS#12 encoding differs
every time (random salts), so comparing encodings would rewrite, and reload, on every re-list. The
store is reused as it is while the PEM is unchanged and the store on disk still opens with the
password and holds the same certificates.

After each swap, and only then, ``exec_argv`` runs (a reload command such as ``nginx -s reload``),
without a shell. A failure is logged and survived: the files are in place, and the command runs
again at the next change, not before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence

from webhookcerts.domain import trust, truststores
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secretwatch
from webhookcerts.receiver import trustdir

_log = logging.getLogger("webhookcerts.trust_sync")

# A well-known value, not a secret: a truststore holds public certificates, and its password lets the
# JVM detect tampering. The JDK's cacerts convention, and trust-manager's JKS default.
DEFAULT_PASSWORD = "changeit"  # noqa: S105
STORE_NAMES = {"pkcs12": "truststore.p12", "jks": "truststore.jks"}
_OUTPUT_TAIL = 2000  # characters of a command's output kept in its log record


@dataclasses.dataclass(frozen=True)
class Config:
    namespace: str
    name: str
    directory: pathlib.Path
    keys: tuple[str, ...] = ()  # empty: every key of the Secret
    mode: int = 0o644
    format: str = "pem"  # pem: the Secret's files only; pkcs12, jks: a truststore beside them
    password: str = dataclasses.field(default=DEFAULT_PASSWORD, repr=False)
    store_name: str = ""  # the truststore's file name; empty: STORE_NAMES[format]
    source_key: str = trust.KEY  # the key whose PEM certificates go into the truststore
    exec_argv: tuple[str, ...] = ()  # run after each swap
    exec_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.format not in truststores.FORMATS:
            raise ValueError(f"unknown format {self.format!r}")
        if self.format != "pem" and not self.store_name:
            object.__setattr__(self, "store_name", STORE_NAMES[self.format])


def select(data: dict[str, bytes], keys: Iterable[str]) -> dict[str, bytes]:
    wanted = tuple(keys)
    return dict(data) if not wanted else {k: v for k, v in data.items() if k in wanted}


def with_truststore(config: Config, files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` and the truststore of ``config.format`` built from ``files[config.source_key]``.

    The truststore already in ``config.directory`` is kept, byte for byte, when the PEM there is the
    same and the store opens with the password and holds its certificates: then the directory is
    unchanged and nothing is swapped. Raises ``truststores.TrustStoreError`` for a PEM without a
    certificate, KeyError for a missing source key.
    """
    pem = files[config.source_key]
    wanted = truststores.certificates_of(pem, "pem", "")
    try:
        current = trustdir.read(config.directory)
    except OSError:
        current = {}
    existing = current.get(config.store_name)
    if existing is not None and current.get(config.source_key) == pem:
        try:
            held = truststores.certificates_of(existing, config.format, config.password)
        except truststores.TrustStoreError:
            held = []  # another password, another format, damaged: encode again
        if sorted(held) == sorted(wanted):
            return {**files, config.store_name: existing}
    return {**files, config.store_name: truststores.encode(pem, config.format, config.password)}


def run_command(argv: Sequence[str], timeout: float) -> int | None:
    """Run the reload command once and log how it went; its exit status, None if it did not finish.

    Nothing it does can stop trust-sync: a failure is logged as a warning and the next change runs
    it again.
    """
    started = time.monotonic()
    record: dict[str, object] = {"event": "exec", "command": list(argv)}
    status: int | None = None
    output = b""
    try:
        # A session of its own, so that a command that hangs goes with everything it started (a
        # `sh -c` pipeline), not just its first process.
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        record["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
    else:
        try:
            output, _ = proc.communicate(timeout=timeout)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            output, _ = proc.communicate()
            record["error"] = f"did not finish in {timeout:g} s; killed"
        except BaseException:  # trust-sync itself stopping: take the command along
            _kill_group(proc)
            proc.wait()
            raise
    record["exit_status"] = status
    text = output.decode(errors="replace").strip()
    record["duration_s"] = round(time.monotonic() - started, 3)
    if text:
        record["output"] = text[-_OUTPUT_TAIL:]
    if status == 0:
        _log.info(json.dumps(record))
    else:
        record["event"] = "exec_failed"
        record["action"] = "the files are in place; the command runs again at the next change"
        _log.warning(json.dumps(record))
    return status


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def sync(
    clients: kube_client.Clients,
    config: Config,
    *,
    stop: threading.Event | None = None,
    once: bool = False,
) -> int:
    """Write every new version of the Secret until ``stop`` (or after the first, with ``once``).

    Returns the number of writes.
    """
    stop = stop or threading.Event()
    writes = 0
    for version in secretwatch.watch_secret(clients, config.namespace, config.name, stop=stop):
        if version.data is None:
            _log.warning(
                json.dumps(
                    {
                        "event": "secret_absent",
                        "secret": f"{config.namespace}/{config.name}",
                        "resource_version": version.resource_version,
                        "action": "keeping the files as they are",
                    }
                )
            )
            continue
        files = select(version.data, config.keys)
        missing = sorted(set(config.keys) - set(files))
        if missing:
            _log.warning(json.dumps({"event": "keys_missing", "keys": missing}))
        if not files:
            continue
        if config.format != "pem":
            try:
                files = with_truststore(config, files)
            except (KeyError, truststores.TrustStoreError) as exc:
                reason = f"no key {config.source_key}" if isinstance(exc, KeyError) else str(exc)
                _log.warning(
                    json.dumps(
                        {
                            "event": "truststore_failed",
                            "secret": f"{config.namespace}/{config.name}",
                            "resource_version": version.resource_version,
                            "format": config.format,
                            "reason": reason,
                            "action": "keeping the files as they are",
                        }
                    )
                )
                continue
        written = trustdir.write_atomic(config.directory, files, mode=config.mode)
        if written:
            writes += 1
        _log.info(
            json.dumps(
                {
                    "event": "synced" if written else "unchanged",
                    "secret": f"{config.namespace}/{config.name}",
                    "resource_version": version.resource_version,
                    "files": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
                }
            )
        )
        if written and config.exec_argv:
            run_command(config.exec_argv, config.exec_timeout)
        if once:
            stop.set()
            break
    return writes

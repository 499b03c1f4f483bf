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

Only the keys asked for are copied: ``ca.crt`` unless ``keys`` names others (the truststores the
operator writes, say). The directory is world-readable by design and a layout the design allows keeps
the endpoint's ``tls.key`` in the trust Secret, so a key that is named like a private key is refused
when the configuration is made, and one whose content is or holds a private key is never written,
however it is named (``domain.privatekeys``), with an error that names the key and never its bytes.

After each swap, and only then, ``exec_argv`` runs (a reload command such as ``nginx -s reload``),
without a shell. A failure is logged and survived: the files are in place, and the command runs
again at the next change, not before. The command runs beside the watch, never in its way: a new
version is written the moment it arrives even while the last command still runs (hung, say), and
that command is then killed, with everything it started, and the command started again for the new
version at once. Killed rather than waited for, because an emergency's update must not queue behind
it for up to ``exec_timeout``; killed rather than left running beside the new one, because what it
was reloading is already replaced on disk, the new run reloads everything it would have, and two
runs of one reload script at once may interleave.
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
from collections.abc import Callable, Iterable, Sequence

from webhookcerts.domain import names, privatekeys, trust, truststores
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
    keys: tuple[str, ...] = (trust.KEY,)  # the Secret's keys to copy, never a private key
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
        if not self.keys:
            raise ValueError("no key to copy: name at least one (ca.crt is the trust store)")
        named = sorted(k for k in self.keys if is_key_name(k))
        if named:
            raise ValueError(
                f"{', '.join(named)}: the name of a private key; a trust directory never holds one "
                "(it is world-readable), so trust-sync does not copy it even when asked"
            )
        if self.format != "pem" and not self.store_name:
            object.__setattr__(self, "store_name", STORE_NAMES[self.format])


def is_key_name(key: str) -> bool:
    """Named as private keys are in Secrets: ``tls.key`` (kubernetes.io/tls), ``ssh-privatekey``
    (kubernetes.io/ssh-auth), and any ``*.key``."""
    return key in (names.TLS_KEY, "ssh-privatekey") or key.endswith(".key")


def select(data: dict[str, bytes], keys: Iterable[str]) -> dict[str, bytes]:
    wanted = tuple(keys)
    return {k: v for k, v in data.items() if k in wanted}


def without_private_keys(config: Config, files: dict[str, bytes], resource_version: str) -> dict[str, bytes]:
    """``files`` with each one whose content is or holds a private key replaced by the file already in
    the directory (or left out when there is none): a ca.crt refused must not take the trust store away.
    Each one refused is logged as an error naming the key and what it holds, never its bytes."""
    passwords = (config.password, "", DEFAULT_PASSWORD)
    kept: dict[str, bytes] = {}
    on_disk: dict[str, bytes] | None = None
    for key, value in files.items():
        kind = privatekeys.private_key_kind(value, passwords)
        if kind is None:
            kept[key] = value
            continue
        if on_disk is None:
            try:
                on_disk = trustdir.read(config.directory)
            except OSError:
                on_disk = {}
        if key in on_disk:
            kept[key] = on_disk[key]
        _log.error(
            json.dumps(
                {
                    "event": "key_refused",
                    "secret": f"{config.namespace}/{config.name}",
                    "resource_version": resource_version,
                    "key": key,
                    "reason": f"{key} holds {kind}",
                    "action": "not written (the file there stays): a trust directory never holds a private key",
                }
            )
        )
    return kept


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


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclasses.dataclass
class _Run:
    proc: subprocess.Popen[bytes]
    resource_version: str
    started: float
    superseded_by: str | None = None
    waiter: threading.Thread | None = None


class Reloads:
    """The reload command, run after each swap on a thread of its own: at most one run at a time, and
    a new swap never waits for the last run (see the module's docstring: it is killed)."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self._argv, self._timeout = list(argv), timeout
        self._lock = threading.Lock()
        self._run: _Run | None = None

    def start(self, resource_version: str) -> None:
        """Run the command for the version just written, killing a run still going for an older one."""
        self._supersede(resource_version)
        record: dict[str, object] = {"event": "exec_started", "command": self._argv}
        record["resource_version"] = resource_version
        try:
            # A session of its own, so that a command that hangs goes with everything it started (a
            # `sh -c` pipeline), not just its first process.
            proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            record["event"], record["exit_status"] = "exec_failed", None
            record["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
            record["action"] = "the files are in place; the command runs again at the next change"
            _log.warning(json.dumps(record))
            return
        _log.info(json.dumps(record))
        run = _Run(proc, resource_version, time.monotonic())
        run.waiter = threading.Thread(target=self._wait, args=(run,), name="trust-sync-exec", daemon=True)
        with self._lock:
            self._run = run
        run.waiter.start()

    def _supersede(self, resource_version: str) -> None:
        with self._lock:
            run = self._run
            if run is None or run.proc.returncode is not None or run.superseded_by is not None:
                return
            run.superseded_by = resource_version
            _kill_group(run.proc)
        # Logged here, before the next run starts, so that the log reads in the order things happened.
        record = {
            "event": "exec_superseded",
            "command": self._argv,
            "resource_version": run.resource_version,
            "superseded_by": resource_version,
            "duration_s": round(time.monotonic() - run.started, 3),
            "action": "killed: a newer version is written; the command runs again for it now",
        }
        _log.warning(json.dumps(record))

    def _wait(self, run: _Run) -> None:
        record: dict[str, object] = {"event": "exec", "command": self._argv, "resource_version": run.resource_version}
        status: int | None = None
        try:
            output, _ = run.proc.communicate(timeout=self._timeout)
            status = run.proc.returncode
        except subprocess.TimeoutExpired:
            with self._lock:
                _kill_group(run.proc)
            output, _ = run.proc.communicate()
            record["error"] = f"did not finish in {self._timeout:g} s; killed"
        with self._lock:
            superseded = run.superseded_by is not None
        if superseded:
            return  # exec_superseded said it all
        record["exit_status"] = status
        record["duration_s"] = round(time.monotonic() - run.started, 3)
        text = output.decode(errors="replace").strip()
        if text:
            record["output"] = text[-_OUTPUT_TAIL:]
        if status == 0:
            _log.info(json.dumps(record))
        else:
            record["event"] = "exec_failed"
            record["action"] = "the files are in place; the command runs again at the next change"
            _log.warning(json.dumps(record))

    def wait(self) -> None:
        """Until the last run has ended (``--once``, and the end of a watch)."""
        with self._lock:
            run = self._run
        if run is not None and run.waiter is not None:
            run.waiter.join()

    def kill(self) -> None:
        """trust-sync itself stopping: take the command along."""
        with self._lock:
            run = self._run
            if run is not None and run.proc.returncode is None:
                _kill_group(run.proc)
        self.wait()


def sync(
    clients: kube_client.Clients,
    config: Config,
    *,
    stop: threading.Event | None = None,
    once: bool = False,
    on_synced: Callable[[str | None], None] | None = None,
) -> int:
    """Write every new version of the Secret until ``stop`` (or after the first, with ``once``).

    ``on_synced`` is told, after each version is in the directory, the version's
    ``webhookcerts.io/trust-hash`` annotation: the trust a reporter beside the server says it serves
    (None when the Secret has none, or when what was written is not the version as it is: a key refused).
    Returns the number of writes.
    """
    stop = stop or threading.Event()
    reloads = Reloads(config.exec_argv, config.exec_timeout) if config.exec_argv else None
    try:
        writes = _follow(clients, config, stop, once, reloads, on_synced or (lambda _hash: None))
    except BaseException:
        if reloads is not None:
            reloads.kill()
        raise
    if reloads is not None:
        reloads.wait()
    return writes


def _follow(
    clients: kube_client.Clients,
    config: Config,
    stop: threading.Event,
    once: bool,
    reloads: Reloads | None,
    on_synced: Callable[[str | None], None],
) -> int:
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
        selected = select(version.data, config.keys)
        files = without_private_keys(config, selected, version.resource_version)
        as_it_is = files == selected
        missing = sorted(set(config.keys) - set(version.data))
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
        on_synced(version.annotations.get(names.TRUST_HASH_ANNOTATION) if as_it_is else None)
        if written and reloads is not None:
            reloads.start(version.resource_version)
        if once:
            stop.set()
            break
    return writes

"""What the chaos harness runs and watches: the operator's process, every version of its key Secrets,
and bounded reads of the objects and Secrets of one namespace.

Each read has a timeout and the clients do not retry on their own, so that a sample taken while the
control plane is down fails at once (and is taken again), instead of hanging the round.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import pathlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from typing import Any

import kubernetes
from tests import processes, whc

from webhookcerts.domain import models, names, pki

ROUND_LABEL = "chaos.webhookcerts.io/round"
MANAGED = f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY}"
# Reads of the harness itself: bounded, so a control plane that is down never hangs a sample.
READ_TIMEOUT = (2.0, 10.0)
logger = logging.getLogger(__name__)


class ChaosError(RuntimeError):
    """The harness could not set up what a round needs; the message says what."""


# --- the operator ------------------------------------------------------------------------------------


class Operator:
    """``webhookcerts run`` in its own process, as users run it; killed with SIGKILL, started again."""

    def __init__(self, kubeconfig: pathlib.Path, namespace: str, log_path: pathlib.Path) -> None:
        self.kubeconfig, self.namespace, self.log_path = kubeconfig, namespace, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._offset = 0

    def start(self) -> None:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = ["run", "--standalone", "--kubeconfig", str(self.kubeconfig), "-n", self.namespace]
        self.proc = processes.spawn([*argv, "--metrics-port", "0"], self.log_path)
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def since_start(self) -> str:
        """What this process (the last one started) has logged."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            return log.read().decode(errors="replace")

    def wait_started(self, timeout: float = 120.0) -> None:
        """Until the start-up pass is done: every object reconciled once, the queue running."""
        deadline = time.monotonic() + timeout
        while "start-up pass done" not in self.since_start():
            if not self.alive():
                raise ChaosError(f"the operator exited at start-up:\n{self.since_start()[-3000:]}")
            if time.monotonic() > deadline:
                raise ChaosError(f"the operator's start-up pass took over {timeout:.0f} s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the operator's process group (its own session): no cleanup, as a crash leaves it."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc)
            self.proc = None

    def lines_about(self, name: str, limit: int = 12) -> list[str]:
        """The last log lines of every operator process that name the object ``name``."""
        if not self.log_path.exists():
            return []
        needle = f"/{name}:"
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if needle in line][-limit:]


# --- what every key Secret ever held -------------------------------------------------------------------


def quiet_client(kubeconfig: pathlib.Path) -> kubernetes.client.ApiClient:
    """A client that does not retry on its own (nor log each retry): the harness reads on through
    control plane outages and decides itself what a failed read means."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration)


def _fingerprint_of(data: dict[str, str] | None) -> str | None:
    raw = (data or {}).get(names.TLS_CERT)
    if not raw:
        return None
    try:
        return pki.inspect(base64.b64decode(raw)).fingerprint
    except (ValueError, pki.InvalidKeyMaterial):
        return None


class SecretLog:
    """Every certificate that ever appeared in one of the operator's key or next Secrets, by Secret name.

    A watch of the Secrets labelled managed-by=webhookcerts sees every version, also one that was
    overwritten a moment later; it resumes from the last resourceVersion across control plane outages
    (``relists`` counts the times it had to list again and may have missed a version)."""

    def __init__(self, kubeconfig: pathlib.Path, namespace: str) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.relists = 0
        self._held: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-secret-log", daemon=True)
        self._synced = threading.Event()

    def __enter__(self) -> SecretLog:
        self._thread.start()
        if not self._synced.wait(60):
            raise ChaosError("the Secret watch never listed")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def held(self, secret_name: str) -> set[str]:
        with self._lock:
            return set(self._held.get(secret_name, ()))

    def _note(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if (meta.get("labels") or {}).get(names.ROLE_LABEL) not in ("key", "next"):
            return
        fingerprint = _fingerprint_of(obj.get("data"))
        if fingerprint is not None:
            with self._lock:
                self._held.setdefault(meta["name"], set()).add(fingerprint)

    def _run(self) -> None:
        core = kubernetes.client.CoreV1Api(quiet_client(self.kubeconfig))
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = core.list_namespaced_secret(
                        self.namespace, label_selector=MANAGED, _request_timeout=READ_TIMEOUT
                    )
                    for item in core.api_client.sanitize_for_serialization(listed.items):
                        self._note(item)
                    version = listed.metadata.resource_version if listed.metadata else None
                    self._synced.set()
                watch = kubernetes.watch.Watch()
                for event in watch.stream(
                    core.list_namespaced_secret,
                    self.namespace,
                    label_selector=MANAGED,
                    resource_version=version,
                    timeout_seconds=5,
                    allow_watch_bookmarks=True,
                    _request_timeout=(2.0, 30.0),
                ):
                    # Deserialized: the client reads an ERROR event (410 Gone) only from that form.
                    obj = core.api_client.sanitize_for_serialization(event["object"]) or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._note(obj)
                    if self._stop.is_set():
                        watch.stop()
            except kubernetes.client.ApiException as exc:
                logger.debug("secret watch from %s: %s %s", version, exc.status, exc.reason)
                if exc.status == 410:
                    version = None
                    self.relists += 1
                else:
                    self._stop.wait(0.2)
            except Exception as exc:  # the control plane may be down: try again
                logger.debug("secret watch from %s: %r", version, exc)
                self._stop.wait(0.2)


@dataclasses.dataclass
class Sample:
    statuses: dict[str, models.WebhookCertificateStatus]
    trusted: dict[str, set[str]]


class Reader:
    """The harness's reads: a round's objects and trust Secrets together (a sample), and key Secrets.

    ``trust_of`` names each object's trust Secret; the rounds fill it as they create the objects."""

    def __init__(self, api: whc.Api, namespace: str, trust_of: dict[str, str]) -> None:
        self.api, self.namespace, self.trust_of = api, namespace, trust_of

    @staticmethod
    def status_of(body: dict[str, Any]) -> models.WebhookCertificateStatus:
        return models.WebhookCertificateStatus.model_validate(body.get("status") or {})

    def objects(self, label: str | None) -> list[dict[str, Any]]:
        listed: dict[str, Any] = self.api.custom.list_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            self.namespace,
            models.PLURAL,
            label_selector=f"{ROUND_LABEL}={label}" if label else None,
            _request_timeout=READ_TIMEOUT,
        )
        items: list[dict[str, Any]] = listed["items"]
        return items

    def trusted(self, trust_names: Iterable[str]) -> dict[str, set[str]]:
        trusted: dict[str, set[str]] = {}
        for trust_name in sorted(set(trust_names)):
            try:
                secret = self.api.core.read_namespaced_secret(trust_name, self.namespace, _request_timeout=READ_TIMEOUT)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
                trusted[trust_name] = set()
                continue
            pem = base64.b64decode((secret.data or {}).get(names.TRUST_KEY, ""))
            trusted[trust_name] = whc.fingerprints_in(pem)
        return trusted

    def sample(self, label: str, members: list[str]) -> Sample | None:
        """The round's trust Secrets, then its objects' statuses; None while the API cannot answer."""
        try:
            trusted = self.trusted(self.trust_of[n] for n in members)
            statuses = {o["metadata"]["name"]: self.status_of(o) for o in self.objects(label)}
        except Exception:  # the control plane may be down: try again
            return None
        return Sample(statuses, trusted)

    def secret(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = self.api.core.read_namespaced_secret(name, self.namespace, _request_timeout=READ_TIMEOUT)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def holds(self, secret_name: str, fingerprint: str) -> bool:
        """Whether the Secret holds the certificate with this fingerprint and its private key."""
        data = self.secret(secret_name)
        if data is None or names.TLS_KEY not in data or names.TLS_CERT not in data:
            return False
        try:
            return pki.check_key_pair(data[names.TLS_KEY], data[names.TLS_CERT]).fingerprint == fingerprint
        except pki.InvalidKeyMaterial:
            return False

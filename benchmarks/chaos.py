"""Crash safety, many times over: the operator SIGKILLed mid-rotation, the control plane stopped under it.

One harness for the benchmark (``python benchmarks/run.py chaos --write``) and the integration test
(tests/integration/test_chaos.py): the operator runs as users run it (``webhookcerts run``, its own
process); the harness drives WebhookCertificates through three paths and SIGKILLs the operator at a
seeded random moment of each round, then starts it again at once:

- ``planned``: fresh objects with ``duration: 2h`` and ``renewBefore: 1h59m59s``. ``renewalTime`` is
  ``notAfter - renewBefore``, one second after issue, so the operator issues the first key and then,
  a second later, the next key of a planned rotation. Killed 0-2 s after the objects are created.
  Converged: revision 2, stage Rotating, the key Secret holds ``status.current``, the ``-next`` Secret
  ``status.next``, the trust Secret lists both.
- ``cutover``: the Rotating objects of one planned round, annotated ``cutover=<status.next.serial>``;
  killed 0-0.5 s later. The renewal time of the new current (the old next) has passed as well, so a
  cut-over is followed at once by a new planned next: converged is revision + 1, the old next current
  (same fingerprint) in the key Secret, the old current in history as ``Superseded`` and out of the
  trust store, a new Planned next (neither of the two before) in the ``-next`` Secret and trusted.
- ``emergency``: Active objects with the default durations, annotated ``emergency-rotation=INC-<n>``;
  killed 0-1 s later. Converged: stage Compromised with an Emergency next, revision + 1,
  ``status.emergencyReferences`` every reference this object was given, each once, the compromised
  certificate out of the trust Secret (and still in the key Secret), the ``-next`` Secret holding the
  next. The harness then cuts over to the replacement (no kill) so the next round starts from Active.

Separately, during the planned rotation of fresh objects, kube-apiserver (and, in another round, etcd)
is stopped, left down for a few seconds and started again (``DevCluster.stop_component`` and
``start_component``); the operator is not restarted and must reconnect and converge by itself.

What is checked and counted, per round and object:

- keys lost: a certificate status records as current or next whose Secret does not hold it with its
  key (``pki.check_key_pair``);
- double rotations: the revision moved by more than the path expects, or two EmergencyRotation Events
  for one incident reference;
- unrecorded keys: a certificate that appeared in one of the object's key Secrets (a watch sees every
  version) that its status never recorded (current, next, history, revoked): a second key made for one
  rotation and thrown away;
- trust gaps: from the round's first write until convergence the trust Secrets and the statuses are
  sampled every 50 ms (trust Secret first, then status: a write order of status before trust can then
  not produce a false alarm). A certificate status records as current or next, not compromised nor
  revoked, that a sample has seen trusted, must be in every later sample of the trust Secret. (Before it
  was ever trusted the provider cannot be using it: the first issuance records status before the trust
  store, by design.)
- orphans: after convergence, a ``-next`` Secret with no ``status.next``, or any Secret labelled
  ``app.kubernetes.io/managed-by=webhookcerts`` that no object claims;
- not converged: an object still short of its converged state after the timeout.

At the end every object is audited once more (final revision, keys, unrecorded keys).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import pathlib
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import kubernetes
from tests import processes, whc

from benchmarks import harness, report
from benchmarks.stats import summary
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, names, pki

NAME = "chaos"
MIN_KILLS = 30
DEFAULT_OBJECTS = 6
DEFAULT_STOPS = 3
DEFAULT_SEED = 13
PATHS = ("planned", "cutover", "emergency")
COMPONENTS = ("kube-apiserver", "etcd")
# Upper bounds of the uniform random delay between a round's first write and the SIGKILL.
KILL_DELAY_S = {"planned": 2.0, "cutover": 0.5, "emergency": 1.0}
SHORT = {"duration": "2h", "renewBefore": "1h59m59s"}
SAMPLE_INTERVAL_S = 0.05
CONVERGE_TIMEOUT_S = 180.0
OUTAGE_S = 3.0
ROUND_LABEL = "chaos.webhookcerts.io/round"
# The round label of the emergency rounds' objects (the same ones every round).
POOL = "em"
MANAGED = f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY}"
# Reads of the harness itself: bounded, so a control plane that is down never hangs a sample.
READ_TIMEOUT = (2.0, 10.0)
logger = logging.getLogger(__name__)
COUNTERS = (
    "keys_lost",
    "double_rotations",
    "unrecorded_keys",
    "trust_gaps",
    "orphans",
    "not_converged",
    "mismatches",
)


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


# --- one round -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Expect:
    """What one object must look like once its round has converged."""

    revision: int
    before: models.WebhookCertificateStatus | None = None
    reference: str | None = None
    references: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Stats:
    """The figures of one path (operator kills) or one control plane component (stops)."""

    path: str
    interruptions: int = 0
    survived: int = 0
    mid_rotation: int = 0
    rotations_checked: int = 0
    keys_lost: int = 0
    double_rotations: int = 0
    unrecorded_keys: int = 0
    trust_gaps: int = 0
    trust_samples: int = 0
    orphans: int = 0
    not_converged: int = 0
    # Anything else a converged object got wrong (history, the compromised mark, the references).
    mismatches: int = 0
    converge_s: list[float] = dataclasses.field(default_factory=list)
    delays_s: list[float] = dataclasses.field(default_factory=list)
    defects: list[str] = dataclasses.field(default_factory=list)

    def failures(self) -> int:
        return sum(getattr(self, c) for c in COUNTERS)

    def to_json(self) -> dict[str, Any]:
        converge = summary(self.converge_s, digits=2) if self.converge_s else None
        return {
            "path": self.path,
            "interruptions": self.interruptions,
            "survived": self.survived,
            "mid_rotation": self.mid_rotation,
            "rotations_checked": self.rotations_checked,
            **{c: getattr(self, c) for c in COUNTERS},
            "trust_samples": self.trust_samples,
            "converge_s": converge,
            "delays_s": [round(d, 3) for d in self.delays_s],
            "defects": self.defects,
        }


@dataclasses.dataclass
class Sample:
    statuses: dict[str, models.WebhookCertificateStatus]
    trusted: dict[str, set[str]]


class Chaos:
    """The objects of one namespace, the operator watching it, and the rounds that interrupt it."""

    def __init__(
        self,
        dev: devcluster.DevCluster,
        namespace: str,
        work: pathlib.Path,
        *,
        objects: int = DEFAULT_OBJECTS,
        seed: int = DEFAULT_SEED,
        converge_timeout: float = CONVERGE_TIMEOUT_S,
    ) -> None:
        if not 1 <= objects <= 9:
            raise ValueError("between 1 and 9 objects per round")
        self.dev, self.namespace, self.objects = dev, namespace, objects
        self.api = whc.Api(quiet_client(dev.kubeconfig), namespace)
        self.rng = random.Random(seed)
        self.seed = seed
        self.converge_timeout = converge_timeout
        self.operator = Operator(dev.kubeconfig, namespace, work / "operator.log")
        self.secrets = SecretLog(dev.kubeconfig, namespace)
        # Per object: its trust Secret and its expected revision (for the final audit).
        self.trust_of: dict[str, str] = {}
        self.revision: dict[str, int] = {}
        self.references: dict[str, list[str]] = {}
        self.incidents = 0
        # Orphaned Secrets already reported: one that stays is counted once.
        self._orphans_seen: set[str] = set()
        self.pool = POOL

    def __enter__(self) -> Chaos:
        """The Secret watch, the operator, and the emergency rounds' pool: the operator's start-up pass
        begins with the first event it sees, so a namespace with no object would never log its end."""
        self.secrets.__enter__()
        self.operator.start()
        self._emergency_pool()
        self.operator.wait_started()
        return self

    def __exit__(self, *exc: object) -> None:
        self.operator.stop()
        self.secrets.__exit__()

    # reading ---------------------------------------------------------------------------------------

    def _status_of(self, body: dict[str, Any]) -> models.WebhookCertificateStatus:
        return models.WebhookCertificateStatus.model_validate(body.get("status") or {})

    def _list(self, label: str | None) -> list[dict[str, Any]]:
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

    def _trusted(self, trust_names: Iterable[str]) -> dict[str, set[str]]:
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
            trusted = self._trusted(self.trust_of[n] for n in members)
            statuses = {o["metadata"]["name"]: self._status_of(o) for o in self._list(label)}
        except Exception:  # the control plane may be down: try again
            return None
        return Sample(statuses, trusted)

    def _secret(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = self.api.core.read_namespaced_secret(name, self.namespace, _request_timeout=READ_TIMEOUT)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def holds(self, secret_name: str, fingerprint: str) -> bool:
        """Whether the Secret holds the certificate with this fingerprint and its private key."""
        data = self._secret(secret_name)
        if data is None or names.TLS_KEY not in data or names.TLS_CERT not in data:
            return False
        try:
            return pki.check_key_pair(data[names.TLS_KEY], data[names.TLS_CERT]).fingerprint == fingerprint
        except pki.InvalidKeyMaterial:
            return False

    # the rounds ------------------------------------------------------------------------------------

    def _create(self, label: str, members: list[str], **spec: Any) -> None:
        for index, name in enumerate(members):
            trust_name = f"{label}-trust-{index % 2}"
            body = whc.manifest(name, trust={"secretName": trust_name}, **spec)
            body["metadata"]["labels"] = {ROUND_LABEL: label}
            self.api.custom.create_namespaced_custom_object(
                models.GROUP, models.VERSION, self.namespace, models.PLURAL, body
            )
            self.trust_of[name] = trust_name

    def _members(self, label: str) -> list[str]:
        return [f"{label}-o{j}" for j in range(self.objects)]

    def planned(self, stats: Stats, index: int) -> str | None:
        """Fresh objects, killed during their first key and planned rotation; the round's label, or None
        when it did not converge (then it cannot be cut over)."""
        label = f"p{index:02d}"
        members = self._members(label)
        expect = {n: Expect(revision=2) for n in members}

        def act() -> None:
            self._create(label, members, **SHORT)

        converged = self._round(stats, "planned", label, members, expect, act, None)
        stats.survived += converged
        return label if converged else None

    def cutover(self, stats: Stats, label: str) -> None:
        """Cut the Rotating objects of one planned round over to their next; killed meanwhile."""
        members = self._members(label)
        before = {n: self.api.status(n) for n in members}
        expect = {n: Expect(revision=s.revision + 1, before=s) for n, s in before.items()}
        for name, status in before.items():
            if status.stage != "Rotating" or status.next is None:
                raise ChaosError(f"{name} is not Rotating with a next certificate: {status.stage}")

        def act() -> None:
            for name, status in before.items():
                assert status.next is not None
                self.api.cutover(name, status.next.serial)

        stats.survived += self._round(stats, "cutover", label, members, expect, act, None)

    def _emergency_pool(self) -> None:
        """Active objects with the default durations, for the emergency rounds."""
        label = self.pool
        members = self._members(label)
        self._create(label, members)

        def active() -> bool:
            sample = self.sample(label, members)
            if sample is None:
                return False
            return all(self._active(sample, n) for n in members)

        self._wait(active, "the emergency pool to be Active and trusted")
        for name in members:
            self.revision[name] = self.api.status(name).revision

    def _active(self, sample: Sample, name: str) -> bool:
        status = sample.statuses.get(name)
        if status is None or status.stage != "Active" or status.current is None or status.next is not None:
            return False
        return status.current.fingerprint in sample.trusted[self.trust_of[name]]

    def emergency(self, stats: Stats, label: str) -> bool:
        """Declare an incident on every Active object of the pool, killed meanwhile; then cut over.
        False when the round did not converge (the pool is then not Active for another round)."""
        members = self._members(label)
        before = {n: self.api.status(n) for n in members}
        expect: dict[str, Expect] = {}
        for name, status in before.items():
            if status.stage != "Active":
                raise ChaosError(f"{name} is not Active: {status.stage}")
            self.incidents += 1
            reference = f"INC-{self.incidents}"
            references = [*self.references.get(name, []), reference]
            self.references[name] = references
            expect[name] = Expect(status.revision + 1, before=status, reference=reference, references=references)

        def act() -> None:
            for name in members:
                reference = expect[name].reference
                assert reference is not None
                self.api.emergency(name, reference)

        converged = self._round(stats, "emergency", label, members, expect, act, None)
        stats.survived += converged
        if converged:
            self._restore(label, members)
        return converged

    def _restore(self, label: str, members: list[str]) -> None:
        """Back to Active: cut over to each replacement, as after a real incident (not interrupted)."""
        pending = {n: self.api.status(n).next for n in members}
        for name, replacement in pending.items():
            assert replacement is not None
            self.api.cutover(name, replacement.serial)

        def active() -> bool:
            sample = self.sample(label, members)
            if sample is None:
                return False
            return all(
                self._active(sample, n)
                and (current := sample.statuses[n].current) is not None
                and (replacement := pending[n]) is not None
                and current.fingerprint == replacement.fingerprint
                for n in members
            )

        self._wait(active, "the cut-over to the replacements")
        self._wait(lambda: all(self._secret(f"{n}-tls-next") is None for n in members), "the next Secrets to go")

    def control_plane(self, stats: Stats, index: int, component: str, *, kill: bool) -> None:
        """Stop ``component`` during the planned rotation of fresh objects, start it again after a few
        seconds; the operator is not restarted."""

        def interrupt(stats: Stats, started: float) -> None:
            pid = self.operator.pid
            self.dev.stop_component(component, kill=kill)
            stats.delays_s.append(time.monotonic() - started)
            time.sleep(OUTAGE_S)
            self.dev.start_component(component)
            if not self.operator.alive() or self.operator.pid != pid:
                stats.defects.append(f"{component} stop {index}: the operator exited while {component} was down")

        label = f"c{index:02d}"
        members = self._members(label)
        expect = {n: Expect(revision=2) for n in members}

        def act() -> None:
            self._create(label, members, **SHORT)

        pid = self.operator.pid
        converged = self._round(stats, component, label, members, expect, act, interrupt)
        # Survived: converged by itself, the same operator process throughout.
        stats.survived += converged and self.operator.alive() and self.operator.pid == pid
        if not self.operator.alive():
            # Recorded as a defect; a fresh operator lets the run measure the rest.
            self.operator.kill()
            self.operator.start()
            self.operator.wait_started()

    def _round(
        self,
        stats: Stats,
        path: str,
        label: str,
        members: list[str],
        expect: dict[str, Expect],
        act: Callable[[], None],
        interrupt: Callable[[Stats, float], None] | None,
    ) -> bool:
        """Act, interrupt (SIGKILL and restart, unless ``interrupt`` says otherwise), sample until every
        object converged, then check each one. True when the round converged."""
        seen: dict[str, set[str]] = {n: set() for n in members}
        for name, e in expect.items():
            if e.before is not None:
                seen[name] = {r.fingerprint for r in (e.before.current, e.before.next) if r is not None}
        gaps: list[str] = []

        def watch(until: Callable[[Sample], bool] | None, deadline: float) -> Sample | None:
            """Sample every 50 ms until ``deadline``, or until ``until`` holds (returns that sample)."""
            while True:
                started = time.monotonic()
                sample = self.sample(label, members)
                if sample is not None:
                    stats.trust_samples += 1
                    self._trust_check(sample, members, seen, gaps)
                    if until is not None and until(sample):
                        return sample
                if time.monotonic() >= deadline:
                    return None
                time.sleep(max(0.0, SAMPLE_INTERVAL_S - (time.monotonic() - started)))

        def converged(sample: Sample | None) -> bool:
            return sample is not None and all(self._converged(path, n, sample, expect[n]) for n in members)

        def unfinished() -> bool:
            """Whether the round is still short of convergence now (the moment it is interrupted)."""
            sample = self.sample(label, members)
            if sample is not None:
                self._trust_check(sample, members, seen, gaps)
            return not converged(sample)

        started = time.monotonic()
        act()
        if interrupt is None:
            delay = self.rng.uniform(0.0, KILL_DELAY_S[path])
            watch(None, started + delay)
            self.operator.kill()
            stats.delays_s.append(time.monotonic() - started)
            interrupted_at = time.monotonic()
            # The operator is dead: this state is what it left.
            mid = unfinished()
            self.operator.start()
        else:
            # The first key recorded: the objects are half-way through their rotation.
            watch(lambda s: any(st.revision >= 1 for st in s.statuses.values()), started + 60)
            mid = unfinished()
            interrupt(stats, started)
            interrupted_at = time.monotonic()
        stats.interruptions += 1
        stats.mid_rotation += int(mid)
        final = watch(converged, interrupted_at + self.converge_timeout)
        if final is not None:
            stats.converge_s.append(time.monotonic() - interrupted_at)
        stats.trust_gaps += len(gaps)
        stats.defects.extend(f"{path} {label}: trust gap: {g}" for g in gaps[:5])
        last = final or self.sample(label, members)
        for name in members:
            stats.rotations_checked += 1
            if final is None:
                stats.not_converged += 1
                status = last.statuses.get(name) if last else None
                self._defect(stats, path, label, name, f"not converged: {self._describe(status)}")
                continue
            self._check(stats, path, label, name, final.statuses[name], expect[name])
            self.revision[name] = expect[name].revision
        self._orphans(stats, path, label)
        if self.operator.alive():
            self.operator.wait_started()
        return final is not None

    # the checks --------------------------------------------------------------------------------------

    def _trust_check(self, sample: Sample, members: list[str], seen: dict[str, set[str]], gaps: list[str]) -> None:
        for name in members:
            status = sample.statuses.get(name)
            if status is None:
                continue
            trusted = sample.trusted[self.trust_of[name]]
            revoked = set(status.revoked_fingerprints)
            for role, record in (("current", status.current), ("next", status.next)):
                if record is None or record.compromised_by or record.fingerprint in revoked:
                    continue
                if record.fingerprint in trusted:
                    seen[name].add(record.fingerprint)
                elif record.fingerprint in seen[name]:
                    gaps.append(
                        f"{name}: {role} serial {record.serial} (revision {record.revision}) missing from "
                        f"{self.trust_of[name]} at {time.strftime('%H:%M:%S')}"
                    )

    def _converged(self, path: str, name: str, sample: Sample, e: Expect) -> bool:
        s = sample.statuses.get(name)
        if s is None or s.current is None or s.next is None or s.revision < e.revision:
            return False
        trusted = sample.trusted[self.trust_of[name]]
        if s.current.fingerprint not in trusted and not s.current.compromised_by:
            return False
        if s.next.fingerprint not in trusted:
            return False
        before = e.before
        if path == "cutover":
            assert before is not None
            assert before.current is not None
            assert before.next is not None
            return (
                s.stage == "Rotating"
                and s.current.fingerprint == before.next.fingerprint
                and s.next.fingerprint not in (before.current.fingerprint, before.next.fingerprint)
                and before.current.fingerprint not in trusted
            )
        if path == "emergency":
            assert before is not None
            assert before.current is not None
            return (
                s.stage == "Compromised"
                and s.next.reason == "Emergency"
                and s.last_emergency_rotation is not None
                and s.last_emergency_rotation.reference == e.reference
                and before.current.fingerprint not in trusted
            )
        return s.stage == "Rotating" and s.next.reason == "Planned"

    def _check(
        self, stats: Stats, path: str, label: str, name: str, s: models.WebhookCertificateStatus, e: Expect
    ) -> None:
        spec_secret = f"{name}-tls"
        assert s.current is not None
        assert s.next is not None
        lost = [
            f"{role} serial {record.serial} not held by Secret {secret}"
            for role, record, secret in (("current", s.current, spec_secret), ("next", s.next, f"{spec_secret}-next"))
            if not self.holds(secret, record.fingerprint)
        ]
        if lost:
            stats.keys_lost += 1
            self._defect(stats, path, label, name, "key lost: " + "; ".join(lost))
        double, wrong = [], []
        if s.revision != e.revision:
            double.append(f"revision {s.revision}, expected {e.revision}")
        before = e.before
        if path == "cutover":
            assert before is not None
            assert before.current is not None
            old = before.current.fingerprint
            if not any(h.fingerprint == old and h.reason == "Superseded" for h in s.history):
                wrong.append(f"the old current serial {before.current.serial} is not in history as Superseded")
            if s.next.reason != "Planned":
                wrong.append(f"the new next is {s.next.reason}, not Planned")
        if path == "emergency":
            assert before is not None
            assert before.current is not None
            if s.emergency_references != e.references:
                # Each reference once (the list is kept unique): more means one was handled again.
                many = len(s.emergency_references) > len(e.references)
                (double if many else wrong).append(
                    f"emergencyReferences {s.emergency_references}, expected {e.references}"
                )
            if s.current.fingerprint != before.current.fingerprint or s.current.compromised_by != e.reference:
                wrong.append(f"current serial {s.current.serial} compromised_by {s.current.compromised_by}")
            handled = [
                ev
                for ev in self.api.events(name, "EmergencyRotation")
                if (ev.message or "").startswith(f"incident {e.reference}:")
            ]
            if sum(ev.count or 1 for ev in handled) > 1:
                double.append(f"{len(handled)} EmergencyRotation Events for {e.reference}")
        if double:
            stats.double_rotations += 1
            self._defect(stats, path, label, name, "double rotation: " + "; ".join(double))
        if wrong:
            stats.mismatches += 1
            self._defect(stats, path, label, name, "; ".join(wrong))
        unrecorded = self._unrecorded(name, s)
        if unrecorded:
            stats.unrecorded_keys += len(unrecorded)
            self._defect(stats, path, label, name, f"keys never recorded in status: {sorted(unrecorded)}")

    def _unrecorded(self, name: str, s: models.WebhookCertificateStatus) -> set[str]:
        """Certificates seen in the object's key Secrets that its status never recorded."""
        recorded = {r.fingerprint for r in (s.current, s.next) if r is not None}
        recorded |= set(s.revoked_fingerprints) | {h.fingerprint for h in s.history}
        secrets = (f"{name}-tls", f"{name}-tls-next")
        # The watch may lag a moment behind the reads that established convergence: let it catch up.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            r.fingerprint in self.secrets.held(secret)
            for r, secret in ((s.current, secrets[0]), (s.next, secrets[1]))
            if r is not None
        ):
            time.sleep(0.05)
        held = self.secrets.held(secrets[0]) | self.secrets.held(secrets[1])
        return held - recorded

    def _orphans(self, stats: Stats, path: str, label: str) -> None:
        try:
            bodies = self._list(None)
            listed = self.api.core.list_namespaced_secret(
                self.namespace, label_selector=MANAGED, _request_timeout=READ_TIMEOUT
            )
        except Exception as exc:
            stats.defects.append(f"{path} {label}: orphans not checked: {exc}")
            return
        claimed: set[str] = set()
        for body in bodies:
            spec, status = body["spec"], self._status_of(body)
            claimed.add(spec["trust"]["secretName"])
            if status.current is not None:
                claimed.add(spec["secretName"])
            if status.next is not None:
                claimed.add(f"{spec['secretName']}-next")
        present = {str(s.metadata.name) for s in listed.items if s.metadata is not None}
        orphans = sorted(present - claimed)
        new = [o for o in orphans if o not in self._orphans_seen]
        self._orphans_seen.update(new)
        if new:
            stats.orphans += len(new)
            stats.defects.append(f"{path} {label}: orphaned Secrets {new}")

    def final_audit(self) -> Stats:
        """Every object once more, after all rounds: revision, keys, unrecorded keys."""
        stats = Stats("final audit")
        for body in self._list(None):
            name = body["metadata"]["name"]
            s = self._status_of(body)
            stats.rotations_checked += 1
            expected = self.revision.get(name)
            if expected is not None and s.revision != expected:
                stats.double_rotations += 1
                self._defect(stats, "final", "-", name, f"revision {s.revision}, expected {expected}")
            for role, record, secret in (("current", s.current, f"{name}-tls"), ("next", s.next, f"{name}-tls-next")):
                if record is not None and not self.holds(secret, record.fingerprint):
                    stats.keys_lost += 1
                    self._defect(stats, "final", "-", name, f"{role} serial {record.serial} not held by {secret}")
            unrecorded = self._unrecorded(name, s)
            if unrecorded:
                stats.unrecorded_keys += len(unrecorded)
                self._defect(stats, "final", "-", name, f"keys never recorded in status: {sorted(unrecorded)}")
        self._orphans(stats, "final", "-")
        return stats

    def _defect(self, stats: Stats, path: str, label: str, name: str, what: str) -> None:
        lines = "\n    ".join(self.operator.lines_about(name))
        stats.defects.append(f"{path} {label} {self.namespace}/{name}: {what}\n  operator log:\n    {lines}")

    def _describe(self, s: models.WebhookCertificateStatus | None) -> str:
        if s is None:
            return "no status"
        cur = f"{s.current.serial}{'(compromised)' if s.current.compromised_by else ''}" if s.current else "-"
        nxt = f"{s.next.serial}({s.next.reason})" if s.next else "-"
        return f"stage {s.stage}, revision {s.revision}, current {cur}, next {nxt}"

    def _wait(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.converge_timeout)
        while not condition():
            if time.monotonic() > deadline:
                raise ChaosError(f"timed out waiting for {what}")
            time.sleep(0.1)


# --- the runs -----------------------------------------------------------------------------------------


def kill_paths(chaos: Chaos, kills: int) -> dict[str, Stats]:
    """``kills`` rounds of each path: planned, then a cut-over of each planned round, then emergencies."""
    result = {path: Stats(path) for path in PATHS}
    labels = [chaos.planned(result["planned"], i) for i in range(kills)]
    # A planned round that did not converge (counted there) has nothing to cut over.
    for label in labels:
        if label is not None:
            chaos.cutover(result["cutover"], label)
    for _ in range(kills):
        if not chaos.emergency(result["emergency"], chaos.pool):
            break
    return result


def control_plane_stops(chaos: Chaos, stops: int, first_index: int = 0) -> dict[str, Stats]:
    """``stops`` outages of each component, one at a time; SIGTERM and SIGKILL alternate (the first
    kube-apiserver stop is a SIGTERM, the first etcd stop a SIGKILL)."""
    result = {component: Stats(component) for component in COMPONENTS}
    index = first_index
    for round_no in range(stops):
        for offset, component in enumerate(COMPONENTS):
            chaos.control_plane(result[component], index, component, kill=(round_no + offset) % 2 == 1)
            index += 1
    return result


# --- the benchmark ----------------------------------------------------------------------------------------


def measure(
    directory: pathlib.Path,
    *,
    kills: int = MIN_KILLS,
    objects: int = DEFAULT_OBJECTS,
    stops: int = DEFAULT_STOPS,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    machine = report.machine()  # before the benchmark loads the machine itself
    started = time.monotonic()
    with (
        harness.cluster(directory, namespace="chaos") as handle,
        Chaos(handle.dev, handle.namespace, directory, objects=objects, seed=seed) as chaos,
    ):
        paths = kill_paths(chaos, kills)
        components = control_plane_stops(chaos, stops)
        audit = chaos.final_audit()
        relists = chaos.secrets.relists
    return summarize(
        paths,
        components,
        audit,
        seed=seed,
        objects=objects,
        relists=relists,
        duration_s=time.monotonic() - started,
        machine=machine,
    )


def summarize(
    paths: dict[str, Stats],
    components: dict[str, Stats],
    audit: Stats,
    *,
    seed: int,
    objects: int,
    relists: int,
    duration_s: float,
    machine: dict[str, str | int | float],
) -> dict[str, Any]:
    """The benchmark's result: each path's and component's figures, the final audit, the totals."""
    everything = [*paths.values(), *components.values(), audit]
    return {
        "benchmark": NAME,
        "seed": seed,
        "objects_per_round": objects,
        "kill_delay_s": KILL_DELAY_S,
        "outage_s": OUTAGE_S,
        "paths": {name: s.to_json() for name, s in paths.items()},
        "control_plane": {name: s.to_json() for name, s in components.items()},
        "final_audit": audit.to_json(),
        "totals": {
            "kills": sum(s.interruptions for s in paths.values()),
            "kills_survived": sum(s.survived for s in paths.values()),
            "control_plane_stops": sum(s.interruptions for s in components.values()),
            "control_plane_stops_survived": sum(s.survived for s in components.values()),
            "rotations_checked": sum(s.rotations_checked for s in [*paths.values(), *components.values()]),
            **{c: sum(getattr(s, c) for s in everything) for c in COUNTERS},
        },
        "clean": all(s.failures() == 0 and not s.defects for s in everything),
        # Times the harness's own Secret watch had to list again (it may have missed a version then).
        "secret_watch_relists": relists,
        "duration_s": round(duration_s, 1),
        # Other work on a 2-core machine slows every restart: how busy it was at the end, too.
        "load_1min_end": round(os.getloadavg()[0], 2),
        "machine": machine,
    }


def _converge_cell(s: dict[str, Any]) -> str:
    converge = s["converge_s"]
    return f"{converge['median']:.1f} / {converge['max']:.1f}" if converge else "-"


def _row(s: dict[str, Any]) -> tuple[object, ...]:
    return (
        f"{s['interruptions']} ({s['survived']})",
        s["mid_rotation"],
        s["rotations_checked"],
        s["keys_lost"],
        s["double_rotations"],
        s["unrecorded_keys"],
        f"{s['trust_gaps']} ({s['trust_samples']})",
        s["orphans"],
        s["not_converged"],
        _converge_cell(s),
    )


def section(result: dict[str, Any], command: str) -> str:
    totals, audit = result["totals"], result["final_audit"]
    delays = ", ".join(f"{path} 0-{bound:g} s" for path, bound in result["kill_delay_s"].items())

    def head(interruption: str, since: str) -> tuple[str, ...]:
        return (
            "",
            f"{interruption} (survived)",
            "mid-rotation",
            "rotations checked",
            "keys lost",
            "double rotations",
            "unrecorded keys",
            "trust gaps (samples)",
            "orphans",
            "not converged",
            f"{since} -> converged, median / max (s)",
        )

    kill_rows = [(name, *_row(s)) for name, s in result["paths"].items()]
    stop_rows = [(name, *_row(s)) for name, s in result["control_plane"].items()]
    defects = [
        d.splitlines()[0] for group in ("paths", "control_plane") for s in result[group].values() for d in s["defects"]
    ]
    defects += [d.splitlines()[0] for d in audit["defects"]]
    verdict = (
        "**Clean**: no key lost, no double rotation, no unrecorded key, no trust gap, no orphan, every round converged."
        if result["clean"]
        else "**Defects found** (details, with the operator's log lines, in the result JSON):\n\n"
        + "\n".join(f"- {d}" for d in defects[:10])
    )
    return "\n".join(
        [
            "## Crash safety: SIGKILL mid-rotation, control plane outages",
            "",
            f"The operator (`webhookcerts run`, its own process) SIGKILLed {totals['kills']} times at a random moment "
            f"(seed {result['seed']}; {delays} after the round's first write) and started again at once;",
            f"{result['objects_per_round']} objects per round. Planned: fresh objects (`duration: 2h`, "
            "`renewBefore: 1h59m59s`: first key, then the next key a second later). Cut-over: the Rotating objects of "
            "a planned round cut over (each followed by a new planned next, its renewal time having passed too). "
            "Emergency: Active objects (default durations) given an incident reference, then cut over to the "
            "replacement before the next round. Then kube-apiserver and etcd, one at a time, stopped during the "
            f"planned rotation of fresh objects (SIGTERM and SIGKILL alternately), down for {result['outage_s']:g} s, "
            "started again; the operator is not restarted.",
            "",
            "After each round every object must converge (revision up by exactly the rotation's keys, the key and "
            "next Secrets holding the recorded certificates with their keys, the trust Secret listing them and not "
            "the compromised one). Keys lost: a recorded certificate its Secret does not hold. Double rotations: the "
            "revision moved more than expected, or two EmergencyRotation Events for one reference. Unrecorded keys: a "
            "certificate a watch saw in an object's key Secrets that its status never recorded. Trust gaps: samples "
            "(every 50 ms from the first write to convergence) in which a certificate status records as current or "
            "next, not compromised, once seen trusted, was missing from the trust Secret. Orphans: a Secret of the "
            "operator's that no object claims (a `-next` Secret with no `status.next`). Mid-rotation: kills that "
            "found the round unfinished (the others landed after it converged).",
            "",
            "Operator kills:",
            "",
            report.table(head("kills", "kill"), kill_rows),
            "",
            "Control plane stops (the same operator process throughout):",
            "",
            report.table(head("stops", "restart"), stop_rows),
            "",
            f"Final audit of all {audit['rotations_checked']} objects after the last round: {audit['keys_lost']} keys "
            f"lost, {audit['double_rotations']} double rotations, {audit['unrecorded_keys']} unrecorded keys, "
            f"{audit['orphans']} orphans.",
            "",
            f"Totals: {totals['kills_survived']} of {totals['kills']} kills and "
            f"{totals['control_plane_stops_survived']} of {totals['control_plane_stops']} control plane stops "
            f"survived, {totals['rotations_checked']} "
            f"rotations checked, {totals['keys_lost']} keys lost, {totals['double_rotations']} double rotations, "
            f"{totals['trust_gaps']} trust gaps. {verdict}",
            "",
            f"The whole run took {result['duration_s'] / 60:.0f} min; load average {result['load_1min_end']} when it "
            "ended.",
            "",
            report.footer(command, result["machine"]),
        ]
    )

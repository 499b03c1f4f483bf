"""The rounds of the chaos harness: WebhookCertificates driven through a path, the operator SIGKILLed
at a seeded random moment of each round and started again at once, or the control plane stopped under it.

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

Each round is sampled every 50 ms from its first write until it converged; benchmarks/chaos_audit.py
says what is checked of each sample and of each converged object.
"""

from __future__ import annotations

import pathlib
import random
import time
from collections.abc import Callable
from typing import Any

from tests import whc

from benchmarks.chaos_audit import Audit, Expect, Stats
from benchmarks.chaos_observe import ROUND_LABEL, ChaosError, Operator, Reader, Sample, SecretLog, quiet_client
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models

DEFAULT_OBJECTS = 6
DEFAULT_SEED = 13
PATHS = ("planned", "cutover", "emergency")
COMPONENTS = ("kube-apiserver", "etcd")
# Upper bounds of the uniform random delay between a round's first write and the SIGKILL.
KILL_DELAY_S = {"planned": 2.0, "cutover": 0.5, "emergency": 1.0}
SHORT = {"duration": "2h", "renewBefore": "1h59m59s"}
SAMPLE_INTERVAL_S = 0.05
CONVERGE_TIMEOUT_S = 180.0
OUTAGE_S = 3.0
# The round label of the emergency rounds' objects (the same ones every round).
POOL = "em"


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
        self.read = Reader(self.api, namespace, self.trust_of)
        self.audit = Audit(self.read, self.secrets, self.operator, self.revision)
        self.references: dict[str, list[str]] = {}
        self.incidents = 0
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
            sample = self.read.sample(label, members)
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
            sample = self.read.sample(label, members)
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
        self._wait(lambda: all(self.read.secret(f"{n}-tls-next") is None for n in members), "the next Secrets to go")

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
                sample = self.read.sample(label, members)
                if sample is not None:
                    stats.trust_samples += 1
                    self.audit.trust_check(sample, members, seen, gaps)
                    if until is not None and until(sample):
                        return sample
                if time.monotonic() >= deadline:
                    return None
                time.sleep(max(0.0, SAMPLE_INTERVAL_S - (time.monotonic() - started)))

        def converged(sample: Sample | None) -> bool:
            return sample is not None and all(self.audit.converged(path, n, sample, expect[n]) for n in members)

        def unfinished() -> bool:
            """Whether the round is still short of convergence now (the moment it is interrupted)."""
            sample = self.read.sample(label, members)
            if sample is not None:
                self.audit.trust_check(sample, members, seen, gaps)
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
        last = final or self.read.sample(label, members)
        for name in members:
            stats.rotations_checked += 1
            if final is None:
                stats.not_converged += 1
                status = last.statuses.get(name) if last else None
                self.audit.defect(stats, path, label, name, f"not converged: {self.audit.describe(status)}")
                continue
            self.audit.check(stats, path, label, name, final.statuses[name], expect[name])
            self.revision[name] = expect[name].revision
        self.audit.orphans(stats, path, label)
        if self.operator.alive():
            self.operator.wait_started()
        return final is not None

    def _wait(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.converge_timeout)
        while not condition():
            if time.monotonic() > deadline:
                raise ChaosError(f"timed out waiting for {what}")
            time.sleep(0.1)

"""What the chaos harness checks of every round, and counts: keys lost, double rotations, unrecorded
keys, trust gaps, orphans, rounds that did not converge.

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

import dataclasses
import time
from typing import Any

from benchmarks.chaos_observe import MANAGED, READ_TIMEOUT, Operator, Reader, Sample, SecretLog
from benchmarks.stats import summary
from webhookcerts.domain import models

COUNTERS = (
    "keys_lost",
    "double_rotations",
    "unrecorded_keys",
    "trust_gaps",
    "orphans",
    "not_converged",
    "mismatches",
)


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


class Audit:
    """The checks of converged rounds, and the final audit, each defect with the operator's log lines."""

    def __init__(self, read: Reader, secrets: SecretLog, operator: Operator, revision: dict[str, int]) -> None:
        self.read, self.secrets, self.operator = read, secrets, operator
        # Per object: the revision it must have now (for the final audit); the rounds keep it.
        self.revision = revision
        # Orphaned Secrets already reported: one that stays is counted once.
        self._orphans_seen: set[str] = set()

    def trust_check(self, sample: Sample, members: list[str], seen: dict[str, set[str]], gaps: list[str]) -> None:
        for name in members:
            status = sample.statuses.get(name)
            if status is None:
                continue
            trusted = sample.trusted[self.read.trust_of[name]]
            revoked = set(status.revoked_fingerprints)
            for role, record in (("current", status.current), ("next", status.next)):
                if record is None or record.compromised_by or record.fingerprint in revoked:
                    continue
                if record.fingerprint in trusted:
                    seen[name].add(record.fingerprint)
                elif record.fingerprint in seen[name]:
                    gaps.append(
                        f"{name}: {role} serial {record.serial} (revision {record.revision}) missing from "
                        f"{self.read.trust_of[name]} at {time.strftime('%H:%M:%S')}"
                    )

    def converged(self, path: str, name: str, sample: Sample, e: Expect) -> bool:
        s = sample.statuses.get(name)
        if s is None or s.current is None or s.next is None or s.revision < e.revision:
            return False
        trusted = sample.trusted[self.read.trust_of[name]]
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

    def check(
        self, stats: Stats, path: str, label: str, name: str, s: models.WebhookCertificateStatus, e: Expect
    ) -> None:
        spec_secret = f"{name}-tls"
        assert s.current is not None
        assert s.next is not None
        lost = [
            f"{role} serial {record.serial} not held by Secret {secret}"
            for role, record, secret in (("current", s.current, spec_secret), ("next", s.next, f"{spec_secret}-next"))
            if not self.read.holds(secret, record.fingerprint)
        ]
        if lost:
            stats.keys_lost += 1
            self.defect(stats, path, label, name, "key lost: " + "; ".join(lost))
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
                for ev in self.read.api.events(name, "EmergencyRotation")
                if (ev.message or "").startswith(f"incident {e.reference}:")
            ]
            if sum(ev.count or 1 for ev in handled) > 1:
                double.append(f"{len(handled)} EmergencyRotation Events for {e.reference}")
        if double:
            stats.double_rotations += 1
            self.defect(stats, path, label, name, "double rotation: " + "; ".join(double))
        if wrong:
            stats.mismatches += 1
            self.defect(stats, path, label, name, "; ".join(wrong))
        unrecorded = self._unrecorded(name, s)
        if unrecorded:
            stats.unrecorded_keys += len(unrecorded)
            self.defect(stats, path, label, name, f"keys never recorded in status: {sorted(unrecorded)}")

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

    def orphans(self, stats: Stats, path: str, label: str) -> None:
        try:
            bodies = self.read.objects(None)
            listed = self.read.api.core.list_namespaced_secret(
                self.read.namespace, label_selector=MANAGED, _request_timeout=READ_TIMEOUT
            )
        except Exception as exc:
            stats.defects.append(f"{path} {label}: orphans not checked: {exc}")
            return
        claimed: set[str] = set()
        for body in bodies:
            spec, status = body["spec"], self.read.status_of(body)
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
        for body in self.read.objects(None):
            name = body["metadata"]["name"]
            s = self.read.status_of(body)
            stats.rotations_checked += 1
            expected = self.revision.get(name)
            if expected is not None and s.revision != expected:
                stats.double_rotations += 1
                self.defect(stats, "final", "-", name, f"revision {s.revision}, expected {expected}")
            for role, record, secret in (("current", s.current, f"{name}-tls"), ("next", s.next, f"{name}-tls-next")):
                if record is not None and not self.read.holds(secret, record.fingerprint):
                    stats.keys_lost += 1
                    self.defect(stats, "final", "-", name, f"{role} serial {record.serial} not held by {secret}")
            unrecorded = self._unrecorded(name, s)
            if unrecorded:
                stats.unrecorded_keys += len(unrecorded)
                self.defect(stats, "final", "-", name, f"keys never recorded in status: {sorted(unrecorded)}")
        self.orphans(stats, "final", "-")
        return stats

    def defect(self, stats: Stats, path: str, label: str, name: str, what: str) -> None:
        lines = "\n    ".join(self.operator.lines_about(name))
        stats.defects.append(f"{path} {label} {self.read.namespace}/{name}: {what}\n  operator log:\n    {lines}")

    def describe(self, s: models.WebhookCertificateStatus | None) -> str:
        if s is None:
            return "no status"
        cur = f"{s.current.serial}{'(compromised)' if s.current.compromised_by else ''}" if s.current else "-"
        nxt = f"{s.next.serial}({s.next.reason})" if s.next else "-"
        return f"stage {s.stage}, revision {s.revision}, current {cur}, next {nxt}"

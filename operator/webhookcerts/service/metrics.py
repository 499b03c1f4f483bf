"""Prometheus metrics of every WebhookCertificate, modelled on cert-manager's.

Dashboards and alerts built for cert-manager (expiration and renewal timestamps, a one-hot ready status)
carry over; what cert-manager has no word for (a rotation awaiting cut-over, a compromised certificate)
gets series of its own. Every series is labelled with the object's ``name``, ``namespace`` and
``environment``; gauges describe the status as last reconciled, counters count what this process did.

Gauges are set from status after each reconcile, so they never disagree with ``kubectl get whc``; a
series whose fact no longer holds (no pending next certificate, say) is removed rather than set to zero,
so alert expressions can use ``unless`` on it. When an object is deleted, every series naming it goes.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from typing import Literal

import prometheus_client

from webhookcerts.domain import models, names

PREFIX = "webhookcerts"
LABELS = ("name", "namespace", "environment")
CONDITION_STATUSES: tuple[models.ConditionStatus, ...] = ("True", "False", "Unknown")
STAGES: tuple[models.Stage, ...] = ("Issuing", "Active", "Rotating", "Compromised")
RotationReason = Literal["planned", "emergency"]
ROTATION_REASONS: tuple[RotationReason, ...] = ("planned", "emergency")
ROLES = ("current", "next")
REPORTER_STATES = ("live", "stale")
# cert-manager serves on 9402; the next port keeps both scrapeable side by side on one host network.
DEFAULT_PORT = 9403
# An RSA-4096 key takes from a tenth of a second to several seconds (the search for primes), more on a
# throttled pod: buckets from 50 ms to a minute.
KEY_GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def _seconds(moment: datetime.datetime) -> float:
    return moment.timestamp()


class Metrics:
    """The operator's series, registered in one registry (tests pass a registry of their own)."""

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        reg = self.registry

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> prometheus_client.Gauge:
            return prometheus_client.Gauge(f"{PREFIX}_{name}", doc, (*LABELS, *extra), registry=reg)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> prometheus_client.Counter:
            return prometheus_client.Counter(f"{PREFIX}_{name}", doc, (*LABELS, *extra), registry=reg)

        self.expiration = gauge(
            "certificate_expiration_timestamp_seconds", "The date after which the current certificate expires."
        )
        self.renewal = gauge(
            "certificate_renewal_timestamp_seconds", "The time at which a planned rotation of the current starts."
        )
        self.ready = gauge(
            "certificate_ready_status", "The Ready condition of the WebhookCertificate (one-hot).", ("condition",)
        )
        self.stage = gauge("certificate_stage", "The lifecycle stage of the WebhookCertificate (one-hot).", ("stage",))
        self.compromised = gauge(
            "certificate_compromised", "1 while the current certificate is marked compromised by an emergency."
        )
        self.next_expiration = gauge(
            "next_certificate_expiration_timestamp_seconds",
            "The expiry of the pending next certificate; absent when no rotation is pending.",
        )
        self.next_issued = gauge(
            "next_certificate_issued_timestamp_seconds",
            "When the pending next certificate was issued (awaiting cut-over since); absent when none is pending.",
        )
        self.rotations = counter(
            "rotations_total", "Next certificates issued, by reason (planned or emergency).", ("reason",)
        )
        self.cutovers = counter("cutovers_total", "Cut-overs: a next certificate became the current one.")
        self.trust_reloads = counter(
            "trust_reloads_total", "Consumers (pods or workloads) told to reload a changed trust store."
        )
        self.reconcile_errors = counter("reconcile_errors_total", "Reconciles that ended in an error.")
        # Issue 24: what the endpoints report of the provider's certificates.
        self.presentations = gauge(
            "certificate_presentations",
            "Accepted presentations of the certificate, summed over the counted reporters; absent without "
            "a certificate in the role or a reporter.",
            ("role",),
        )
        self.last_presented = gauge(
            "certificate_last_presented_timestamp_seconds",
            "When an endpoint last accepted the certificate; absent until presented.",
            ("role",),
        )
        self.reporters = gauge("reporters", "Counted reporters of the object's trust store, live or stale.", ("state",))
        self.heartbeats = gauge(
            "reporter_heartbeat_timestamp_seconds", "The last heartbeat of each counted reporter.", ("pod",)
        )
        self.revoked_presentations = counter(
            "revoked_certificate_presentations_total",
            "Presentations of a revoked certificate (compromised or superseded) the reports added.",
            ("fingerprint",),
        )
        # Not per object: a key's generation time says how busy the operator's cores are, not how one
        # object fares. The sum over a window, divided by the keys generated at once, is the least time
        # issuing that many keys can take (benchmarks/scale.py reads it so).
        self.key_generation = prometheus_client.Histogram(
            f"{PREFIX}_key_generation_seconds",
            "Time to generate one private key and its certificate (the wait for a free key-generation slot excluded).",
            buckets=KEY_GENERATION_BUCKETS,
            registry=reg,
        )
        self._lock = threading.Lock()
        # The environment each object's series carry, so that forgetting an object needs only its name.
        self._environments: dict[tuple[str, str], str] = {}
        # The label values each object's per-pod and per-fingerprint series carry, to remove them.
        self._pods: dict[tuple[str, str], set[str]] = {}
        self._fingerprints: dict[tuple[str, str], set[str]] = {}

    # -- gauges from status -------------------------------------------------------------------------

    def observe(self, namespace: str, name: str, environment: str, status: models.WebhookCertificateStatus) -> None:
        """Set every gauge of one object from its status as just reconciled."""
        with self._lock:
            previous = self._environments.get((namespace, name))
            if previous is not None and previous != environment:
                self._remove(namespace, name, previous)
            self._environments[(namespace, name)] = environment
            labels = (name, namespace, environment)
            ready = next((c.status for c in status.conditions if c.type == names.READY), "Unknown")
            for value in CONDITION_STATUSES:
                self.ready.labels(*labels, value).set(1.0 if value == ready else 0.0)
            for stage in STAGES:
                self.stage.labels(*labels, stage).set(1.0 if stage == status.stage else 0.0)
            current, pending = status.current, status.next
            self._set_or_remove(self.expiration, labels, _seconds(current.not_after) if current else None)
            self._set_or_remove(self.renewal, labels, _seconds(status.renewal_time) if status.renewal_time else None)
            self.compromised.labels(*labels).set(1.0 if current is not None and current.compromised_by else 0.0)
            self._set_or_remove(self.next_expiration, labels, _seconds(pending.not_after) if pending else None)
            self._set_or_remove(self.next_issued, labels, _seconds(pending.issued_at) if pending else None)
            for role, record in (("current", current), ("next", pending)):
                count = record.presentations if record is not None else None
                last = record.last_presented if record is not None else None
                self._set_or_remove(self.presentations, (*labels, role), float(count) if count is not None else None)
                self._set_or_remove(self.last_presented, (*labels, role), _seconds(last) if last else None)
            stale = sum(1 for r in status.reporters if r.stale)
            self.reporters.labels(*labels, "live").set(len(status.reporters) - stale)
            self.reporters.labels(*labels, "stale").set(stale)
            # Counters start at zero, so that increase() sees the first rotation of a new object.
            for reason in ROTATION_REASONS:
                self.rotations.labels(*labels, reason)
            for metric in (self.cutovers, self.trust_reloads, self.reconcile_errors):
                metric.labels(*labels)

    @staticmethod
    def _set_or_remove(gauge: prometheus_client.Gauge, labels: tuple[str, ...], value: float | None) -> None:
        if value is not None:
            gauge.labels(*labels).set(value)
            return
        Metrics._discard(gauge, labels)

    # -- counters ------------------------------------------------------------------------------------

    def rotated(self, namespace: str, name: str, environment: str, reason: RotationReason) -> None:
        self._remember(namespace, name, environment)
        self.rotations.labels(name, namespace, environment, reason).inc()

    def cut_over(self, namespace: str, name: str, environment: str) -> None:
        self._remember(namespace, name, environment)
        self.cutovers.labels(name, namespace, environment).inc()

    def trust_reloaded(self, namespace: str, name: str, environment: str, consumers: int) -> None:
        if consumers:
            self._remember(namespace, name, environment)
            self.trust_reloads.labels(name, namespace, environment).inc(consumers)

    def reconcile_failed(self, namespace: str, name: str, environment: str) -> None:
        self._remember(namespace, name, environment)
        self.reconcile_errors.labels(name, namespace, environment).inc()

    def heartbeats_seen(
        self, namespace: str, name: str, environment: str, heartbeats: dict[str, datetime.datetime]
    ) -> None:
        """The counted reporters' latest heartbeats, from the reports (status keeps them only as of its
        last change); a reporter no longer counted loses its series."""
        with self._lock:
            self._environments.setdefault((namespace, name), environment)
            labels = (name, namespace, environment)
            before = self._pods.get((namespace, name), set())
            for pod in before - set(heartbeats):
                self._discard(self.heartbeats, (*labels, pod))
            for pod, moment in heartbeats.items():
                self.heartbeats.labels(*labels, pod).set(_seconds(moment))
            self._pods[(namespace, name)] = set(heartbeats)

    def revoked_presented(self, namespace: str, name: str, environment: str, fingerprint: str, count: int) -> None:
        """Presentations of a revoked certificate newly counted (status records what was counted)."""
        self._remember(namespace, name, environment)
        with self._lock:
            self._fingerprints.setdefault((namespace, name), set()).add(fingerprint)
        self.revoked_presentations.labels(name, namespace, environment, fingerprint).inc(count)

    def key_generated(self, seconds: float) -> None:
        self.key_generation.observe(seconds)

    def _remember(self, namespace: str, name: str, environment: str) -> None:
        with self._lock:
            self._environments.setdefault((namespace, name), environment)

    # -- deletion ------------------------------------------------------------------------------------

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop every series that names it."""
        with self._lock:
            environment = self._environments.pop((namespace, name), None)
            if environment is not None:
                self._remove(namespace, name, environment)

    def _remove(self, namespace: str, name: str, environment: str) -> None:
        labels = (name, namespace, environment)
        extras: list[tuple[prometheus_client.Gauge | prometheus_client.Counter, tuple[str, ...]]] = [
            (self.ready, CONDITION_STATUSES),
            (self.stage, STAGES),
            (self.rotations, ROTATION_REASONS),
            (self.presentations, ROLES),
            (self.last_presented, ROLES),
            (self.reporters, REPORTER_STATES),
            (self.heartbeats, tuple(self._pods.pop((namespace, name), ()))),
            (self.revoked_presentations, tuple(self._fingerprints.pop((namespace, name), ()))),
        ]
        for metric, values in extras:
            for value in values:
                self._discard(metric, (*labels, value))
        for plain in (
            self.expiration,
            self.renewal,
            self.compromised,
            self.next_expiration,
            self.next_issued,
            self.cutovers,
            self.trust_reloads,
            self.reconcile_errors,
        ):
            self._discard(plain, labels)

    @staticmethod
    def _discard(metric: prometheus_client.Gauge | prometheus_client.Counter, labels: tuple[str, ...]) -> None:
        # Older prometheus_client releases raise KeyError for a series that never existed.
        with contextlib.suppress(KeyError):
            metric.remove(*labels)

    def exposition(self) -> bytes:
        """The text format a scrape returns (for tests and the CLI)."""
        data: bytes = prometheus_client.generate_latest(self.registry)
        return data


_default: Metrics | None = None
_default_lock = threading.Lock()


def default() -> Metrics:
    """The process-wide metrics in the global registry, created on first use (registering twice fails)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
    """Serve ``/metrics`` (the global registry: ours plus process and Python series) in a thread."""
    # Go clients (cert-manager among them) expose no `_created` series; neither do we.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    prometheus_client.start_http_server(port, addr=address)

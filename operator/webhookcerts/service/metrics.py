"""Prometheus metrics of every WebhookCertificate, modelled on cert-manager's.

Dashboards and alerts built for cert-manager (expiration and renewal timestamps, a one-hot ready status)
carry over; what cert-manager has no word for (a rotation awaiting cut-over, a compromised certificate)
gets series of its own. Every series is labelled with the object's ``name``, ``namespace`` and
``environment``; gauges describe the status as last reconciled, counters count what this process did.

Gauges are set from status after each reconcile, so they never disagree with ``kubectl get whc``; a
series whose fact no longer holds (no pending next certificate, say) is absent rather than zero, so
alert expressions can use ``unless`` on it. When an object is deleted, every series naming it goes.

The series are not prometheus_client's labelled children: those cost a Python object, a lock and a
label tuple each, about 20 per object, and were the largest part of the operator's memory per object
after the view itself (benchmarks/memory.py measured 11 MB at 1,000 objects). Each object keeps one
small record of the facts its series show, and a collector turns the records into series when Prometheus
scrapes (what kube-state-metrics and cert-manager's own collectors do): memory grows by the record, and
a scrape costs what it costs to write the text, which it costs anyway.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import threading
from collections.abc import Iterator
from typing import Literal

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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

# name, help, extra label: in the order a scrape lists them.
_GAUGES: tuple[tuple[str, str, str | None], ...] = (
    ("certificate_expiration_timestamp_seconds", "The date after which the current certificate expires.", None),
    ("certificate_renewal_timestamp_seconds", "The time at which a planned rotation of the current starts.", None),
    ("certificate_ready_status", "The Ready condition of the WebhookCertificate (one-hot).", "condition"),
    ("certificate_stage", "The lifecycle stage of the WebhookCertificate (one-hot).", "stage"),
    ("certificate_compromised", "1 while the current certificate is marked compromised by an emergency.", None),
    (
        "next_certificate_expiration_timestamp_seconds",
        "The expiry of the pending next certificate; absent when no rotation is pending.",
        None,
    ),
    (
        "next_certificate_issued_timestamp_seconds",
        "When the pending next certificate was issued (awaiting cut-over since); absent when none is pending.",
        None,
    ),
    # Issue 24: what the endpoints report of the provider's certificates.
    (
        "certificate_presentations",
        "Accepted presentations of the certificate, summed over the counted reporters; absent without "
        "a certificate in the role or a reporter.",
        "role",
    ),
    (
        "certificate_last_presented_timestamp_seconds",
        "When an endpoint last accepted the certificate; absent until presented.",
        "role",
    ),
    ("reporters", "Counted reporters of the object's trust store, live or stale.", "state"),
    ("reporter_heartbeat_timestamp_seconds", "The last heartbeat of each counted reporter.", "pod"),
)
_COUNTERS: tuple[tuple[str, str, str | None], ...] = (
    ("rotations_total", "Next certificates issued, by reason (planned or emergency).", "reason"),
    ("cutovers_total", "Cut-overs: a next certificate became the current one.", None),
    ("trust_reloads_total", "Consumers (pods or workloads) told to reload a changed trust store.", None),
    ("reconcile_errors_total", "Reconciles that ended in an error.", None),
    (
        "revoked_certificate_presentations_total",
        "Presentations of a revoked certificate (compromised or superseded) the reports added.",
        "fingerprint",
    ),
)

# One sample: the extra label's value ("" when the metric has none) and the value.
_Samples = dict[str, list[tuple[str, float]]]


def _seconds(moment: datetime.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


@dataclasses.dataclass(frozen=True, slots=True)
class _Facts:
    """What the gauges of one object show, as few objects as its status allows; the samples are written
    from it at scrape time (kept as samples, a dict of lists of pairs, it was 2 kB per object)."""

    ready: str
    stage: str
    compromised: bool
    expiration: float | None
    renewal: float | None
    next_expiration: float | None
    next_issued: float | None
    # (role, value) for the roles that have one.
    presentations: tuple[tuple[str, float], ...]
    last_presented: tuple[tuple[str, float], ...]
    live: int
    stale: int


@dataclasses.dataclass(slots=True)
class _Record:
    """What one object's series show: the facts of its status as last reconciled, and its counters."""

    environment: str
    # None until a status was observed.
    facts: _Facts | None = None
    heartbeats: dict[str, float] | None = None
    # (metric, extra label value) -> count; an observed object's counters absent here are at zero.
    counts: dict[tuple[str, str], float] | None = None


def _facts(status: models.WebhookCertificateStatus) -> _Facts:
    current, pending = status.current, status.next
    ready = next((c.status for c in status.conditions if c.type == names.READY), "Unknown")
    counts, lasts = [], []
    for role, record in (("current", current), ("next", pending)):
        if record is not None and record.presentations is not None:
            counts.append((role, float(record.presentations)))
        last = _seconds(record.last_presented) if record is not None else None
        if last is not None:
            lasts.append((role, last))
    stale = sum(1 for r in status.reporters if r.stale)
    return _Facts(
        # Interned: the same few words for every object, not a copy each.
        ready=sys.intern(str(ready)),
        stage=sys.intern(str(status.stage)),
        compromised=current is not None and bool(current.compromised_by),
        expiration=_seconds(current.not_after) if current else None,
        renewal=_seconds(status.renewal_time),
        next_expiration=_seconds(pending.not_after) if pending else None,
        next_issued=_seconds(pending.issued_at) if pending else None,
        presentations=tuple(counts),
        last_presented=tuple(lasts),
        live=len(status.reporters) - stale,
        stale=stale,
    )


def _gauge_samples(facts: _Facts) -> _Samples:
    found: _Samples = {
        "certificate_ready_status": [(value, 1.0 if value == facts.ready else 0.0) for value in CONDITION_STATUSES],
        "certificate_stage": [(stage, 1.0 if stage == facts.stage else 0.0) for stage in STAGES],
        "certificate_compromised": [("", 1.0 if facts.compromised else 0.0)],
    }
    plain = {
        "certificate_expiration_timestamp_seconds": facts.expiration,
        "certificate_renewal_timestamp_seconds": facts.renewal,
        "next_certificate_expiration_timestamp_seconds": facts.next_expiration,
        "next_certificate_issued_timestamp_seconds": facts.next_issued,
    }
    for metric, moment in plain.items():
        if moment is not None:
            found[metric] = [("", moment)]
    found["certificate_presentations"] = list(facts.presentations)
    found["certificate_last_presented_timestamp_seconds"] = list(facts.last_presented)
    found["reporters"] = [("live", float(facts.live)), ("stale", float(facts.stale))]
    return found


class Metrics(Collector):
    """The operator's series, registered in one registry (tests pass a registry of their own)."""

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], _Record] = {}
        # Not per object: a key's generation time says how busy the operator's cores are, not how one
        # object fares. The sum over a window, divided by the keys generated at once, is the least time
        # issuing that many keys can take (benchmarks/scale.py reads it so).
        self.key_generation = prometheus_client.Histogram(
            f"{PREFIX}_key_generation_seconds",
            "Time to generate one private key and its certificate (the wait for a free key-generation slot excluded).",
            buckets=KEY_GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)

    def _record(self, namespace: str, name: str, environment: str, *, observed: bool = False) -> _Record:
        # Under the lock. A status observed under another environment starts the object's series
        # afresh (none stays under the old); a counter or heartbeat adds to the series it has, whatever
        # environment its caller knew (an error pass whose spec could not be read says "").
        held = self._records.get((namespace, name))
        if held is None or (observed and held.environment != environment):
            held = self._records[(namespace, name)] = _Record(environment)
        return held

    # -- gauges from status -------------------------------------------------------------------------

    def observe(self, namespace: str, name: str, environment: str, status: models.WebhookCertificateStatus) -> None:
        """Set every gauge of one object from its status as just reconciled."""
        facts = _facts(status)
        with self._lock:
            record = self._record(namespace, name, environment, observed=True)
            record.facts = facts
            if record.counts is not None:
                # Counted before its first status: the zero counters follow what was counted.
                for key in _ZERO_COUNTERS:
                    record.counts.setdefault(key, 0.0)

    # -- counters ------------------------------------------------------------------------------------

    def _add(self, namespace: str, name: str, environment: str, key: tuple[str, str], amount: float) -> None:
        with self._lock:
            record = self._record(namespace, name, environment)
            if record.counts is None:
                record.counts = _zero_counts(record)
            record.counts[key] = record.counts.get(key, 0.0) + amount

    def rotated(self, namespace: str, name: str, environment: str, reason: RotationReason) -> None:
        self._add(namespace, name, environment, ("rotations_total", reason), 1)

    def cut_over(self, namespace: str, name: str, environment: str) -> None:
        self._add(namespace, name, environment, ("cutovers_total", ""), 1)

    def trust_reloaded(self, namespace: str, name: str, environment: str, consumers: int) -> None:
        if consumers:
            self._add(namespace, name, environment, ("trust_reloads_total", ""), consumers)

    def reconcile_failed(self, namespace: str, name: str, environment: str) -> None:
        self._add(namespace, name, environment, ("reconcile_errors_total", ""), 1)

    def heartbeats_seen(
        self, namespace: str, name: str, environment: str, heartbeats: dict[str, datetime.datetime]
    ) -> None:
        """The counted reporters' latest heartbeats, from the reports (status keeps them only as of its
        last change); a reporter no longer counted loses its series."""
        with self._lock:
            self._record(namespace, name, environment).heartbeats = {
                pod: moment.timestamp() for pod, moment in heartbeats.items()
            }

    def revoked_presented(self, namespace: str, name: str, environment: str, fingerprint: str, count: int) -> None:
        """Presentations of a revoked certificate newly counted (status records what was counted)."""
        self._add(namespace, name, environment, ("revoked_certificate_presentations_total", fingerprint), count)

    def key_generated(self, seconds: float) -> None:
        self.key_generation.observe(seconds)

    # -- deletion ------------------------------------------------------------------------------------

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop every series that names it."""
        with self._lock:
            self._records.pop((namespace, name), None)

    # -- the scrape ----------------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        # The names alone, so that registering does not scrape (and a second registration fails).
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        by_name = {family.name: family for family in families}
        with self._lock:
            records = [(key, record.environment, record) for key, record in self._records.items()]
            for (namespace, name), environment, record in records:
                labels = [name, namespace, environment]
                if record.facts is not None:
                    for metric, samples in _gauge_samples(record.facts).items():
                        for extra, value in samples:
                            _add_sample(by_name[f"{PREFIX}_{metric}"], labels, extra, value)
                counts = record.counts if record.counts is not None else _zero_counts(record)
                for pod, moment in (record.heartbeats or {}).items():
                    _add_sample(by_name[f"{PREFIX}_reporter_heartbeat_timestamp_seconds"], labels, pod, moment)
                for (metric, extra), count in counts.items():
                    _add_sample(by_name[f"{PREFIX}_{metric.removesuffix('_total')}"], labels, extra, count)
        yield from families

    @staticmethod
    def _families() -> list[Metric]:
        families: list[Metric] = []
        for metric, doc, extra in _GAUGES:
            families.append(GaugeMetricFamily(f"{PREFIX}_{metric}", doc, labels=[*LABELS, *filter(None, [extra])]))
        for metric, doc, extra in _COUNTERS:
            families.append(CounterMetricFamily(f"{PREFIX}_{metric}", doc, labels=[*LABELS, *filter(None, [extra])]))
        return families

    def exposition(self) -> bytes:
        """The text format a scrape returns (for tests and the CLI)."""
        data: bytes = prometheus_client.generate_latest(self.registry)
        return data


def _zero_counts(record: _Record) -> dict[tuple[str, str], float]:
    # Counters start at zero once a status was observed, so that increase() sees the first rotation of
    # a new object; an object that has counted nothing keeps no dict of zeros (written at scrape time).
    return dict.fromkeys(_ZERO_COUNTERS, 0.0) if record.facts is not None else {}


# The counters every observed object shows, at zero until counted.
_ZERO_COUNTERS = (
    *(("rotations_total", reason) for reason in ROTATION_REASONS),
    ("cutovers_total", ""),
    ("trust_reloads_total", ""),
    ("reconcile_errors_total", ""),
)


# The metrics that carry a label beyond the object's.
_EXTRA = frozenset(f"{PREFIX}_{metric.removesuffix('_total')}" for metric, _, extra in (*_GAUGES, *_COUNTERS) if extra)


def _add_sample(family: Metric, labels: list[str], extra: str, value: float) -> None:
    assert isinstance(family, (GaugeMetricFamily, CounterMetricFamily))
    family.add_metric([*labels, extra] if family.name in _EXTRA else labels, value)


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

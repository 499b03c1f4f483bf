"""PresentationReports: which client certificates the provider presents, as the endpoints saw them.

The provider holds the key and decides alone when it starts presenting the next certificate; the
operator cannot see that moment except through the servers that terminate the provider's TLS. Each such
server (the reference receiver, or trust-sync reading nginx's or HAProxy's access log) writes one
PresentationReport named after its pod: per certificate fingerprint, presentations accepted and refused
with first and last seen, and a heartbeat. Only fingerprints and counts: a report never carries a
certificate, a header or a body.

Here, pure: the report's shape (mirrored by ``crds/presentationreports.webhookcerts.io.yaml``), how the
reports of one trust store add up for one object's certificates, and when that is proof enough for an
observed cut-over. A report the operator could not tie to a running pod that serves the object's trust
store never reaches this module (``ReportSource.counted``): a stray pod cannot forge a cut-over.

Counts are since the reporter's ``startTime`` (a restarted reporter starts again from zero); a reporter
that has not been reporting for a whole quiet period proves nothing about that period, and a reporter
whose heartbeat stopped is named as stale, never read as silence.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence

import pydantic

from webhookcerts.domain import models, pki

KIND = "PresentationReport"
PLURAL = "presentationreports"
MAX_CERTIFICATES = 64
# A heartbeat is late after this many intervals (and a grace for the API server and clocks).
STALE_AFTER_INTERVALS = 3
STALE_GRACE = datetime.timedelta(seconds=10)

SHA256 = r"^[0-9a-f]{64}$"
SHA1 = r"^[0-9a-f]{40}$"
REPORTER = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ReportedCertificate(models.Model):
    """One client certificate a server saw since the reporter started, by fingerprint."""

    sha256: str | None = pydantic.Field(default=None, pattern=SHA256)
    sha1: str | None = pydantic.Field(default=None, pattern=SHA1)
    accepted: int = pydantic.Field(ge=0)
    refused: int = pydantic.Field(ge=0)
    first_seen: datetime.datetime
    last_seen: datetime.datetime
    last_accepted: datetime.datetime | None = None
    last_refused: datetime.datetime | None = None

    @pydantic.model_validator(mode="after")
    def _has_a_fingerprint(self) -> ReportedCertificate:
        if self.sha256 is None and self.sha1 is None:
            raise ValueError("a certificate entry needs its sha256 or sha1 fingerprint")
        return self


class PresentationReportSpec(models.Model):
    trust_secret_name: models.SecretName
    trust_hash: str | None = pydantic.Field(default=None, max_length=128)
    reporter: str = pydantic.Field(min_length=1, max_length=63, pattern=REPORTER)
    start_time: datetime.datetime
    heartbeat_time: datetime.datetime
    heartbeat_interval_seconds: int = pydantic.Field(ge=1, le=3600)
    certificates: list[ReportedCertificate] = pydantic.Field(default_factory=list, max_length=MAX_CERTIFICATES)

    def stale(self, now: datetime.datetime) -> bool:
        late = datetime.timedelta(seconds=STALE_AFTER_INTERVALS * self.heartbeat_interval_seconds) + STALE_GRACE
        return now - self.heartbeat_time > late

    def stale_at(self) -> datetime.datetime:
        """When this report turns stale if no heartbeat comes: the moment to look again."""
        late = datetime.timedelta(seconds=STALE_AFTER_INTERVALS * self.heartbeat_interval_seconds) + STALE_GRACE
        return self.heartbeat_time + late


@dataclasses.dataclass(frozen=True)
class ReportSource:
    """A report as the operator found it: its pod's name and whether that pod may be counted.

    ``counted`` is the operator's check, not the report's word: the pod exists with the report's owner
    uid, runs, and serves the trust Secret the report names (a volume of it, or trust-sync pointed at
    it). ``why_not`` says what failed, for a condition message.
    """

    pod: str
    spec: PresentationReportSpec
    counted: bool = True
    why_not: str = ""


@dataclasses.dataclass(frozen=True)
class Fingerprints:
    """The two fingerprints a server may log for one certificate."""

    sha256: str
    sha1: str | None = None

    def matches(self, entry: ReportedCertificate) -> bool:
        return entry.sha256 == self.sha256 or (self.sha1 is not None and entry.sha1 == self.sha1)

    @classmethod
    def of(cls, cert_pem: str) -> Fingerprints:
        info = pki.inspect(cert_pem)
        return cls(info.fingerprint, pki.sha1_fingerprint(cert_pem))


@dataclasses.dataclass(frozen=True)
class Usage:
    """What every counted reporter saw of one certificate, added up."""

    presentations: int = 0  # accepted
    refused: int = 0
    first_presented: datetime.datetime | None = None  # first accepted presentation
    last_presented: datetime.datetime | None = None  # last accepted presentation
    last_seen: datetime.datetime | None = None  # last presentation of any verdict


@dataclasses.dataclass(frozen=True)
class Sighting:
    """A revoked certificate presented to one reporter (its fingerprint as the reporter gave it)."""

    fingerprint: str
    sha256: str
    pod: str
    presentations: int
    last_seen: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Reporter:
    pod: str
    reporter: str
    heartbeat_time: datetime.datetime
    start_time: datetime.datetime
    stale: bool
    stale_at: datetime.datetime  # when it turns stale without another heartbeat


@dataclasses.dataclass(frozen=True)
class Presentations:
    reporters: tuple[Reporter, ...]
    current: Usage
    next: Usage | None
    revoked: tuple[Sighting, ...]
    ignored: tuple[ReportSource, ...] = ()  # reports of this trust store that could not be counted

    @property
    def live(self) -> tuple[Reporter, ...]:
        return tuple(r for r in self.reporters if not r.stale)

    @property
    def stale(self) -> tuple[Reporter, ...]:
        return tuple(r for r in self.reporters if r.stale)


def _usage(entries: Sequence[ReportedCertificate]) -> Usage:
    accepted = [e for e in entries if e.accepted > 0]
    return Usage(
        presentations=sum(e.accepted for e in entries),
        refused=sum(e.refused for e in entries),
        first_presented=min((e.first_seen for e in accepted), default=None),
        last_presented=max((e.last_accepted or e.last_seen for e in accepted), default=None),
        last_seen=max((e.last_seen for e in entries), default=None),
    )


def _no_later_than(spec: PresentationReportSpec, now: datetime.datetime) -> PresentationReportSpec:
    """The report with none of its times after ``now``: nothing was seen, started or written after the
    operator's now. A time past it is a reporter's clock ahead, or a report written to break the pass
    (9999-12-31T23:59:59Z is admitted, and overflows the first interval added to it); either is read
    as now, which proves no quiet period and turns no reporter stale later than it should."""

    def capped(moment: datetime.datetime) -> datetime.datetime:
        return min(moment, now)

    def capped_or_none(moment: datetime.datetime | None) -> datetime.datetime | None:
        return None if moment is None else min(moment, now)

    times = [spec.start_time, spec.heartbeat_time]
    for e in spec.certificates:
        times.extend(t for t in (e.first_seen, e.last_seen, e.last_accepted, e.last_refused) if t is not None)
    if all(t <= now for t in times):
        return spec
    certificates = [
        e.model_copy(
            update={
                "first_seen": capped(e.first_seen),
                "last_seen": capped(e.last_seen),
                "last_accepted": capped_or_none(e.last_accepted),
                "last_refused": capped_or_none(e.last_refused),
            }
        )
        for e in spec.certificates
    ]
    return spec.model_copy(
        update={
            "start_time": capped(spec.start_time),
            "heartbeat_time": capped(spec.heartbeat_time),
            "certificates": certificates,
        }
    )


def aggregate(
    sources: Iterable[ReportSource],
    *,
    current: Fingerprints | None,
    next_: Fingerprints | None,
    revoked: Iterable[Fingerprints],
    now: datetime.datetime,
) -> Presentations:
    """Add up the reports of one trust store for one object's current, next and revoked certificates."""
    counted: list[ReportSource] = []
    ignored: list[ReportSource] = []
    for source in sources:
        if source.counted:
            counted.append(dataclasses.replace(source, spec=_no_later_than(source.spec, now)))
        else:
            ignored.append(source)
    revoked = tuple(revoked)
    cur: list[ReportedCertificate] = []
    nxt: list[ReportedCertificate] = []
    sightings: list[Sighting] = []
    for source in counted:
        for entry in source.spec.certificates:
            if current is not None and current.matches(entry):
                cur.append(entry)
            elif next_ is not None and next_.matches(entry):
                nxt.append(entry)
            else:
                hit = next((r for r in revoked if r.matches(entry)), None)
                # A knock is a refused presentation: the accepted ones of a revoked certificate are the
                # provider's from before it was revoked (a reporter's counts run since it started), and
                # must not count as knocks once a real one comes.
                if hit is not None and entry.refused > 0:
                    sightings.append(
                        Sighting(
                            fingerprint=entry.sha256 or entry.sha1 or "",
                            sha256=hit.sha256,
                            pod=source.pod,
                            presentations=entry.refused,
                            last_seen=entry.last_refused or entry.last_seen,
                        )
                    )
    reporters = tuple(
        Reporter(
            pod=s.pod,
            reporter=s.spec.reporter,
            heartbeat_time=s.spec.heartbeat_time,
            start_time=s.spec.start_time,
            stale=s.spec.stale(now),
            stale_at=s.spec.stale_at(),
        )
        for s in sorted(counted, key=lambda s: s.pod)
    )
    return Presentations(
        reporters=reporters,
        current=_usage(cur),
        next=_usage(nxt) if next_ is not None else None,
        revoked=tuple(sightings),
        ignored=tuple(ignored),
    )


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether the reports prove the provider switched to the next certificate, and why (not)."""

    ready: bool
    reason: str
    message: str
    # When time alone may change the verdict (a quiet period ending, a reporter turning stale).
    recheck_at: datetime.datetime | None = None


def _at(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def observed_switch(
    seen: Presentations,
    *,
    min_presentations: int,
    quiet_period: datetime.timedelta,
    now: datetime.datetime,
    current_trusted: bool = True,
) -> Verdict:
    """The proof an observed cut-over needs: the next accepted often enough, the current quiet.

    Never with no reporter, never while one is stale, and a reporter counts for the quiet period only
    if it has been reporting for all of it. A report says nothing of what its server saw after it was
    written: the quiet period is proven up to the oldest heartbeat of the reporters, not up to ``now``
    (a reporter writes in batches, up to a heartbeat interval apart).

    ``current_trusted=False`` (an emergency under ``RevokeImmediately``: the compromised current left
    every trust form at containment) waives the quiet period: the cut-over then drops no trust, and
    whoever holds the stolen key must not be able to hold it off by presenting the certificate.
    """
    if not seen.reporters:
        why = f" ({len(seen.ignored)} report(s) not counted: {seen.ignored[0].why_not})" if seen.ignored else ""
        return Verdict(False, "NoReporters", f"no endpoint reports which certificate the provider presents{why}")
    stale = seen.stale
    if stale:
        names = ", ".join(r.pod for r in stale)
        return Verdict(False, "ReportersStale", f"reporter(s) without a recent heartbeat: {names}")
    # A report that cannot be counted (its pod unread, or serving the store in a way not recognised)
    # may be a real endpoint that still sees the current certificate: it can hold the cut-over off,
    # never bring it on. A stray pod can only block Observed, the safe direction.
    uncounted = [s for s in seen.ignored if not s.spec.stale(now)]
    if uncounted:
        names = ", ".join(f"{s.pod} ({s.why_not})" for s in uncounted)
        return Verdict(False, "ReportsNotCounted", f"report(s) that cannot be counted hold the cut-over: {names}")
    nxt = seen.next or Usage()
    if nxt.presentations < min_presentations:
        return Verdict(
            False,
            "AwaitingNextPresentations",
            f"the next certificate was accepted {nxt.presentations} of the {min_presentations} times required",
        )
    if not current_trusted:
        return Verdict(
            True,
            "ProviderSwitched",
            f"the next certificate was accepted {nxt.presentations} times at {len(seen.reporters)} reporter(s); "
            "the current one is no longer trusted, so no quiet period is needed",
        )
    proven_until = min(now, *(r.heartbeat_time for r in seen.reporters))
    started = max(r.start_time for r in seen.reporters)
    if started > proven_until - quiet_period:
        return Verdict(
            False,
            "ReporterTooRecent",
            f"a reporter has been counting only since {_at(started)}; the quiet period of {quiet_period} "
            f"can be proven by reports written from {_at(started + quiet_period)}",
            recheck_at=_later(started + quiet_period, now),
        )
    last = seen.current.last_seen
    if last is not None and last > proven_until - quiet_period:
        return Verdict(
            False,
            "CurrentStillPresented",
            f"the current certificate was presented at {_at(last)}; cut-over once reports written from "
            f"{_at(last + quiet_period)} show it no more",
            recheck_at=_later(last + quiet_period, now),
        )
    # Silence is no proof: a provider that sent nothing for the quiet period (a night, a sender of the
    # current that sends less often) would look switched. The next must have been presented inside it.
    if nxt.last_presented is None or nxt.last_presented <= proven_until - quiet_period:
        since = f"since {_at(nxt.last_presented)}" if nxt.last_presented else "yet"
        return Verdict(
            False,
            "NextNotPresentedLately",
            f"the current certificate was not presented for {quiet_period}, but neither was the next {since}: "
            "silence proves nothing; cut-over once the next is presented again",
        )
    return Verdict(
        True,
        "ProviderSwitched",
        f"the next certificate was accepted {nxt.presentations} times, last at {_at(nxt.last_presented)}, and the "
        f"current not presented for {quiet_period} at {len(seen.reporters)} reporter(s)",
    )


def _later(moment: datetime.datetime, now: datetime.datetime) -> datetime.datetime | None:
    """``moment`` when time alone may change the verdict then; None when only a new report can (its
    watch event starts the pass; a reporter that stops writing turns stale at its own ``stale_at``)."""
    return moment if moment > now else None

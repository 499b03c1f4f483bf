"""What the endpoints report, in the pass: ``Observation.presentations`` and what status says of it.

The reports of the object's trust store come from the view (each with its pod's facts, read when the
report changed: ``domain.reporters``), are judged against this object's spec (a pod may serve the
trust Secret's ConfigMap copy) and added up for its current, next and revoked certificates
(``domain.reports.aggregate``). ``observe`` is what the policy chain reads; ``record`` writes the
result into status before the pass saves: presentations per certificate, the counted reporters, the
conditions ``NextInUse``, ``CurrentInUse``, ``ReportersStale`` and ``RevokedCertificatePresented``,
and the bookkeeping of revoked presentations (``status.revokedPresentations``) from which the alarm
Event and the counter are derived, so that neither a second pass nor a restart of the operator
alarms or counts again. ``announce`` sends the Event and moves the counter once the status that
records them is saved: a save that fails (a conflict) is decided again, never announced twice.

Status is not rewritten for a heartbeat alone: ``reporters[].heartbeatTime`` moves only with another
change (a count, a time, a reporter turning stale), so an idle provider costs no writes however
often the endpoints heartbeat; the report itself and the heartbeat gauge carry the latest.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING

from webhookcerts.domain import conditions, durations, models, names, reports

if TYPE_CHECKING:
    from webhookcerts.service.state import Pass

NEXT_IN_USE = names.NEXT_IN_USE
CURRENT_IN_USE = names.CURRENT_IN_USE
REPORTERS_STALE = names.REPORTERS_STALE
REVOKED_PRESENTED = names.REVOKED_CERTIFICATE_PRESENTED
CONDITIONS = (NEXT_IN_USE, CURRENT_IN_USE, REPORTERS_STALE, REVOKED_PRESENTED)
# A burst of presentations of a revoked certificate ends after this long without a new one: the next
# presentation after that is a new burst, and a new Event.
BURST_GAP = datetime.timedelta(minutes=5)
# "In use" for the current certificate: presented within the observed cut-over's quiet period when the
# spec has one (spec.cutover.observed.quietPeriod), else within this.
DEFAULT_IN_USE_WINDOW = datetime.timedelta(hours=1)


@functools.lru_cache(maxsize=4096)
def _fingerprints(pem: str) -> reports.Fingerprints:
    return reports.Fingerprints.of(pem)


def _at(moment: datetime.datetime) -> str:
    return f"{moment.astimezone(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}"


def config_maps(spec: models.WebhookCertificateSpec) -> tuple[str, ...]:
    return (spec.trust.config_map.name,) if spec.trust.config_map is not None else ()


def revoked(status: models.WebhookCertificateStatus) -> list[reports.Fingerprints]:
    """Every revoked certificate, by sha256 and, when history has it, by sha1."""
    sha1 = {h.fingerprint: h.sha1 for h in status.history if h.sha1}
    return [reports.Fingerprints(f, sha1.get(f)) for f in dict.fromkeys(status.revoked_fingerprints)]


def observe(p: Pass) -> reports.Presentations | None:
    """The reports of the object's trust store, added up for its certificates; None when not known."""
    if not p.view.reports_known:
        return None
    ns, spec, status = p.resource.namespace, p.spec, p.status
    sources = [r.source(config_maps(spec)) for r in p.view.reports_for(ns, spec.trust.secret_name)]
    current = _fingerprints(status.current.certificate) if status.current is not None else None
    next_ = _fingerprints(status.next.certificate) if status.next is not None else None
    gone = revoked(status)
    seen = reports.aggregate(sources, current=current, next_=next_, revoked=gone, now=p.now)
    if current is not None and any(r.sha256 == current.sha256 for r in gone):
        # A compromised current certificate (revoked at once, still current until the cut-over): its
        # presentations count as the current's and are also the alarm.
        alarm = reports.aggregate(sources, current=None, next_=None, revoked=[current], now=p.now)
        seen = dataclasses.replace(seen, revoked=(*seen.revoked, *alarm.revoked))
    return seen


@dataclasses.dataclass(frozen=True)
class Alarm:
    fingerprint: str
    pod: str
    presentations: int
    message: str


@dataclasses.dataclass
class Outcome:
    """What ``record`` decided, to announce once status is saved."""

    alarms: list[Alarm] = dataclasses.field(default_factory=list)
    counted: dict[str, int] = dataclasses.field(default_factory=dict)  # sha256 -> presentations added
    wake_at: datetime.datetime | None = None


def _earliest(*moments: datetime.datetime | None) -> datetime.datetime | None:
    return min((m for m in moments if m is not None), default=None)


def in_use_window(spec: models.WebhookCertificateSpec) -> datetime.timedelta:
    # spec.cutover is the observed cut-over's field, absent from older specs (and from this module's
    # branch): read it with a fallback rather than depend on it.
    cutover = getattr(spec, "cutover", None)
    quiet = getattr(getattr(cutover, "observed", None), "quiet_period", None)
    if isinstance(quiet, datetime.timedelta):
        return quiet
    if isinstance(quiet, str):
        return durations.parse(quiet)
    return DEFAULT_IN_USE_WINDOW


def record(p: Pass, seen: reports.Presentations | None) -> Outcome:
    """Write what the reports say into status (``p.status``); what to announce after the save."""
    outcome = Outcome()
    if seen is None:
        return outcome
    status = p.status
    had_conditions = any(conditions.get(status.conditions, t) is not None for t in CONDITIONS)
    if not seen.reporters and not seen.ignored and not seen.revoked and not had_conditions:
        # No endpoint has ever reported on this trust store: nothing to say, and nothing written.
        return outcome
    _usage(status.current, seen.current if seen.reporters else None)
    _usage(status.next, seen.next if seen.reporters else None)
    _reporters(p, seen)
    outcome.wake_at = _earliest(
        min((r.stale_at for r in seen.live), default=None),
        _in_use_conditions(p, seen),
    )
    _stale_condition(p, seen)
    outcome.wake_at = _earliest(outcome.wake_at, _revoked(p, seen, outcome))
    return outcome


def _usage(record_: models.CertificateRecord | None, usage: reports.Usage | None) -> None:
    if record_ is None:
        return
    if usage is None:
        record_.presentations = None
        return
    record_.presentations = usage.presentations
    # Times are kept across reporters that come and go (a reporter restarted counts from zero, its
    # first time is later): the earliest first and the latest last ever reported.
    if usage.first_presented is not None:
        known = record_.first_presented
        record_.first_presented = min(known, usage.first_presented) if known else usage.first_presented
    if usage.last_presented is not None:
        known = record_.last_presented
        record_.last_presented = max(known, usage.last_presented) if known else usage.last_presented


def _reporters(p: Pass, seen: reports.Presentations) -> None:
    before = {r.pod: r for r in p.status.reporters}
    kept: list[models.ReporterStatus] = []
    for r in seen.reporters[: models.REPORTERS_MAX]:
        kept.append(
            models.ReporterStatus(pod=r.pod, reporter=r.reporter, heartbeat_time=r.heartbeat_time, stale=r.stale)
        )
    same = [(r.pod, r.reporter, r.stale) for r in kept] == [(r.pod, r.reporter, r.stale) for r in p.status.reporters]
    if same:
        # The same reporters in the same state: the heartbeats are left as recorded, and ``hold_heartbeats``
        # takes the new ones only if something else changes in this save.
        kept = [before[r.pod] for r in kept]
    p.status.reporters = kept


def hold_heartbeats(p: Pass, seen: reports.Presentations | None) -> None:
    """Called just before the save: when nothing but heartbeats would change, nothing changes; else
    the reporters' heartbeats are brought up to date with the write that goes out anyway."""
    if seen is None or not p.status.reporters:
        return
    latest = {r.pod: r.heartbeat_time for r in seen.reporters}
    fresh = [r.model_copy(update={"heartbeat_time": latest.get(r.pod, r.heartbeat_time)}) for r in p.status.reporters]
    if p.status.to_api() != p.saved:
        p.status.reporters = fresh


def _in_use_conditions(p: Pass, seen: reports.Presentations) -> datetime.datetime | None:
    """NextInUse and CurrentInUse; when time alone would turn CurrentInUse False."""
    now, status = p.now, p.status
    live = bool(seen.live)
    window = in_use_window(p.spec)
    wake: datetime.datetime | None = None
    if status.next is None:
        p.drop_condition(NEXT_IN_USE)
    else:
        nxt = status.next
        if nxt.last_presented is not None:
            p.set_condition(
                NEXT_IN_USE,
                "True",
                "Presented",
                f"the provider presented the next certificate (serial {nxt.serial}): accepted "
                f"{nxt.presentations or 0} time(s) at the reporters now counted, last at {_at(nxt.last_presented)}",
            )
        elif live:
            p.set_condition(
                NEXT_IN_USE, "False", "NotPresented", f"no endpoint has seen the next certificate (serial {nxt.serial})"
            )
        else:
            p.set_condition(NEXT_IN_USE, "Unknown", "NoReporters", _no_reporters(seen))
    current = status.current
    if current is None:
        p.drop_condition(CURRENT_IN_USE)
        return None
    last = current.last_presented
    if last is not None and now - last < window:
        p.set_condition(
            CURRENT_IN_USE,
            "True",
            "Presented",
            f"the provider presented the current certificate (serial {current.serial}) at {_at(last)}, "
            f"within the last {window}; accepted {current.presentations or 0} time(s) at the reporters now counted",
        )
        wake = last + window
    elif live:
        since = f"last at {_at(last)}" if last is not None else "never seen"
        p.set_condition(
            CURRENT_IN_USE,
            "False",
            "NotPresented",
            f"no endpoint has seen the current certificate (serial {current.serial}) in the last {window} ({since})",
        )
    else:
        p.set_condition(CURRENT_IN_USE, "Unknown", "NoReporters", _no_reporters(seen))
    return wake


def _no_reporters(seen: reports.Presentations) -> str:
    parts = ["no live endpoint reports on the trust store"]
    if seen.stale:
        parts.append(f"stale: {', '.join(r.pod for r in seen.stale)}")
    parts.extend(_not_counted(seen.ignored))
    return "; ".join(parts)


def _not_counted(ignored: Iterable[reports.ReportSource]) -> list[str]:
    ignored = list(ignored)
    shown = [f"not counted: {s.why_not}" for s in ignored[:5]]
    if len(ignored) > 5:
        shown.append(f"and {len(ignored) - 5} more report(s) not counted")
    return shown


def _stale_condition(p: Pass, seen: reports.Presentations) -> None:
    if seen.stale or seen.ignored:
        parts = []
        if seen.stale:
            parts.append(f"reporter(s) without a heartbeat for 3 intervals: {', '.join(r.pod for r in seen.stale)}")
        parts.extend(_not_counted(seen.ignored))
        # A report that cannot be counted is news for a person too: a reporter misconfigured (serving
        # another trust Secret), or a pod that is not what its report says.
        p.set_condition(REPORTERS_STALE, "True", "Stale" if seen.stale else "NotCounted", "; ".join(parts))
    elif seen.reporters:
        p.set_condition(
            REPORTERS_STALE, "False", "Heartbeating", f"{len(seen.reporters)} reporter(s), every one heartbeating"
        )
    else:
        p.set_condition(REPORTERS_STALE, "False", "NoReporters", "no endpoint reports on the trust store")


def _revoked_at(status: models.WebhookCertificateStatus) -> dict[str, datetime.datetime]:
    """When each revoked certificate stopped being the provider's to present: retired at a cut-over, or
    named in the emergency that compromised it (before its own cut-over)."""
    emergency = status.last_emergency_rotation
    found: dict[str, datetime.datetime] = {}
    for h in status.history:
        at = h.retired_at
        if h.reason == "Compromised" and emergency is not None and emergency.reference == h.incident:
            at = min(at, emergency.handled_at)
        found[h.fingerprint] = at
    current = status.current
    if current is not None and current.compromised_by and emergency is not None:
        found.setdefault(current.fingerprint, emergency.handled_at)
    return found


def _revoked(p: Pass, seen: reports.Presentations, outcome: Outcome) -> datetime.datetime | None:
    """The bookkeeping of revoked presentations, the alarms and counts it adds, the condition."""
    status, now = p.status, p.now
    starts = {r.pod: r.start_time for r in seen.reporters}
    entries = {e.fingerprint: e for e in status.revoked_presentations}
    by_fingerprint: dict[str, dict[str, int]] = {}
    newest: dict[str, reports.Sighting] = {}
    for s in seen.revoked:
        # One reporter may list a certificate twice (by sha256 and by sha1): its counts add up.
        pods = by_fingerprint.setdefault(s.sha256, {})
        pods[s.pod] = pods.get(s.pod, 0) + s.presentations
        if s.sha256 not in newest or s.last_seen > newest[s.sha256].last_seen:
            newest[s.sha256] = s
    revoked_at = _revoked_at(status)
    for fingerprint, pods in by_fingerprint.items():
        last = newest[fingerprint]
        entry = entries.get(fingerprint)
        if entry is None and fingerprint in revoked_at and last.last_seen < revoked_at[fingerprint]:
            # Every presentation these reports hold came before the certificate was revoked: the cut-over
            # or the emergency that retired a certificate in use is no revoked certificate knocking (an
            # observed cut-over would otherwise alarm every time). The first one after it is.
            continue
        counted = {(c.pod, c.since): c.presentations for c in entry.reporters} if entry is not None else {}
        fresh = {pod: models.RevokedCount(pod=pod, since=starts[pod], presentations=n) for pod, n in pods.items()}
        added = sum(max(0, c.presentations - counted.get((c.pod, c.since), 0)) for c in fresh.values())
        if added:
            outcome.counted[fingerprint] = added
        kept = [c for c in (entry.reporters if entry is not None else []) if c.pod not in fresh]
        reporters_ = (list(fresh.values()) + kept)[: models.REPORTERS_MAX]
        if entry is None or last.last_seen - entry.last_seen > BURST_GAP:
            # A new burst: the first presentation ever recorded, or one after a quiet gap.
            outcome.alarms.append(
                Alarm(
                    fingerprint,
                    last.pod,
                    sum(pods.values()),
                    f"revoked certificate {fingerprint} presented to {last.pod} "
                    f"({sum(pods.values())} presentation(s) reported): {_meaning(status, fingerprint)}",
                )
            )
            entries[fingerprint] = models.RevokedPresentations(
                fingerprint=fingerprint, burst_started=last.last_seen, last_seen=last.last_seen, reporters=reporters_
            )
        else:
            entries[fingerprint] = entry.model_copy(
                update={"last_seen": max(entry.last_seen, last.last_seen), "reporters": reporters_}
            )
    still = set(status.revoked_fingerprints)
    kept_entries = sorted(
        (e for e in entries.values() if e.fingerprint in still), key=lambda e: e.last_seen, reverse=True
    )
    status.revoked_presentations = kept_entries[: models.REVOKED_PRESENTATIONS_MAX]
    recent = [e for e in status.revoked_presentations if now - e.last_seen < BURST_GAP]
    if recent:
        e = recent[0]
        p.set_condition(
            REVOKED_PRESENTED,
            "True",
            "RevokedCertificatePresented",
            f"revoked certificate {e.fingerprint} presented, last at {_at(e.last_seen)}: "
            f"{_meaning(status, e.fingerprint)}",
        )
        return min(e.last_seen for e in recent) + BURST_GAP
    if status.revoked_presentations:
        e = status.revoked_presentations[0]
        p.set_condition(
            REVOKED_PRESENTED,
            "False",
            "Quiet",
            f"no revoked certificate presented since {_at(e.last_seen)} ({e.fingerprint})",
        )
    else:
        p.drop_condition(REVOKED_PRESENTED)
    return None


def _meaning(status: models.WebhookCertificateStatus, fingerprint: str) -> str:
    """Compromised or superseded, and what its presentation means for the person reading."""
    retired = next((h for h in status.history if h.fingerprint == fingerprint), None)
    current = status.current
    if (retired is not None and retired.reason == "Compromised") or (
        current is not None and current.fingerprint == fingerprint and current.compromised_by
    ):
        incident = retired.incident if retired is not None else current.compromised_by if current is not None else None
        return (
            f"it was revoked as compromised (incident {incident}); if the provider has not installed the "
            "replacement yet, its deliveries fail until it does; if it already presents the replacement, "
            "someone else presents the compromised certificate (where the server completed the handshake, "
            "as nginx and HAProxy do, with its key; a certificate refused at the handshake, as the reference "
            "receiver refuses it, proves only that someone has the certificate, which is public)"
        )
    if retired is not None and retired.reason == "Discarded":
        return "it is a next certificate that was discarded: whoever presents it holds a key given up"
    return (
        "it was superseded at a cut-over: the provider still presents the old certificate (it has not "
        "installed the current one), or someone else holds the old key"
    )


def announce(p: Pass, outcome: Outcome, seen: reports.Presentations | None) -> None:
    """After the save that recorded them: the alarm Events and the counter; the heartbeat gauges."""
    if seen is not None:
        p.ctx.metrics.heartbeats_seen(
            p.resource.namespace, p.resource.name, p.spec.environment, {r.pod: r.heartbeat_time for r in seen.reporters}
        )
    for alarm in outcome.alarms:
        p.event("Warning", "RevokedCertificatePresented", alarm.message)
    for fingerprint, added in outcome.counted.items():
        p.ctx.metrics.revoked_presented(p.resource.namespace, p.resource.name, p.spec.environment, fingerprint, added)

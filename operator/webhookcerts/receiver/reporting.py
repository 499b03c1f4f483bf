"""Reporting what the provider presents: counts per client certificate, written as a PresentationReport.

A server that terminates the provider's TLS sees which certificate the provider uses; the operator does
not (domain/reports.py says what it makes of the reports). ``Tally`` counts presentations per
fingerprint, ``Reporter`` writes the counts through a writer (kube/reports.py) on a thread of its own.

Both are built for a server under load, not for a test: the tally holds at most
``reports.MAX_CERTIFICATES`` entries whatever the rate or the number of distinct certificates (past it,
the entry least recently seen goes: a certificate presented now is never the one dropped, and an
evicted one that comes back starts again from zero), and recording is a dictionary update under a lock,
so the server's event loop never waits for the API server. The reporter writes a heartbeat every
``interval`` (even when nothing was presented: silence must be told from a dead reporter), and sooner,
but at most once per ``min_gap``, when a fingerprint appears that the last written report did not hold
(the provider starting to present the next certificate is news). Writes are therefore bounded by
construction: one per ``interval`` in the steady state, however many deliveries arrive, and never more
than one per ``min_gap``. A failed write is logged and tried again at the next heartbeat, not sooner: an
unreachable API server must not turn into a write storm from every reporter at once.

Only fingerprints and counts pass through here: no certificate, key, header or body ever reaches the
tally, so none can reach a report or a log line.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable

from webhookcerts.domain import reports

_log = logging.getLogger("webhookcerts.reporter")

DEFAULT_INTERVAL = 15.0
DEFAULT_MIN_GAP = 2.0
DEFAULT_STOP_TIMEOUT = 10.0

Clock = Callable[[], datetime.datetime]
Writer = Callable[[reports.PresentationReportSpec], None]
TrustHash = Callable[[], str | None]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class ReportingError(RuntimeError):
    """Reporting cannot start as configured; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class PodIdentity:
    """The reporter's own pod: its report is named after it and owned by it."""

    name: str
    namespace: str
    uid: str

    ENV = ("POD_NAME", "POD_NAMESPACE", "POD_UID")

    @classmethod
    def from_env(cls, environ: collections.abc.Mapping[str, str] | None = None) -> PodIdentity:
        """From the downward API's variables; a ReportingError names every one that is missing or empty."""
        env = os.environ if environ is None else environ
        missing = [name for name in cls.ENV if not env.get(name)]
        if missing:
            raise ReportingError(
                f"{', '.join(missing)} not set: give the pod's name, namespace and uid through the downward API "
                "(fieldRef metadata.name, metadata.namespace, metadata.uid)"
            )
        return cls(name=env["POD_NAME"], namespace=env["POD_NAMESPACE"], uid=env["POD_UID"])


@dataclasses.dataclass
class _Entry:
    sha256: str | None
    sha1: str | None
    first_seen: datetime.datetime
    last_seen: datetime.datetime
    accepted: int = 0
    refused: int = 0
    last_accepted: datetime.datetime | None = None
    last_refused: datetime.datetime | None = None

    def report(self) -> reports.ReportedCertificate:
        return reports.ReportedCertificate(
            sha256=self.sha256,
            sha1=self.sha1,
            accepted=self.accepted,
            refused=self.refused,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            last_accepted=self.last_accepted,
            last_refused=self.last_refused,
        )


_SHA256 = re.compile(reports.SHA256)
_SHA1 = re.compile(reports.SHA1)


def _fingerprint(value: str | None, pattern: re.Pattern[str]) -> str | None:
    if value is None:
        return None
    value = value.replace(":", "").lower()
    return value if pattern.fullmatch(value) else None


class Tally:
    """Presentations per certificate since ``started``, at most ``limit`` certificates; thread-safe.

    An entry's key is its sha256 when the server knows it, else its sha1 (nginx and HAProxy log only
    the sha1). Entries are kept in the order they were last seen, so the one to drop is the first.
    """

    def __init__(
        self,
        *,
        clock: Clock = utcnow,
        started: datetime.datetime | None = None,
        limit: int = reports.MAX_CERTIFICATES,
    ) -> None:
        if not 1 <= limit <= reports.MAX_CERTIFICATES:
            raise ValueError(f"limit must be between 1 and {reports.MAX_CERTIFICATES}")
        self._clock, self._limit = clock, limit
        self.started = started or clock()
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._reported: frozenset[str] = frozenset()  # the keys of the last report written
        self._new = False  # an entry holds a key the last written report did not
        self._listeners: list[Callable[[], None]] = []
        self.evicted = 0

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quickly: it runs on the recording thread) when a new fingerprint appears."""
        self._listeners.append(callback)

    def record(
        self, *, sha256: str | None, sha1: str | None, accepted: bool, at: datetime.datetime | None = None
    ) -> None:
        """Count one presentation of the certificate with these fingerprints (hex of the DER).

        Upper case and colons (as servers log them) are accepted; a value that is not a fingerprint of
        its kind is ignored rather than kept, since one bad entry would make every report unwritable.
        """
        sha256, sha1 = _fingerprint(sha256, _SHA256), _fingerprint(sha1, _SHA1)
        key = sha256 or sha1
        if key is None:
            return  # nothing to tell the certificate by: nothing a report could say of it
        moment = at or self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= self._limit:
                    self._entries.popitem(last=False)
                    self.evicted += 1
                entry = self._entries[key] = _Entry(sha256, sha1, moment, moment)
                unreported = key not in self._reported
                fresh = unreported and not self._new  # tell the listeners once, not per certificate
                self._new = self._new or unreported
            else:
                self._entries.move_to_end(key)
                entry.sha1 = entry.sha1 or sha1
                entry.first_seen = min(entry.first_seen, moment)
                entry.last_seen = max(entry.last_seen, moment)
                fresh = False
            if accepted:
                entry.accepted += 1
                entry.last_accepted = max(entry.last_accepted or moment, moment)
            else:
                entry.refused += 1
                entry.last_refused = max(entry.last_refused or moment, moment)
        if fresh:
            for callback in self._listeners:
                callback()

    def snapshot(self) -> list[reports.ReportedCertificate]:
        """Every entry as a report holds it, the one seen last first."""
        with self._lock:
            return [entry.report() for entry in reversed(self._entries.values())]

    def has_new(self) -> bool:
        """Whether a fingerprint appeared that the last written report did not hold."""
        with self._lock:
            return self._new

    def written(self, certificates: list[reports.ReportedCertificate]) -> None:
        """The report holding ``certificates`` (a snapshot) is written: what is new is judged against it."""
        keys = frozenset(key for c in certificates if (key := c.sha256 or c.sha1))
        with self._lock:
            self._reported = keys
            self._new = any(key not in keys for key in self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class Reporter:
    """Writes the tally's report every ``interval`` and, for a new fingerprint, after ``min_gap``.

    ``tick()`` is the whole decision (tests call it with injected clocks); ``start()`` runs it on a
    daemon thread; ``stop()`` writes once more and waits at most ``stop_timeout`` for it.
    """

    def __init__(
        self,
        tally: Tally,
        write: Writer,
        *,
        trust_secret_name: str,
        reporter: str = "receiver",
        trust_hash: TrustHash | None = None,
        interval: float = DEFAULT_INTERVAL,
        min_gap: float = DEFAULT_MIN_GAP,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if not interval > 0 or not min_gap > 0:
            raise ValueError("interval and min_gap must be positive")
        self._tally, self._write_report = tally, write
        self._trust_secret_name, self._reporter = trust_secret_name, reporter
        self._trust_hash = trust_hash
        self.interval, self.min_gap = interval, min(min_gap, interval)
        self._clock, self._monotonic = clock, monotonic
        self._stop_timeout = stop_timeout
        self._last_attempt: float | None = None
        self._last_ok = False
        self.writes = 0
        self.failures = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.spec([])  # a name the report cannot carry fails now, not at the first write
        except ValueError as exc:
            raise ReportingError(f"cannot report for trust Secret {trust_secret_name!r}: {exc}") from None
        tally.listen(self._wake.set)

    def spec(self, certificates: list[reports.ReportedCertificate]) -> reports.PresentationReportSpec:
        return reports.PresentationReportSpec(
            trust_secret_name=self._trust_secret_name,
            trust_hash=self._current_trust_hash(),
            reporter=self._reporter,
            start_time=self._tally.started,
            heartbeat_time=self._clock(),
            heartbeat_interval_seconds=max(1, math.ceil(self.interval)),
            certificates=certificates,
        )

    def _current_trust_hash(self) -> str | None:
        if self._trust_hash is None:
            return None
        try:
            return self._trust_hash()
        except Exception:  # an unknown hash is left out, never a reason not to report
            return None

    def due_in(self) -> float:
        """Seconds until the next write is due (0: now)."""
        if self._last_attempt is None:
            return 0.0
        elapsed = self._monotonic() - self._last_attempt
        wait = self.interval - elapsed
        if self._last_ok and self._tally.has_new():
            wait = min(wait, self.min_gap - elapsed)
        return max(0.0, wait)

    def tick(self) -> float:
        """Write if a write is due; the seconds until the next one is."""
        if self.due_in() <= 0:
            self.write_now()
        return self.due_in()

    def write_now(self) -> bool:
        """Write the report at once (the first one, the last one); whether it was written."""
        self._last_attempt = self._monotonic()
        certificates = self._tally.snapshot()
        try:
            self._write_report(self.spec(certificates))
        except Exception as exc:  # logged, and tried again at the next heartbeat
            self._last_ok = False
            self.failures += 1
            # The report holds fingerprints and counts only, so the error cannot carry a key or a
            # certificate; it is cut short all the same (an API server's message may quote the request).
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            record = {
                "event": "report_write_failed",
                "trust_secret": self._trust_secret_name,
                "error": self.last_error,
                "action": f"kept counting; trying again in {self.interval:g} s",
            }
            _log.warning(json.dumps(record))
            return False
        if not self._last_ok:
            _log.info(json.dumps({"event": "report_written", "certificates": len(certificates), "writes": self.writes}))
        self._last_ok = True
        self.writes += 1
        self.last_error = None
        self._tally.written(certificates)
        return True

    def start(self) -> Reporter:
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after one last write; return within ``stop_timeout`` whatever the API does."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._stop_timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            delay = self.tick()
            self._wake.wait(delay)
        self.write_now()

"""trust-sync as a reporter: presentations read from a server's access log, written as its pod's report.

A server other than the reference receiver (nginx, HAProxy, ...) cannot write a PresentationReport,
but trust-sync runs beside it, already serves it its trust store and knows which version
(``webhookcerts.io/trust-hash``) it last wrote. ``LogReporting`` puts the pieces together: the access
log is read on a thread of its own (``accesslog``), each presentation is counted in a ``Tally``, and a
``Reporter`` writes the report on another thread, at its heartbeat and when a new certificate appears.
Neither can hold up the watch: a silent log or an unreachable API server for reports leaves trust
updates as fast as before. The report names the trust Secret trust-sync syncs, and the trust hash of
the version in the directory now (the server may still be reloading it: the operator judges the hash,
not this module).
"""

from __future__ import annotations

import dataclasses
import threading

from webhookcerts.receiver import accesslog, logsources, reporting

# What a report says reported for each format, unless told otherwise: the server's name.
DEFAULT_REPORTERS = {"nginx": "nginx", "haproxy": "haproxy", "line": "server"}


@dataclasses.dataclass(frozen=True)
class Settings:
    source: str  # a file, a FIFO, "-" (stdin) or udp://127.0.0.1:PORT
    format: str  # accesslog.FORMATS
    reporter: str = ""  # empty: DEFAULT_REPORTERS[format]
    interval: float = reporting.DEFAULT_INTERVAL

    def __post_init__(self) -> None:
        if self.format not in accesslog.FORMATS:
            raise ValueError(f"unknown access-log format {self.format!r}")
        if not self.reporter:
            object.__setattr__(self, "reporter", DEFAULT_REPORTERS[self.format])
        logsources.udp_address(self.source)  # a ValueError for a non-loopback address, now


class LogReporting:
    """The access log's presentations, counted and reported for ``trust_secret_name``."""

    def __init__(
        self,
        settings: Settings,
        write: reporting.Writer,
        trust_secret_name: str,
        *,
        clock: reporting.Clock = reporting.utcnow,
        poll: float = 0.5,
    ) -> None:
        self.settings, self._poll = settings, poll
        self.tally = reporting.Tally(clock=clock)
        self._trust_hash: str | None = None
        self.reporter = reporting.Reporter(
            self.tally,
            write,
            trust_secret_name=trust_secret_name,
            reporter=settings.reporter,
            trust_hash=lambda: self._trust_hash,
            interval=settings.interval,
            clock=clock,
        )
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    def synced(self, trust_hash: str | None) -> None:
        """trust-sync wrote (or found in place) the version with this trust hash."""
        self._trust_hash = trust_hash

    def record(self, presentation: accesslog.Presentation) -> None:
        self.tally.record(sha256=presentation.sha256, sha1=presentation.sha1, accepted=presentation.accepted)

    def start(self) -> LogReporting:
        self._reader = accesslog.start(
            self.settings.source, self.settings.format, self.record, stop=self._stop, poll=self._poll
        )
        self.reporter.start()
        return self

    def stop(self) -> None:
        """Stop reading, and write the report once more (bounded: the Reporter's stop timeout)."""
        self._stop.set()
        self.reporter.stop()
        if self._reader is not None:
            self._reader.join(timeout=self._poll * 4 + 1)

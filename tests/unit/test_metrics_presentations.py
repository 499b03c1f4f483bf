"""The series of issue 24: presentations per role, last presented, reporters, heartbeats, revoked count.

Set from status like the others (the heartbeats from the reports: status keeps them only as of its
last change), absent when there is nothing to say, and removed with the object.
"""

from __future__ import annotations

import datetime

import prometheus_client
import pytest

from tests.unit.test_metrics import ISSUED, names_for, status, value
from webhookcerts.domain import models
from webhookcerts.service import metrics

PRESENTED = datetime.datetime(2026, 12, 1, 12, 5, tzinfo=datetime.UTC)
BEAT = datetime.datetime(2026, 12, 1, 12, 6, tzinfo=datetime.UTC)


@pytest.fixture
def m() -> metrics.Metrics:
    return metrics.Metrics(prometheus_client.CollectorRegistry())


def seen(*, reporters: int = 1, stale: int = 0) -> models.WebhookCertificateStatus:
    """A rotation whose next was accepted 7 times and whose current was never presented."""
    s = status("Rotating", pending="Planned")
    assert s.current is not None and s.next is not None
    s.current.presentations = 0
    s.next.presentations, s.next.first_presented, s.next.last_presented = 7, ISSUED, PRESENTED
    s.reporters = [
        models.ReporterStatus(pod=f"recv-{i}", reporter="receiver", heartbeat_time=BEAT, stale=i < stale)
        for i in range(reporters)
    ]
    return s


def test_presentations_and_last_presented_per_role(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", seen())
    assert value(m, "webhookcerts_certificate_presentations", role="next") == 7.0
    assert value(m, "webhookcerts_certificate_presentations", role="current") == 0.0
    assert value(m, "webhookcerts_certificate_last_presented_timestamp_seconds", role="next") == PRESENTED.timestamp()
    # Never presented: absent, not zero (an alert on its age would fire at 1970).
    assert value(m, "webhookcerts_certificate_last_presented_timestamp_seconds", role="current") is None


def test_without_reporters_or_certificate_the_role_series_are_absent(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", seen())
    m.observe("payments", "acme", "live", status("Active"))
    assert "webhookcerts_certificate_presentations" not in names_for(m)
    assert "webhookcerts_certificate_last_presented_timestamp_seconds" not in names_for(m)


def test_reporters_live_and_stale(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", seen(reporters=3, stale=1))
    assert value(m, "webhookcerts_reporters", state="live") == 2.0
    assert value(m, "webhookcerts_reporters", state="stale") == 1.0


def test_heartbeats_follow_the_counted_reporters(m: metrics.Metrics) -> None:
    m.heartbeats_seen("payments", "acme", "live", {"recv-0": BEAT, "recv-1": ISSUED})
    assert value(m, "webhookcerts_reporter_heartbeat_timestamp_seconds", pod="recv-0") == BEAT.timestamp()
    m.heartbeats_seen("payments", "acme", "live", {"recv-1": BEAT})
    assert value(m, "webhookcerts_reporter_heartbeat_timestamp_seconds", pod="recv-0") is None
    assert value(m, "webhookcerts_reporter_heartbeat_timestamp_seconds", pod="recv-1") == BEAT.timestamp()


def test_revoked_presentations_add_up_and_go_with_the_object(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", seen())
    m.revoked_presented("payments", "acme", "live", "ab" * 32, 3)
    m.revoked_presented("payments", "acme", "live", "ab" * 32, 2)
    m.heartbeats_seen("payments", "acme", "live", {"recv-0": BEAT})
    assert value(m, "webhookcerts_revoked_certificate_presentations_total", fingerprint="ab" * 32) == 5.0
    m.forget("payments", "acme")
    assert names_for(m) == set()

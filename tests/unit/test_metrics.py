"""The Prometheus series of a WebhookCertificate: what a status shows, what counters count, what deletion removes.

Each test reads the text a scrape returns (parsed by prometheus_client's own parser), from a registry of
its own, so nothing depends on what else the process registered.
"""

from __future__ import annotations

import datetime

import prometheus_client
import pytest
from prometheus_client import parser

from webhookcerts.domain import models, pki
from webhookcerts.service import metrics, state

NOT_AFTER = datetime.datetime(2027, 3, 1, 12, 0, tzinfo=datetime.UTC)
RENEWAL = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
ISSUED = datetime.datetime(2026, 12, 1, 12, 0, 30, tzinfo=datetime.UTC)
NEXT_NOT_AFTER = datetime.datetime(2027, 12, 1, 12, 0, tzinfo=datetime.UTC)
CHECKED = datetime.datetime(2026, 12, 1, 12, 1, tzinfo=datetime.UTC)


def record(serial: str, not_after: datetime.datetime, compromised_by: str | None = None) -> dict[str, object]:
    return {
        "serial": serial,
        "fingerprint": serial.lower() * 4,
        "notBefore": not_after - datetime.timedelta(days=365),
        "notAfter": not_after,
        "certificate": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "secretName": "acme-tls",
        "revision": 1,
        "compromisedBy": compromised_by,
    }


def status(
    stage: models.Stage,
    *,
    ready: models.ConditionStatus | None = "True",
    pending: models.NextReason | None = None,
    compromised: bool = False,
) -> models.WebhookCertificateStatus:
    body: dict[str, object] = {
        "stage": stage,
        "current": record("AA01", NOT_AFTER, "INC-7" if compromised else None),
        "renewalTime": RENEWAL,
        "conditions": []
        if ready is None
        else [{"type": "Ready", "status": ready, "reason": "X", "lastTransitionTime": CHECKED}],
    }
    if pending is not None:
        body["next"] = {**record("BB02", NEXT_NOT_AFTER), "reason": pending, "issuedAt": ISSUED}
    return models.WebhookCertificateStatus.model_validate(body)


@pytest.fixture
def m() -> metrics.Metrics:
    return metrics.Metrics(prometheus_client.CollectorRegistry())


def samples(m: metrics.Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels."""
    text = m.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def value(m: metrics.Metrics, metric: str, **labels: str) -> float | None:
    wanted = {"name": "acme", "namespace": "payments", "environment": "live", **labels}
    return samples(m).get((metric, frozenset(wanted.items())))


def names_for(m: metrics.Metrics, name: str = "acme") -> set[str]:
    return {n for (n, labels) in samples(m) if ("name", name) in labels}


def test_an_active_certificate_shows_expiry_renewal_and_ready(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", status("Active"))

    assert value(m, "webhookcerts_certificate_expiration_timestamp_seconds") == NOT_AFTER.timestamp()
    assert value(m, "webhookcerts_certificate_renewal_timestamp_seconds") == RENEWAL.timestamp()
    assert value(m, "webhookcerts_certificate_ready_status", condition="True") == 1.0
    assert value(m, "webhookcerts_certificate_ready_status", condition="False") == 0.0
    assert value(m, "webhookcerts_certificate_ready_status", condition="Unknown") == 0.0
    assert value(m, "webhookcerts_certificate_stage", stage="Active") == 1.0
    assert value(m, "webhookcerts_certificate_stage", stage="Rotating") == 0.0
    assert value(m, "webhookcerts_certificate_compromised") == 0.0
    # No rotation pending: the next-certificate series are absent, not zero (alerts use `unless` on them).
    assert "webhookcerts_next_certificate_issued_timestamp_seconds" not in names_for(m)
    assert "webhookcerts_next_certificate_expiration_timestamp_seconds" not in names_for(m)
    # Counters exist from the start, at zero, so that increase() sees the first rotation.
    assert value(m, "webhookcerts_rotations_total", reason="planned") == 0.0
    assert value(m, "webhookcerts_rotations_total", reason="emergency") == 0.0
    assert value(m, "webhookcerts_cutovers_total") == 0.0


def test_ready_without_a_condition_is_unknown(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", status("Issuing", ready=None))
    assert value(m, "webhookcerts_certificate_ready_status", condition="Unknown") == 1.0
    assert value(m, "webhookcerts_certificate_ready_status", condition="True") == 0.0


def test_a_pending_next_appears_and_goes_with_the_cutover(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", status("Rotating", pending="Planned"))
    assert value(m, "webhookcerts_next_certificate_issued_timestamp_seconds") == ISSUED.timestamp()
    assert value(m, "webhookcerts_next_certificate_expiration_timestamp_seconds") == NEXT_NOT_AFTER.timestamp()
    assert value(m, "webhookcerts_certificate_stage", stage="Rotating") == 1.0

    m.observe("payments", "acme", "live", status("Active"))
    assert "webhookcerts_next_certificate_issued_timestamp_seconds" not in names_for(m)
    assert value(m, "webhookcerts_certificate_stage", stage="Rotating") == 0.0


def test_a_compromised_certificate_is_flagged(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", status("Compromised", pending="Emergency", compromised=True))
    assert value(m, "webhookcerts_certificate_compromised") == 1.0
    assert value(m, "webhookcerts_certificate_stage", stage="Compromised") == 1.0


def test_counters_count_by_reason(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", status("Active"))
    m.rotated("payments", "acme", "live", "planned")
    m.rotated("payments", "acme", "live", "emergency")
    m.rotated("payments", "acme", "live", "emergency")
    m.cut_over("payments", "acme", "live")
    m.trust_reloaded("payments", "acme", "live", 3)
    m.trust_reloaded("payments", "acme", "live", 0)
    m.reconcile_failed("payments", "acme", "live")

    assert value(m, "webhookcerts_rotations_total", reason="planned") == 1.0
    assert value(m, "webhookcerts_rotations_total", reason="emergency") == 2.0
    assert value(m, "webhookcerts_cutovers_total") == 1.0
    assert value(m, "webhookcerts_trust_reloads_total") == 3.0
    assert value(m, "webhookcerts_reconcile_errors_total") == 1.0


def test_forgetting_an_object_removes_its_series_and_only_its(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "live", status("Rotating", pending="Planned"))
    m.rotated("payments", "acme", "live", "planned")
    m.observe("payments", "other", "live", status("Active"))

    m.forget("payments", "acme")

    assert names_for(m, "acme") == set()
    assert value(m, "webhookcerts_certificate_stage", name="other", stage="Active") == 1.0


def test_an_error_before_any_status_is_forgotten_too(m: metrics.Metrics) -> None:
    m.reconcile_failed("payments", "acme", "live")
    m.forget("payments", "acme")
    assert names_for(m, "acme") == set()


def test_a_changed_environment_leaves_no_series_under_the_old_one(m: metrics.Metrics) -> None:
    m.observe("payments", "acme", "sandbox", status("Active"))
    m.observe("payments", "acme", "live", status("Active"))
    environments = {dict(labels).get("environment") for (_, labels) in samples(m) if ("name", "acme") in labels}
    assert environments == {"live"}


def test_the_default_metrics_are_one_instance() -> None:
    assert metrics.default() is metrics.default()


class SteppedTimer:
    """A timer each key generation moves by the time it says it took: no real time is measured."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_generated_key_is_timed_into_the_histogram(m: metrics.Metrics) -> None:
    timer = SteppedTimer()
    taken = iter([0.4, 1.5, 3.0])

    def generate(subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> pki.KeyPair:
        timer.now += next(taken)
        return pki.KeyPair(key_pem=b"", cert_pem=b"")

    keygen = state.BoundedKeygen(generate, slots=2, recorder=m, timer=timer)
    subject = models.Subject(commonName="acme")
    for _ in range(3):
        keygen(subject, CHECKED, datetime.timedelta(days=1))

    every = samples(m)
    assert every[("webhookcerts_key_generation_seconds_count", frozenset())] == 3.0
    assert every[("webhookcerts_key_generation_seconds_sum", frozenset())] == pytest.approx(4.9)
    bucket = "webhookcerts_key_generation_seconds_bucket"
    assert every[(bucket, frozenset({("le", "0.5")}))] == 1.0
    assert every[(bucket, frozenset({("le", "2.0")}))] == 2.0
    assert every[(bucket, frozenset({("le", "4.0")}))] == 3.0
    # Not labelled by object: forgetting one leaves the operator's key-generation record whole.
    m.forget("payments", "acme")
    assert samples(m)[("webhookcerts_key_generation_seconds_count", frozenset())] == 3.0


def test_a_failed_generation_is_not_recorded(m: metrics.Metrics) -> None:
    def fail(subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> pki.KeyPair:
        raise RuntimeError("no entropy")

    keygen = state.BoundedKeygen(fail, slots=1, recorder=m, timer=SteppedTimer())
    with pytest.raises(RuntimeError):
        keygen(models.Subject(commonName="acme"), CHECKED, datetime.timedelta(days=1))
    assert samples(m)[("webhookcerts_key_generation_seconds_count", frozenset())] == 0.0


def test_a_counter_from_a_pass_that_could_not_read_the_environment_keeps_the_gauges(m: metrics.Metrics) -> None:
    # An error pass whose spec could not be read says environment "": the object's series stay.
    m.observe("payments", "acme", "live", status("Active"))
    m.reconcile_failed("payments", "acme", "")
    assert value(m, "webhookcerts_certificate_expiration_timestamp_seconds") == NOT_AFTER.timestamp()
    assert value(m, "webhookcerts_reconcile_errors_total") == 1.0

"""Renewal maths, driven by a fake clock instead of sleeping."""

from __future__ import annotations

import datetime

import pytest

from webhookcerts.domain import clock, renewal

UTC = datetime.UTC


def test_renewal_time_is_not_after_minus_renew_before() -> None:
    not_after = datetime.datetime(2027, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert renewal.renewal_time(not_after, datetime.timedelta(days=90)) == datetime.datetime(
        2027, 3, 3, 12, 0, 0, tzinfo=UTC
    )


def test_renewal_time_is_truncated_to_whole_seconds() -> None:
    # cert-manager PR #4399: a sub-second renewal time re-queued too early, forever.
    not_after = datetime.datetime(2027, 6, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    due = renewal.renewal_time(not_after, datetime.timedelta(hours=1, microseconds=1))
    assert due == datetime.datetime(2027, 6, 1, 11, 0, 0, tzinfo=UTC)
    assert due.microsecond == 0


def test_renewal_time_is_reported_in_utc() -> None:
    berlin = datetime.timezone(datetime.timedelta(hours=2))
    not_after = datetime.datetime(2027, 6, 1, 14, 0, 0, tzinfo=berlin)
    due = renewal.renewal_time(not_after, datetime.timedelta(hours=1))
    assert due.utcoffset() == datetime.timedelta(0)
    assert due == datetime.datetime(2027, 6, 1, 11, 0, 0, tzinfo=UTC)


def test_renewal_time_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        renewal.renewal_time(datetime.datetime(2027, 6, 1), datetime.timedelta(hours=1))


def test_a_fake_clock_walks_a_certificate_into_its_renewal_window() -> None:
    issued = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    not_after = issued + datetime.timedelta(hours=8760)
    renew_before = datetime.timedelta(hours=2160)
    fake = clock.FakeClock(issued)
    assert not renewal.is_due(fake.now(), not_after, renew_before)

    fake.set(renewal.renewal_time(not_after, renew_before) - datetime.timedelta(seconds=1))
    assert not renewal.is_due(fake.now(), not_after, renew_before)

    fake.advance(datetime.timedelta(seconds=1))
    assert renewal.is_due(fake.now(), not_after, renew_before)
    assert fake.now() == datetime.datetime(2026, 10, 3, tzinfo=UTC)  # 275 days after issuing


@pytest.mark.parametrize(
    ("duration", "short"),
    [
        (datetime.timedelta(hours=1), True),
        (datetime.timedelta(hours=8759, minutes=59, seconds=59), True),
        (datetime.timedelta(hours=8760), False),
        (datetime.timedelta(hours=17520), False),
    ],
)
def test_short_validity_is_anything_under_the_providers_year(duration: datetime.timedelta, short: bool) -> None:
    assert renewal.is_short_validity(duration) is short

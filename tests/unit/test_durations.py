"""Go-style durations: what users write in the spec, parsed the way the API server's CEL does."""

from __future__ import annotations

import datetime

import pydantic
import pytest

from webhookcerts.domain import durations, models


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8760h", datetime.timedelta(days=365)),
        ("2160h", datetime.timedelta(days=90)),
        ("59m50s", datetime.timedelta(minutes=59, seconds=50)),
        ("1h30m", datetime.timedelta(minutes=90)),
        ("1.5h", datetime.timedelta(minutes=90)),
        ("250ms", datetime.timedelta(milliseconds=250)),
        ("1m1ms", datetime.timedelta(minutes=1, milliseconds=1)),
        ("2562047h", datetime.timedelta(hours=2562047)),
    ],
)
def test_parse(text: str, expected: datetime.timedelta) -> None:
    assert durations.parse(text) == expected


@pytest.mark.parametrize("text", ["", "1y", "10d", "h", "-1h", "1 h", "1H", "8760", "1h ", "1.h"])
def test_parse_refuses_what_is_not_a_go_duration_and_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="write it like 8760h"):
        durations.parse(text)


@pytest.mark.parametrize("text", ["0s", "0h0m"])
def test_parse_refuses_zero(text: str) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        durations.parse(text)


@pytest.mark.parametrize("text", ["2562048h", "99999999999h", "9" * 30 + "h"])
def test_parse_refuses_what_kubernetes_cannot_hold_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="longest duration"):
        durations.parse(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime.timedelta(days=365), "8760h"),
        (datetime.timedelta(minutes=59, seconds=50), "59m50s"),
        (datetime.timedelta(hours=1, seconds=1), "1h1s"),
        (datetime.timedelta(), "0s"),
    ],
)
def test_format(value: datetime.timedelta, text: str) -> None:
    assert durations.format(value) == text


@pytest.mark.parametrize("text", ["8760h", "2160h", "59m50s", "1h1m1s"])
def test_format_inverts_parse(text: str) -> None:
    assert durations.format(durations.parse(text)) == text


def _spec(**overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "environment": "sandbox",
        "subject": {"commonName": "acme"},
        "secretName": "acme-client",
        "trust": {"secretName": "acme-trust"},
    }
    spec.update(overrides)
    return spec


def test_the_spec_defaults_to_a_year_renewed_90_days_ahead() -> None:
    spec = models.WebhookCertificateSpec.model_validate(_spec())
    assert spec.duration_delta == datetime.timedelta(days=365)
    assert spec.renew_before_delta == datetime.timedelta(days=90)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"duration": "59m"}, "shorter than the minimum of 1h"),
        ({"duration": "2000h", "renewBefore": "2160h"}, "must be shorter than duration"),
        ({"duration": "2h", "renewBefore": "2h"}, "must be shorter than duration"),
        ({"duration": "1y"}, "should match pattern"),
        ({"duration": "1" * 33 + "h"}, "at most 32 characters"),
    ],
)
def test_the_spec_refuses_durations_that_would_loop_or_cannot_be_read(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        models.WebhookCertificateSpec.model_validate(_spec(**overrides))

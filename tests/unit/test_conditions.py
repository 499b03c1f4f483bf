"""Conditions change only when something changed, and keep lastTransitionTime for the status flips."""

from __future__ import annotations

import datetime

import pytest

from webhookcerts.domain import conditions, models

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def _ready(
    existing: list[models.Condition],
    status: models.ConditionStatus,
    reason: str,
    now: datetime.datetime,
    message: str = "",
    generation: int | None = 1,
) -> tuple[list[models.Condition], bool]:
    return conditions.set_condition(
        existing, type="Ready", status=status, reason=reason, message=message, now=now, observed_generation=generation
    )


def test_a_new_condition_is_appended_with_now_as_its_transition_time() -> None:
    result, changed = _ready([], "True", "UpToDate", T0)
    assert changed
    assert [c.type for c in result] == ["Ready"]
    assert result[0].last_transition_time == T0
    assert result[0].observed_generation == 1


def test_setting_the_same_condition_again_changes_nothing() -> None:
    first, _ = _ready([], "True", "UpToDate", T0, "fine")
    second, changed = _ready(first, "True", "UpToDate", T1, "fine")
    assert not changed
    assert second == first
    assert second[0].last_transition_time == T0


def test_a_new_reason_keeps_the_transition_time_when_status_stays() -> None:
    first, _ = _ready([], "True", "UpToDate", T0)
    second, changed = _ready(first, "True", "Renewing", T1, "issuing the next certificate")
    assert changed
    assert second[0].reason == "Renewing"
    assert second[0].message == "issuing the next certificate"
    assert second[0].last_transition_time == T0


def test_a_new_generation_alone_is_a_change() -> None:
    first, _ = _ready([], "True", "UpToDate", T0, generation=1)
    second, changed = _ready(first, "True", "UpToDate", T1, generation=2)
    assert changed
    assert second[0].observed_generation == 2
    assert second[0].last_transition_time == T0


def test_a_status_flip_moves_the_transition_time() -> None:
    first, _ = _ready([], "True", "UpToDate", T0)
    second, changed = _ready(first, "False", "SecretDoesNotExist", T1)
    assert changed
    assert second[0].status == "False"
    assert second[0].last_transition_time == T1


def test_order_is_kept_and_new_types_go_last() -> None:
    existing, _ = _ready([], "True", "UpToDate", T0)
    existing, _ = conditions.set_condition(
        existing,
        type="ShortValidity",
        status="True",
        reason="ShortValidity",
        message="",
        now=T0,
        observed_generation=1,
    )
    updated, _ = _ready(existing, "False", "KeyMismatch", T1)
    assert [c.type for c in updated] == ["Ready", "ShortValidity"]
    added, _ = conditions.set_condition(
        updated,
        type="RotationInProgress",
        status="True",
        reason="Renewing",
        message="",
        now=T1,
        observed_generation=1,
    )
    assert [c.type for c in added] == ["Ready", "ShortValidity", "RotationInProgress"]


def test_the_input_list_is_not_modified() -> None:
    existing, _ = _ready([], "True", "UpToDate", T0)
    snapshot = [c.model_copy() for c in existing]
    _ready(existing, "False", "Expired", T1)
    assert existing == snapshot


def test_transition_times_are_whole_seconds_in_utc() -> None:
    # metav1.Time has no fraction: a stored fraction would never compare equal after a round trip.
    berlin = datetime.timezone(datetime.timedelta(hours=1))
    result, _ = _ready([], "True", "UpToDate", datetime.datetime(2026, 1, 1, 13, 0, 0, 654_321, tzinfo=berlin))
    assert result[0].last_transition_time == T0
    assert result[0].to_api()["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _ready([], "True", "UpToDate", datetime.datetime(2026, 1, 1))


def test_get_and_remove() -> None:
    existing, _ = _ready([], "True", "UpToDate", T0)
    existing, _ = conditions.set_condition(
        existing,
        type="RotationInProgress",
        status="True",
        reason="Renewing",
        message="",
        now=T0,
        observed_generation=1,
    )
    found = conditions.get(existing, "RotationInProgress")
    assert found is not None
    assert found.reason == "Renewing"
    assert conditions.get(existing, "Missing") is None

    remaining, changed = conditions.remove(existing, "RotationInProgress")
    assert changed
    assert [c.type for c in remaining] == ["Ready"]
    again, changed = conditions.remove(remaining, "RotationInProgress")
    assert not changed
    assert again == remaining

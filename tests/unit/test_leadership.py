"""The leader-election decision: create, renew, take over only what is free or expired, else wait."""

from __future__ import annotations

from webhookcerts.domain import leadership
from webhookcerts.domain.leadership import Move, Record


def held_by(holder: str, duration: int = 15) -> Record:
    return Record(holder=holder, duration_seconds=duration, renew_time="t", transitions=2, resource_version="7")


def test_no_lease_is_created_and_ones_own_is_renewed() -> None:
    assert leadership.decide(None, "a", unchanged_for=0) is Move.CREATE
    assert leadership.decide(held_by("a"), "a", unchanged_for=100) is Move.RENEW


def test_a_lease_someone_renews_is_waited_for_until_it_goes_unrenewed_for_its_duration() -> None:
    assert leadership.decide(held_by("b"), "a", unchanged_for=14.9) is Move.WAIT
    assert leadership.decide(held_by("b"), "a", unchanged_for=15.0) is Move.WAIT
    assert leadership.decide(held_by("b"), "a", unchanged_for=15.1) is Move.TAKE


def test_a_released_lease_is_taken_at_once() -> None:
    assert leadership.decide(held_by(""), "a", unchanged_for=0) is Move.TAKE

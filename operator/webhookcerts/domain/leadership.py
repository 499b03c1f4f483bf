"""Who of several operator replicas works: the decision of client-go's leader election, as a pure function.

Replicas share one Lease. The holder renews it every few seconds; the others watch it and take it
once it has gone unrenewed for its whole duration. "Unrenewed" is measured on the observer's own
monotonic clock, from the moment it last saw the record change, never by comparing the holder's
timestamps with local time: the replicas' clocks need not agree.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum


@dataclasses.dataclass(frozen=True)
class Record:
    """What the Lease says: who holds it, for how long, and the version to write against."""

    holder: str
    duration_seconds: int
    renew_time: str
    transitions: int
    resource_version: str
    acquire_time: datetime.datetime | None = None


class Move(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    RENEW = "renew"  # ours: renew it
    TAKE = "take"  # free (released) or expired: take it over
    WAIT = "wait"  # someone else holds it and renews it


def decide(record: Record | None, me: str, *, unchanged_for: float) -> Move:
    """The move for ``me``, given the Lease and how long (seconds, local clock) it has looked the same."""
    if record is None:
        return Move.CREATE
    if record.holder == me:
        return Move.RENEW
    if not record.holder or unchanged_for > record.duration_seconds:
        return Move.TAKE
    return Move.WAIT

"""When to renew: the arithmetic cert-manager learned the hard way.

``renewalTime`` is truncated to whole seconds: with sub-second precision the requeue fired a moment
before the stored time, found nothing due, and the certificate never renewed (cert-manager PR #4399).
"""

from __future__ import annotations

import datetime

# The provider asks for certificates valid for at least one year.
PROVIDER_MINIMUM_VALIDITY = datetime.timedelta(hours=8760)


def renewal_time(not_after: datetime.datetime, renew_before: datetime.timedelta) -> datetime.datetime:
    """``notAfter - renewBefore``, in UTC, truncated to the second."""
    if not_after.tzinfo is None:
        raise ValueError("renewal_time needs a timezone-aware notAfter")
    return (not_after - renew_before).astimezone(datetime.UTC).replace(microsecond=0)


def whole_second_after(moment: datetime.datetime) -> datetime.datetime:
    """``moment`` rounded up to the second: a wake-up a fraction early would find nothing due."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + datetime.timedelta(seconds=1)


def is_due(now: datetime.datetime, not_after: datetime.datetime, renew_before: datetime.timedelta) -> bool:
    return now >= renewal_time(not_after, renew_before)


def is_short_validity(duration: datetime.timedelta) -> bool:
    """Shorter than the provider's minimum: allowed (tests, sandboxes) but reported as ShortValidity."""
    return duration < PROVIDER_MINIMUM_VALIDITY

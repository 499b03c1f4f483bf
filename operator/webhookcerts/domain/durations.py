"""Go-style durations (``8760h``, ``59m50s``), the format Kubernetes users know from cert-manager.

The CRD stores durations as strings so that ``kubectl get -o yaml`` shows what the user wrote; this
module is the one place that turns them into ``timedelta`` and back.
"""

from __future__ import annotations

import datetime
import re

_UNITS = {
    "h": datetime.timedelta(hours=1),
    "m": datetime.timedelta(minutes=1),
    "s": datetime.timedelta(seconds=1),
    "ms": datetime.timedelta(milliseconds=1),
}
# The same pattern is the CRD's OpenAPI `pattern`, so admission and the operator agree.
PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|h|m|s))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
# Go's time.Duration (and so the API server's CEL duration()) stops at about 292 years.
MAXIMUM = datetime.timedelta(microseconds=(2**63 - 1) // 1000)


def parse(text: str) -> datetime.timedelta:
    """Parse a positive Go duration; a ValueError says what a valid one looks like."""
    if not isinstance(text, str) or not re.fullmatch(PATTERN, text):
        raise ValueError(f"{text!r} is not a duration; write it like 8760h, 2160h or 59m50s (units h, m, s, ms)")
    total = datetime.timedelta()
    try:
        for number, unit in _PART.findall(text):
            total += float(number) * _UNITS[unit]
    except OverflowError:
        total = datetime.timedelta.max
    if total > MAXIMUM:
        raise ValueError(f"{text!r} is longer than the longest duration Kubernetes accepts (2562047h)")
    if total <= datetime.timedelta():
        raise ValueError(f"{text!r} must be longer than zero")
    return total


def format(value: datetime.timedelta) -> str:
    """Format as Go does for whole seconds: ``8760h0m0s`` becomes ``8760h``, ``3590s`` ``59m50s``."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"

"""What the operator says about its own work: its metrics endpoint, its log, its memory in /proc.

The scale benchmark's key-generation bound is read from the operator's own
``webhookcerts_key_generation_seconds`` histogram, before and after the burst: the time spent on the
very keys the benchmark waited for, not on other keys timed beforehand (RSA-4096 generation varies a
lot from key to key: a bound timed on 40 other keys read 0.93x in one run and 1.64x in the next).

The parsing here is pure (text in, numbers out) so tests/unit/test_benchmarks.py exercises it.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import re
import socket
import urllib.request

HISTOGRAM = "webhookcerts_key_generation_seconds"
_SAMPLE = re.compile(rf"^{HISTOGRAM}_(sum|count) (\S+)$", re.MULTILINE)
# The operator's text log: "2026-12-06 08:40:01,123 INFO webhookcerts.service.state: NS/NAME: Issued: ...".
_ISSUED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: [^/\s]+/\S+: Issued: ", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class KeygenTotals:
    """The histogram's running totals: keys generated, and the seconds spent generating them."""

    count: float
    seconds: float

    def __sub__(self, other: KeygenTotals) -> KeygenTotals:
        return KeygenTotals(self.count - other.count, self.seconds - other.seconds)


def keygen_totals(exposition: str) -> KeygenTotals:
    found = dict(_SAMPLE.findall(exposition))
    if "sum" not in found or "count" not in found:
        raise ValueError(f"no {HISTOGRAM} in the operator's metrics")
    return KeygenTotals(count=float(found["count"]), seconds=float(found["sum"]))


def free_port() -> int:
    """A loopback port free now, for the operator's metrics (two benchmarks on one machine must not collide)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text: str = response.read().decode()
        return text


def issued_times(log_text: str) -> list[float]:
    """When each first certificate was issued (its Issued record), as Unix times, in log order.

    The operator logs in local time with millisecond resolution; this process shares its clock and zone.
    """
    return [
        datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in _ISSUED.findall(log_text)
    ]


def status_kb(pid: int, field: str) -> int:
    """A ``Vm*`` line of /proc/PID/status, in kB (VmHWM: peak resident set; VmRSS: resident now)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


def mb(kb: float) -> float:
    return kb / 1024

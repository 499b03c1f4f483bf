"""Summaries of repeated measurements: median and nearest-rank percentiles, nothing that needs numpy.

Kept pure (numbers in, numbers out) so a unit test runs it and the benchmarks cannot rot unnoticed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``q`` of the samples at or below it.

    No interpolation, so the figure reported is one that was actually measured; with 10 runs the p95
    is the slowest run, which is the honest reading of so few samples.
    """
    if not values:
        raise ValueError("no samples")
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], not {q}")
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no samples")
    return float(statistics.median(values))


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float | int]:
    """Median, p95, min and max of the samples, rounded for a report."""
    return {
        "n": len(values),
        "median": round(median(values), digits),
        "p95": round(percentile(values, 0.95), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }

"""The reporting benchmark's pure parts: counting a report's writes, the section, the command line.

Beside tests/unit/test_benchmarks.py (which holds the other benchmarks' and is at its size limit); the
measurement itself needs a control plane and is run by ``python benchmarks/run.py reporting``.
"""

from __future__ import annotations

import pytest
from benchmarks import report_writes, reporting, run

from tests.unit.test_benchmarks import MACHINE


def test_writes_are_counted_in_the_window_and_the_largest_gap_spans_its_edges() -> None:
    # Writes (arrival times) at 2, 9, then heartbeats: 24, 39, 54, 69 inside [10, 70], then 84.
    figures = report_writes.write_figures([84.0, 2.0, 9.0, 24.0, 39.0, 54.0, 69.0], 10.0, 70.0)

    assert figures["writes"] == 4
    assert figures["writes_per_min"] == 4.0
    assert figures["at_s"] == [14.0, 29.0, 44.0, 59.0]
    assert figures["largest_gap_s"] == 15.0  # 9 -> 24 and 69 -> 84 count, 2 -> 9 (outside) does not
    late = report_writes.write_figures([5.0, 40.0, 50.0], 10.0, 60.0)
    assert late["largest_gap_s"] == 35.0  # a heartbeat missing across the window's start is seen
    assert report_writes.write_figures([], 0.0, 60.0) == {
        "writes": 0,
        "window_s": 60.0,
        "writes_per_min": 0.0,
        "largest_gap_s": None,
        "at_s": [],
    }


def test_write_requests_are_the_api_servers_writes_on_reports_only() -> None:
    def series(resource: str, verb: str, code: str, value: str) -> str:
        return (
            f'apiserver_request_total{{code="{code}",component="apiserver",dry_run="",group="webhookcerts.io",'
            f'resource="{resource}",scope="resource",subresource="",verb="{verb}",version="v1alpha1"}} {value}'
        )

    exposition = "\n".join(
        [
            "# TYPE apiserver_request_total counter",
            series("presentationreports", "POST", "201", "1"),
            series("presentationreports", "PATCH", "200", "7"),
            series("presentationreports", "PATCH", "500", "2"),  # failed writes are writes too
            series("presentationreports", "WATCH", "200", "3"),
            series("presentationreports", "GET", "200", "4"),
            series("webhookcertificates", "PATCH", "200", "50"),
            'apiserver_request_duration_seconds_count{resource="presentationreports",verb="PATCH"} 9',
        ]
    )

    assert report_writes.report_write_requests(exposition) == 10


def result(*, match: bool = True) -> dict[str, object]:
    return {
        "seconds": 60.0,
        "concurrency": 32,
        "heartbeat_s": 15.0,
        "min_gap_s": 2.0,
        "reporting": {"seconds": 60.4, "delivered": 120_800, "deliveries_per_s": 2000.0, "failed": 0},
        "cost": {
            **reporting.cost_figures(([1900.0, 2000.0, 1800.0], [2000.0] * 3), ([210.0, 200.0, 230.0], [200.0] * 3)),
            "pairs": 3,
            "failed": 0,
        },
        "writes": 4,
        "window_s": 60.4,
        "writes_per_min": 3.97,
        "largest_gap_s": 15.02,
        "at_s": [3.5, 18.5, 33.5, 48.5],
        "bound_writes": 5,
        "meets_bound": True,
        "writes_total": 9,
        "api_write_requests": 9,
        "counts": {
            "simulator_delivered": 125_000,
            "simulator_attempts": 125_000,
            "report_accepted": 125_000 if match else 124_000,
            "report_refused": 0,
            "match": match,
        },
        "load_1min_end": 2.5,
        "machine": MACHINE,
    }


def test_the_cost_is_the_median_of_the_pairs_changes() -> None:
    cost = reporting.cost_figures(
        ([1900.0, 2000.0, 1800.0, 2200.0], [2000.0] * 4), ([110.0, 100.0, 130.0, 90.0], [100.0, 100.0, 100.0, 100.0])
    )

    assert cost["changes_percent"] == [-5.0, 0.0, -10.0, 10.0]
    assert cost["cost_percent"] == -2.5
    assert cost["with_median_per_s"] == 1950.0 and cost["without_median_per_s"] == 2000.0
    assert cost["cpu_changes_percent"] == [10.0, 0.0, 30.0, -10.0]
    assert cost["cpu_cost_percent"] == 5.0
    assert cost["with_median_cpu_us"] == 105.0 and cost["without_median_cpu_us"] == 100.0


def test_reporting_section() -> None:
    body = reporting.section(result(), "python benchmarks/run.py reporting --write")

    assert (
        "| with `--report-trust-secret` (heartbeat 15 s) | 2000 (120,800 in 60.4 s) | 4 in 60.4 s | 4.0 | 15.0 s "
        "| 1900 | 210 | 0 |"
    ) in body
    assert "| without | - | none | - | - | 2000 | 200 | - |" in body
    assert "deliveries/s, median of 3 campaigns interleaved" in body
    prose = " ".join(body.split())
    assert "Writes at (s into the run): 3.5, 18.5, 33.5, 48.5." in prose
    assert "at most 5 writes in its 60.4 s (one per 15 s, and one for the phase): **meets** it." in prose
    assert (
        "Cost of reporting, the median of the pairs' changes: +5.0 % receiver CPU per delivery (+5.0, +0.0, +15.0 %; "
        "with: 210, 200, 230 µs; without: 200, 200, 200 µs) and -5.0 % deliveries/s (-5.0, +0.0, -10.0 %; "
        "with: 1900, 2000, 1800; without: 2000, 2000, 2000)."
    ) in prose
    assert "counts 125,000 presentations accepted and 0 refused; the simulator made 125,000" in prose
    assert "they **match**" in prose and "the watch saw 9 writes and the API server counted 9 write" in prose
    assert "`python benchmarks/run.py reporting --write`" in body and "load average 0.5 when it started" in body
    assert "Load average 2.5 at the end." in body


def test_reporting_section_says_when_the_counts_do_not_match() -> None:
    prose = " ".join(reporting.section(result(match=False), "cmd").split())

    assert "counts 124,000 presentations accepted" in prose and "they **do not match**" in prose
    assert "The watch met an error" not in prose
    erred = {**result(), "watch_error": "410 Gone"}
    assert "The watch met an error (410 Gone): it may have missed writes." in reporting.section(erred, "cmd")


def test_the_command_line_refuses_to_record_less_than_a_minute_of_reporting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert reporting.NAME in run.NAMES
    assert run.main(["reporting", "--write", "--reporting-seconds", "30"]) == 2
    assert f"at least {reporting.MIN_SECONDS:g} s" in capsys.readouterr().err

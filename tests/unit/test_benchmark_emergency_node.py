"""The pure parts of the emergency benchmarks' node path: the refusal loop both time with, the
section the node benchmark writes, and its command line (tests/unit/test_benchmarks.py has the rest)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from benchmarks import emergency, emergency_node, run, servers, stats

from tests.unit.test_benchmarks import MACHINE


def probe_of(answers: list[str]) -> Any:
    """A probe answering ``answers`` in turn (the last one forever after)."""
    it: Iterator[str] = iter(answers)
    last = answers[-1]

    def probe() -> str:
        nonlocal last
        last = next(it, last)
        return last

    return probe


def test_a_refusal_counts_only_when_confirmed_and_an_acceptance_in_between_starts_over() -> None:
    calls: list[str] = []
    answers = probe_of(["200", "SSLError", "200", "421", "SSLError", "SSLError", "200"])

    def probe() -> str:
        calls.append(answers())
        return calls[-1]

    refused = servers.until_refused(probe, time.monotonic(), "the server", emergency.PROBE_INTERVAL)

    # The first refusal was followed by an acceptance: the clock stops at the streak that held.
    assert refused.outcome == "421"
    assert refused.flaps == 1
    assert calls == ["200", "SSLError", "200", "421", "SSLError", "SSLError"]


def samples(refused: list[float], nudges: list[float | None]) -> list[dict[str, Any]]:
    return [
        {
            "refused_s": r,
            "secret_s": 0.02,
            "nudge_s": n,
            "swap_s": r - 0.05,
            "refusal": "SSLEOFError",
            "accepted_after_first_refusal": 0,
        }
        for r, n in zip(refused, nudges, strict=True)
    ]


def test_a_swap_before_the_nudge_or_without_one_is_counted() -> None:
    found = samples([0.3, 0.3, 0.3, 0.3], [0.1, 0.28, None, 0.2])

    # A swap at 0.25 after a nudge at 0.1 or 0.2: the nudge's; before the nudge at 0.28, or with none seen: not.
    assert emergency_node.swapped_before_nudge(found) == 2


def node_result(refused: list[float]) -> dict[str, Any]:
    found = samples(refused, [0.1] * len(refused))
    return {
        "others": 1000,
        "runs": len(refused),
        "annotation_to_s": emergency_node.summaries(found),
        "refusals": ["SSLEOFError"],
        "runs_accepted_again": 0,
        "runs_swapped_before_nudge": 0,
        "nudges_by_operator": 2 * len(refused),
        "reloads_logged_by_receiver": 41,
        "kubelet_sync_frequency": "1m",
        "idle_before_run_s": emergency_node.KUBELET_IDLE_S,
        "probe_interval_s": emergency.PROBE_INTERVAL,
        "target_p95_s": emergency_node.TARGET_P95_S,
        "meets_target": stats.percentile(refused, 0.95) <= emergency_node.TARGET_P95_S,
        "samples": found,
        "machine": MACHINE,
    }


def test_emergency_node_section() -> None:
    result = node_result([0.3] * 18 + [1.2, 1.6])

    body = emergency_node.section(result, "python benchmarks/run.py emergency-node --write")
    prose = " ".join(body.split())

    assert "| annotation -> trust Secret without the certificate (watch) | 0.02 | 0.02 | 0.02 / 0.02 | 20 |" in body
    assert "| annotation -> kubelet swaps the volume's `..data` (host) | 0.25 | 1.15 | 0.25 / 1.55 | 20 |" in body
    assert "| annotation -> **the pod refuses the certificate** | 0.30 | 1.20 | 0.30 / 1.60 | 20 |" in body
    assert "p95 <= 1.5 s: **meets** it. 20 runs" in body
    assert "1,000 other WebhookCertificates" in prose
    assert "`syncFrequency: 1m` (its default)" in prose and "idle for 2 s" in prose
    assert "announced the trust store to the pod 40 times" in prose
    assert "before the nudge was seen in 0/20 runs" in prose
    assert "Runs (s): " + ", ".join(["0.30"] * 18 + ["1.20", "1.60"]) + "." in body
    assert "`python benchmarks/run.py emergency-node --write`" in body and "2026-01-02" in body


def test_emergency_node_section_misses_and_says_what_was_not_seen() -> None:
    result = node_result([1.6] * 20)
    result["annotation_to_s"]["nudge_s"] = None

    body = emergency_node.section(result, "python benchmarks/run.py emergency-node --write")

    assert "**MISSES** it" in body
    assert "| annotation -> pod's trust-hash annotation patched by the operator (watch) | - | - | - | 0 |" in body


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        (["--emergency-node-runs", "3"], "at least 20 runs of the emergency on the node"),
        (["--emergency-node-others", "50"], "1000 other objects present"),
    ],
)
def test_the_command_line_refuses_to_record_a_short_or_small_node_emergency(
    argv: list[str], needs: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def measure(*args: object, **kwargs: object) -> dict[str, Any]:
        raise AssertionError("a run refused before it starts must not start a cluster")

    monkeypatch.setattr(emergency_node, "measure", measure)
    assert run.main(["emergency-node", "--write", *argv]) == 2
    assert needs in capsys.readouterr().err

"""Endpoint probes beside the reconcile workers: a pass never waits for one, and each runs at a bounded rate."""

from __future__ import annotations

import threading

from tests.unit.ticks import Ticks
from webhookcerts.service import probes, validation

KEY: probes.ProbeKey = ("ns", "name", "EndpointAcceptsNext", "AB:CD", "https://endpoint.example/")
ACCEPTED = validation.Probe(validation.Outcome.ACCEPTED, "the endpoint answered 'HTTP/1.1 200 OK'")


def test_a_black_holing_endpoint_never_holds_the_pass_that_asked() -> None:
    release, woken = threading.Event(), threading.Event()
    prober = probes.Prober(workers=1, on_done=lambda ns, name: woken.set())
    calls = 0

    def black_hole() -> validation.Probe:
        nonlocal calls
        calls += 1
        assert release.wait(30)
        return ACCEPTED

    try:
        # The probe is started and blocks; the pass gets "no answer yet" at once, and asking again does
        # not start a second one while the first hangs.
        assert prober.answer(KEY, black_hole) is None
        assert prober.answer(KEY, black_hole) is None
        release.set()
        assert woken.wait(30), "the answer did not wake the object up"
        assert prober.answer(KEY, black_hole) == ACCEPTED
        assert calls == 1
    finally:
        release.set()
        prober.shutdown()


def test_one_probe_per_interval_for_one_certificate_and_endpoint() -> None:
    ticks = Ticks()
    prober = probes.Prober(workers=0, interval=60, clock=ticks)
    calls: list[str] = []

    def run() -> validation.Probe:
        calls.append("probe")
        return ACCEPTED

    assert prober.answer(KEY, run) == ACCEPTED
    ticks.now += 59
    assert prober.answer(KEY, run) == ACCEPTED
    assert len(calls) == 1
    ticks.now += 1
    prober.answer(KEY, run)
    assert len(calls) == 2
    # Another certificate (a new next after an emergency) is probed at once.
    prober.answer(("ns", "name", "EndpointAcceptsNext", "EF:01", "https://endpoint.example/"), run)
    assert len(calls) == 3


def test_a_probe_that_raises_is_an_unreachable_answer_not_a_dead_pool() -> None:
    prober = probes.Prober(workers=0)

    def broken() -> validation.Probe:
        raise RuntimeError("boom")

    answer = prober.answer(KEY, broken)
    assert answer is not None and answer.outcome is validation.Outcome.UNREACHABLE


def test_an_answer_not_yet_wanted_is_asked_again_soon_then_less_often() -> None:
    """An endpoint a few seconds behind its trust Secret is seen within seconds, not an interval later;
    one that stays wrong costs one probe per interval; the wanted answer restores the interval."""
    ticks = Ticks()
    prober = probes.Prober(workers=0, interval=60, first_retry=2, clock=ticks)
    refused = validation.Probe(validation.Outcome.REFUSED, "the endpoint refused the certificate")
    answers = [refused] * 7 + [ACCEPTED]
    probed_at: list[float] = []

    def run() -> validation.Probe:
        probed_at.append(ticks.now)
        return answers[len(probed_at) - 1]

    def wanted(result: validation.Probe) -> bool:
        return result.outcome is validation.Outcome.ACCEPTED

    start = ticks.now
    while len(probed_at) < len(answers):
        prober.answer(KEY, run, wanted)
        ticks.now += 1
    assert [t - start for t in probed_at] == [0, 2, 6, 14, 30, 62, 122, 182]
    # Due again one interval after the wanted answer, not sooner.
    assert prober.due_in(KEY) == 59
    assert prober.answer(KEY, run, wanted) == ACCEPTED and len(probed_at) == 8

"""The engine under leader election, without an API server: a worker that took an item after this
replica stopped leading puts it back instead of running a pass, and the liveness probe fails when a
worker or the elector's thread has ended (and not while standing by)."""

from __future__ import annotations

import asyncio
import threading
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, cast

import kopf
import kubernetes
import pytest
import urllib3
from kopf._core.engines import probing  # Kopf's health server, as kopf.run starts it

from tests import conftest
from webhookcerts.devcluster import base
from webhookcerts.handlers import operator
from webhookcerts.kube import client as kube_client
from webhookcerts.service import engine, leader, reconcile

ITEM = ("certificate", "ns", "a")


@pytest.fixture
def eng(monkeypatch: pytest.MonkeyPatch) -> Iterator[engine.Engine]:
    eng = engine.Engine(reconcile.Context(kube_client.Clients(kubernetes.client.ApiClient())), workers=1)
    eng.view.mark_synced()
    yield eng
    eng.stop()
    operator.configure(eng, None)


def test_a_worker_waiting_in_the_queue_when_leadership_is_lost_puts_the_item_back(
    eng: engine.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    processed: list[Any] = []
    put_back = threading.Event()
    waiting: list[threading.Thread] = []
    monkeypatch.setattr(eng, "process", lambda item, urgent=False: processed.append(item))
    get, back = eng.queue.get, eng.queue.put_back

    def recording_get(**kw: Any) -> Any:
        waiting.append(threading.current_thread())
        return get(**kw)

    def recording_put_back(item: Any) -> None:
        back(item)
        put_back.set()

    monkeypatch.setattr(eng.queue, "get", recording_get)
    monkeypatch.setattr(eng.queue, "put_back", recording_put_back)
    eng.start()
    # Both workers (the urgent lane's and the ordinary one) wait in the queue while leading.
    assert conftest.poll(lambda: len(waiting) == 2)
    eng.follow()
    eng.queue.add(ITEM)
    # Taken by the waiting worker, and handed back rather than worked on (or worked on: the bug).
    assert conftest.poll(lambda: put_back.is_set() or bool(processed))
    assert processed == [] and len(eng.queue) == 1
    eng.lead()
    assert conftest.poll(lambda: processed == [ITEM]), processed


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_liveness_probe_fails_once_a_worker_or_the_elector_thread_ended(
    eng: engine.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = threading.Event()
    get = eng.queue.get

    def urgent_lane_ends(*, urgent_only: bool = False, **kw: Any) -> Any:
        if urgent_only:
            end.wait(30)
            raise SystemExit  # the thread ends, as on an error nothing in it caught
        return get(urgent_only=urgent_only, **kw)

    monkeypatch.setattr(eng.queue, "get", urgent_lane_ends)
    standby = types.SimpleNamespace(leading=False, dead_threads=lambda: [])
    operator.configure(eng, cast(leader.Elector, standby))
    eng.start()
    assert operator.threads() == "standing by"
    standby.leading = True
    assert operator.threads() == "leading"
    standby.dead_threads = lambda: ["leader-deadline"]
    with pytest.raises(kopf.PermanentError, match="threads ended: leader-deadline"):
        operator.threads()
    standby.dead_threads = lambda: []
    end.set()
    assert conftest.poll(lambda: eng.dead_workers() == ["reconcile-urgent"]), eng.dead_workers()
    with pytest.raises(kopf.PermanentError, match="threads ended: reconcile-urgent"):
        operator.threads()


def test_kopfs_health_endpoint_answers_500_while_the_probe_fails_and_200_with_the_role(eng: engine.Engine) -> None:
    """Through Kopf's own health server (as ``webhookcerts run --liveness`` starts it): what the kubelet sees."""
    elector = types.SimpleNamespace(leading=False, dead_threads=lambda: ["leader-election"])
    operator.configure(eng, cast(leader.Elector, elector))
    port = base.free_port()

    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    async def scenario() -> list[tuple[int, bytes]]:
        ready = asyncio.Event()
        reporter = asyncio.create_task(
            probing.health_reporter(
                f"http://127.0.0.1:{port}/healthz",
                memo=kopf.Memo(),
                indices={},
                registry=kopf.get_default_registry(),
                settings=kopf.OperatorSettings(),
                ready_flag=ready,
            )
        )
        await ready.wait()
        answers = [await asyncio.to_thread(get)]
        elector.dead_threads = lambda: []
        answers.append(await asyncio.to_thread(get))
        reporter.cancel()
        return answers

    assert asyncio.run(scenario()) == [(500, b""), (200, b'{"threads": "standing by"}')]


def test_a_pass_whose_call_timed_out_is_retried_after_a_backoff_in_its_lane(
    eng: engine.Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def times_out(*_: Any, **__: Any) -> None:
        raise urllib3.exceptions.ReadTimeoutError(None, "/apis", "Read timed out.")

    monkeypatch.setattr(reconcile, "run", times_out)
    eng.process(ITEM, urgent=True)
    assert "no answer from the API server (ReadTimeoutError); retrying" in caplog.text
    assert "Traceback" not in caplog.text
    assert len(eng.queue) == 1
    assert eng.queue.get(urgent_only=True, timeout=0) is None  # not at once: after the backoff
    assert eng.queue.get(urgent_only=True, timeout=engine.BACKOFF_INITIAL + 5) == ITEM

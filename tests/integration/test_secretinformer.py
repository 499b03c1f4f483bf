"""The Secret reflector (kube/secretinformer.py) against a real API server: it lists the operator's
Secrets, says when the list is done, follows every change through watches the server keeps ending,
never sees a Secret without the operator's label, and a re-list reports what disappeared meanwhile."""

from __future__ import annotations

import base64
import collections
import threading
from typing import Any

import kubernetes
import pytest

from tests import conftest
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secretinformer

pytestmark = pytest.mark.integration

LABELS = {kube_client.MANAGED_BY_LABEL: kube_client.MANAGED_BY}


class Recorder:
    """What the reflector reported, in order: ("put" | "delete" | "synced", namespace, name, data)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def put(self, body: Any) -> None:
        meta = body["metadata"]
        with self.lock:
            self.events.append(("put", meta["namespace"], meta["name"], dict(body.get("data") or {})))

    def delete(self, body: Any) -> None:
        meta = body["metadata"]
        with self.lock:
            self.events.append(("delete", meta["namespace"], meta["name"], {}))

    def synced(self) -> None:
        with self.lock:
            self.events.append(("synced", "", "", {}))

    def seen(self, kind: str, name: str, data: dict[str, str] | None = None) -> bool:
        with self.lock:
            return any(e[0] == kind and e[2] == name and (data is None or e[3] == data) for e in self.events)

    def informer(self, clients: kube_client.Clients, namespaces: list[str], **kw: Any) -> secretinformer.SecretInformer:
        return secretinformer.SecretInformer(
            clients, namespaces, on_put=self.put, on_delete=self.delete, on_synced=self.synced, **kw
        )


def secret(name: str, value: str, labels: dict[str, str] | None = LABELS) -> kubernetes.client.V1Secret:
    return kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name=name, labels=labels),
        data={"v": base64.b64encode(value.encode()).decode()},
    )


def b64(value: str) -> dict[str, str]:
    return {"v": base64.b64encode(value.encode()).decode()}


@pytest.fixture
def clients(api_client: kubernetes.client.ApiClient) -> kube_client.Clients:
    return kube_client.Clients(api_client)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def test_it_lists_then_follows_every_change_across_watches_the_server_ends(
    clients: kube_client.Clients, core_v1: kubernetes.client.CoreV1Api, namespace: str, recorder: Recorder
) -> None:
    core_v1.create_namespaced_secret(namespace, secret("before", "1"))
    core_v1.create_namespaced_secret(namespace, secret("stranger", "x", labels={"app": "other"}))
    # The server ends each watch after a second: every change below may land after a re-watch.
    informer = recorder.informer(clients, [namespace], watch_timeout=1)
    informer.start()
    try:
        conftest.wait_for(lambda: recorder.seen("synced", ""), what="the first listing")
        with recorder.lock:
            order = [e[0] for e in recorder.events]
        assert order == ["put", "synced"], "the listed Secret is handed over before the listing is done"

        core_v1.create_namespaced_secret(namespace, secret("during", "2"))
        conftest.wait_for(lambda: recorder.seen("put", "during", b64("2")), what="a created Secret")
        core_v1.patch_namespaced_secret("before", namespace, {"data": b64("3")})
        conftest.wait_for(lambda: recorder.seen("put", "before", b64("3")), what="a changed Secret")
        core_v1.delete_namespaced_secret("during", namespace)
        conftest.wait_for(lambda: recorder.seen("delete", "during"), what="a deleted Secret")
        # The positive control for the stranger: labelled, it is seen; so unlabelled it was not.
        assert not recorder.seen("put", "stranger")
        core_v1.patch_namespaced_secret("stranger", namespace, {"metadata": {"labels": LABELS}})
        conftest.wait_for(lambda: recorder.seen("put", "stranger"), what="a Secret that took the label")
        # Two watches more, each from the version the last one reached: nothing is reported twice.
        watches = informer.watches
        conftest.wait_for(lambda: informer.watches >= watches + 2, what="two more watches")
        assert informer.dead_threads() == []
        with recorder.lock:
            counts = collections.Counter((e[0], e[2]) for e in recorder.events)
        assert counts[("put", "during")] == 1 and counts[("delete", "during")] == 1
        assert counts[("put", "before")] == 2 and counts[("synced", "")] == 1
    finally:
        informer.stop()


def test_a_re_list_reports_as_deleted_what_the_new_list_no_longer_holds(
    clients: kube_client.Clients, core_v1: kubernetes.client.CoreV1Api, namespace: str, recorder: Recorder
) -> None:
    core_v1.create_namespaced_secret(namespace, secret("kept", "1"))
    listings: list[tuple[str | None, set[tuple[str, str]], str]] = []
    informer = recorder.informer(clients, [namespace], on_listed=lambda *listing: listings.append(listing))
    # What an earlier list and watch had seen: one still there, one deleted while disconnected.
    known = {(namespace, "kept"): "old-uid", (namespace, "ghost"): "ghost-uid"}
    version = informer._list(namespace, known)

    assert version
    # And the consumer hears of the complete listing, to drop what it holds that the reflector never saw.
    assert listings == [(namespace, {(namespace, "kept")}, version)]
    assert recorder.seen("put", "kept") and recorder.seen("delete", "ghost")
    assert not recorder.seen("delete", "kept")
    assert set(known) == {(namespace, "kept")} and known[(namespace, "kept")] != "old-uid"


def test_without_namespaces_it_watches_every_namespace(
    clients: kube_client.Clients, core_v1: kubernetes.client.CoreV1Api, namespace: str, recorder: Recorder
) -> None:
    informer = recorder.informer(clients, [])
    informer.start()
    try:
        conftest.wait_for(lambda: recorder.seen("synced", ""), what="the first listing")
        core_v1.create_namespaced_secret(namespace, secret("anywhere", "1"))
        conftest.wait_for(lambda: recorder.seen("put", "anywhere"), what="a Secret in some namespace")
        with recorder.lock:
            assert any(e[1] == namespace and e[2] == "anywhere" for e in recorder.events)
    finally:
        informer.stop()


def test_a_secret_the_consumer_fails_on_neither_stops_the_listing_nor_the_thread(
    clients: kube_client.Clients, core_v1: kubernetes.client.CoreV1Api, namespace: str, recorder: Recorder
) -> None:
    core_v1.create_namespaced_secret(namespace, secret("a-poison", "1"))
    core_v1.create_namespaced_secret(namespace, secret("b-fine", "2"))

    def put(body: Any) -> None:
        if body["metadata"]["name"].endswith("poison"):
            raise ValueError("the consumer cannot take it")
        recorder.put(body)

    informer = secretinformer.SecretInformer(
        clients, [namespace], on_put=put, on_delete=recorder.delete, on_synced=recorder.synced
    )
    informer.start()
    try:
        conftest.wait_for(lambda: recorder.seen("synced", ""), what="the first listing, past the poison")
        assert recorder.seen("put", "b-fine")
        core_v1.create_namespaced_secret(namespace, secret("c-poison", "3"))
        core_v1.create_namespaced_secret(namespace, secret("d-later", "4"))
        conftest.wait_for(lambda: recorder.seen("put", "d-later"), what="the watch, past another poison")
        assert informer.dead_threads() == []
        with recorder.lock:
            assert sum(1 for e in recorder.events if e[0] == "synced") == 1, "no re-list for the consumer's failure"
    finally:
        informer.stop()

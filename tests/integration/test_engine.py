"""The engine against the real API server: work proportional to change, containment first, clean stops.

Two kinds of test here. With the operator as users run it (``webhookcerts run``) and a resync interval
of an hour, so nothing a test sees can come from a timer: a key Secret deleted by hand is noticed from
the watch alone; a restart issues no key and rewrites nothing; a SIGTERM in the middle of issuing is
obeyed at once and the next start finishes the work with one key per object. In-process, where a
test can hold the key generator or count the API calls: containment happens while the replacement's
key generation is blocked; a pass costs only what the object and its trust Secret's neighbours
contribute, and an unchanged object costs nothing at all.
"""

from __future__ import annotations

import collections
import datetime
import pathlib
import signal
import threading
from typing import Any

import kubernetes
import pytest

from tests import conftest, whc
from webhookcerts.devcluster import base as devbase
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import clock, models, names, pki, trust
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secrets
from webhookcerts.service import engine, reconcile

pytestmark = pytest.mark.integration


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> whc.Api:
    return whc.Api(api_client, namespace)


@pytest.fixture
def operator_args() -> list[str]:
    # Longer than any test: whatever happens in these tests was caused by a watch event, not a resync.
    return ["--resync-interval", "3600"]


def ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


def managed_versions(api: whc.Api) -> dict[str, str]:
    selector = f"{kube_client.MANAGED_BY_LABEL}={kube_client.MANAGED_BY}"
    return {
        s.metadata.name: s.metadata.resource_version
        for s in api.core.list_namespaced_secret(api.namespace, label_selector=selector).items
    }


def certificate_versions(api: whc.Api) -> dict[str, str]:
    listed = api.custom.list_namespaced_custom_object(models.GROUP, models.VERSION, api.namespace, models.PLURAL)
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in listed["items"]}


# --- the operator process ----------------------------------------------------------------------------


def test_a_key_secret_deleted_by_hand_is_noticed_from_the_watch(
    api: whc.Api, operator: conftest.OperatorProcess
) -> None:
    api.create("watched")
    conftest.wait_for(lambda: ready(api, "watched"), what="Ready=True")
    api.core.delete_namespaced_secret("watched-tls", api.namespace)

    def reported() -> models.Condition | None:
        condition = api.condition("watched", names.READY)
        return condition if condition is not None and condition.status == "False" else None

    # Far inside the hour-long resync: only the Secret watch can have told the operator.
    condition = conftest.wait_for(reported, timeout=30, what="Ready=False after the deletion")
    assert condition.reason == "SecretDoesNotExist"
    # Never replaced on its own: the provider may hold a copy of that key.
    assert api.secret("watched-tls") is None


def test_a_restart_with_existing_objects_issues_no_key_and_rewrites_nothing(
    api: whc.Api, operator: conftest.OperatorProcess
) -> None:
    for name, environment in (("sandbox", "sandbox"), ("live", "live")):
        api.create(name, environment=environment, bundle={"passwordSecretRef": {"name": "pw"}})
    api.core.create_namespaced_secret(
        api.namespace,
        kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name="pw"), string_data={"password": "pw"}),
    )
    for name in ("sandbox", "live"):
        conftest.wait_for(lambda n=name: ready(api, n) and api.status(n).bundle is not None, what=f"{name} Ready")
    conftest.wait_for(lambda: len(api.trusted_fingerprints()) == 2, what="both in the shared trust store")

    def settled() -> bool:
        # Both record the trust Secret's current content: nothing is left for a later pass to do.
        written = trust.trust_hash((api.secret("webhook-trust") or {}).get(names.TRUST_KEY, b""))
        return all((t := api.status(n).trust) is not None and t.hash == written for n in ("sandbox", "live"))

    conftest.wait_for(settled, what="both statuses naming the shared trust store's content")
    operator.stop()
    secrets_before, objects_before = managed_versions(api), certificate_versions(api)
    assert {"sandbox-tls", "live-tls", "sandbox-tls-bundle", "live-tls-bundle", "webhook-trust"} <= set(secrets_before)

    # One ordinary worker: its queue is served in order, so the marker below is passed only after
    # everything the restart queued before it (the start-up pass, the trust Secrets the watches listed).
    operator.extra_args += ["--workers", "1"]
    operator.start()
    # The log file is appended to: the second start-up pass is the restarted operator's.
    conftest.wait_for(lambda: operator.logs().count("start-up pass done") == 2, what="the start-up pass")
    # The positive control: a change the restarted operator must act on, made now, and seen acted on.
    api.create("marker", trust={"secretName": "marker-trust"})
    conftest.wait_for(lambda: ready(api, "marker"), what="the marker Ready")
    assert api.secret("marker-tls") is not None and api.secret("marker-trust") is not None
    # Only then: what was there before is byte for byte as it was.
    assert {k: v for k, v in managed_versions(api).items() if not k.startswith("marker")} == secrets_before
    assert {k: v for k, v in certificate_versions(api).items() if k != "marker"} == objects_before
    assert len(api.events("sandbox", "Issued")) == len(api.events("live", "Issued")) == 1


def test_sigterm_while_issuing_stops_at_once_and_the_next_start_finishes_with_one_key_each(
    api: whc.Api, operator: conftest.OperatorProcess
) -> None:
    count = 12
    for i in range(count):
        api.create(f"burst-{i:02d}", trust={"secretName": f"trust-{i // 2}"})
    conftest.wait_for(lambda: any(ready(api, f"burst-{i:02d}") for i in range(count)), what="the first Ready")
    proc = operator.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    # Obeyed, not outlived: the fixture's own stop would SIGKILL after its grace period instead.
    assert proc.wait(timeout=30) == 0
    operator.proc = None

    operator.start()
    for i in range(count):
        conftest.wait_for(lambda n=f"burst-{i:02d}": ready(api, n), timeout=120, what=f"burst-{i:02d} Ready")
    for i in range(count):
        name = f"burst-{i:02d}"
        status = api.status(name)
        assert status.current is not None and status.revision == 1, name
        held = api.secret(f"{name}-tls") or {}
        assert pki.inspect(held[names.TLS_CERT]).fingerprint == status.current.fingerprint
        assert status.current.fingerprint in api.trusted_fingerprints(f"trust-{i // 2}")


# --- in-process: the engine with a key generator the test holds -------------------------------------


class HeldKeygen:
    """The real key generator, held closed while ``hold`` is set: what happens meanwhile cannot wait for it."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.release = threading.Event()
        self.waiting = threading.Event()
        self.calls = 0

    def __call__(self, subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> pki.KeyPair:
        self.calls += 1
        if self.hold.is_set():
            self.waiting.set()
            assert self.release.wait(60), "the test never released the key generator"
        return pki.new_key_pair(subject, now, duration)


def feed(eng: engine.Engine, api: whc.Api) -> None:
    """What the watches would deliver: every object and every Secret the operator owns, as they are now."""
    listed = api.custom.list_namespaced_custom_object(models.GROUP, models.VERSION, api.namespace, models.PLURAL)
    for body in listed["items"]:
        eng.certificate_seen(body)
    for secret in secrets.list_managed(eng.ctx.clients, api.namespace):
        eng.view.put_secret(api.namespace, secret)


def test_containment_happens_while_the_replacement_key_generation_is_held(
    api: whc.Api, api_client: kubernetes.client.ApiClient
) -> None:
    keygen = HeldKeygen()
    ctx = reconcile.Context(kube_client.Clients(api_client), keygen=keygen)
    eng = engine.Engine(ctx, workers=2)
    api.create("held")
    api.create("neighbour", environment="live")
    feed(eng, api)
    eng.synced()
    eng.start()
    try:
        conftest.wait_for(lambda: ready(api, "held") and ready(api, "neighbour"), what="both Ready")
        compromised = api.status("held").current
        assert compromised is not None
        keygen.hold.set()
        api.emergency("held", "INC-77")
        feed(eng, api)  # the annotation's watch event
        assert keygen.waiting.wait(60), "the replacement's key generation never started"
        # The replacement is still being generated, and the trust store has already let go.
        trusted = api.trusted_fingerprints()
        assert compromised.fingerprint not in trusted
        neighbour = api.status("neighbour").current
        assert neighbour is not None and neighbour.fingerprint in trusted
        status = api.status("held")
        assert status.next is None and status.current is not None and status.current.compromised_by == "INC-77"
        assert len(api.events("held", "EmergencyRotation")) == 1
        keygen.release.set()
        replaced = conftest.wait_for(
            lambda: (s := api.status("held")).next is not None and s, what="the replacement recorded"
        )
        assert replaced.next is not None and replaced.next.reason == "Emergency"
        # Status is recorded first, then the trust Secret is written (the crash-safe order).
        expected = {replaced.next.fingerprint, neighbour.fingerprint}
        conftest.wait_for(lambda: api.trusted_fingerprints() == expected, what="the replacement trusted")
    finally:
        keygen.release.set()
        eng.stop()


# --- in-process: what a pass costs --------------------------------------------------------------------


class CountingCalls:
    """Every request the client sends, by method and path: "costs nothing" is then something to check."""

    def __init__(self, api_client: kubernetes.client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        original = api_client.call_api

        def call_api(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, url.split("?", 1)[0]))
            return original(method, url, *args, **kwargs)

        monkeypatch.setattr(api_client, "call_api", call_api)

    def since(self, mark: int) -> collections.Counter[tuple[str, str]]:
        return collections.Counter(self.calls[mark:])


def test_a_pass_costs_what_its_trust_secrets_neighbours_contribute_and_an_unchanged_one_nothing(
    api: whc.Api, api_client: kubernetes.client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = clock.FakeClock(datetime.datetime.now(datetime.UTC).replace(microsecond=0))
    ctx = reconcile.Context(kube_client.Clients(api_client), clock=fake)
    for i in range(8):
        api.create(f"n-{i}", trust={"secretName": f"trust-{i // 2}"})
        reconcile.reconcile(ctx, api.get(f"n-{i}"))
    eng = engine.Engine(ctx)
    feed(eng, api)
    eng.synced()
    counting = CountingCalls(api_client, monkeypatch)

    # The first of each pair records the trust hash its neighbour changed since; then nothing is left.
    for i in range(8):
        eng.process(("certificate", api.namespace, f"n-{i}"))
    # Nothing changed: a pass over every object sends nothing and verifies no key again.
    checks = ctx.checks.misses
    mark = len(counting.calls)
    for i in range(8):
        eng.process(("certificate", api.namespace, f"n-{i}"))
    assert counting.since(mark) == collections.Counter()
    assert ctx.checks.misses == checks

    # An emergency on one: its status, the trust Secret it shares with one neighbour, the Event, the
    # incident marked on its key Secret (after the trust Secret), the new key Secret. No list of
    # WebhookCertificates, and no other trust Secret touched.
    api.emergency("n-2", "INC-5")
    feed(eng, api)
    mark = len(counting.calls)
    eng.process(("certificate", api.namespace, "n-2"))
    sent = counting.since(mark)
    paths = {path for _, path in sent}
    assert not any(m == "GET" and p.endswith("/webhookcertificates") for m, p in sent), sent
    touched = {p.rsplit("/", 1)[1] for p in paths if "/secrets/" in p}
    assert touched <= {"trust-1", "n-2-tls", "n-2-tls-next"}, sent
    assert "trust-1" in touched
    order = [p.rsplit("/", 1)[1] for _, p in counting.calls[mark:] if "/secrets/" in p]
    assert order.index("trust-1") < order.index("n-2-tls"), order
    assert all(m != "GET" for m, p in sent if "/secrets" in p), sent
    status = api.status("n-2")
    assert status.next is not None and status.current is not None and status.current.compromised_by == "INC-5"
    assert api.trusted_fingerprints("trust-1") == {
        status.next.fingerprint,
        *(c.fingerprint for c in [api.status("n-3").current] if c is not None),
    }


def found_replacement(port: int, namespace: str, name: str, recorded: models.NextCertificate) -> bool:
    """Whether the operator on ``port`` last passed ``name`` in stage Compromised with ``recorded`` pending."""
    scraped = conftest.scrape(port)
    labels = {("name", name), ("namespace", namespace)}

    def value(metric: str, **extra: str) -> float | None:
        wanted = labels | set(extra.items())
        return next((v for (m, ls), v in scraped.items() if m == f"webhookcerts_{metric}" and wanted <= ls), None)

    issued = value("next_certificate_issued_timestamp_seconds")
    return value("certificate_stage", stage="Compromised") == 1.0 and issued == recorded.issued_at.timestamp()


def test_two_operator_processes_at_once_handle_each_emergency_once_with_one_key(
    api: whc.Api, operator: conftest.OperatorProcess, cluster: devcluster.DevCluster, tmp_path: pathlib.Path
) -> None:
    # A rolling update's overlap: a second operator, both active (standalone), the same objects; each
    # with a metrics endpoint, where the gauges say what its latest pass over each object found.
    ports = [devbase.free_port(), devbase.free_port()]
    operator.stop()
    operator.extra_args += ["--metrics-port", str(ports[0])]
    operator.start()
    count = 8
    for i in range(count):
        api.create(f"pair-{i}", trust={"secretName": f"trust-{i // 2}"})
    for i in range(count):
        conftest.wait_for(lambda n=f"pair-{i}": ready(api, n), timeout=120, what=f"pair-{i} Ready")
    before = {f"pair-{i}": api.status(f"pair-{i}") for i in range(count)}
    second = conftest.OperatorProcess(
        cluster.kubeconfig,
        api.namespace,
        tmp_path / "second.log",
        ["--resync-interval", "3600", "--metrics-port", str(ports[1])],
    )
    second.start()
    try:
        conftest.wait_for(lambda: "start-up pass done" in second.logs(), what="the second operator's start-up pass")
        for i in range(count):
            api.emergency(f"pair-{i}", f"INC-{i}")
        for i in range(count):
            name = f"pair-{i}"
            conftest.wait_for(
                lambda n=name: (s := api.status(n)).next is not None and s.stage == "Compromised",
                timeout=120,
                what=f"{name}'s replacement",
            )
        # The positive control: each operator has passed each object since its replacement was recorded,
        # and found that one replacement (its gauges of the pending next are the recorded ones). A
        # process about to write a second one would show that one instead.
        for port in ports:
            for i in range(count):
                name = f"pair-{i}"
                recorded = api.status(name).next
                assert recorded is not None
                conftest.wait_for(
                    lambda p=port, n=name, r=recorded: found_replacement(p, api.namespace, n, r),
                    what=f"the operator on :{port} to have passed {name} with its replacement",
                )
        for i in range(count):
            name = f"pair-{i}"
            status = api.status(name)
            assert status.next is not None and status.revision == before[name].revision + 1, name
            held = api.secret(f"{name}-tls-next") or {}
            assert pki.inspect(held[names.TLS_CERT]).fingerprint == status.next.fingerprint, name
            assert len(api.events(name, "EmergencyRotation")) == 1, name
            assert len(api.events(name, "ReplacementIssued")) == 1, name
            trusted = api.trusted_fingerprints(f"trust-{i // 2}")
            assert status.next.fingerprint in trusted and before[name].current is not None
            assert before[name].current.fingerprint not in trusted, name
    finally:
        second.stop()
        print(f"--- second operator log ---\n{second.logs()[-10000:]}")

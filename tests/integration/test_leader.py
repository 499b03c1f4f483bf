"""Several operator replicas: one reconciles (it holds the Lease), the other stands by and takes over.

Two ``webhookcerts run --peering`` processes against the real API server. The leader is killed with
SIGKILL in the middle of a batch of emergencies, as a node failure or an OOM kill would stop a pod:
the standby takes the Lease once it has gone unrenewed, and finishes every rotation, each incident
handled once, with exactly one new key each.
"""

from __future__ import annotations

import contextlib
import functools
import math
import pathlib
import time
from collections.abc import Iterator

import kubernetes
import pytest

from tests import conftest, whc
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import names, pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LEASE = "webhookcerts-test"


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> whc.Api:
    return whc.Api(api_client, namespace)


@functools.cache
def lease_seconds() -> int:
    """The Lease's duration, from this machine's speed now: a leader busy making keys must still renew
    in time (its renewal competes for 2 cores with key generation), so the Lease lasts ten times what
    making one key takes here (4 s at least); a killed leader's Lease still expires in seconds."""
    started = time.monotonic()
    pki.generate_private_key()
    return max(4, math.ceil(10 * (time.monotonic() - started)))


def replica(cluster: devcluster.DevCluster, namespace: str, log: pathlib.Path) -> conftest.OperatorProcess:
    lease = str(lease_seconds())
    args = ["--peering", LEASE, "--lease-namespace", namespace, "--lease-duration", lease, "--resync-interval", "3600"]
    return conftest.OperatorProcess(cluster.kubeconfig, namespace, log, args)


def ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


def reconciled_anything(log: str) -> bool:
    return any("webhookcerts.service.state: " in line for line in log.splitlines())


@contextlib.contextmanager
def leader_and_standby(
    cluster: devcluster.DevCluster, namespace: str, tmp_path: pathlib.Path
) -> Iterator[tuple[conftest.OperatorProcess, conftest.OperatorProcess]]:
    """Two replicas, the first one leading; both stopped (and their logs printed) afterwards."""
    first = replica(cluster, namespace, tmp_path / "first.log")
    second = replica(cluster, namespace, tmp_path / "second.log")
    first.start()
    try:
        conftest.wait_for(lambda: "leading:" in first.logs(), what="the first replica to lead")
        second.start()
        conftest.wait_for(lambda: "standing by:" in second.logs(), what="the second replica to stand by")
        yield first, second
    finally:
        first.stop()
        second.stop()
        print(f"--- first ---\n{first.logs()[-8000:]}\n--- second ---\n{second.logs()[-8000:]}")


@pytest.mark.long
def test_the_standby_finishes_what_a_killed_leader_started_each_trigger_once(
    api: whc.Api, cluster: devcluster.DevCluster, crd_installed: None, tmp_path: pathlib.Path
) -> None:
    with leader_and_standby(cluster, api.namespace, tmp_path) as (first, second):
        count = 6
        for i in range(count):
            api.create(f"ha-{i}", trust={"secretName": f"trust-{i // 2}"})
        for i in range(count):
            conftest.wait_for(lambda n=f"ha-{i}": ready(api, n), timeout=120, what=f"ha-{i} Ready")
        # Only the leader reconciled: the standby's view is warm, its workers idle.
        assert not reconciled_anything(second.logs())
        before = {f"ha-{i}": api.status(f"ha-{i}") for i in range(count)}

        for i in range(count):
            api.emergency(f"ha-{i}", f"INC-{i}")
        # Mid-batch: as soon as the leader has begun (one containment recorded), it dies.
        conftest.wait_for(
            lambda: any(api.status(f"ha-{i}").last_emergency_rotation is not None for i in range(count)),
            what="the first containment",
        )
        first.kill()

        conftest.wait_for(lambda: "leading:" in second.logs(), timeout=60, what="the standby to take the Lease")
        for i in range(count):
            name = f"ha-{i}"
            conftest.wait_for(
                lambda n=name: (s := api.status(n)).next is not None and s.stage == "Compromised",
                timeout=180,
                what=f"{name}'s replacement",
            )
        # Nothing more comes of the takeover: an object created now is reconciled to Ready by the same
        # leader, after every pass the replacements' own writes queued (the queue is first come, first
        # served), so any second key would have been made by then. (It is also the positive control:
        # the leader was working in this window.)
        api.create("ha-barrier", trust={"secretName": "trust-barrier"})
        conftest.wait_for(lambda: ready(api, "ha-barrier"), timeout=120, what="an object created after, Ready")
        for i in range(count):
            name = f"ha-{i}"
            status = api.status(name)
            assert status.emergency_references == [f"INC-{i}"], name
            # Exactly one new key: the revision moved once, and the next Secret holds what status records.
            assert status.next is not None and status.revision == before[name].revision + 1, name
            held = api.secret(f"{name}-tls-next") or {}
            assert pki.inspect(held[names.TLS_CERT]).fingerprint == status.next.fingerprint, name
            # Handled once (a leader killed between recording and posting its Event posts none).
            assert len(api.events(name, "EmergencyRotation")) <= 1, name
            assert len(api.events(name, "ReplacementIssued")) <= 1, name
            current = before[name].current
            assert current is not None
            assert current.fingerprint not in api.trusted_fingerprints(f"trust-{i // 2}"), name


def test_a_leader_that_stops_hands_over_at_once(
    api: whc.Api, cluster: devcluster.DevCluster, crd_installed: None, tmp_path: pathlib.Path
) -> None:
    with leader_and_standby(cluster, api.namespace, tmp_path) as (first, second):
        first.stop()
        assert "released the lease" in first.logs()
        conftest.wait_for(lambda: "leading:" in second.logs(), timeout=30, what="the standby to lead")
        api.create("after")
        conftest.wait_for(lambda: ready(api, "after"), timeout=120, what="Ready under the new leader")

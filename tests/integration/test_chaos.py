"""Crash safety, many times over: the harness of ``benchmarks/chaos.py``, with fewer kills.

The operator (``webhookcerts run``) is SIGKILLed at a seeded random moment of planned rotations,
cut-overs and emergency rotations and started again at once; after each restart every object must
converge with exactly one new key per rotation, its Secrets holding what status records, the trust
Secret never losing a certificate the provider may use, and nothing orphaned. Then kube-apiserver and,
separately, etcd are stopped in the middle of a rotation and started again: the same operator process
reconnects and finishes. ``python benchmarks/run.py chaos --write`` runs the same rounds 30 times per
path and records the figures in docs/benchmarks.md.

``CHAOS_KILLS`` and ``CHAOS_SEED`` in the environment change the number of kills and the seed.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from benchmarks import chaos, chaos_audit, chaos_rounds

from webhookcerts.devcluster import cluster as devcluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

KILLS = int(os.environ.get("CHAOS_KILLS", "5"))
SEED = int(os.environ.get("CHAOS_SEED", str(chaos_rounds.DEFAULT_SEED)))
OBJECTS = 4


@pytest.fixture
def harness(
    cluster: devcluster.DevCluster, namespace: str, crd_installed: None, tmp_path: pathlib.Path
) -> Iterator[chaos_rounds.Chaos]:
    # Convergence is waited for as long as the benchmark waits (a bound to fail by, not a speed asserted).
    run = chaos_rounds.Chaos(cluster, namespace, tmp_path, objects=OBJECTS, seed=SEED)
    try:
        with run:
            yield run
    finally:
        print(f"--- operator log (seed {SEED}) ---\n{run.operator.log_path.read_text(errors='replace')[-20000:]}")


def assert_clean(stats: chaos_audit.Stats, interruptions: int) -> None:
    print(stats.to_json())
    details = "\n".join(stats.defects)
    assert stats.interruptions == interruptions, stats.path
    assert stats.survived == interruptions, f"{stats.path}: {stats.survived} of {interruptions} survived\n{details}"
    assert stats.rotations_checked == interruptions * OBJECTS, stats.path
    counted = {c: getattr(stats, c) for c in chaos_audit.COUNTERS}
    assert counted == dict.fromkeys(chaos_audit.COUNTERS, 0), f"{stats.path}: {counted}\n{details}"
    assert not stats.defects, details


@pytest.mark.long
def test_sigkill_at_random_moments_of_rotations_cutovers_and_emergencies_loses_and_doubles_nothing(
    harness: chaos_rounds.Chaos,
) -> None:
    result = chaos.kill_paths(harness, KILLS)

    for path in chaos_rounds.PATHS:
        assert_clean(result[path], KILLS)
    # Not vacuous: kills did land in the middle of the work, on every path.
    assert all(result[path].mid_rotation >= 1 for path in chaos_rounds.PATHS), {
        p: s.mid_rotation for p, s in result.items()
    }
    audit = harness.audit.final_audit()
    # Every object of every round, and the emergency pool.
    assert audit.rotations_checked == KILLS * OBJECTS + OBJECTS
    counted = {c: getattr(audit, c) for c in chaos_audit.COUNTERS}
    assert counted == dict.fromkeys(chaos_audit.COUNTERS, 0), "\n".join(audit.defects)


@pytest.mark.long
def test_kube_apiserver_and_etcd_stopped_mid_rotation_the_same_operator_reconnects_and_finishes(
    harness: chaos_rounds.Chaos,
) -> None:
    pid = harness.operator.pid
    result = chaos.control_plane_stops(harness, 1)

    for component in chaos_rounds.COMPONENTS:
        assert_clean(result[component], 1)
    assert harness.operator.alive() and harness.operator.pid == pid
    counted = {c: getattr(harness.audit.final_audit(), c) for c in chaos_audit.COUNTERS}
    assert counted == dict.fromkeys(chaos_audit.COUNTERS, 0)

"""The operator's initial LIST in pages (handlers/rawbodies.py): an operator started on existing objects
listed a few at a time has every WebhookCertificate and every Secret of its own in its view before
its start-up pass, and that pass, finding everything in place, writes nothing."""

from __future__ import annotations

import pathlib
import re

import kubernetes
import pytest

from tests import conftest, processes, whc
from tests.integration.test_engine import certificate_versions, managed_versions, ready
from webhookcerts.devcluster import cluster as devcluster

pytestmark = pytest.mark.integration

NAMES = [f"paged-{i}" for i in range(5)]
# Longer than the test: what the restarted operator does comes from its start, not from a resync.
RESYNC = ["--resync-interval", "3600"]


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> whc.Api:
    return whc.Api(api_client, namespace)


def test_every_object_listed_page_by_page_is_in_the_view_and_the_restart_writes_nothing(
    api: whc.Api,
    operator: conftest.OperatorProcess,
    cluster: devcluster.DevCluster,
    namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    for name in NAMES:
        api.create(name)
    for name in NAMES:
        conftest.wait_for(lambda n=name: ready(api, n), what=f"{name} Ready")
    conftest.wait_for(lambda: len(api.trusted_fingerprints()) == len(NAMES), what="all in the shared trust store")
    operator.stop()
    secrets_before, objects_before = managed_versions(api), certificate_versions(api)
    assert len(secrets_before) == len(NAMES) + 1  # a key Secret each and the trust Secret

    log = tmp_path / "paged-operator.log"
    argv = ["run", "--standalone", "-v", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace]
    paged = processes.spawn(
        [*argv, "--metrics-port", "0", "--resync-interval", "3600"], log, module="tests.paged_operator"
    )
    try:
        conftest.wait_for(lambda: "start-up pass done" in log.read_text(errors="replace"), what="the start-up pass")
        text = log.read_text(errors="replace")
        pages: dict[str, list[int]] = {}
        for size, plural in re.findall(r"listed a page of (\d+) (\S+)", text):
            pages.setdefault(plural, []).append(int(size))
        # Listed in pages indeed (the positive control), and nothing missing from the sum of them.
        assert pages["webhookcertificates"] == [2, 2, 1]
        assert max(pages["secrets"]) == 2 and sum(pages["secrets"]) == len(secrets_before)
        assert f"watches synced: {len(NAMES)} WebhookCertificates in view" in text
        # The view was complete: a restart over objects already in place writes nothing. The positive
        # control: a change made now is acted on, so this operator does write what it has to.
        api.create("marker", trust={"secretName": "marker-trust"})
        conftest.wait_for(lambda: ready(api, "marker"), what="the marker Ready")
    finally:
        processes.stop(paged)
        print(f"--- paged operator log ---\n{log.read_text(errors='replace')[-20000:]}")
    assert {k: v for k, v in managed_versions(api).items() if not k.startswith("marker")} == secrets_before
    assert {k: v for k, v in certificate_versions(api).items() if k != "marker"} == objects_before

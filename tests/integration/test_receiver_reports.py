"""The reference receiver as a reporter against a real API server: its PresentationReport appears, named
after and owned by its pod, with the fingerprints and counts of what was presented, and follows them.

The receiver runs as users run it (``webhookcerts receiver --report-trust-secret``), as a ServiceAccount
that may only create and patch presentationreports, with its pod's identity in the downward API's
variables; the Pod is an object in the API (no node runs here), which is all an ownerReference needs.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import http.client
import pathlib
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any, cast

import kubernetes
import pytest
from cryptography.hazmat.primitives import serialization

from tests import conftest, processes
from tests.unit import mtls_pki
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, reports, trust
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import reports as kube_reports
from webhookcerts.receiver import trustdir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> mtls_pki.Pki:
    return mtls_pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        processes.stop(proc)


def sha1(pair: mtls_pki.Pair) -> str:
    return hashlib.sha1(pair.cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest()


def pod(core_v1: kubernetes.client.CoreV1Api, namespace: str, name: str) -> str:
    """A Pod object (never scheduled: there is no node); its uid."""
    body = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name=name),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="rx", image="receiver")]),
    )
    created = core_v1.create_namespaced_pod(namespace, body)
    assert created.metadata is not None
    return str(created.metadata.uid)


def report(custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(models.GROUP, models.VERSION, namespace, reports.PLURAL, name),
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def entry(found: dict[str, Any] | None, sha256: str) -> dict[str, Any] | None:
    certificates = (found or {}).get("spec", {}).get("certificates", [])
    return next((c for c in certificates if c.get("sha256") == sha256), None)


def counted(
    custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str, sha256: str, accepted: int
) -> dict[str, Any] | None:
    """The report once it counts ``accepted`` presentations of ``sha256``, else None."""
    found = report(custom, namespace, name)
    seen = entry(found, sha256)
    return found if seen is not None and seen["accepted"] == accepted else None


def deliver(port: int, pki: mtls_pki.Pki, client: mtls_pki.Pair, count: int) -> None:
    """``count`` deliveries on one keep-alive connection, each answered 200."""
    context = ssl.create_default_context(cafile=str(pki.server_ca.cert_path))
    context.load_cert_chain(client.cert_path, client.key_path)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        for n in range(count):
            conn.request("POST", "/webhooks", body=b'{"n": %d}' % n, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()


def reporter_kubeconfig(
    kubectl: conftest.KubectlRunner, cluster: devcluster.DevCluster, namespace: str, path: pathlib.Path
) -> pathlib.Path:
    """A ServiceAccount that may create and patch presentationreports, and nothing else."""
    kubectl("create", "serviceaccount", "reporter", "-n", namespace)
    kubectl(
        "create", "role", "reporter", "--verb=create,patch", f"--resource={reports.PLURAL}.{models.GROUP}",
        "-n", namespace,
    )  # fmt: skip
    kubectl(
        "create", "rolebinding", "reporter", "--role=reporter", f"--serviceaccount={namespace}:reporter",
        "-n", namespace,
    )  # fmt: skip
    return conftest.token_kubeconfig(kubectl, cluster, "reporter", namespace, path)


@dataclasses.dataclass
class Site:
    """A namespace with a reporter's ServiceAccount, a trust directory of alpha, and Pod objects."""

    core_v1: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi
    namespace: str
    kubeconfig: pathlib.Path
    trust_dir: pathlib.Path
    pki: mtls_pki.Pki
    tmp_path: pathlib.Path
    procs: list[subprocess.Popen[bytes]]

    def start(self, name: str, *flags: str) -> tuple[subprocess.Popen[bytes], int, str]:
        """``webhookcerts receiver`` with ``flags`` as pod ``name`` (created here): (process, port, pod uid)."""
        uid = pod(self.core_v1, self.namespace, name)
        log = self.tmp_path / f"{name}.log"
        env = {"POD_NAME": name, "POD_NAMESPACE": self.namespace, "POD_UID": uid, "KUBECONFIG": str(self.kubeconfig)}
        proc = processes.receiver(
            self.pki.server.cert_path, self.pki.server.key_path, self.trust_dir, log, *flags, env=env
        )
        self.procs.append(proc)
        port = processes.wait_for(lambda: processes.listening_port(proc, log), timeout=60, what=f"{name} listening")
        return proc, port, uid

    def report(self, name: str) -> dict[str, Any] | None:
        return report(self.custom, self.namespace, name)


@pytest.fixture
def site(
    cluster: devcluster.DevCluster,
    crd_installed: None,
    api_client: kubernetes.client.ApiClient,
    core_v1: kubernetes.client.CoreV1Api,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    pki: mtls_pki.Pki,
    tmp_path: pathlib.Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> Site:
    trust_dir = tmp_path / "trust"
    trustdir.write_atomic(trust_dir, {"ca.crt": pki.alpha.cert_pem})
    return Site(
        core_v1=core_v1,
        custom=kubernetes.client.CustomObjectsApi(api_client),
        namespace=namespace,
        kubeconfig=reporter_kubeconfig(kubectl, cluster, namespace, tmp_path / "kubeconfig"),
        trust_dir=trust_dir,
        pki=pki,
        tmp_path=tmp_path,
        procs=stop_later,
    )


def test_the_receivers_report_names_its_pod_and_counts_what_was_presented(site: Site, pki: mtls_pki.Pki) -> None:
    custom, namespace, trust_dir = site.custom, site.namespace, site.trust_dir
    proc, port, uid = site.start("rx-0", "--report-trust-secret", "trust", "--report-interval", "1")
    quiet, _, _ = site.start("rx-1")  # reporting is off without the flag, whatever the environment holds

    # The heartbeat comes with nothing presented yet.
    first = processes.wait_for(lambda: report(custom, namespace, "rx-0"), timeout=30, what="the first report")
    assert first["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "rx-0", "uid": uid}]
    spec = first["spec"]
    assert (spec["trustSecretName"], spec["reporter"], spec["heartbeatIntervalSeconds"]) == ("trust", "receiver", 1)
    assert spec["trustHash"] == trust.trust_hash(pki.alpha.cert_pem)

    deliver(port, pki, pki.alpha, 3)
    deliver(port, pki, pki.alpha, 2)
    found = processes.wait_for(
        lambda: counted(custom, namespace, "rx-0", pki.alpha.fingerprint, 5),
        timeout=30,
        what="alpha's five presentations in the report",
    )
    alpha = entry(found, pki.alpha.fingerprint)
    assert alpha is not None
    assert (alpha["sha1"], alpha["refused"]) == (sha1(pki.alpha), 0)
    assert alpha["lastAccepted"] == alpha["lastSeen"]

    # The provider switches to beta under a trust store of both: the report follows, alpha's counts stay.
    both = pki.alpha.cert_pem + pki.beta.cert_pem
    trustdir.write_atomic(trust_dir, {"ca.crt": both})
    processes.wait_for(
        lambda: (report(custom, namespace, "rx-0") or {}).get("spec", {}).get("trustHash") == trust.trust_hash(both),
        timeout=30,
        what="the new trust hash in the report",
    )
    deliver(port, pki, pki.beta, 2)
    latest = processes.wait_for(
        lambda: counted(custom, namespace, "rx-0", pki.beta.fingerprint, 2),
        timeout=30,
        what="beta's two presentations in the report",
    )
    assert entry(latest, pki.alpha.fingerprint)["accepted"] == 5  # type: ignore[index]
    assert entry(latest, pki.beta.fingerprint)["sha1"] == sha1(pki.beta)  # type: ignore[index]
    parsed = reports.PresentationReportSpec.model_validate(latest["spec"])
    assert parsed.heartbeat_time > datetime.datetime.fromisoformat(spec["heartbeatTime"])
    assert parsed.start_time == datetime.datetime.fromisoformat(spec["startTime"])

    # rx-1 had the same environment and the time rx-0 took for all of the above: it wrote nothing.
    assert quiet.poll() is None
    assert report(custom, namespace, "rx-1") is None

    proc.terminate()
    assert proc.wait(timeout=30) == 0


def spec_of(trust_hash: str | None, accepted: int) -> reports.PresentationReportSpec:
    now = datetime.datetime.now(datetime.UTC)
    seen = reports.ReportedCertificate(sha256="a" * 64, accepted=accepted, refused=0, first_seen=now, last_seen=now)
    return reports.PresentationReportSpec(
        trust_secret_name="trust",
        trust_hash=trust_hash,
        reporter="receiver",
        start_time=now,
        heartbeat_time=now,
        heartbeat_interval_seconds=15,
        certificates=[seen] if accepted else [],
    )


def test_the_writer_recreates_a_deleted_report_and_takes_it_over_for_a_new_pod_of_the_same_name(
    cluster: devcluster.DevCluster,
    crd_installed: None,
    api_client: kubernetes.client.ApiClient,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    clients = kube_client.load(str(cluster.kubeconfig))
    first_uid = pod(core_v1, namespace, "rx-0")
    writer = kube_reports.Writer(clients, namespace=namespace, pod_name="rx-0", pod_uid=first_uid)
    writer(spec_of("h1", 1))
    writer(spec_of("h1", 2))
    assert entry(report(custom, namespace, "rx-0"), "a" * 64)["accepted"] == 2  # type: ignore[index]

    custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, namespace, reports.PLURAL, "rx-0")
    writer(spec_of("h1", 3))  # the patch finds nothing: created again
    assert entry(report(custom, namespace, "rx-0"), "a" * 64)["accepted"] == 3  # type: ignore[index]

    # The pod comes back under its name with a new uid (a StatefulSet's): the new process's first write
    # finds the old report, and takes it over whole: its owner, and no trust hash it does not know.
    core_v1.delete_namespaced_pod("rx-0", namespace, grace_period_seconds=0)
    processes.wait_for(
        lambda: not any(p.metadata and p.metadata.name == "rx-0" for p in core_v1.list_namespaced_pod(namespace).items),
        timeout=30,
        what="the old pod gone",
    )
    second_uid = pod(core_v1, namespace, "rx-0")
    kube_reports.Writer(clients, namespace=namespace, pod_name="rx-0", pod_uid=second_uid)(spec_of(None, 0))
    found = report(custom, namespace, "rx-0")
    assert found is not None
    assert [o["uid"] for o in found["metadata"]["ownerReferences"]] == [second_uid]
    assert "trustHash" not in found["spec"]
    assert found["spec"]["certificates"] == []


def test_a_write_the_api_server_refuses_says_why_and_nothing_more(
    cluster: devcluster.DevCluster,
    crd_installed: None,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    kubeconfig = conftest.token_kubeconfig(kubectl, cluster, "nobody", namespace, tmp_path / "kubeconfig")
    clients = kube_client.load(str(kubeconfig))
    writer = kube_reports.Writer(clients, namespace=namespace, pod_name="rx-0", pod_uid="u")
    with pytest.raises(kube_reports.ReportWriteError) as refused:
        writer(spec_of("h1", 1))
    message = str(refused.value)
    assert message.startswith(f"{namespace}/rx-0: 403 ")
    assert "presentationreports" in message
    assert "Bearer" not in message and "Authorization" not in message


def test_the_receiver_writes_its_last_counts_when_it_stops(site: Site, pki: mtls_pki.Pki) -> None:
    # An hour's heartbeat: after the early write for alpha, only the stop can write again.
    proc, port, _ = site.start("rx-0", "--report-trust-secret", "trust", "--report-interval", "3600")
    deliver(port, pki, pki.alpha, 1)
    processes.wait_for(
        lambda: counted(site.custom, site.namespace, "rx-0", pki.alpha.fingerprint, 1),
        timeout=30,
        what="alpha's new fingerprint written early",
    )
    deliver(port, pki, pki.alpha, 2)
    assert counted(site.custom, site.namespace, "rx-0", pki.alpha.fingerprint, 1)  # not written yet
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    assert counted(site.custom, site.namespace, "rx-0", pki.alpha.fingerprint, 3)

"""Delete and re-create on a real cluster, where garbage collection runs (kube-controller-manager).

GitOps tools replace objects (`kubectl replace --force`, Argo CD's `Replace=true`): the object is
deleted and created again under the same name. The provider holds a copy of the key, so under the
default ``deletionPolicy: Retain`` garbage collection must find nothing to delete, and the re-created
object must adopt its key. Under ``Delete`` the Secrets go with the object and its certificate leaves
the trust store.
"""

from __future__ import annotations

import base64
import json
import pathlib
import threading
from typing import Any

import kubernetes
import pytest

from tests import conftest, whc
from tests.e2e.test_pods_reload import node_api, node_crd, node_operator, ready
from webhookcerts.domain import names, pki

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

__all__ = ["node_api", "node_crd", "node_operator"]  # fixtures used by this module's tests


def _apply(kubectl: conftest.KubectlRunner, path: pathlib.Path, manifest: dict[str, Any], *verb: str) -> None:
    path.write_text(json.dumps(manifest))
    kubectl(*verb, "-f", str(path))


def _fingerprint(api: whc.Api, secret: str) -> str | None:
    data = api.secret(secret)
    return None if data is None else pki.inspect(data[names.TLS_CERT]).fingerprint


def test_replace_force_keeps_the_key_the_provider_holds_and_its_trust(
    node_api: whc.Api,
    node_kubectl: conftest.KubectlRunner,
    node_operator: conftest.OperatorProcess,
    tmp_path: pathlib.Path,
) -> None:
    api, ns = node_api, node_api.namespace
    manifest = whc.manifest("gitops")
    manifest["metadata"]["namespace"] = ns
    path = tmp_path / "whc.json"
    _apply(node_kubectl, path, manifest, "apply")
    conftest.wait_for(lambda: ready(api, "gitops"), timeout=180, what="Ready")
    status = api.status("gitops")
    assert status.current is not None
    key_uid = api.secret_object("gitops-tls").metadata.uid
    old_uid = api.get("gitops")["metadata"]["uid"]

    _apply(node_kubectl, path, manifest, "replace", "--force", "-n", ns)
    conftest.wait_for(lambda: api.get("gitops")["metadata"]["uid"] != old_uid, what="the object re-created")
    conftest.wait_for(lambda: ready(api, "gitops"), timeout=180, what="Ready after re-creation")
    after = api.status("gitops")
    assert after.current is not None and after.current.fingerprint == status.current.fingerprint
    # Garbage collection had nothing to take: the very same Secret, never deleted.
    assert api.secret_object("gitops-tls").metadata.uid == key_uid
    assert _fingerprint(api, "gitops-tls") == status.current.fingerprint
    assert api.trusted_fingerprints() == {status.current.fingerprint}
    assert len(api.events("gitops", "Issued")) == 1
    assert api.events("gitops", "Adopted")


@pytest.mark.long
def test_deletion_policy_delete_lets_garbage_collection_take_the_secrets(
    node_api: whc.Api,
    node_kubectl: conftest.KubectlRunner,
    node_operator: conftest.OperatorProcess,
    tmp_path: pathlib.Path,
) -> None:
    api, ns = node_api, node_api.namespace
    for name, policy in (("brief", "Delete"), ("stays", "Retain")):
        manifest = whc.manifest(name, deletionPolicy=policy)
        manifest["metadata"]["namespace"] = ns
        _apply(node_kubectl, tmp_path / f"{name}.json", manifest, "apply")
    for name in ("brief", "stays"):
        conftest.wait_for(lambda name=name: ready(api, name), timeout=180, what=f"{name} Ready")
    brief, stays = api.status("brief").current, api.status("stays").current
    assert brief is not None and stays is not None
    conftest.wait_for(lambda: api.trusted_fingerprints() == {brief.fingerprint, stays.fingerprint}, what="both trusted")
    node_kubectl("delete", "whc", "brief", "-n", ns, "--wait=true", "--timeout=120s")
    conftest.wait_for(lambda: api.secret("brief-tls") is None, timeout=120, what="garbage collection of the key")
    conftest.wait_for(lambda: api.trusted_fingerprints() == {stays.fingerprint}, what="the trust store without it")
    assert api.secret("stays-tls") is not None


class _TrustHistory:
    """Every version of the trust Secret's ``ca.crt`` from now on, as a watch delivers them (none missed)."""

    def __init__(self, api: whc.Api, secret: str = "webhook-trust") -> None:
        self.api, self.secret = api, secret
        self.versions: list[set[str]] = []
        self._stop = threading.Event()
        start = api.core.read_namespaced_secret(secret, api.namespace).metadata.resource_version
        self._thread = threading.Thread(target=self._watch, args=(start,), daemon=True)
        self._thread.start()

    def _watch(self, resource_version: str) -> None:
        while not self._stop.is_set():
            stream = kubernetes.watch.Watch()
            for event in stream.stream(
                self.api.core.list_namespaced_secret,
                self.api.namespace,
                field_selector=f"metadata.name={self.secret}",
                resource_version=resource_version,
                timeout_seconds=5,
            ):
                obj = event["object"]
                resource_version = obj.metadata.resource_version
                data = base64.b64decode((obj.data or {}).get(names.TRUST_KEY, ""))
                self.versions.append(whc.fingerprints_in(data))
                if self._stop.is_set():
                    break

    def stop(self) -> list[set[str]]:
        self._stop.set()
        self._thread.join(30)
        return self.versions


def test_replace_force_after_an_emergency_comes_back_compromised_with_its_replacement_trusted(
    node_api: whc.Api,
    node_kubectl: conftest.KubectlRunner,
    node_operator: conftest.OperatorProcess,
    tmp_path: pathlib.Path,
) -> None:
    """The incident is recorded with the key material: a re-created object never trusts the compromised
    certificate again, adopts the replacement the provider may already present, and keeps its key."""
    api, ns = node_api, node_api.namespace
    manifest = whc.manifest("incident")
    manifest["metadata"]["namespace"] = ns
    path = tmp_path / "whc.json"
    _apply(node_kubectl, path, manifest, "apply")
    conftest.wait_for(lambda: ready(api, "incident"), timeout=180, what="Ready")
    compromised = api.status("incident").current
    assert compromised is not None
    node_kubectl("annotate", "--overwrite", "whc", "incident", "-n", ns, f"{names.EMERGENCY_ANNOTATION}=INC-RE")
    replacement = conftest.wait_for(
        lambda: (s := api.status("incident")).next is not None and s.next, timeout=180, what="the replacement"
    )
    conftest.wait_for(lambda: api.trusted_fingerprints() == {replacement.fingerprint}, what="only the replacement")
    next_uid = api.secret_object("incident-tls-next").metadata.uid
    old_uid = api.get("incident")["metadata"]["uid"]

    # What a GitOps tool replaces with: the object as it is, the emergency annotation still on it.
    live = api.get("incident")
    live.pop("status", None)
    for field in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        live["metadata"].pop(field, None)
    history = _TrustHistory(api)
    try:
        _apply(node_kubectl, path, live, "replace", "--force", "-n", ns)
        conftest.wait_for(lambda: api.get("incident")["metadata"]["uid"] != old_uid, what="the object re-created")
        back = conftest.wait_for(
            lambda: (s := api.status("incident")).next is not None and s.current is not None and s,
            timeout=180,
            what="the re-created object's status",
        )
        # Positive control: the watch sees an edit made now (ca.crt itself may never have changed).
        seen = len(history.versions)
        api.core.patch_namespaced_secret(
            "webhook-trust", ns, {"metadata": {"annotations": {"test.webhookcerts.io/probe": "1"}}}
        )
        conftest.wait_for(lambda: len(history.versions) > seen, what="the watch to see the probe edit")
    finally:
        versions = history.stop()
    assert back.current is not None and back.next is not None
    assert back.stage == "Compromised"
    assert back.current.fingerprint == compromised.fingerprint and back.current.compromised_by == "INC-RE"
    assert back.next.fingerprint == replacement.fingerprint
    assert compromised.fingerprint in back.revoked_fingerprints
    # At no moment did ca.crt trust the compromised certificate, nor drop the replacement.
    assert all(compromised.fingerprint not in v and replacement.fingerprint in v for v in versions), versions
    assert api.trusted_fingerprints() == {replacement.fingerprint}
    # The key the provider holds was neither deleted (garbage collection) nor generated again.
    assert api.secret_object("incident-tls-next").metadata.uid == next_uid
    assert len(api.events("incident", "EmergencyRotation")) == 1, "the incident was handled again"
    # And the cut-over to it still works.
    node_kubectl(
        "annotate", "--overwrite", "whc", "incident", "-n", ns, f"{names.CUTOVER_ANNOTATION}={replacement.serial}"
    )
    conftest.wait_for(
        lambda: (c := api.status("incident").current) is not None and c.fingerprint == replacement.fingerprint,
        timeout=120,
        what="the cut-over to the replacement",
    )
    conftest.wait_for(lambda: api.trusted_fingerprints() == {replacement.fingerprint}, what="trust after cut-over")

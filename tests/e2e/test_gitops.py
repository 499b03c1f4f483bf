"""Delete and re-create on a real cluster, where garbage collection runs (kube-controller-manager).

GitOps tools replace objects (`kubectl replace --force`, Argo CD's `Replace=true`): the object is
deleted and created again under the same name. The provider holds a copy of the key, so under the
default ``deletionPolicy: Retain`` garbage collection must find nothing to delete, and the re-created
object must adopt its key. Under ``Delete`` the Secrets go with the object and its certificate leaves
the trust store.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

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

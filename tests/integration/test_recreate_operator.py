"""`kubectl replace --force` after an emergency, with the operator running as users run it.

The manifest taken with `kubectl get -o json` still carries the emergency annotation; the re-created
object starts with an empty status. The operator must adopt the compromised key as compromised and
the replacement as the pending next, keep the replacement trusted and the compromised certificate
out while it does, and generate no key (lifecycle invariants 4, 7 and 11).
"""

from __future__ import annotations

import json

import kubernetes
import pytest

from tests import conftest, whc
from webhookcerts.domain import models, names, pki

pytestmark = pytest.mark.integration

INCIDENT = "INC-5150"


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


def _ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


def test_replace_force_after_an_emergency_keeps_the_incident_and_the_replacement(
    api: whc.Api, operator: conftest.OperatorProcess, kubectl: conftest.KubectlRunner
) -> None:
    ns = api.namespace
    api.create("gitops")
    conftest.wait_for(lambda: _ready(api, "gitops"), what="Ready")
    compromised = api.status("gitops").current
    assert compromised is not None
    api.emergency("gitops", INCIDENT)

    def replaced() -> models.NextCertificate | None:
        status = api.status("gitops")
        return status.next if status.stage == "Compromised" and _ready(api, "gitops") else None

    replacement = conftest.wait_for(replaced, timeout=60, what="the replacement issued")
    conftest.wait_for(
        lambda: api.secret_object("gitops-tls").metadata.annotations.get(names.COMPROMISED_BY_ANNOTATION) == INCIDENT,
        what="the incident marked on the key Secret",
    )
    next_uid = api.secret_object("gitops-tls-next").metadata.uid
    old_uid = api.get("gitops")["metadata"]["uid"]
    manifest = kubectl("get", "whc", "gitops", "-n", ns, "-o", "json").stdout
    assert json.loads(manifest)["metadata"]["annotations"][names.EMERGENCY_ANNOTATION] == INCIDENT

    kubectl("replace", "--force", "-n", ns, "-f", "-", input=manifest)

    def adopted() -> models.WebhookCertificateStatus | None:
        # Sampled while the operator works: the compromised certificate is never back in ca.crt.
        trusted = api.trusted_fingerprints()
        assert compromised.fingerprint not in trusted, "the compromised certificate is trusted again"
        body = api.get("gitops")
        status = models.WebhookCertificateStatus.model_validate(body.get("status") or {})
        # The adoption records the current and the pending next in one status write.
        if body["metadata"]["uid"] == old_uid or status.current is None or not _ready(api, "gitops"):
            return None
        return status

    status = conftest.wait_for(adopted, timeout=60, what="the re-created object's key adopted")
    assert status.stage == "Compromised"
    assert status.current is not None and status.current.fingerprint == compromised.fingerprint
    assert status.current.compromised_by == INCIDENT
    assert status.next is not None and status.next.fingerprint == replacement.fingerprint
    conftest.wait_for(lambda: api.trusted_fingerprints() == {replacement.fingerprint}, what="the replacement trusted")
    # The very same next Secret, the same key: none deleted, none generated.
    assert api.secret_object("gitops-tls-next").metadata.uid == next_uid
    held = api.secret("gitops-tls-next") or {}
    assert pki.inspect(held[names.TLS_CERT]).fingerprint == replacement.fingerprint
    # The annotation the manifest kept was handled once, before the re-creation.
    assert len(api.events("gitops", "EmergencyRotation")) == 1
    assert len(api.events("gitops", "ReplacementIssued")) == 1

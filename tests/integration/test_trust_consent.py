"""Taking over a Secret or ConfigMap the operator did not create, as a trust target, needs its owner's consent.

Whoever may create a WebhookCertificate could otherwise point ``spec.trust.secretName`` or
``spec.trust.configMap.name`` at another team's CA bundle or an ingress's ``auth-tls-secret`` and have
the operator overwrite its ``ca.crt``. The refusal says how to consent (the trust-target annotation);
once given, only the operator's keys are written and the owner's are kept byte for byte. Consent gates
only taking over: a target the object already writes loses a compromised certificate whatever its
annotations say (containment first). In-process against the real API server with a fake clock.
"""

from __future__ import annotations

import base64
import datetime

import kubernetes
import pytest

from tests import whc
from tests.integration.test_service import Harness, active, condition, harness
from webhookcerts.domain import models, names, pki

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests


def _consent(h: Harness, kind: str, name: str, value: str | None) -> None:
    patch = {"metadata": {"annotations": {names.TRUST_TARGET_ANNOTATION: value}}}
    if kind == "Secret":
        h.api.core.patch_namespaced_secret(name, h.api.namespace, patch)
    else:
        h.api.core.patch_namespaced_config_map(name, h.api.namespace, patch)


def test_an_ingress_secret_becomes_a_trust_target_only_with_consent_and_keeps_its_keys(harness: Harness) -> None:
    # The ingress layout: the endpoint's own certificate and key in the Secret that also carries ca.crt.
    h = harness
    server = pki.new_key_pair(
        models.Subject(common_name="endpoint.example.com"), h.fake.now(), datetime.timedelta(days=90)
    )
    theirs = {"tls.crt": server.cert_pem, "tls.key": server.key_pem}
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="ingress-tls"),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode() for k, v in theirs.items()},
        ),
    )
    version = h.resource_version("ingress-tls")
    h.create("endpoint", trust={"secretName": "ingress-tls"})
    h.settle("endpoint")
    status = h.status("endpoint")
    # The positive control: the pass ran and wrote what was its to write (the key).
    assert status.current is not None and h.secret_fingerprint("endpoint-tls") == status.current.fingerprint
    conflict = condition(status, names.SECRET_CONFLICT)
    assert conflict is not None and conflict.status == "True" and conflict.reason == "ConsentRequired"
    assert f"kubectl annotate secret ingress-tls {names.TRUST_TARGET_ANNOTATION}=endpoint" in conflict.message
    ready = condition(status, names.READY)
    assert ready is not None and ready.status == "False"
    # Not a byte, label or annotation written.
    assert h.resource_version("ingress-tls") == version
    assert h.api.secret("ingress-tls") == theirs

    _consent(h, "Secret", "ingress-tls", "endpoint")
    h.settle("endpoint")
    status = h.status("endpoint")
    assert condition(status, names.SECRET_CONFLICT) is None
    ready = condition(status, names.READY)
    assert ready is not None and ready.status == "True"
    held = h.api.secret("ingress-tls") or {}
    assert {k: held.get(k) for k in theirs} == theirs
    assert status.current is not None
    assert whc.fingerprints_in(held[names.TRUST_KEY]) == {status.current.fingerprint}
    assert h.api.secret_object("ingress-tls").type == "kubernetes.io/tls"

    # The owner withdraws consent; an emergency still takes the compromised certificate out of the
    # target the object already writes (containment never waits on consent), and only that.
    _consent(h, "Secret", "ingress-tls", None)
    compromised = status.current.fingerprint
    h.api.emergency("endpoint", "INC-22")
    h.settle("endpoint")
    after = h.status("endpoint")
    assert after.next is not None
    held = h.api.secret("ingress-tls") or {}
    assert whc.fingerprints_in(held[names.TRUST_KEY]) == {after.next.fingerprint}
    assert compromised not in whc.fingerprints_in(held[names.TRUST_KEY])
    assert {k: held.get(k) for k in theirs} == theirs


def test_a_users_configmap_is_written_only_with_consent_and_keeps_its_keys(harness: Harness) -> None:
    h = harness
    h.api.core.create_namespaced_config_map(
        h.api.namespace, {"metadata": {"name": "gateway-ca"}, "data": {"other.txt": "kept"}}
    )
    current = active(h, "gw", trust={"secretName": "gw-trust", "configMap": {"name": "gateway-ca"}})
    status = h.status("gw")
    # The positive control: the trust Secret of its own was written.
    assert h.api.trusted_fingerprints("gw-trust") == {current.fingerprint}
    incomplete = condition(status, names.TRUST_STORE_INCOMPLETE)
    assert incomplete is not None and incomplete.reason == "ConsentRequired"
    assert f"kubectl annotate configmap gateway-ca {names.TRUST_TARGET_ANNOTATION}=gw" in incomplete.message
    untouched = h.api.core.read_namespaced_config_map("gateway-ca", h.api.namespace)
    assert untouched.data == {"other.txt": "kept"} and not untouched.metadata.labels

    # Consent for another object is none for this one.
    _consent(h, "ConfigMap", "gateway-ca", "someone-else")
    h.settle("gw")
    assert h.api.core.read_namespaced_config_map("gateway-ca", h.api.namespace).data == {"other.txt": "kept"}

    _consent(h, "ConfigMap", "gateway-ca", "someone-else,gw")
    h.settle("gw")
    assert condition(h.status("gw"), names.TRUST_STORE_INCOMPLETE) is None
    written = h.api.core.read_namespaced_config_map("gateway-ca", h.api.namespace)
    assert written.data["other.txt"] == "kept"
    assert whc.fingerprints_in(written.data[names.TRUST_KEY].encode()) == {current.fingerprint}

"""The bad-input catalogue: each ends in a clear condition or Event, and nothing is lost.

In-process against the real API server with a fake clock (``test_service``'s harness): an empty bundle
password, garbage in every annotation the operator reads (on the WebhookCertificate, on the trust
Secret, on the next key Secret), and a validation CA that is not PEM.
"""

from __future__ import annotations

import base64

import kubernetes
import pytest

from tests.integration.test_service import Harness, active, condition, harness, rotating
from webhookcerts.domain import names

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests


def _secret(h: Harness, name: str, data: dict[str, bytes]) -> None:
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        ),
    )


def test_an_empty_bundle_password_writes_no_bundle_and_says_so(harness: Harness) -> None:
    h = harness
    _secret(h, "pw", {"password": b""})
    current = active(h, "empty", bundle={"passwordSecretRef": {"name": "pw"}})
    bundle = condition(h.status("empty"), names.BUNDLE_READY)
    assert bundle is not None and (bundle.status, bundle.reason) == ("False", "PasswordEmpty")
    assert "empty" in bundle.message
    assert h.api.secret("empty-tls-bundle") is None
    # Nothing else is held back: the certificate is issued and trusted.
    assert h.api.trusted_fingerprints() == {current.fingerprint}
    assert h.events("empty", "PasswordEmpty")


def test_garbage_in_every_annotation_of_the_object_is_refused_and_changes_nothing(harness: Harness) -> None:
    h = harness
    before = rotating(h, "garbage")
    h.api.annotate(
        "garbage",
        **{
            names.EMERGENCY_ANNOTATION: "INC-" + "x" * 300,
            names.CUTOVER_ANNOTATION: "not a serial",
            names.DISCARD_NEXT_ANNOTATION: "\u00e9\u00e9\u00e9",
        },
    )
    h.settle("garbage")
    after = h.status("garbage")
    assert (after.revision, after.current, after.next) == (before.revision, before.current, before.next)
    for type, reason in (
        (names.EMERGENCY_REFUSED, "InvalidEmergencyReference"),
        (names.CUTOVER_REFUSED, "CutoverSerialMismatch"),
        (names.DISCARD_REFUSED, "DiscardSerialMismatch"),
    ):
        refused = condition(after, type)
        assert refused is not None and (refused.status, refused.reason) == ("True", reason), type
        assert h.events("garbage", reason), reason
    ready = condition(after, names.READY)
    assert ready is not None and ready.status == "True"


def test_garbage_in_the_trust_secrets_annotations_is_replaced_and_trusts_nothing_new(harness: Harness) -> None:
    h = harness
    current = active(h, "annotated")
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        h.api.namespace,
        {
            "metadata": {
                "annotations": {
                    names.SOURCES_ANNOTATION: "{not json",
                    names.REVOKED_ANNOTATION: "zz,,not-a-fingerprint",
                    names.TRUST_HASH_ANNOTATION: "nonsense",
                }
            }
        },
    )
    h.api.emergency("annotated", "INC-3")
    h.settle("annotated")
    pending = h.status("annotated").next
    assert pending is not None
    assert h.api.trusted_fingerprints() == {pending.fingerprint}
    annotations = h.secret_annotations("webhook-trust")
    assert current.fingerprint in annotations[names.REVOKED_ANNOTATION]
    assert names.SOURCES_ANNOTATION in annotations and annotations[names.SOURCES_ANNOTATION].startswith("{")


def test_garbage_in_the_next_secrets_annotations_never_makes_a_second_key_adopted(harness: Harness) -> None:
    h = harness
    before = rotating(h, "odd")
    assert before.next is not None
    h.api.core.patch_namespaced_secret(
        "odd-tls-next",
        h.api.namespace,
        {"metadata": {"annotations": {names.NEXT_REASON_ANNOTATION: "\x7f???", names.INCIDENT_ANNOTATION: "{"}}},
    )
    h.settle("odd")
    after = h.status("odd")
    # The recorded next is what matters; its Secret still holds it, nothing was re-issued.
    assert after.next == before.next and after.revision == before.revision
    assert h.secret_fingerprint("odd-tls-next") == before.next.fingerprint


def test_a_validation_ca_that_is_not_pem_is_an_unreachable_endpoint_not_a_failed_pass(harness: Harness) -> None:
    h = harness
    _secret(h, "not-a-ca", {"ca.crt": b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"})
    rotating(
        h,
        "probed",
        validation={
            "url": "https://127.0.0.1:9/",
            "caSecretRef": {"name": "not-a-ca", "key": "ca.crt"},
            "timeoutSeconds": 1,
        },
    )
    probed = condition(h.status("probed"), names.ENDPOINT_ACCEPTS_NEXT)
    ready = condition(h.status("probed"), names.READY)
    assert ready is not None and ready.status == "True"
    # In-process the probe runs inline: a CA nobody can read makes the endpoint unreachable, never refused.
    assert probed is not None and (probed.status, probed.reason) == ("Unknown", "Unreachable")

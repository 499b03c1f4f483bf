"""A shared cluster: Secrets of others, objects deleted and re-created, trust that moves, lost next keys.

In-process against the real API server with a fake clock, like ``test_service``: each test makes the
situation a user or a GitOps tool makes, then reconciles and checks what the API server holds.
"""

from __future__ import annotations

import base64
import datetime

import kubernetes
import pytest

from tests import whc
from tests.integration.test_service import Harness, active, condition, harness, rotating
from webhookcerts.domain import models, names, pki
from webhookcerts.service import reconcile

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests


def _user_secret(h: Harness, name: str, data: dict[str, bytes], type: str = "Opaque") -> None:
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            type=type,
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        ),
    )


def _delete(h: Harness, name: str) -> None:
    h.api.custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, h.api.namespace, models.PLURAL, name)


def _sync_trust(h: Harness, secret_name: str = "webhook-trust") -> None:
    """What the engine does when a WebhookCertificate's deletion is watched."""
    ns = h.api.namespace
    reconcile.sync_trust(h.ctx, reconcile.snapshot(h.ctx, ns), ns, secret_name)


def _ready(h: Harness, name: str) -> models.Condition:
    ready = condition(h.status(name), names.READY)
    assert ready is not None
    return ready


# --- 1. ownership --------------------------------------------------------------------------------------


def test_every_secret_written_says_whose_it_is_and_in_which_role(harness: Harness) -> None:
    h = harness
    _user_secret(h, "pw", {"password": b"correct horse"})
    active(h, "owned", bundle={"passwordSecretRef": {"name": "pw"}})
    for secret_name, role in (("owned-tls", "key"), ("owned-tls-bundle", "bundle"), ("webhook-trust", "trust")):
        secret = h.api.secret_object(secret_name)
        assert (secret.metadata.labels or {}).get(names.ROLE_LABEL) == role, secret_name
        owner = (secret.metadata.annotations or {}).get(names.OWNER_ANNOTATION)
        assert owner == (None if role == "trust" else "owned"), secret_name
        # Retain by default: nothing is garbage-collected with the object.
        assert not secret.metadata.owner_references, secret_name


def test_a_secret_of_another_webhookcertificate_is_never_taken_over(harness: Harness) -> None:
    h = harness
    first = active(h, "first")
    before = h.api.secret("first-tls")
    calls = h.keygen.calls
    # A second object names the first one's key Secret as its own key, another as its trust store.
    h.create("second", secretName="first-tls", trust={"secretName": "second-trust"})
    h.create("third", secretName="third-tls", trust={"secretName": "first-tls"})
    for name in ("second", "third"):
        h.settle(name)
        status = h.status(name)
        conflict = condition(status, names.SECRET_CONFLICT)
        assert conflict is not None and conflict.status == "True", name
        assert "first-tls" in conflict.message and "first" in conflict.message and name in conflict.message
        assert "rename" in conflict.message
        ready = _ready(h, name)
        assert (ready.status, ready.reason) == ("False", "SecretConflict")
    # Only the steps that would write (or adopt) the disputed Secret are refused: "second" has no key
    # (its key Secret is "first"'s), "third" has its own key but no trust store (its trust Secret is
    # "first"'s key), and "first"'s Secret is as it was.
    assert h.status("second").current is None
    third = h.status("third").current
    assert third is not None and h.secret_fingerprint("third-tls") == third.fingerprint
    assert h.keygen.calls == calls + 1
    assert h.api.secret("first-tls") == before
    assert not whc.fingerprints_in((h.api.secret("second-trust") or {}).get(names.TRUST_KEY, b""))
    h.settle("first")
    assert h.status("first").current == first
    assert _ready(h, "first").status == "True"


def test_a_users_secret_where_the_next_key_would_go_is_left_alone(harness: Harness) -> None:
    h = harness
    _user_secret(h, "users-tls-next", {"note": b"not yours"})
    active(h, "users")
    renewal_time = h.status("users").renewal_time
    assert renewal_time is not None
    h.fake.set(renewal_time)
    h.settle("users")
    status = h.status("users")
    assert status.next is None
    conflict = condition(status, names.SECRET_CONFLICT)
    assert conflict is not None and "users-tls-next" in conflict.message
    assert h.api.secret("users-tls-next") == {"note": b"not yours"}
    # Renamed out of the way, the rotation goes on.
    h.api.core.delete_namespaced_secret("users-tls-next", h.api.namespace)
    h.settle("users")
    assert h.status("users").next is not None
    assert condition(h.status("users"), names.SECRET_CONFLICT) is None


# --- 2. delete and re-create ----------------------------------------------------------------------------


def test_delete_and_recreate_keeps_the_providers_certificate_trusted_throughout(harness: Harness) -> None:
    h = harness
    current = active(h, "gitops")
    calls = h.keygen.calls
    _delete(h, "gitops")
    _sync_trust(h)
    assert h.api.trusted_fingerprints() == {current.fingerprint}
    assert h.secret_fingerprint("gitops-tls") == current.fingerprint

    h.create("gitops")
    # A neighbour writes the store before the re-created object's first pass: still trusted.
    active(h, "neighbour")
    assert current.fingerprint in h.api.trusted_fingerprints()
    h.settle("gitops")
    status = h.status("gitops")
    assert status.current is not None and status.current.fingerprint == current.fingerprint
    assert h.keygen.calls == calls + 1  # the neighbour's key only
    assert current.fingerprint in h.api.trusted_fingerprints()
    assert _ready(h, "gitops").status == "True"


def test_deletion_policy_delete_takes_everything_of_the_object_out(harness: Harness) -> None:
    h = harness
    current = active(h, "brief", deletionPolicy="Delete")
    keep = active(h, "stays")
    uid = h.api.get("brief")["metadata"]["uid"]
    owners = h.api.secret_object("brief-tls").metadata.owner_references or []
    assert [(o.kind, o.uid) for o in owners] == [(models.KIND, uid)]
    _delete(h, "brief")
    _sync_trust(h)
    assert h.api.trusted_fingerprints() == {keep.fingerprint}
    assert current.fingerprint not in h.api.trusted_fingerprints()


def test_turning_deletion_policy_back_to_retain_removes_the_owner_reference(harness: Harness) -> None:
    h = harness
    active(h, "turn", deletionPolicy="Delete")
    assert h.api.secret_object("turn-tls").metadata.owner_references
    h.api.custom.patch_namespaced_custom_object(
        models.GROUP, models.VERSION, h.api.namespace, models.PLURAL, "turn", {"spec": {"deletionPolicy": "Retain"}}
    )
    h.settle("turn")
    assert not h.api.secret_object("turn-tls").metadata.owner_references


# --- 3. bundles follow recorded state -------------------------------------------------------------------


def test_a_bundle_holds_only_recorded_certificates_and_a_not_ready_object_leaves_it(harness: Harness) -> None:
    h = harness
    _user_secret(h, "pw", {"password": b"correct horse"})
    current = active(h, "bundled", bundle={"passwordSecretRef": {"name": "pw"}})
    # A stray key in the next Secret, recorded nowhere (as a deleted and re-created object leaves it).
    stray = pki.new_key_pair(models.Subject(common_name="stray"), h.fake.now(), datetime.timedelta(days=400))
    _user_secret(
        h, "bundled-tls-next", {names.TLS_KEY: stray.key_pem, names.TLS_CERT: stray.cert_pem}, "kubernetes.io/tls"
    )
    h.api.core.patch_namespaced_secret(
        "bundled-tls-next",
        h.api.namespace,
        {
            "metadata": {
                "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.ROLE_LABEL: "next"},
                "annotations": {names.OWNER_ANNOTATION: "bundled"},
            }
        },
    )
    h.settle("bundled")
    files = sorted(h.api.secret("bundled-tls-bundle") or {})
    assert files and all(current.serial in f for f in files)
    before = h.api.secret("bundled-tls-bundle")
    # The current key Secret lost: NotReady, and the bundle stays as it was.
    h.api.core.delete_namespaced_secret("bundled-tls", h.api.namespace)
    h.settle("bundled")
    assert _ready(h, "bundled").status == "False"
    assert h.api.secret("bundled-tls-bundle") == before


# --- 4. trust that moves --------------------------------------------------------------------------------


def test_moving_the_trust_secret_leaves_nothing_behind_and_an_emergency_reaches_both(harness: Harness) -> None:
    h = harness
    current = active(h, "mover")
    assert h.api.trusted_fingerprints("webhook-trust") == {current.fingerprint}
    h.api.custom.patch_namespaced_custom_object(
        models.GROUP,
        models.VERSION,
        h.api.namespace,
        models.PLURAL,
        "mover",
        {"spec": {"trust": {"secretName": "new-trust"}}},
    )
    h.settle("mover")
    assert h.api.trusted_fingerprints("new-trust") == {current.fingerprint}
    assert h.api.trusted_fingerprints("webhook-trust") == set()
    h.api.emergency("mover", "INC-77")
    h.settle("mover")
    for store in ("webhook-trust", "new-trust"):
        assert current.fingerprint not in h.api.trusted_fingerprints(store), store


def test_an_emergency_reaches_a_trust_secret_that_still_lists_the_object(harness: Harness) -> None:
    h = harness
    current = active(h, "listed")
    # The store used before still holds the certificate (the operator was down when the spec moved,
    # and the status no longer says where it was).
    old = h.api.secret_object("webhook-trust")
    h.api.custom.patch_namespaced_custom_object(
        models.GROUP,
        models.VERSION,
        h.api.namespace,
        models.PLURAL,
        "listed",
        {"spec": {"trust": {"secretName": "other-trust"}}},
    )
    h.settle("listed")
    h.api.core.patch_namespaced_secret(
        "webhook-trust", h.api.namespace, {"data": old.data, "metadata": {"annotations": old.metadata.annotations}}
    )
    assert current.fingerprint in h.api.trusted_fingerprints("webhook-trust")
    h.api.emergency("listed", "INC-78")
    h.settle("listed")
    assert current.fingerprint not in h.api.trusted_fingerprints("webhook-trust")
    assert current.fingerprint in h.secret_annotations("webhook-trust")[names.REVOKED_ANNOTATION]


# --- 7. recovery without an emergency -------------------------------------------------------------------


def test_a_lost_next_key_is_discarded_and_reissued_with_the_current_trusted_throughout(harness: Harness) -> None:
    h = harness
    before = rotating(h, "lost")
    assert before.current is not None and before.next is not None
    h.api.core.delete_namespaced_secret("lost-tls-next", h.api.namespace)
    h.settle("lost")
    ready = _ready(h, "lost")
    assert (ready.status, ready.reason) == ("False", "NextSecretInvalid")
    assert f"webhookcerts.io/discard-next={before.next.serial}" in ready.message
    assert before.current.fingerprint in h.api.trusted_fingerprints()

    h.api.annotate("lost", **{names.DISCARD_NEXT_ANNOTATION: before.next.serial})
    h.settle("lost")
    after = h.status("lost")
    assert after.current == before.current
    assert after.next is not None and after.next.reason == "Planned"
    assert after.next.fingerprint != before.next.fingerprint
    assert before.next.fingerprint in after.revoked_fingerprints
    assert [(e.serial, e.reason) for e in after.history] == [(before.next.serial, "Discarded")]
    assert h.api.trusted_fingerprints() == {before.current.fingerprint, after.next.fingerprint}
    assert _ready(h, "lost").status == "True"
    assert after.last_emergency_rotation is None
    # The annotation left in place discards nothing more.
    h.settle("lost")
    assert h.status("lost").next == after.next


def test_every_emergency_reference_is_handled_once_however_short_the_history(harness: Harness) -> None:
    h = harness
    active(h, "many", revisionHistoryLimit=1)
    for reference in ("INC-1", "INC-2", "INC-3"):
        h.api.emergency("many", reference)
        h.settle("many")
        pending = h.status("many").next
        assert pending is not None
        h.api.cutover("many", pending.serial)
        h.settle("many")
    revision = h.status("many").revision
    assert len(h.events("many", "EmergencyRotation")) == 3
    h.api.emergency("many", "INC-1")
    h.settle("many")
    assert h.status("many").revision == revision
    assert len(h.events("many", "EmergencyRotation")) == 3


# --- secret hygiene -------------------------------------------------------------------------------------


def test_no_key_outside_the_key_secrets_and_every_secret_labelled(harness: Harness) -> None:
    h = harness
    _user_secret(h, "pw", {"password": b"correct horse"})
    rotating(h, "clean", bundle={"passwordSecretRef": {"name": "pw"}})
    h.api.emergency("clean", "INC-5")
    h.settle("clean")
    whc.assert_secrets_hygienic(h.api)
    whc.assert_no_key_material(
        {
            "events": " ".join(e.message or "" for e in h.api.events("clean")),
            "status": str(h.api.get("clean").get("status")),
        },
        whc.key_fragments(h.api, "clean-tls", "clean-tls-next"),
    )

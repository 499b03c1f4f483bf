"""Incidents survive delete and re-create (lifecycle invariant 11), in-process against the real API server.

GitOps re-creates objects (`kubectl replace --force`, Argo CD's `Replace=true`): status starts empty,
the key Secrets stay, and the manifest usually still carries the emergency annotation. The re-created
object must come back as it was: the compromised certificate compromised and never trusted again, the
replacement (which the provider may already present) adopted, trusted and never deleted, the
annotation no new incident; a planned next adopted as well. Every trust write is watched, so "never
trusted again" means not even for one write.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from tests import whc
from tests.integration.test_service import Harness, SimulatedCrash, active, harness, rotating
from webhookcerts.domain import models, names, ownership, pki
from webhookcerts.kube import resources, secrets
from webhookcerts.service import claims, reconcile

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests

INCIDENT = "INC-4242"


@pytest.fixture
def trust_writes(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The fingerprints of every ca.crt written to the trust Secret, in order."""
    written: list[set[str]] = []
    original = secrets.write

    def spy(clients: Any, namespace: str, name: str, **kwargs: Any) -> secrets.SecretData | None:
        if name == "webhook-trust":
            written.append(whc.fingerprints_in(kwargs["data"][names.TRUST_KEY]))
        return original(clients, namespace, name, **kwargs)

    monkeypatch.setattr(secrets, "write", spy)
    return written


def _recreate(h: Harness, name: str, *, keep_annotations: bool) -> None:
    """`kubectl get -o yaml | kubectl replace --force`: delete, then create with the same spec."""
    body = h.api.get(name)
    h.api.custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, h.api.namespace, models.PLURAL, name)
    annotations = (body["metadata"].get("annotations") or {}) if keep_annotations else {}
    manifest = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": name, "annotations": annotations},
        "spec": body["spec"],
    }
    h.api.custom.create_namespaced_custom_object(models.GROUP, models.VERSION, h.api.namespace, models.PLURAL, manifest)
    assert h.api.status(name).current is None, "re-created with an empty status"


def _sync_trust(h: Harness) -> None:
    """What the engine does when a WebhookCertificate's deletion is watched."""
    ns = h.api.namespace
    reconcile.sync_trust(h.ctx, reconcile.snapshot(h.ctx, ns), ns, "webhook-trust")


def _compromised_with_replacement(h: Harness, name: str) -> tuple[models.CertificateRecord, models.NextCertificate]:
    compromised = active(h, name)
    # The incident a month later: the replacement's renewal time is a month after the compromised one's.
    h.fake.advance(datetime.timedelta(days=30))
    h.api.emergency(name, INCIDENT)
    h.settle(name)
    status = h.status(name)
    assert status.stage == "Compromised" and status.next is not None
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}
    return compromised, status.next


@pytest.mark.parametrize("keep_annotations", [True, False], ids=["annotation-kept", "annotation-gone"])
def test_a_compromise_and_its_replacement_survive_re_creation(
    harness: Harness, trust_writes: list[set[str]], keep_annotations: bool
) -> None:
    h = harness
    compromised, replacement = _compromised_with_replacement(h, "gone")
    assert h.secret_annotations("gone-tls")[names.COMPROMISED_BY_ANNOTATION] == INCIDENT
    keys = h.keygen.calls
    events = len(h.events("gone", "EmergencyRotation"))
    expected = {replacement.fingerprint}
    start = len(trust_writes)

    def trusted_as_expected(when: str) -> None:
        assert h.api.trusted_fingerprints() == expected, when
        # Every write since containment, not only the last one.
        assert all(written == expected for written in trust_writes[start:]), when

    _recreate(h, "gone", keep_annotations=keep_annotations)
    _sync_trust(h)
    trusted_as_expected("re-created, before its first pass")
    for attempt in range(3):
        h.run("gone")
        trusted_as_expected(f"after pass {attempt + 1}")
    status = h.status("gone")
    assert status.stage == "Compromised"
    assert status.current is not None and status.current.fingerprint == compromised.fingerprint
    assert status.current.compromised_by == INCIDENT
    assert compromised.fingerprint in status.revoked_fingerprints
    assert status.next is not None and status.next.fingerprint == replacement.fingerprint
    assert status.next.reason == "Emergency"
    assert INCIDENT in status.emergency_references
    assert status.last_emergency_rotation is not None and status.last_emergency_rotation.reference == INCIDENT
    assert h.keygen.calls == keys, "no key generated"
    # The annotation the manifest kept was no new incident: no second containment.
    assert len(h.events("gone", "EmergencyRotation")) == events

    # Past the renewal time the replacement is still the pending next, its key Secret untouched.
    renewal_time = compromised.not_after - datetime.timedelta(hours=2160)
    h.fake.set(renewal_time + datetime.timedelta(days=1))
    h.settle("gone")
    trusted_as_expected("past the renewal time")
    assert h.secret_fingerprint("gone-tls-next") == replacement.fingerprint
    assert (h.status("gone").next or replacement).fingerprint == replacement.fingerprint
    assert h.keygen.calls == keys

    # The way out works as before the re-creation.
    h.api.cutover("gone", replacement.serial)
    h.settle("gone")
    after = h.status("gone")
    assert after.stage == "Active" and after.next is None
    assert after.current is not None and after.current.fingerprint == replacement.fingerprint
    assert not after.current.compromised_by
    assert [(e.serial, e.reason) for e in after.history][:1] == [(compromised.serial, "Compromised")]
    trusted_as_expected("after the cut-over")
    assert h.api.secret("gone-tls-next") is None
    marks = h.secret_annotations("gone-tls")
    assert names.COMPROMISED_BY_ANNOTATION not in marks
    assert INCIDENT in marks[names.EMERGENCIES_ANNOTATION]


def test_after_the_cut_over_a_re_created_object_keeps_the_replacement_trusted(harness: Harness) -> None:
    h = harness
    compromised, replacement = _compromised_with_replacement(h, "later")
    h.api.cutover("later", replacement.serial)
    h.settle("later")
    keys = h.keygen.calls
    events = len(h.events("later", "EmergencyRotation"))
    # The manifest still carries the (handled) emergency annotation: no new incident after re-creation.
    _recreate(h, "later", keep_annotations=True)
    h.settle("later")
    assert len(h.events("later", "EmergencyRotation")) == events
    status = h.status("later")
    assert status.stage == "Active"
    assert status.current is not None and status.current.fingerprint == replacement.fingerprint
    assert not status.current.compromised_by
    assert h.api.trusted_fingerprints() == {replacement.fingerprint}
    assert compromised.fingerprint in status.revoked_fingerprints
    assert h.keygen.calls == keys


@pytest.fixture
def die_after_adopting(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Arms a death right after the next status write that records a current certificate."""
    original = resources.patch_status
    armed: list[bool] = []

    def patch_status(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        written = original(*args, **kwargs)
        if armed and (args[4] if len(args) > 4 else kwargs["new"]).get("current") is not None:
            armed.clear()
            raise SimulatedCrash("after the status write that adopted the current certificate")
        return written

    monkeypatch.setattr(resources, "patch_status", patch_status)
    return lambda: armed.append(True)


def test_a_planned_next_survives_re_creation(
    harness: Harness, trust_writes: list[set[str]], die_after_adopting: Callable[[], None]
) -> None:
    h = harness
    before = rotating(h, "planned")
    assert before.current is not None and before.next is not None
    keys = h.keygen.calls
    renewing = len(h.events("planned", "Renewing"))
    both = {before.current.fingerprint, before.next.fingerprint}
    _recreate(h, "planned", keep_annotations=True)
    _sync_trust(h)
    assert h.api.trusted_fingerprints() == both
    start = len(trust_writes)
    h.fake.advance(datetime.timedelta(days=1))
    # The first status write is the whole adoption: the trust write that follows it (the engine's
    # after a restart, or a neighbour's) still finds the next recorded.
    die_after_adopting()
    with pytest.raises(SimulatedCrash):
        h.run("planned")
    _sync_trust(h)
    assert h.api.trusted_fingerprints() == both
    for _ in range(3):
        h.run("planned")
        assert h.api.trusted_fingerprints() == both
    assert all(written == both for written in trust_writes[start:])
    # Adopted, not renewed again: the provider was told of this next once.
    assert len(h.events("planned", "Renewing")) == renewing
    status = h.status("planned")
    assert status.stage == "Rotating"
    assert status.current is not None and status.current.fingerprint == before.current.fingerprint
    assert status.next is not None and status.next.fingerprint == before.next.fingerprint
    assert status.next.reason == "Planned"
    assert h.keygen.calls == keys
    assert h.secret_fingerprint("planned-tls-next") == before.next.fingerprint
    h.api.cutover("planned", before.next.serial)
    h.settle("planned")
    after = h.status("planned")
    assert after.current is not None and after.current.fingerprint == before.next.fingerprint
    assert h.api.trusted_fingerprints() == {before.next.fingerprint}


def test_marking_the_secrets_never_holds_containment_back_and_the_next_pass_repairs_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    current = active(h, "marks")
    real = claims.mark_keys

    def failing(p: Any, **kwargs: Any) -> None:
        raise RuntimeError("the API server refused the patch")

    monkeypatch.setattr(claims, "mark_keys", failing)
    h.api.emergency("marks", INCIDENT)
    ns = h.api.namespace
    result = reconcile.run(h.ctx, reconcile.snapshot(h.ctx, ns), ns, "marks", urgent=True)
    assert result is not None and result.decision.reason == "EmergencyRequested"
    # Contained although the marks could not be written.
    status = h.status("marks")
    assert status.current is not None and status.current.compromised_by == INCIDENT
    assert current.fingerprint not in h.api.trusted_fingerprints()
    assert names.COMPROMISED_BY_ANNOTATION not in h.secret_annotations("marks-tls")

    monkeypatch.setattr(claims, "mark_keys", real)
    h.settle("marks")
    marks = h.secret_annotations("marks-tls")
    assert marks[names.COMPROMISED_BY_ANNOTATION] == INCIDENT
    assert current.fingerprint in marks[names.REVOKED_ANNOTATION].split(",")
    pending = h.status("marks").next
    assert pending is not None
    assert INCIDENT in h.secret_annotations("marks-tls-next")[names.EMERGENCIES_ANNOTATION]


def test_a_re_created_object_never_bundles_the_compromised_key_again(harness: Harness) -> None:
    h = harness
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name="pw"), string_data={"password": "pw"}),
    )
    compromised = active(h, "bundled", bundle={"passwordSecretRef": {"name": "pw"}})
    # Positive control: the healthy current is bundled under its serial.
    assert any(compromised.serial in f for f in h.api.secret("bundled-tls-bundle") or {})
    h.api.emergency("bundled", INCIDENT)
    h.settle("bundled")
    replacement = h.status("bundled").next
    assert replacement is not None
    _recreate(h, "bundled", keep_annotations=True)
    h.settle("bundled")
    files = sorted(h.api.secret("bundled-tls-bundle") or {})
    assert files and all(replacement.serial in f for f in files), files


def test_a_next_secrets_word_alone_never_compromises_a_sound_current_nor_is_trusted(harness: Harness) -> None:
    """A next Secret that says "Emergency" beside a current certificate status records as sound: what
    anyone who can write a Secret can make (labels and annotations included). Its word alone must not
    revoke the certificate the provider uses (an outage of every delivery), nor put its own certificate
    in the trust store (it may be anybody's key); a real incident still goes through."""
    h = harness
    sound = active(h, "victim")
    forged = pki.new_key_pair(models.Subject(common_name="forged"), h.fake.now(), datetime.timedelta(days=400))
    labels, stamp = ownership.stamp("victim", "next")
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(
                name="victim-tls-next",
                labels={names.MANAGED_BY_LABEL: names.MANAGED_BY, **labels},
                annotations={**stamp, names.NEXT_REASON_ANNOTATION: "Emergency", names.INCIDENT_ANNOTATION: "INC-X"},
            ),
            type=secrets.TLS,
            data={
                names.TLS_KEY: base64.b64encode(forged.key_pem).decode(),
                names.TLS_CERT: base64.b64encode(forged.cert_pem).decode(),
            },
        ),
    )
    forged_fingerprint = pki.inspect(forged.cert_pem).fingerprint
    h.settle("victim")
    status = h.status("victim")
    assert status.stage == "Active"
    assert status.current is not None and status.current.fingerprint == sound.fingerprint
    assert not status.current.compromised_by and status.next is None
    assert h.api.trusted_fingerprints() == {sound.fingerprint}
    assert not h.events("victim", "NextAdopted")
    # Neither adopted nor deleted: for all the operator can tell, it may be a key the provider holds.
    assert h.secret_fingerprint("victim-tls-next") == forged_fingerprint
    # A real incident, declared by the user, is contained at once; the unrecorded next goes with it.
    keys = h.keygen.calls
    h.api.emergency("victim", "INC-REAL")
    h.settle("victim")
    status = h.status("victim")
    assert status.current is not None and status.current.compromised_by == "INC-REAL"
    assert status.next is not None and status.next.fingerprint not in (forged_fingerprint, sound.fingerprint)
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}
    assert h.keygen.calls == keys + 1


def test_marks_on_a_neighbours_key_secret_never_revoke_the_certificate_of_another(harness: Harness) -> None:
    """A co-tenant sharing the trust store adopts a key Secret it made itself, marked as revoking the
    victim's certificate: adoption must not carry that into its status (the union would drop the
    victim's certificate, an outage of every delivery to it)."""
    h = harness
    victim = active(h, "victim")
    planted = pki.new_key_pair(models.Subject(common_name="evil"), h.fake.now(), datetime.timedelta(days=400))
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(
                name="evil-tls", annotations={names.REVOKED_ANNOTATION: victim.fingerprint}
            ),
            type=secrets.TLS,
            data={
                names.TLS_KEY: base64.b64encode(planted.key_pem).decode(),
                names.TLS_CERT: base64.b64encode(planted.cert_pem).decode(),
            },
        ),
    )
    h.create("evil")
    h.settle("evil")
    evil = h.status("evil")
    assert evil.current is not None and evil.current.fingerprint == pki.inspect(planted.cert_pem).fingerprint
    assert victim.fingerprint not in evil.revoked_fingerprints
    assert victim.fingerprint in h.api.trusted_fingerprints()
    h.settle("victim")
    assert h.api.trusted_fingerprints() == {victim.fingerprint, evil.current.fingerprint}

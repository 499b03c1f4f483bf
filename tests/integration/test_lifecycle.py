"""The core lifecycle with the operator running as users run it, against a real API server.

Each test creates WebhookCertificates in a fresh namespace and watches what the operator does to
Secrets, status and Events: first issue, restart without re-issue, the scheduled planned rotation,
cut-over by annotation, emergency rotations, refusals, and a crash in the middle of an emergency.
"""

from __future__ import annotations

import datetime
import math
import pathlib
import time

import kubernetes
import pytest

from tests import conftest, whc
from webhookcerts.domain import models, names, pki

pytestmark = pytest.mark.integration


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


def ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


def stage(api: whc.Api, name: str, wanted: str) -> bool:
    return api.status(name).stage == wanted


def test_create_issues_a_key_and_a_trust_store(
    api: whc.Api, operator: conftest.OperatorProcess, tmp_path: pathlib.Path
) -> None:
    api.create("sandbox", environment="sandbox")
    conftest.wait_for(lambda: ready(api, "sandbox"), what="Ready=True")

    status = api.status("sandbox")
    assert status.stage == "Active"
    assert status.current is not None
    assert status.revision == 1
    assert status.renewal_time == status.current.not_after - datetime.timedelta(hours=2160)

    secret = api.secret_object("sandbox-tls")
    assert secret.type == "kubernetes.io/tls"
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "webhookcerts"
    assert secret.metadata.labels[names.ENVIRONMENT_LABEL] == "sandbox"
    assert secret.metadata.labels[names.ROLE_LABEL] == "key"
    # deletionPolicy Retain (the default): the key outlives the object, as the provider holds a copy.
    assert not secret.metadata.owner_references
    data = api.secret("sandbox-tls")
    assert data is not None
    info = pki.check_key_pair(data["tls.key"], data["tls.crt"])
    assert info.fingerprint == status.current.fingerprint
    assert api.trusted_fingerprints() == {status.current.fingerprint}

    # Interop: openssl reads what the operator wrote and the trust store accepts the certificate.
    cert_file, ca_file = tmp_path / "tls.crt", tmp_path / "ca.crt"
    cert_file.write_bytes(data["tls.crt"])
    ca_file.write_bytes((api.secret("webhook-trust") or {})[names.TRUST_KEY])
    text = whc.openssl("x509", "-in", str(cert_file), "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert b"Public-Key: (4096 bit)" in text.stdout
    assert b"sha256WithRSAEncryption" in text.stdout
    verify = whc.openssl("verify", "-CAfile", str(ca_file), str(cert_file))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert api.events("sandbox", "Issued")


def test_restart_adopts_and_issues_no_new_key(api: whc.Api, operator: conftest.OperatorProcess) -> None:
    api.create("live", environment="live")
    conftest.wait_for(lambda: ready(api, "live"), what="Ready=True")
    before = api.status("live").current
    assert before is not None

    operator.kill()
    operator.start()
    # Objects that exist when the operator starts are reconciled once from the watch-fed view.
    conftest.wait_for(lambda: operator.logs().count("start-up pass done") == 2, what="the restarted start-up pass")
    after = api.status("live").current
    assert after is not None
    assert after.fingerprint == before.fingerprint
    assert len(api.events("live", "Issued")) == 1


def test_short_lived_certificate_starts_a_planned_rotation(api: whc.Api, operator: conftest.OperatorProcess) -> None:
    api.create("short", duration="1h", renewBefore="59m50s")
    conftest.wait_for(lambda: ready(api, "short"), what="Ready=True")
    assert api.condition("short", names.SHORT_VALIDITY) is not None

    conftest.wait_for(lambda: stage(api, "short", "Rotating"), timeout=120, what="stage Rotating")
    status = api.status("short")
    assert status.current is not None and status.next is not None
    assert status.next.reason == "Planned"
    rotating = api.condition("short", names.ROTATION_IN_PROGRESS)
    assert rotating is not None and rotating.status == "True" and rotating.reason == "Renewing"
    # Overlap: both trusted (the trust Secret is written just after status records the next), and the
    # current Secret still holds the current key.
    both = {status.current.fingerprint, status.next.fingerprint}
    conftest.wait_for(lambda: api.trusted_fingerprints() == both, what="the trust store to list both")
    current = api.secret("short-tls") or {}
    assert pki.inspect(current["tls.crt"]).fingerprint == status.current.fingerprint
    assert api.events("short", "Renewing")


def test_cutover_by_annotation_retires_the_old_certificate(api: whc.Api, operator: conftest.OperatorProcess) -> None:
    api.create("cut", duration="1h", renewBefore="59m50s", revisionHistoryLimit=1)
    conftest.wait_for(lambda: stage(api, "cut", "Rotating"), timeout=120, what="stage Rotating")
    status = api.status("cut")
    assert status.current is not None and status.next is not None
    old, new = status.current, status.next

    api.cutover("cut", "DEADBEEF")
    conftest.wait_for(lambda: api.condition("cut", names.CUTOVER_REFUSED), what="CutoverRefused")
    refused = api.condition("cut", names.CUTOVER_REFUSED)
    assert refused is not None and refused.reason == "CutoverSerialMismatch"
    assert new.serial in refused.message
    assert api.status("cut").current == old  # nothing changed
    assert api.events("cut", "CutoverSerialMismatch")

    api.cutover("cut", new.serial)

    def cut_over() -> bool:
        # Status records the cut-over before the old next Secret is deleted: wait for the whole step.
        current = api.status("cut").current
        held = api.secret("cut-tls-next")
        return (
            current is not None
            and current.fingerprint == new.fingerprint
            and (held is None or pki.inspect(held["tls.crt"]).fingerprint != new.fingerprint)
        )

    conftest.wait_for(cut_over, what="the cut-over")
    after = api.status("cut")
    assert [(h.serial, h.reason) for h in after.history] == [(old.serial, "Superseded")]
    assert old.fingerprint in after.revoked_fingerprints
    # With renewBefore this close to duration, the new current is due for renewal at once, so a newer
    # next may already stand beside it; the old certificate is never trusted again either way.
    trusted = api.trusted_fingerprints()
    assert new.fingerprint in trusted and old.fingerprint not in trusted
    next_secret = api.secret("cut-tls-next")
    assert next_secret is None or pki.inspect(next_secret["tls.crt"]).fingerprint not in (
        old.fingerprint,
        new.fingerprint,
    )
    current = api.secret("cut-tls") or {}
    assert pki.inspect(current["tls.crt"]).fingerprint == new.fingerprint
    # The refusal clears once the annotation names the current certificate.
    conftest.wait_for(lambda: api.condition("cut", names.CUTOVER_REFUSED) is None, what="CutoverRefused cleared")
    trust_annotations = api.secret_object("webhook-trust").metadata.annotations
    assert old.fingerprint in trust_annotations[names.REVOKED_ANNOTATION]


def replaced(api: whc.Api, name: str) -> bool:
    """Compromised, and the replacement issued (containment alone is stage Compromised without a next)."""
    status = api.status(name)
    return status.stage == "Compromised" and status.next is not None and status.next.reason == "Emergency"


def test_emergency_while_idle_revokes_at_once(api: whc.Api, operator: conftest.OperatorProcess) -> None:
    api.create("idle")
    conftest.wait_for(lambda: ready(api, "idle"), what="Ready=True")
    compromised = api.status("idle").current
    assert compromised is not None

    api.emergency("idle", "INC-1001")
    conftest.wait_for(lambda: replaced(api, "idle"), what="the replacement after containment")
    status = api.status("idle")
    assert status.next is not None and status.next.reason == "Emergency"
    assert status.last_emergency_rotation is not None and status.last_emergency_rotation.reference == "INC-1001"
    assert compromised.fingerprint in status.revoked_fingerprints
    # RevokeImmediately: only the new certificate is trusted from now on.
    # (The trust Secret is written just after status records the replacement: waited for, not raced.)
    conftest.wait_for(lambda: api.trusted_fingerprints() == {status.next.fingerprint}, what="only the new one trusted")
    condition = api.condition("idle", names.COMPROMISED)
    assert condition is not None and condition.status == "True" and "INC-1001" in condition.message
    warnings = api.events("idle", "EmergencyRotation")
    assert len(warnings) == 1 and warnings[0].type == "Warning" and "INC-1001" in warnings[0].message

    api.cutover("idle", status.next.serial)
    conftest.wait_for(lambda: stage(api, "idle", "Active"), what="cut-over after the emergency")
    after = api.status("idle")
    assert [(h.serial, h.reason, h.incident) for h in after.history] == [
        (compromised.serial, "Compromised", "INC-1001")
    ]
    # The old key is destroyed last, after the trust store stopped naming it.
    conftest.wait_for(lambda: api.secret("idle-tls-next") is None, what="the retired key Secret deleted")

    # A handled incident stays handled: its reference taken away and put back (a GitOps sync of an
    # older manifest, an undo) rotates nothing, and neither does any other annotation change.
    before = after
    trusted = api.trusted_fingerprints()
    events = {e.metadata.name for e in api.events("idle")}
    handled(api, "idle", {names.EMERGENCY_ANNOTATION: None, "unrelated": "x"}, revisionHistoryLimit=9)
    handled(api, "idle", {names.EMERGENCY_ANNOTATION: "INC-1001", "probe": "2"}, revisionHistoryLimit=8)
    now = api.status("idle")
    assert now.stage == "Active"
    assert now.revision == before.revision
    assert now.current == before.current and now.next is None
    assert now.history == before.history
    assert now.emergency_references == ["INC-1001"]
    assert api.trusted_fingerprints() == trusted
    assert {e.metadata.name for e in api.events("idle")} == events


def handled(api: whc.Api, name: str, annotations: dict[str, str | None], **spec: object) -> None:
    """Change annotations and wait until the operator has reconciled the object as it now is.

    A pass that finds nothing to do writes nothing, and annotations do not bump metadata.generation,
    so the annotations go out in one patch with a harmless spec change. Every ordinary pass ends by
    recording the generation it read as status.observedGeneration, so once that reaches the patch's
    generation, a pass has decided on this version of the object (or a later one, with the same
    annotations): whatever they made it do is in status by then. (An emergency's containment pass
    records no generation; the replacement pass after it does, so a rotation they wrongly started
    would show as well.)
    """
    body = api.custom.patch_namespaced_custom_object(
        models.GROUP,
        models.VERSION,
        api.namespace,
        models.PLURAL,
        name,
        {"metadata": {"annotations": annotations}, "spec": spec},
    )
    generation = body["metadata"]["generation"]
    conftest.wait_for(
        lambda: (api.status(name).observed_generation or 0) >= generation,
        what=f"observedGeneration {generation}: the operator's pass over the annotations {annotations}",
    )


def test_emergency_during_planned_rotation_discards_the_pending_next(
    api: whc.Api, operator: conftest.OperatorProcess
) -> None:
    api.create("busy", duration="1h", renewBefore="59m50s", emergencyPolicy="KeepUntilCutover")
    conftest.wait_for(lambda: stage(api, "busy", "Rotating"), timeout=120, what="stage Rotating")
    before = api.status("busy")
    assert before.current is not None and before.next is not None

    api.emergency("busy", "INC-2002")
    conftest.wait_for(lambda: replaced(api, "busy"), what="the replacement after containment")
    status = api.status("busy")
    assert status.next is not None and status.next.fingerprint != before.next.fingerprint
    assert before.next.fingerprint in status.revoked_fingerprints
    assert [(h.serial, h.reason) for h in status.history] == [(before.next.serial, "Compromised")]
    # KeepUntilCutover: the compromised current stays trusted beside the new next, until cut-over.
    kept = {before.current.fingerprint, status.next.fingerprint}
    conftest.wait_for(lambda: api.trusted_fingerprints() == kept, what="both trusted")


@pytest.mark.parametrize(("reference", "fragment"), [("   ", "is empty"), ("X" * 200, "at most 128")])
def test_bad_emergency_reference_is_refused(
    api: whc.Api, operator: conftest.OperatorProcess, reference: str, fragment: str
) -> None:
    api.create("refuse")
    conftest.wait_for(lambda: ready(api, "refuse"), what="Ready=True")
    revision = api.status("refuse").revision
    api.emergency("refuse", reference)
    conftest.wait_for(lambda: api.condition("refuse", names.EMERGENCY_REFUSED), what="EmergencyRefused")
    condition = api.condition("refuse", names.EMERGENCY_REFUSED)
    assert condition is not None and fragment in condition.message
    assert api.status("refuse").revision == revision
    assert api.status("refuse").stage == "Active"


def test_corrupted_secret_is_reported_and_never_overwritten(api: whc.Api, operator: conftest.OperatorProcess) -> None:
    api.create("broken")
    conftest.wait_for(lambda: ready(api, "broken"), what="Ready=True")
    garbage = {"tls.key": "bm90IGEga2V5", "tls.crt": "bm90IGEgY2VydA=="}
    api.core.patch_namespaced_secret("broken-tls", api.namespace, {"data": garbage})
    api.annotate("broken", nudge="1")
    conftest.wait_for(
        lambda: (c := api.condition("broken", names.READY)) is not None and c.status == "False", what="Ready=False"
    )
    condition = api.condition("broken", names.READY)
    assert condition is not None and condition.reason == "SecretCorrupted"
    assert "emergency" in condition.message
    assert api.secret("broken-tls") == {"tls.key": b"not a key", "tls.crt": b"not a cert"}
    warning = api.events("broken", "SecretCorrupted")
    assert warning and "emergency-rotation" in warning[0].message


def test_operator_killed_mid_emergency_rotates_exactly_once(api: whc.Api, operator: conftest.OperatorProcess) -> None:
    api.create("crash")
    conftest.wait_for(lambda: ready(api, "crash"), what="Ready=True")
    before = api.status("crash")
    assert before.current is not None
    api.emergency("crash", "INC-3003")
    # Kill the operator the moment the next key Secret exists: before or just after status records it.
    written = conftest.wait_for(lambda: api.secret("crash-tls-next"), timeout=60, what="the next Secret")
    operator.kill()
    fingerprint = pki.inspect(written["tls.crt"]).fingerprint
    # The restarted process appends to the same log: what it says comes after this.
    restarted_at = len(operator.logs())

    operator.start()
    # What the restarted process did, not what the killed one left: its start-up pass has reconciled
    # every object once (the line comes only after a pass over each succeeded), and the replacement is
    # recorded, held by the next Secret and trusted.
    conftest.wait_for(
        lambda: "start-up pass done" in operator.logs()[restarted_at:], what="the restarted operator's start-up pass"
    )

    def replacement() -> models.WebhookCertificateStatus | None:
        status = api.status("crash")
        held = api.secret("crash-tls-next")
        if status.next is None or held is None or pki.inspect(held["tls.crt"]).fingerprint != status.next.fingerprint:
            return None
        return status if status.next.fingerprint in api.trusted_fingerprints() else None

    status = conftest.wait_for(replacement, what="the replacement recorded, in its Secret and trusted")
    # Exactly one new key: the one written before the kill (recorded then, or adopted now), never a second.
    assert status.next is not None and status.next.fingerprint == fingerprint
    assert status.next.reason == "Emergency"
    assert status.revision == before.revision + 1
    assert status.emergency_references == ["INC-3003"]
    assert status.last_emergency_rotation is not None and status.last_emergency_rotation.reference == "INC-3003"
    assert status.current is not None and status.current.fingerprint == before.current.fingerprint
    assert status.current.compromised_by == "INC-3003"
    assert api.trusted_fingerprints() == {fingerprint}
    # Containment posts its Event before the replacement pass writes the next Secret: one, before the kill.
    assert len(api.events("crash", "EmergencyRotation")) == 1
    assert len(api.events("crash", "ReplacementIssued")) <= 1


@pytest.mark.long
def test_a_rotation_missed_while_the_operator_was_down_starts_on_restart(
    api: whc.Api, operator: conftest.OperatorProcess
) -> None:
    # The renewal must fall after the operator is killed (once Ready) and before it starts again: it is
    # due four times what the same steps took just before on this machine (and 2 s more) after issuance.
    started = time.monotonic()
    api.create("rehearsal", duration="1h", renewBefore="30m", trust={"secretName": "rehearsal-trust"})
    conftest.wait_for(lambda: ready(api, "rehearsal"), what="the rehearsal Ready=True")
    margin = math.ceil(4 * (time.monotonic() - started) + 2)
    api.create("catchup", duration="1h", renewBefore=f"{(3600 - margin) // 60}m{(3600 - margin) % 60}s")
    conftest.wait_for(lambda: ready(api, "catchup"), what="Ready=True")
    operator.kill()
    assert api.status("catchup").stage == "Active", f"the rotation began before the kill, {margin} s after issuance"
    renewal = api.status("catchup").renewal_time
    assert renewal is not None
    conftest.wait_for(
        lambda: datetime.datetime.now(datetime.UTC) > renewal + datetime.timedelta(seconds=2),
        timeout=margin + 60,
        what="the renewal time to pass while the operator is down",
    )
    assert api.status("catchup").stage == "Active"
    operator.start()
    conftest.wait_for(lambda: stage(api, "catchup", "Rotating"), timeout=60, what="the missed rotation")


def test_private_keys_stay_out_of_logs_events_and_status(api: whc.Api, operator: conftest.OperatorProcess) -> None:
    api.create("secretive", duration="1h", renewBefore="59m50s")
    conftest.wait_for(lambda: stage(api, "secretive", "Rotating"), timeout=120, what="stage Rotating")
    api.emergency("secretive", "INC-6006")
    conftest.wait_for(lambda: stage(api, "secretive", "Compromised"), what="stage Compromised")
    # Containment comes first; the replacement key follows in a pass of its own.
    conftest.wait_for(lambda: api.status("secretive").next is not None, what="the replacement recorded")
    keys = [(api.secret(n) or {}).get("tls.key", b"") for n in ("secretive-tls", "secretive-tls-next")]
    # A recognisable run of each key's base64 body, as it would appear if anything printed the key.
    fragments = [k.decode().splitlines()[5] for k in keys if k]
    assert len(fragments) == 2
    places = {
        "operator log": operator.logs(),
        "events": " ".join(e.message or "" for e in api.events("secretive")),
        "status": str(api.get("secretive").get("status")),
    }
    for where, text in places.items():
        assert "PRIVATE KEY" not in text, where
        for fragment in fragments:
            assert fragment not in text, where

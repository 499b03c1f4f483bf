"""The reconcile service in-process, against the real API server, with a fake clock.

No operator process runs: each test creates WebhookCertificates with the custom objects API and calls
``service.reconcile.reconcile`` on what the API server returns, moving a ``FakeClock`` instead of
waiting a year. That reaches every path of the lifecycle, and the four invariants of the design:
1. the current certificate changes only by cut-over;
2. the trust store is a pure function of the statuses (same bytes, no rewrite, no revoked return);
3. a crash between two writes is repaired by the next reconcile, never duplicated;
4. each emergency reference is handled exactly once.
Crashes are simulated by making one status patch raise at a precise point, so the Secrets written
before it are really in the API server when the next reconcile looks.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import re
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests import whc
from webhookcerts.domain import clock, models, names, pki, policy, trust
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import resources, secrets
from webhookcerts.service import reconcile

pytestmark = pytest.mark.integration

SECOND = datetime.timedelta(seconds=1)


class SimulatedCrash(RuntimeError):
    """Raised in place of a status patch: the process 'died' right there."""


@dataclasses.dataclass
class CountingKeygen:
    """The real key generator, counting calls: 'no new key' is then something a test can check."""

    calls: int = 0

    def __call__(self, subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> pki.KeyPair:
        self.calls += 1
        return pki.new_key_pair(subject, now, duration)


@dataclasses.dataclass
class Harness:
    api: whc.Api
    ctx: reconcile.Context
    fake: clock.FakeClock
    keygen: CountingKeygen

    def create(self, name: str, **spec: Any) -> None:
        self.api.create(name, **spec)

    def run(self, name: str) -> reconcile.Result:
        return reconcile.reconcile(self.ctx, self.api.get(name))

    def settle(self, name: str, rounds: int = 3) -> reconcile.Result:
        result = self.run(name)
        for _ in range(rounds - 1):
            result = self.run(name)
        return result

    def status(self, name: str) -> models.WebhookCertificateStatus:
        return self.api.status(name)

    def secret_fingerprint(self, secret_name: str) -> str | None:
        data = self.api.secret(secret_name)
        return None if data is None else pki.inspect(data[names.TLS_CERT]).fingerprint

    def resource_version(self, secret_name: str) -> str:
        secret = secrets.read(self.ctx.clients, self.api.namespace, secret_name)
        assert secret is not None, f"Secret {secret_name} does not exist"
        return secret.resource_version

    def secret_annotations(self, secret_name: str) -> dict[str, str]:
        secret = secrets.read(self.ctx.clients, self.api.namespace, secret_name)
        assert secret is not None, f"Secret {secret_name} does not exist"
        return secret.annotations

    def events(self, name: str, reason: str) -> list[kubernetes.client.CoreV1Event]:
        return self.api.events(name, reason)


@pytest.fixture
def harness(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> Harness:
    # Whole seconds, like the certificates: comparisons with notAfter stay exact.
    fake = clock.FakeClock(datetime.datetime.now(datetime.UTC).replace(microsecond=0))
    keygen = CountingKeygen()
    ctx = reconcile.Context(kube_client.Clients(api_client), clock=fake, keygen=keygen)
    return Harness(whc.Api(api_client, namespace), ctx, fake, keygen)


def active(h: Harness, name: str, **spec: Any) -> models.CertificateRecord:
    """A WebhookCertificate reconciled to Active; its current certificate."""
    h.create(name, **spec)
    h.settle(name)
    current = h.status(name).current
    assert current is not None
    return current


def rotating(h: Harness, name: str, **spec: Any) -> models.WebhookCertificateStatus:
    """A WebhookCertificate with a planned next, the clock at its renewal time."""
    active(h, name, **spec)
    renewal_time = h.status(name).renewal_time
    assert renewal_time is not None
    h.fake.set(renewal_time)
    h.settle(name)
    status = h.status(name)
    assert status.stage == "Rotating"
    return status


def condition(status: models.WebhookCertificateStatus, type: str) -> models.Condition | None:
    return next((c for c in status.conditions if c.type == type), None)


# --- the paths of the lifecycle ------------------------------------------------------------------------


def test_first_reconcile_issues_one_key_and_the_trust_store(harness: Harness) -> None:
    h = harness
    h.create("first")
    result = h.run("first")

    status = h.status("first")
    assert result.status == status
    assert status.stage == "Active" and status.revision == 1
    assert status.current is not None
    assert h.secret_fingerprint("first-tls") == status.current.fingerprint
    ready = condition(status, names.READY)
    assert ready is not None and ready.status == "True" and ready.reason == "CertificateValid"
    assert h.api.trusted_fingerprints() == {status.current.fingerprint}
    assert status.trust is not None and status.trust.hash == trust.trust_hash(
        (h.api.secret("webhook-trust") or {})[names.TRUST_KEY]
    )
    assert status.renewal_time == status.current.not_after - datetime.timedelta(hours=2160)
    assert result.wakeup == status.renewal_time
    # The certificate starts from the injected clock, not the machine's.
    assert status.current.not_before == h.fake.now() - pki.BACKDATE

    h.settle("first")
    assert h.keygen.calls == 1
    assert h.status("first").revision == 1
    assert len(h.events("first", "Issued")) == 1


def test_planned_rotation_at_renewal_time_then_cutover_on_expiry(harness: Harness) -> None:
    h = harness
    old = active(h, "planned")
    renewal_time = h.status("planned").renewal_time
    assert renewal_time is not None

    h.fake.set(renewal_time - SECOND)
    h.settle("planned")
    assert h.status("planned").next is None
    assert h.secret_fingerprint("planned-tls-next") is None

    h.fake.set(renewal_time)
    result = h.run("planned")
    status = h.status("planned")
    assert status.stage == "Rotating" and status.revision == 2
    assert status.current == old
    new = status.next
    assert new is not None and new.reason == "Planned" and new.issued_at == renewal_time
    assert h.secret_fingerprint("planned-tls-next") == new.fingerprint
    assert h.secret_fingerprint("planned-tls") == old.fingerprint
    rotation = condition(status, names.ROTATION_IN_PROGRESS)
    assert rotation is not None and (rotation.status, rotation.reason) == ("True", "Renewing")
    # The overlap: both certificates are trusted until the cut-over.
    assert h.api.trusted_fingerprints() == {old.fingerprint, new.fingerprint}
    assert result.wakeup == old.not_after
    assert len(h.events("planned", "Renewing")) == 1

    h.fake.set(old.not_after - SECOND)
    h.settle("planned")
    assert h.status("planned").current == old

    h.fake.set(old.not_after)
    result = h.run("planned")
    # The result carries the decision the pass ended on: after the cut-over, nothing left to do.
    assert result.decision.action is policy.Action.UP_TO_DATE
    after = h.status("planned")
    assert after.stage == "Active"
    assert after.current is not None and after.current.fingerprint == new.fingerprint
    assert after.current.secret_name == "planned-tls"
    assert after.next is None
    assert [(e.serial, e.reason, e.retired_at) for e in after.history] == [(old.serial, "Superseded", old.not_after)]
    assert old.fingerprint in after.revoked_fingerprints
    assert h.secret_fingerprint("planned-tls") == new.fingerprint
    assert h.api.secret("planned-tls-next") is None
    assert h.api.trusted_fingerprints() == {new.fingerprint}
    rotation = condition(after, names.ROTATION_IN_PROGRESS)
    assert rotation is not None and rotation.status == "False"
    (cutover,) = h.events("planned", "CutOver")
    message = str(cutover.message)
    assert "expired" in message and new.serial in message
    # The new current renews a year after it was issued, not at once.
    assert after.renewal_time == new.not_after - datetime.timedelta(hours=2160)
    assert after.renewal_time is not None and after.renewal_time > h.fake.now()
    assert h.keygen.calls == 2


def test_cutover_by_annotation_accepts_the_serial_as_openssl_prints_it(harness: Harness) -> None:
    h = harness
    status = rotating(h, "annotated")
    assert status.current is not None and status.next is not None
    old, new = status.current, status.next
    openssl_form = ":".join(new.serial[i : i + 2] for i in range(0, len(new.serial), 2)).lower()
    h.api.cutover("annotated", openssl_form)
    h.run("annotated")
    after = h.status("annotated")
    assert after.current is not None and after.current.fingerprint == new.fingerprint
    assert [(e.serial, e.reason) for e in after.history] == [(old.serial, "Superseded")]
    # The annotation stays behind and now names the current certificate: a no-op, not a refusal.
    h.settle("annotated")
    assert condition(h.status("annotated"), names.CUTOVER_REFUSED) is None
    (event,) = h.events("annotated", "CutOver")
    assert f"cutting over to serial {new.serial}" in str(event.message)


def test_emergency_during_a_planned_rotation_discards_the_pending_next(harness: Harness) -> None:
    h = harness
    before = rotating(h, "busy")
    assert before.current is not None and before.next is not None
    h.api.emergency("busy", "INC-2002")
    h.settle("busy")
    status = h.status("busy")
    assert status.stage == "Compromised"
    assert status.next is not None and status.next.reason == "Emergency"
    assert status.next.fingerprint not in (before.next.fingerprint, before.current.fingerprint)
    assert status.current is not None and status.current.compromised_by == "INC-2002"
    assert [(e.serial, e.reason, e.incident) for e in status.history] == [
        (before.next.serial, "Compromised", "INC-2002")
    ]
    assert {before.next.fingerprint, before.current.fingerprint} <= set(status.revoked_fingerprints)
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}
    assert h.secret_fingerprint("busy-tls") == before.current.fingerprint


# --- invariant 1: the current certificate changes only by cut-over -------------------------------------


def test_the_current_secret_never_changes_before_a_cutover(harness: Harness) -> None:
    h = harness
    current = active(h, "steady")
    renewal_time = h.status("steady").renewal_time
    assert renewal_time is not None
    bytes_before = h.api.secret("steady-tls")
    version = h.resource_version("steady-tls")

    start = h.fake.now()
    moments = [start + (renewal_time - start) * i / 7 for i in range(7)] + [renewal_time - SECOND, start - SECOND]
    # Noise a user might add: a refused cut-over, a refused emergency, an unrelated annotation.
    h.api.cutover("steady", "DEADBEEF")
    h.api.annotate("steady", unrelated="x")
    for moment in moments:
        h.fake.set(moment.replace(microsecond=0))
        h.run("steady")
        assert h.api.secret("steady-tls") == bytes_before
    h.api.emergency("steady", " ")
    h.settle("steady")

    assert h.resource_version("steady-tls") == version
    status = h.status("steady")
    assert status.current == current and status.next is None and status.revision == 1
    refused = condition(status, names.CUTOVER_REFUSED)
    assert refused is not None and refused.reason == "CutoverSerialMismatch"
    assert condition(status, names.EMERGENCY_REFUSED) is not None
    assert h.keygen.calls == 1

    # Rotating, all the way up to expiry: the next is trusted, the current Secret still untouched.
    h.fake.set(renewal_time)
    h.run("steady")
    for moment in (renewal_time + SECOND, current.not_after - SECOND):
        h.fake.set(moment)
        h.settle("steady", rounds=2)
        assert h.api.secret("steady-tls") == bytes_before
    assert h.resource_version("steady-tls") == version


# --- invariant 2: the trust store is a pure function of the statuses -----------------------------------


def test_two_certificates_share_one_trust_store_deterministically(harness: Harness) -> None:
    h = harness
    # Two years for sandbox: it is not due yet when the clock moves to live's renewal time.
    sandbox = active(h, "sandbox", environment="sandbox", duration="17520h")
    live = active(h, "live", environment="live")
    expected = trust.assemble([sandbox.certificate, live.certificate])
    assert (h.api.secret("webhook-trust") or {})[names.TRUST_KEY] == expected
    assert h.api.trusted_fingerprints() == {sandbox.fingerprint, live.fingerprint}

    # Nothing changed: reconciling either, in any order, writes nothing.
    version = h.resource_version("webhook-trust")
    for name in ("live", "sandbox", "live", "sandbox"):
        h.run(name)
    reconcile.sync_trust(h.ctx, reconcile.snapshot(h.ctx, h.api.namespace), h.api.namespace, "webhook-trust")
    assert h.resource_version("webhook-trust") == version
    recorded = [h.status(n).trust for n in ("sandbox", "live")]
    written = [models.TrustStoreRecord(secret_name="webhook-trust")]
    assert (
        recorded
        == [models.TrustStatus(secret_name="webhook-trust", hash=trust.trust_hash(expected), stores=written)] * 2
    )

    # A rotation of one adds its next beside both currents.
    renewal_time = h.status("live").renewal_time
    assert renewal_time is not None
    h.fake.set(renewal_time)
    h.settle("live")
    pending = h.status("live").next
    assert pending is not None
    assert h.api.trusted_fingerprints() == {sandbox.fingerprint, live.fingerprint, pending.fingerprint}
    expected = trust.assemble([pending.certificate, live.certificate, sandbox.certificate])
    assert (h.api.secret("webhook-trust") or {})[names.TRUST_KEY] == expected
    version = h.resource_version("webhook-trust")
    h.run("sandbox")
    assert h.status("sandbox").stage == "Active"
    assert h.resource_version("webhook-trust") == version


def test_a_revoked_fingerprint_never_returns_even_from_a_stale_status(harness: Harness) -> None:
    h = harness
    compromised = active(h, "sandbox", environment="sandbox")
    live = active(h, "live", environment="live")
    stale = h.api.get("sandbox")["status"]

    h.api.emergency("sandbox", "INC-7")
    h.settle("sandbox")
    replacement = h.status("sandbox").next
    assert replacement is not None
    assert h.api.trusted_fingerprints() == {live.fingerprint, replacement.fingerprint}
    revoked = h.secret_annotations("webhook-trust")[names.REVOKED_ANNOTATION]
    assert compromised.fingerprint in revoked.split(",")

    # A restored backup or a lagging writer puts the old status back; the other object's reconcile and
    # a bare trust sync read it, and still leave the revoked certificate out.
    now = h.api.get("sandbox")["status"]
    h.api.custom.patch_namespaced_custom_object_status(
        models.GROUP,
        models.VERSION,
        h.api.namespace,
        models.PLURAL,
        "sandbox",
        {"status": resources.status_patch(now, stale)},
    )
    assert h.status("sandbox").current == compromised and h.status("sandbox").next is None
    h.run("live")
    assert compromised.fingerprint not in h.api.trusted_fingerprints()
    reconcile.sync_trust(h.ctx, reconcile.snapshot(h.ctx, h.api.namespace), h.api.namespace, "webhook-trust")
    assert h.api.trusted_fingerprints() == {live.fingerprint}


@pytest.mark.parametrize(
    ("policy_name", "trusted_during"),
    [("RevokeImmediately", {"next"}), ("KeepUntilCutover", {"current", "next"})],
)
def test_emergency_policy_decides_what_stays_trusted_until_cutover(
    harness: Harness, policy_name: str, trusted_during: set[str]
) -> None:
    h = harness
    old = active(h, "incident", emergencyPolicy=policy_name)
    h.api.emergency("incident", "INC-9")
    h.settle("incident")
    status = h.status("incident")
    assert status.stage == "Compromised" and status.next is not None
    by_role = {"current": old.fingerprint, "next": status.next.fingerprint}
    assert h.api.trusted_fingerprints() == {by_role[r] for r in trusted_during}
    assert (old.fingerprint in status.revoked_fingerprints) is (policy_name == "RevokeImmediately")
    compromised = condition(status, names.COMPROMISED)
    assert compromised is not None and compromised.status == "True" and "INC-9" in compromised.message

    h.api.cutover("incident", status.next.serial)
    h.settle("incident")
    after = h.status("incident")
    assert after.stage == "Active"
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}
    assert [(e.serial, e.reason, e.incident) for e in after.history] == [(old.serial, "Compromised", "INC-9")]
    assert old.fingerprint in after.revoked_fingerprints
    assert h.api.secret("incident-tls-next") is None
    cleared = condition(after, names.COMPROMISED)
    assert cleared is not None and cleared.status == "False"
    # As stored, not only as computed: the merge patch must drop the old mark from the new current.
    assert after.current is not None and after.current.compromised_by is None


# --- invariant 3: crash-safe write order ---------------------------------------------------------------


CrashPoint = Callable[[dict[str, Any], dict[str, Any]], bool]
Arm = Callable[[CrashPoint], None]


@pytest.fixture
def crash(monkeypatch: pytest.MonkeyPatch) -> Iterator[Arm]:
    """Arm a one-shot crash: the first status patch for which ``when(old, new)`` holds raises instead."""
    original = resources.patch_status
    armed: list[CrashPoint] = []

    def patch_status(
        clients: kube_client.Clients,
        namespace: str,
        name: str,
        old: dict[str, Any],
        new: dict[str, Any],
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        if armed and armed[0](old, new):
            armed.clear()
            raise SimulatedCrash(f"crashed before recording status of {name}")
        return original(clients, namespace, name, old, new, **kwargs)

    monkeypatch.setattr(resources, "patch_status", patch_status)
    yield armed.append
    assert not armed, "the crash point was never reached"


def _fingerprint_of(record: object) -> str | None:
    return record.get("fingerprint") if isinstance(record, dict) else None


def records_a_next(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return _fingerprint_of(new.get("next")) not in (None, _fingerprint_of(old.get("next")))


def records_a_new_current(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return old.get("current") is not None and _fingerprint_of(new.get("current")) != _fingerprint_of(old["current"])


def test_crash_after_the_planned_next_secret_is_written_adopts_it(harness: Harness, crash: Arm) -> None:
    h = harness
    current = active(h, "planned")
    renewal_time = h.status("planned").renewal_time
    assert renewal_time is not None
    h.fake.set(renewal_time)
    crash(records_a_next)
    with pytest.raises(SimulatedCrash):
        h.run("planned")
    written = h.secret_fingerprint("planned-tls-next")
    assert written is not None and h.status("planned").next is None
    assert h.keygen.calls == 2

    h.fake.advance(datetime.timedelta(minutes=10))
    h.settle("planned")
    status = h.status("planned")
    assert status.next is not None and status.next.fingerprint == written
    assert status.revision == 2 and status.current == current
    assert h.keygen.calls == 2
    assert len(h.events("planned", "Renewing")) == 1
    assert h.api.trusted_fingerprints() == {current.fingerprint, written}


@pytest.mark.parametrize("during", ["idle", "planned rotation"])
def test_crash_after_the_emergency_next_secret_is_written_rotates_exactly_once(
    harness: Harness, crash: Arm, during: str
) -> None:
    h = harness
    if during == "planned rotation":
        rotating(h, "sos")
    else:
        active(h, "sos")
    before = h.status("sos")
    assert before.current is not None
    keys_before = h.keygen.calls
    h.api.emergency("sos", "INC-3003")
    crash(records_a_next)
    with pytest.raises(SimulatedCrash):
        h.run("sos")
    written = h.secret_fingerprint("sos-tls-next")
    assert written is not None and written != (before.next.fingerprint if before.next else None)
    # Containment was recorded before the key was generated; the replacement is not recorded yet.
    contained = h.status("sos")
    assert contained.last_emergency_rotation is not None and contained.next is None
    assert contained.current is not None and contained.current.compromised_by == "INC-3003"

    h.settle("sos")
    status = h.status("sos")
    assert status.next is not None and status.next.fingerprint == written and status.next.reason == "Emergency"
    assert status.revision == before.revision + 1
    assert status.last_emergency_rotation is not None and status.last_emergency_rotation.reference == "INC-3003"
    assert h.keygen.calls == keys_before + 1
    assert len(h.events("sos", "EmergencyRotation")) == 1
    assert h.api.trusted_fingerprints() == {written}
    if before.next is not None:
        assert [(e.serial, e.reason) for e in status.history] == [(before.next.serial, "Compromised")]


@pytest.mark.parametrize("by", ["annotation", "expiry"])
def test_crash_after_the_current_secret_is_rewritten_finishes_the_cutover_once(
    harness: Harness, crash: Arm, by: str
) -> None:
    h = harness
    before = rotating(h, "switch")
    assert before.current is not None and before.next is not None
    old, new = before.current, before.next
    if by == "annotation":
        h.api.cutover("switch", new.serial)
    else:
        h.fake.set(old.not_after)
    crash(records_a_new_current)
    with pytest.raises(SimulatedCrash):
        h.run("switch")
    # The provider's copy is now the new key; status still names the old one as current.
    assert h.secret_fingerprint("switch-tls") == new.fingerprint
    assert h.status("switch").current == old

    h.settle("switch")
    status = h.status("switch")
    assert status.current is not None and status.current.fingerprint == new.fingerprint
    assert status.next is None and status.revision == before.revision
    assert [(e.serial, e.reason) for e in status.history] == [(old.serial, "Superseded")]
    assert h.api.secret("switch-tls-next") is None
    assert h.api.trusted_fingerprints() == {new.fingerprint}
    (event,) = h.events("switch", "CutOver")
    assert "interrupted" in str(event.message)
    ready = condition(status, names.READY)
    assert ready is not None and ready.status == "True"
    assert h.keygen.calls == 2


def test_crash_after_the_first_key_is_written_adopts_it(harness: Harness, crash: Arm) -> None:
    h = harness
    h.create("fresh")
    crash(lambda old, new: old.get("current") is None and new.get("current") is not None)
    with pytest.raises(SimulatedCrash):
        h.run("fresh")
    written = h.secret_fingerprint("fresh-tls")
    assert written is not None and h.status("fresh").current is None

    h.settle("fresh")
    status = h.status("fresh")
    assert status.current is not None and status.current.fingerprint == written
    assert status.revision == 1 and status.stage == "Active"
    assert h.keygen.calls == 1
    assert h.api.trusted_fingerprints() == {written}


def test_crash_before_the_trust_store_is_updated_is_repaired_without_a_second_rotation(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    old = active(h, "untrusted")
    h.api.emergency("untrusted", "INC-5")
    original = secrets.write

    def crash_on_trust(
        clients: kube_client.Clients, namespace: str, name: str, **kwargs: Any
    ) -> secrets.SecretData | None:
        if name == "webhook-trust":
            raise SimulatedCrash("crashed before writing the trust store")
        return original(clients, namespace, name, **kwargs)

    monkeypatch.setattr(secrets, "write", crash_on_trust)
    with pytest.raises(SimulatedCrash):
        h.run("untrusted")
    monkeypatch.setattr(secrets, "write", original)
    recorded = h.status("untrusted")
    # Containment is recorded before anything else: no key has been generated yet.
    assert recorded.current is not None and recorded.current.compromised_by == "INC-5"
    assert old.fingerprint in recorded.revoked_fingerprints
    assert recorded.next is None and recorded.revision == 1 and h.keygen.calls == 1
    # The window the order leaves: status says revoked, the trust store does not know yet.
    assert old.fingerprint in h.api.trusted_fingerprints()

    h.settle("untrusted")
    status = h.status("untrusted")
    assert status.next is not None and status.next.reason == "Emergency" and status.revision == 2
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}
    assert h.keygen.calls == 2


def test_crash_before_the_old_key_is_deleted_deletes_it_next_time(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    before = rotating(h, "late")
    assert before.next is not None
    h.api.cutover("late", before.next.serial)
    original = secrets.delete

    def crash_on_delete(clients: kube_client.Clients, namespace: str, name: str, **_: object) -> bool:
        raise SimulatedCrash(f"crashed before deleting {name}")

    monkeypatch.setattr(secrets, "delete", crash_on_delete)
    with pytest.raises(SimulatedCrash):
        h.run("late")
    monkeypatch.setattr(secrets, "delete", original)
    # Status and trust already moved on; the old key Secret is still there.
    recorded = h.status("late").current
    assert recorded is not None and recorded.fingerprint == before.next.fingerprint
    assert h.api.trusted_fingerprints() == {before.next.fingerprint}
    assert h.secret_fingerprint("late-tls-next") == before.next.fingerprint

    h.settle("late")
    assert h.api.secret("late-tls-next") is None
    status = h.status("late")
    assert status.current is not None and status.current.fingerprint == before.next.fingerprint
    assert len(status.history) == 1
    assert h.api.trusted_fingerprints() == {before.next.fingerprint}


# --- invariant 4: each emergency reference is handled exactly once -------------------------------------


def test_each_emergency_reference_is_handled_exactly_once(harness: Harness) -> None:
    h = harness
    first = active(h, "once")
    h.api.emergency("once", "INC-1")
    h.settle("once", rounds=4)
    status = h.status("once")
    assert status.revision == 2 and status.next is not None
    assert len(h.events("once", "EmergencyRotation")) == 1

    # Still annotated after the cut-over: nothing happens again.
    h.api.cutover("once", status.next.serial)
    h.settle("once", rounds=4)
    after = h.status("once")
    assert after.stage == "Active" and after.revision == 2 and after.next is None
    h.fake.advance(datetime.timedelta(days=30))
    h.api.emergency("once", "INC-1")
    h.settle("once")
    assert h.status("once").revision == 2
    assert len(h.events("once", "EmergencyRotation")) == 1
    assert h.keygen.calls == 2

    # A new reference is a new incident.
    h.api.emergency("once", "INC-2")
    h.settle("once")
    second = h.status("once")
    assert second.revision == 3 and second.stage == "Compromised"
    assert second.last_emergency_rotation is not None and second.last_emergency_rotation.reference == "INC-2"
    assert len(h.events("once", "EmergencyRotation")) == 2
    assert first.fingerprint in second.revoked_fingerprints

    # After its cut-over, an old manifest puts INC-1 back (a GitOps sync): already handled, no rotation.
    assert second.next is not None
    h.api.cutover("once", second.next.serial)
    h.settle("once")
    h.api.emergency("once", "INC-1")
    h.settle("once")
    final = h.status("once")
    assert final.stage == "Active" and final.revision == 3 and final.next is None
    assert final.current is not None and final.current.fingerprint == second.next.fingerprint
    assert h.api.trusted_fingerprints() == {second.next.fingerprint}
    assert len(h.events("once", "EmergencyRotation")) == 2


# --- adoption and broken Secrets -----------------------------------------------------------------------


def _tls_secret(name: str, key_pem: bytes, cert_pem: bytes) -> kubernetes.client.V1Secret:
    return kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name=name),
        type="kubernetes.io/tls",
        string_data={names.TLS_KEY: key_pem.decode(), names.TLS_CERT: cert_pem.decode()},
    )


def test_a_valid_secret_made_by_hand_is_adopted_without_a_new_key(harness: Harness) -> None:
    h = harness
    subject = models.Subject(common_name="adopt.webhooks.example.com")
    pair = pki.new_key_pair(subject, h.fake.now(), datetime.timedelta(hours=8760))
    h.api.core.create_namespaced_secret(h.api.namespace, _tls_secret("adopt-tls", pair.key_pem, pair.cert_pem))
    before = h.api.secret("adopt-tls")

    h.create("adopt")
    h.settle("adopt")
    status = h.status("adopt")
    assert h.keygen.calls == 0
    assert status.current is not None and status.current.fingerprint == pki.inspect(pair.cert_pem).fingerprint
    assert status.revision == 1 and status.stage == "Active"
    assert h.api.secret("adopt-tls") == before
    assert h.api.trusted_fingerprints() == {status.current.fingerprint}
    assert len(h.events("adopt", "Adopted")) == 1
    assert not h.events("adopt", "Issued")


@pytest.mark.parametrize("when", ["before the certificate", "after the first issue"])
def test_a_key_that_does_not_match_its_certificate_is_reported_and_left_alone(harness: Harness, when: str) -> None:
    h = harness
    subject = models.Subject(common_name="mismatch.webhooks.example.com")
    one = pki.new_key_pair(subject, h.fake.now(), datetime.timedelta(hours=8760))
    other = pki.new_key_pair(subject, h.fake.now(), datetime.timedelta(hours=8760))
    if when == "before the certificate":
        h.api.core.create_namespaced_secret(h.api.namespace, _tls_secret("odd-tls", other.key_pem, one.cert_pem))
        h.create("odd")
        keys = 0
    else:
        active(h, "odd")
        h.api.core.patch_namespaced_secret(
            "odd-tls", h.api.namespace, {"stringData": {names.TLS_KEY: other.key_pem.decode()}}
        )
        keys = 1
    before = h.api.secret("odd-tls")
    version = h.resource_version("odd-tls")
    renewal_time = h.fake.now() + datetime.timedelta(hours=8760 - 2160)

    for moment in (h.fake.now(), renewal_time, renewal_time + datetime.timedelta(days=200)):
        h.fake.set(moment)
        result = h.run("odd")
        assert (result.decision.action, result.decision.reason) == (policy.Action.NOT_READY, "KeyMismatch")
    status = h.status("odd")
    ready = condition(status, names.READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "KeyMismatch")
    assert "emergency-rotation" in ready.message
    assert h.api.secret("odd-tls") == before and h.resource_version("odd-tls") == version
    assert h.api.secret("odd-tls-next") is None
    assert h.keygen.calls == keys
    assert len(h.events("odd", "KeyMismatch")) == 1
    # The key never leaks into what users read.
    key_text = other.key_pem.decode().splitlines()[1]
    assert key_text not in str(h.api.get("odd")) and key_text not in ready.message


def test_an_emergency_rotation_recovers_a_broken_current_secret(harness: Harness) -> None:
    # The documented recovery, end to end: the Secret is broken, an emergency issues a new key, and the
    # cut-over puts it where the provider's copy is read from.
    h = harness
    old = active(h, "repair")
    h.api.core.patch_namespaced_secret("repair-tls", h.api.namespace, {"stringData": {names.TLS_KEY: "garbage"}})
    h.settle("repair")
    ready = condition(h.status("repair"), names.READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "SecretCorrupted")

    h.api.emergency("repair", "INC-42")
    h.settle("repair")
    status = h.status("repair")
    assert status.stage == "Compromised" and status.next is not None
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}

    h.api.cutover("repair", status.next.serial)
    h.settle("repair")
    after = h.status("repair")
    assert after.current is not None and after.current.fingerprint == status.next.fingerprint
    assert h.secret_fingerprint("repair-tls") == status.next.fingerprint
    ready = condition(after, names.READY)
    assert ready is not None and ready.status == "True"
    assert [(e.serial, e.reason) for e in after.history] == [(old.serial, "Compromised")]
    assert h.api.secret("repair-tls-next") is None


def test_a_trust_secret_that_already_holds_the_endpoints_keys_keeps_them_byte_for_byte(harness: Harness) -> None:
    # The layout of ingress-nginx's client-certificate examples: the endpoint's own server certificate
    # and key in the Secret that also carries ca.crt.
    h = harness
    server = pki.new_key_pair(
        models.Subject(common_name="endpoint.example.com"), h.fake.now(), datetime.timedelta(days=90)
    )
    theirs = {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "notes": b"kept by hand"}
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            # Its owner's consent to its becoming a trust target (tests/integration/test_trust_consent.py).
            metadata=kubernetes.client.V1ObjectMeta(
                name="webhook-trust", annotations={names.TRUST_TARGET_ANNOTATION: "endpoint"}
            ),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode() for k, v in theirs.items()},
        ),
    )
    old = active(h, "endpoint")
    h.api.emergency("endpoint", "INC-11")
    h.settle("endpoint")
    status = h.status("endpoint")
    assert status.next is not None
    held = h.api.secret("webhook-trust") or {}
    assert {k: held.get(k) for k in theirs} == theirs
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}
    assert old.fingerprint in h.secret_annotations("webhook-trust")[names.REVOKED_ANNOTATION]
    assert h.api.secret_object("webhook-trust").type == "kubernetes.io/tls"


# --- names at the API server's limits ------------------------------------------------------------------

# The longest metadata.name there is: a DNS subdomain of 253 characters, with dots.
LONGEST_NAME = ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 60, "e" * 9])


def test_a_253_character_name_is_ready_with_events_labels_and_a_bundle(harness: Harness) -> None:
    # Event names, label values and bundle file names all derive from the object's name and have
    # limits of their own (253, 63 and 253 characters): each must still be accepted.
    h = harness
    assert len(LONGEST_NAME) == 253
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="pw"), string_data={"password": "correct horse"}
        ),
    )
    h.create(
        LONGEST_NAME,
        environment="live",
        subject={"commonName": "long.webhooks.example.com"},
        secretName="long-tls",
        bundle={"passwordSecretRef": {"name": "pw"}},
    )
    h.settle(LONGEST_NAME)

    status = h.status(LONGEST_NAME)
    ready = condition(status, names.READY)
    assert ready is not None and ready.status == "True", ready
    bundle_ready = condition(status, names.BUNDLE_READY)
    assert bundle_ready is not None and bundle_ready.status == "True", bundle_ready
    assert status.current is not None

    recorded = h.events(LONGEST_NAME, "Issued") + h.events(LONGEST_NAME, "BundleWritten")
    assert {e.reason for e in recorded} == {"Issued", "BundleWritten"}
    for event in recorded:
        assert event.metadata is not None and len(event.metadata.name or "") <= 253
        assert event.involved_object.name == LONGEST_NAME

    key_secret = h.api.secret_object("long-tls").metadata
    assert key_secret is not None
    assert (key_secret.labels or {}).get(names.INSTANCE_LABEL) == names.label_value(LONGEST_NAME)

    files = h.api.secret("long-tls-bundle") or {}
    stem = pki.bundle_stem("live", LONGEST_NAME, status.current.serial)
    assert sorted(files) == sorted(f"{stem}{suffix}" for suffix in pki.BUNDLE_SUFFIXES)
    for file_name in files:
        assert re.fullmatch(r"[-._a-zA-Z0-9]+", file_name) and len(file_name) <= 253, file_name
    assert status.bundle is not None and status.bundle.files == sorted(files)
    assert pki.inspect(files[f"{stem}.crt.pem"]).fingerprint == status.current.fingerprint

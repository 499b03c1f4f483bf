"""Containment nothing can block: an ownership conflict, a failed call or its retry never stands between an
emergency annotation and the trust store losing the compromised certificate.

In-process against the real API server with a fake clock (``test_service``'s harness), and the engine
where the question is how a failed containment is retried. Each test makes the situation a co-tenant or
an unlucky day makes (a Secret someone else made at a name the object would write, an API error right
after containment recorded status) and checks that the compromised certificate is gone from ``ca.crt``
before anything else happens, and that only the disputed Secret's step is refused.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import kubernetes
import pytest

from tests import whc
from tests.integration.test_service import Harness, active, condition, harness
from webhookcerts.domain import models, names, pki
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import configmaps, secrets
from webhookcerts.service import engine, reconcile

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests


def _foreign_secret(h: Harness, name: str) -> dict[str, bytes]:
    """A Secret of someone else's (no label of ours) at ``name``; what it holds."""
    data = {"note": b"not the operator's"}
    h.api.core.create_namespaced_secret(
        h.api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        ),
    )
    return data


def _urgent_pass(h: Harness, name: str) -> reconcile.Result | None:
    """What the engine's urgent lane runs when the emergency annotation's watch event arrives."""
    ns = h.api.namespace
    return reconcile.run(h.ctx, reconcile.snapshot(h.ctx, ns), ns, name, urgent=True)


@pytest.mark.parametrize(
    ("disputed", "spec"),
    [
        # spec.bundle pointed at an existing Secret of someone else's (a mistake anyone can make).
        ("held-tls-bundle", {"bundle": {"passwordSecretRef": {"name": "pw"}}}),
        # A Secret someone created where the replacement key would go, ahead of the incident.
        ("held-tls-next", {}),
    ],
    ids=["bundle", "next"],
)
def test_an_ownership_conflict_never_blocks_containment(harness: Harness, disputed: str, spec: dict[str, Any]) -> None:
    h = harness
    _foreign_secret(h, "pw")
    h.api.core.patch_namespaced_secret("pw", h.api.namespace, {"stringData": {"password": "correct horse"}})
    foreign = _foreign_secret(h, disputed)
    compromised = active(h, "held", **spec)
    neighbour = active(h, "neighbour", environment="live")
    if disputed.endswith("-bundle"):
        # Reported at once, and refusing only what would write the disputed Secret. (The next key's
        # name is only ever the operator's: a Secret there is found when the replacement is created.)
        conflict = condition(h.status("held"), names.SECRET_CONFLICT)
        assert conflict is not None and disputed in conflict.message
    assert h.api.trusted_fingerprints() == {compromised.fingerprint, neighbour.fingerprint}

    h.api.emergency("held", "INC-4711")
    _urgent_pass(h, "held")
    # Contained by the urgent pass itself, conflict or not.
    assert h.api.trusted_fingerprints() == {neighbour.fingerprint}
    status = h.status("held")
    assert status.current is not None and status.current.compromised_by == "INC-4711"
    assert compromised.fingerprint in status.revoked_fingerprints

    h.settle("held")
    status = h.status("held")
    assert compromised.fingerprint not in h.api.trusted_fingerprints()
    assert h.api.secret(disputed) == foreign, "the disputed Secret was written"
    ready = condition(status, names.READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "SecretConflict")
    conflict = condition(status, names.SECRET_CONFLICT)
    assert conflict is not None and disputed in conflict.message
    if disputed.endswith("-next"):
        # The replacement would go into the disputed Secret: refused, and said so.
        assert status.next is None
    else:
        # Everything but the bundle goes on: the replacement is issued and trusted.
        assert status.next is not None and status.next.reason == "Emergency"
        assert h.api.trusted_fingerprints() == {status.next.fingerprint, neighbour.fingerprint}


class _FailingTrustWrite:
    """The trust Secret write answers 500 once: the API server failed right after containment recorded status."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failed = 0
        original = secrets.write

        def write(clients: kube_client.Clients, namespace: str, name: str, **kwargs: Any) -> Any:
            if name == "webhook-trust" and not self.failed:
                self.failed += 1
                raise kubernetes.client.ApiException(status=500, reason="Internal Server Error")
            return original(clients, namespace, name, **kwargs)

        monkeypatch.setattr(secrets, "write", write)


class _WatchingKeygen:
    """The real key generator, noting what the trust store held each time a key was asked for."""

    def __init__(self, api: whc.Api) -> None:
        self.api = api
        self.trusted_at_call: list[set[str]] = []

    def __call__(self, subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> pki.KeyPair:
        self.trusted_at_call.append(self.api.trusted_fingerprints())
        return pki.new_key_pair(subject, now, duration)


def test_a_failed_containment_is_retried_urgent_and_trust_goes_before_the_key(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    keygen = _WatchingKeygen(h.api)
    ctx = reconcile.Context(h.ctx.clients, clock=h.fake, keygen=keygen)
    compromised = active(h, "held")
    h.api.emergency("held", "INC-500")
    failing = _FailingTrustWrite(monkeypatch)
    eng = engine.Engine(ctx, workers=1)
    for body in h.api.custom.list_namespaced_custom_object(
        models.GROUP, models.VERSION, h.api.namespace, models.PLURAL
    )["items"]:
        eng.certificate_seen(body)
    for secret in secrets.list_managed(ctx.clients, h.api.namespace):
        eng.view.put_secret(h.api.namespace, secret)
    eng.synced()
    item = ("certificate", h.api.namespace, "held")
    # The urgent lane's pass: status recorded, then the trust write fails.
    assert eng.queue.get(urgent_only=True, timeout=0) == item
    eng.process(item, urgent=True)
    eng.queue.done(item)
    assert failing.failed == 1
    status = h.status("held")
    assert status.current is not None and status.current.compromised_by == "INC-500"
    assert compromised.fingerprint in h.api.trusted_fingerprints(), "the write was meant to fail"
    # The retry is urgent (after its backoff): only the urgent lane would take it.
    retried = eng.queue.get(urgent_only=True, timeout=30)
    assert retried == item
    eng.process(item, urgent=True)
    eng.queue.done(item)
    assert compromised.fingerprint not in h.api.trusted_fingerprints()
    assert keygen.trusted_at_call == [], "the urgent lane generated a key"
    # Then the ordinary pass issues the replacement.
    eng.process(item)
    assert h.status("held").next is not None
    assert keygen.trusted_at_call and compromised.fingerprint not in keygen.trusted_at_call[0]
    eng.stop()


def test_a_pass_that_finds_containment_recorded_but_not_written_writes_trust_before_the_key(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process died (or the retry was lost) between containment's status and its trust write."""
    h = harness
    keygen = _WatchingKeygen(h.api)
    h.ctx = reconcile.Context(h.ctx.clients, clock=h.fake, keygen=keygen)
    compromised = active(h, "held")
    keygen.trusted_at_call.clear()
    h.api.emergency("held", "INC-9")
    failing = _FailingTrustWrite(monkeypatch)
    with pytest.raises(kubernetes.client.ApiException):
        _urgent_pass(h, "held")
    assert failing.failed == 1
    assert compromised.fingerprint in h.api.trusted_fingerprints(), "the write was meant to fail"
    # An ordinary pass (after a restart, say): the trust store first, then the replacement key.
    h.run("held")
    assert len(keygen.trusted_at_call) == 1
    assert compromised.fingerprint not in keygen.trusted_at_call[0]
    status = h.status("held")
    assert status.next is not None and status.next.reason == "Emergency"
    assert h.api.trusted_fingerprints() == {status.next.fingerprint}


def test_a_trust_secret_relabelled_as_key_material_is_still_contained(harness: Harness) -> None:
    """Anyone who may edit the trust Secret may relabel it: its labels must not turn containment off."""
    h = harness
    compromised = active(h, "held")
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        h.api.namespace,
        {
            "metadata": {
                "labels": {names.ROLE_LABEL: "key"},
                "annotations": {names.OWNER_ANNOTATION: "someone-else"},
            }
        },
    )
    h.api.emergency("held", "INC-RELABEL")
    _urgent_pass(h, "held")
    assert compromised.fingerprint not in h.api.trusted_fingerprints()
    labels = h.api.secret_object("webhook-trust").metadata.labels or {}
    assert labels.get(names.ROLE_LABEL) == "trust"


def test_a_configmap_write_that_failed_during_containment_is_written_by_the_retry(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trust Secret was written, the ConfigMap copy was not: the retry finds the Secret unchanged
    and must still bring the ConfigMap to it, not wait for the next recheck."""
    h = harness
    h.ctx = reconcile.Context(h.ctx.clients, clock=h.fake, keygen=h.keygen, bundle_recheck_seconds=3600)
    compromised = active(h, "held", trust={"secretName": "webhook-trust", "configMap": {"name": "gateway-ca"}})

    def copied() -> set[str]:
        found = h.api.core.read_namespaced_config_map("gateway-ca", h.api.namespace)
        return whc.fingerprints_in((found.data or {}).get(names.TRUST_KEY, "").encode())

    assert copied() == {compromised.fingerprint}
    failed: list[str] = []
    original = configmaps.write

    def write(clients: kube_client.Clients, namespace: str, name: str, **kwargs: Any) -> bool:
        if not failed:
            failed.append(name)
            raise kubernetes.client.ApiException(status=500, reason="Internal Server Error")
        return original(clients, namespace, name, **kwargs)

    monkeypatch.setattr(configmaps, "write", write)
    h.api.emergency("held", "INC-CM")
    with pytest.raises(kubernetes.client.ApiException):
        _urgent_pass(h, "held")
    assert failed == ["gateway-ca"]
    assert compromised.fingerprint not in h.api.trusted_fingerprints()
    assert compromised.fingerprint in copied(), "the ConfigMap write was meant to fail"
    _urgent_pass(h, "held")
    assert compromised.fingerprint not in copied()

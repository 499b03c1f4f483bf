"""The trust store under bad input: unreadable neighbours, hand edits, size limits. It fails closed.

In-process against the real API server with a fake clock (``test_service``'s harness).
"""

from __future__ import annotations

import base64

import pytest

from tests import whc
from tests.integration.test_service import Harness, active, condition, harness
from webhookcerts.domain import models, names, trust
from webhookcerts.service import reconcile, trust_store, trust_union

pytestmark = pytest.mark.integration

__all__ = ["harness"]  # the fixture, imported for this module's tests


def _patch_status(h: Harness, name: str, status: dict[str, object]) -> None:
    h.api.custom.patch_namespaced_custom_object_status(
        models.GROUP, models.VERSION, h.api.namespace, models.PLURAL, name, {"status": status}
    )


def test_an_unreadable_neighbour_keeps_its_certificates_and_never_blocks_containment(harness: Harness) -> None:
    h = harness
    mine, theirs = active(h, "mine"), active(h, "theirs")
    assert h.api.trusted_fingerprints() == {mine.fingerprint, theirs.fingerprint}
    # The neighbour's status now carries a certificate nobody can read (an edit, another version).
    record = h.api.get("theirs")["status"]["current"]
    _patch_status(h, "theirs", {"current": {**record, "certificate": "-----BEGIN CERTIFICATE-----\ngarbage"}})

    h.api.emergency("mine", "INC-9")
    h.settle("mine")
    trusted = h.api.trusted_fingerprints()
    # Containment went through; the neighbour's certificate did not drop out.
    assert mine.fingerprint not in trusted
    assert theirs.fingerprint in trusted
    incomplete = condition(h.status("mine"), names.TRUST_STORE_INCOMPLETE)
    assert incomplete is not None and incomplete.status == "True" and incomplete.reason == "UnreadableNeighbour"
    assert "theirs" in incomplete.message
    assert h.events("mine", "UnreadableNeighbour")


def test_a_hand_edited_trust_store_is_restored_with_an_event(harness: Harness) -> None:
    h = harness
    current = active(h, "edited")
    stranger = whc.fingerprints_in(trust.PLACEHOLDER_PEM)  # nothing: the placeholder admits nobody
    assert not stranger
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        h.api.namespace,
        {"data": {names.TRUST_KEY: base64.b64encode(b"edited by hand\n").decode()}},
    )
    ns = h.api.namespace
    reconcile.sync_trust(h.ctx, reconcile.snapshot(h.ctx, ns), ns, "webhook-trust")
    assert h.api.trusted_fingerprints() == {current.fingerprint}
    events = h.api.core.list_namespaced_event(ns, field_selector="involvedObject.name=webhook-trust").items
    assert [e.reason for e in events] == ["TrustStoreRestored"]
    assert events[0].involved_object.kind == "Secret"


def test_a_trust_store_past_the_secret_limit_is_refused_and_the_old_content_kept(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    first, second = active(h, "one"), active(h, "two")
    before = h.api.secret("webhook-trust")
    assert before is not None
    # The real limit is about 500 RSA-4096 certificates; a limit of two makes the third one too many.
    monkeypatch.setattr(trust_store, "SECRET_LIMIT", len(before[names.TRUST_KEY]) + 100)
    h.create("three")
    h.settle("three")
    assert h.api.secret("webhook-trust") == before
    refused = condition(h.status("three"), names.TRUST_STORE_INCOMPLETE)
    assert refused is not None and refused.reason == "TrustStoreTooLarge"
    assert "split the WebhookCertificates" in refused.message
    # A revocation makes the store smaller: it always goes through.
    h.api.emergency("one", "INC-1")
    h.settle("one")
    trusted = h.api.trusted_fingerprints()
    assert first.fingerprint not in trusted and second.fingerprint in trusted


def test_the_revoked_list_is_bounded_and_nothing_revoked_comes_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    first = active(h, "bounded")
    h.api.emergency("bounded", "INC-1")
    h.settle("bounded")
    pending = h.status("bounded").next
    assert pending is not None
    # The audit annotation holds 20 made-up fingerprints of long-gone objects beside the real one.
    ghosts = [f"{i:064x}" for i in range(20)]
    annotations = h.secret_annotations("webhook-trust")
    listed = annotations[names.REVOKED_ANNOTATION].split(",")
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        h.api.namespace,
        {"metadata": {"annotations": {names.REVOKED_ANNOTATION: ",".join(sorted([*listed, *ghosts]))}}},
    )
    monkeypatch.setattr(trust_union, "REVOKED_ANNOTATION_MAX", 200)
    h.api.cutover("bounded", pending.serial)
    h.settle("bounded")
    kept = h.secret_annotations("webhook-trust")[names.REVOKED_ANNOTATION]
    assert len(kept) <= 200
    assert first.fingerprint in kept.split(",")
    assert first.fingerprint not in h.api.trusted_fingerprints()

"""The trust store under bad input: unreadable neighbours, hand edits, size limits. It fails closed.

In-process against the real API server with a fake clock (``test_service``'s harness).
"""

from __future__ import annotations

import base64
import json

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


def test_past_the_limit_a_revocation_is_written_and_only_the_additions_left_out(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    first, second = active(h, "one"), active(h, "two")
    before = h.api.secret("webhook-trust")
    assert before is not None
    limit = len(before[names.TRUST_KEY]) + 100
    monkeypatch.setattr(trust_store, "SECRET_LIMIT", limit)
    # A neighbour's pending next and a third object wait outside: the store is full.
    renewal_time = h.status("two").renewal_time
    assert renewal_time is not None
    h.fake.set(renewal_time)
    h.settle("two")
    pending = h.status("two").next
    assert pending is not None
    third = active(h, "three")
    assert h.api.trusted_fingerprints() == {first.fingerprint, second.fingerprint}
    # The revocation plus what waits is longer than the store was; the revocation goes through alone.
    h.api.emergency("one", "INC-7")
    h.settle("one")
    assert h.api.trusted_fingerprints() == {second.fingerprint}
    held = h.api.secret("webhook-trust")
    assert held is not None and sum(len(k) + len(v) for k, v in held.items()) <= limit
    refused = condition(h.status("one"), names.TRUST_STORE_INCOMPLETE)
    assert refused is not None and refused.reason == "TrustStoreTooLarge"
    assert "left out" in refused.message
    assert {pending.fingerprint, third.fingerprint}.isdisjoint(h.api.trusted_fingerprints())


def test_a_forged_sources_entry_keeps_no_certificate_trusted(harness: Harness) -> None:
    h = harness
    current = active(h, "real")
    # The real case the sources annotation is for: deleted under Retain, its key Secret left behind.
    retained = active(h, "gone")
    h.api.custom.delete_namespaced_custom_object(models.GROUP, models.VERSION, h.api.namespace, models.PLURAL, "gone")
    ns = h.api.namespace
    reconcile.sync_trust(h.ctx, reconcile.snapshot(h.ctx, ns), ns, "webhook-trust")
    assert h.api.trusted_fingerprints() == {current.fingerprint, retained.fingerprint}
    # A certificate added by hand, with bookkeeping to match: a sources entry for an object that never
    # existed (retained) and the trust hash of the edited ca.crt.
    stranger = whc.self_signed_pem("stranger.example.com")
    (stranger_fp,) = whc.fingerprints_in(stranger)
    held = h.api.secret("webhook-trust")
    assert held is not None
    edited = held[names.TRUST_KEY] + stranger
    sources = json.loads(h.secret_annotations("webhook-trust")[names.SOURCES_ANNOTATION])
    sources["ghost"] = {"fingerprints": [stranger_fp], "retain": True}
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        ns,
        {
            "metadata": {
                "annotations": {
                    names.SOURCES_ANNOTATION: json.dumps(sources),
                    names.TRUST_HASH_ANNOTATION: trust.trust_hash(edited),
                }
            },
            "data": {names.TRUST_KEY: base64.b64encode(edited).decode()},
        },
    )
    assert stranger_fp in h.api.trusted_fingerprints()
    h.settle("real")
    assert h.api.trusted_fingerprints() == {current.fingerprint, retained.fingerprint}
    assert "ghost" not in json.loads(h.secret_annotations("webhook-trust")[names.SOURCES_ANNOTATION])
    events = h.api.core.list_namespaced_event(ns, field_selector="involvedObject.name=webhook-trust").items
    restored = [e for e in events if e.reason == "TrustStoreRestored"]
    assert len(restored) == 1 and "ghost" in restored[0].message and restored[0].type == "Warning"


def test_an_unreadable_neighbours_sources_entry_keeps_only_what_its_key_secret_holds(harness: Harness) -> None:
    h = harness
    mine, theirs = active(h, "mine"), active(h, "theirs")
    record = h.api.get("theirs")["status"]["current"]
    _patch_status(h, "theirs", {"current": {**record, "certificate": "-----BEGIN CERTIFICATE-----\ngarbage"}})
    # A certificate added by hand under the unreadable neighbour's entry, the trust hash to match.
    stranger = whc.self_signed_pem("stranger.example.com")
    (stranger_fp,) = whc.fingerprints_in(stranger)
    held = h.api.secret("webhook-trust")
    assert held is not None
    edited = held[names.TRUST_KEY] + stranger
    sources = json.loads(h.secret_annotations("webhook-trust")[names.SOURCES_ANNOTATION])
    sources["theirs"]["fingerprints"].append(stranger_fp)
    h.api.core.patch_namespaced_secret(
        "webhook-trust",
        h.api.namespace,
        {
            "metadata": {
                "annotations": {
                    names.SOURCES_ANNOTATION: json.dumps(sources),
                    names.TRUST_HASH_ANNOTATION: trust.trust_hash(edited),
                }
            },
            "data": {names.TRUST_KEY: base64.b64encode(edited).decode()},
        },
    )
    assert stranger_fp in h.api.trusted_fingerprints()
    h.settle("mine")
    # The neighbour's own certificate stays (its key Secret holds it); the hand-added one goes.
    assert h.api.trusted_fingerprints() == {mine.fingerprint, theirs.fingerprint}
    assert h.events("mine", "UnreadableNeighbour")

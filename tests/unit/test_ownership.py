"""The ownership rule: which claims on a Secret are refused, and the message that says what to rename."""

from __future__ import annotations

from webhookcerts.domain import names, ownership
from webhookcerts.domain.ownership import Claimant, Holder

MANAGED = {names.MANAGED_BY_LABEL: names.MANAGED_BY}
OWN = [("hooks-tls", "key"), ("hooks-tls-next", "next"), ("hooks-trust", "trust")]


def me(role: ownership.Role, name: str = "live", created: str = "2026-01-02T00:00:00Z") -> Claimant:
    return Claimant(name, role, created)


def test_a_secret_stamped_for_this_object_in_this_role_may_be_written() -> None:
    labels, annotations = ownership.stamp("live", "key")
    seen = ownership.holder("hooks-tls", {**MANAGED, **labels}, annotations)
    assert seen == Holder(True, "live", "key")
    assert ownership.conflict("hooks-tls", "key", me("key"), seen, [], OWN) is None


def test_another_objects_key_is_never_taken_and_the_message_says_what_to_rename() -> None:
    labels, annotations = ownership.stamp("sandbox", "key")
    seen = ownership.holder("hooks-tls", {**MANAGED, **labels}, annotations)
    problem = ownership.conflict("hooks-tls", "key", me("key"), seen, [], OWN)
    assert problem is not None
    assert "WebhookCertificate sandbox" in problem and "live" in problem and "spec.secretName" in problem


def test_the_same_object_in_another_role_is_a_conflict() -> None:
    labels, annotations = ownership.stamp("live", "next")
    seen = ownership.holder("hooks-tls", {**MANAGED, **labels}, annotations)
    assert ownership.conflict("hooks-tls", "key", me("key"), seen, [], OWN) is not None


def test_a_trust_secret_is_shared_and_a_users_secret_becomes_one_only_with_its_owners_consent() -> None:
    labels, _ = ownership.stamp("live", "trust")
    shared = ownership.holder("hooks-trust", {**MANAGED, **labels}, {})
    assert ownership.conflict("hooks-trust", "trust", me("trust"), shared, [me("trust", "sandbox")], OWN) is None
    # Someone else's Secret (an ingress's auth-tls-secret, another team's CA bundle): refused, and the
    # message says how its owner consents.
    users = ownership.holder("hooks-trust", {}, {})
    problem = ownership.conflict("hooks-trust", "trust", me("trust"), users, [], OWN)
    assert problem is not None
    assert f"kubectl annotate secret hooks-trust {names.TRUST_TARGET_ANNOTATION}=live" in problem
    assert "nothing was written" in problem
    # Consent for another object is none for this one; a list naming it, or *, is.
    for value, allowed in (("sandbox", False), ("sandbox, live", True), ("*", True), ("", False)):
        seen = ownership.holder("hooks-trust", {}, {names.TRUST_TARGET_ANNOTATION: value})
        assert (ownership.conflict("hooks-trust", "trust", me("trust"), seen, [], OWN) is None) is allowed, value
    # A key Secret of another object is no trust store.
    labels, annotations = ownership.stamp("sandbox", "key")
    key = ownership.holder("hooks-trust", {**MANAGED, **labels}, annotations)
    assert ownership.conflict("hooks-trust", "trust", me("trust"), key, [], OWN) is not None


def test_a_users_secret_may_be_adopted_as_a_key_but_never_overwritten_as_next_or_bundle() -> None:
    users = ownership.holder("x", {"app": "mine"}, {})
    assert ownership.conflict("x", "key", me("key"), users, [], OWN) is None
    for role in ("next", "bundle"):
        problem = ownership.conflict("x", role, me(role), users, [], OWN)
        assert problem is not None and "not written by webhookcerts" in problem


def test_before_the_secret_exists_the_older_claimant_gets_it() -> None:
    older = Claimant("aaa-older", "key", "2026-01-01T00:00:00Z")
    problem = ownership.conflict("hooks-tls-next", "next", me("next"), None, [older], OWN)
    assert problem is not None and "aaa-older" in problem
    younger = Claimant("zzz-younger", "key", "2026-01-03T00:00:00Z")
    assert ownership.conflict("hooks-tls-next", "next", me("next"), None, [younger], OWN) is None


def test_secrets_of_the_first_release_are_recognised_by_their_certificate_label() -> None:
    key = ownership.holder("hooks-tls", {**MANAGED, names.INSTANCE_LABEL: "live"}, {})
    assert key == Holder(True, "live", None)
    assert ownership.conflict("hooks-tls", "key", me("key"), key, [], OWN) is None
    assert ownership.holder("hooks-trust", MANAGED, {}) == Holder(True, None, "trust")


def test_a_long_owner_name_is_kept_whole_in_the_annotation() -> None:
    name = "a" * 200
    labels, annotations = ownership.stamp(name, "bundle")
    assert len(labels[names.INSTANCE_LABEL]) <= 63
    assert ownership.holder("b", {**MANAGED, **labels}, annotations).owner == name

"""The engine's view: newest version wins, WebhookCertificates indexed by trust Secret, echoes ignored."""

from __future__ import annotations

from typing import Any

from webhookcerts.kube import secrets
from webhookcerts.service import view


def body(name: str, version: int, trust: str = "webhook-trust", uid: str = "u1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"{uid}-{name}", "resourceVersion": str(version)},
        "spec": {
            "environment": "live",
            "subject": {"commonName": "webhooks.example.com"},
            "secretName": f"{name}-tls",
            "trust": {"secretName": trust},
            **spec,
        },
    }


def secret(name: str, version: int, uid: str = "s1") -> secrets.SecretData:
    return secrets.SecretData(name, secrets.OPAQUE, {"ca.crt": b""}, {}, {}, str(version), uid)


def test_a_late_watch_event_does_not_undo_the_operators_own_write() -> None:
    v = view.View()
    assert v.put_certificate(body("a", 5))[1] is True
    assert v.put_certificate(body("a", 7))[1] is True
    # The watch event for version 6 arrives after the write-through of version 7.
    assert v.put_certificate(body("a", 6))[1] is False
    # The echo of the operator's own write changes nothing, so it queues nothing.
    assert v.put_certificate(body("a", 7))[1] is False
    entry = v.certificate("ns", "a")
    assert entry is not None and entry.resource_version == "7"


def test_certificates_are_found_by_the_trust_secret_they_name_and_follow_a_move() -> None:
    v = view.View()
    v.put_certificate(body("sandbox", 1))
    v.put_certificate(body("live", 2))
    v.put_certificate(body("other", 3, trust="elsewhere"))
    assert [c.name for c in v.naming_trust("ns", "webhook-trust")] == ["live", "sandbox"]
    v.put_certificate(body("live", 4, trust="elsewhere"))
    assert [c.name for c in v.naming_trust("ns", "webhook-trust")] == ["sandbox"]
    assert [c.name for c in v.naming_trust("ns", "elsewhere")] == ["live", "other"]
    v.drop_certificate("ns", "sandbox")
    assert v.naming_trust("ns", "webhook-trust") == [] and not v.is_trust_secret("ns", "webhook-trust")


def test_a_re_created_object_replaces_the_old_one_whatever_its_version() -> None:
    v = view.View()
    v.put_certificate(body("a", 50, uid="old"))
    entry, changed = v.put_certificate(body("a", 3, uid="new"))
    assert changed and entry.uid == "new-a"


def test_an_unreadable_spec_is_held_with_its_problem_and_still_names_its_trust_secret() -> None:
    v = view.View()
    bad = body("a", 1)
    bad["spec"]["duration"] = "forever"
    entry, _ = v.put_certificate(bad)
    assert entry.spec is None and entry.problem and "duration" in entry.problem
    # The store it shares must know it is there, to keep its certificates rather than drop them.
    assert [e.name for e in v.naming_trust("ns", "webhook-trust")] == ["a"]
    assert v.claimants("ns", "a-tls") == []
    v.drop_certificate("ns", "a")
    assert v.naming_trust("ns", "webhook-trust") == []


def test_secrets_newest_wins_and_a_delete_of_an_older_incarnation_is_ignored() -> None:
    v = view.View()
    assert v.put_secret("ns", secret("t", 5))
    assert not v.put_secret("ns", secret("t", 4))
    assert not v.put_secret("ns", secret("t", 5))
    assert not v.drop_secret("ns", "t", uid="someone-else")
    assert v.secret("ns", "t") is not None
    assert v.drop_secret("ns", "t", uid="s1")
    # The operator's own delete already dropped it: the watch's DELETED then changes nothing.
    assert not v.drop_secret("ns", "t", uid="s1")

"""The view is complete, and passes may start, only once every watch it is filled from has listed:
the WebhookCertificates (Kopf) and the Secrets (the operator's reflector), in either order."""

from __future__ import annotations

import kubernetes
import pytest

from webhookcerts.domain import names
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secrets
from webhookcerts.service import engine, reconcile


@pytest.fixture
def eng() -> engine.Engine:
    # Not started: only the view's sync is looked at.
    return engine.Engine(reconcile.Context(kube_client.Clients(kubernetes.client.ApiClient())), workers=1)


@pytest.mark.parametrize(
    ("first", "second"), [(engine.CERTIFICATES, engine.SECRETS), (engine.SECRETS, engine.CERTIFICATES)]
)
def test_synced_only_when_both_watches_have_listed(eng: engine.Engine, first: str, second: str) -> None:
    eng.expect(engine.CERTIFICATES, engine.SECRETS)
    eng.synced(first)
    eng.synced(first)
    assert not eng.view.wait_synced(0)
    eng.synced(second)
    assert eng.view.wait_synced(0)


def test_without_expectations_the_first_call_completes_the_view(eng: engine.Engine) -> None:
    eng.synced()
    assert eng.view.wait_synced(0)


def _secret(name: str, version: str, labelled: bool = True) -> secrets.SecretData:
    labels = {names.MANAGED_BY_LABEL: names.MANAGED_BY} if labelled else {}
    return secrets.SecretData(
        name=name, type="Opaque", data={}, labels=labels, annotations={}, resource_version=version, uid=f"u-{name}"
    )


def test_a_listing_drops_what_it_lacks_unless_newer_or_not_the_operator_s(eng: engine.Engine) -> None:
    eng.view.mark_synced()  # queued work is looked at only once synced; not started, nothing runs
    for secret in (
        _secret("listed", "90"),
        _secret("deleted-unseen", "90"),  # held from the operator's own write, deleted while unwatched
        _secret("written-after", "150"),  # newer than the listing: the listing cannot speak of it
        _secret("users", "90", labelled=False),  # read by name, never listed: a listing says nothing of it
    ):
        eng.view.put_secret("ns", secret)
    eng.view.put_secret("other", _secret("elsewhere", "90"))

    eng.secrets_listed("ns", {("ns", "listed")}, "100")

    held = {name for name in ("listed", "deleted-unseen", "written-after", "users") if eng.view.secret("ns", name)}
    assert held == {"listed", "written-after", "users"}
    assert eng.view.secret("other", "elsewhere") is not None, "another namespace's listing is not this one"
    eng.secrets_listed(None, {("ns", "listed")}, "100")
    assert eng.view.secret("other", "elsewhere") is None, "a listing of every namespace speaks of every one"

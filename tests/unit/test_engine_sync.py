"""The view is complete, and passes may start, only once every watch it is filled from has listed:
the WebhookCertificates (Kopf) and the Secrets (the operator's reflector), in either order."""

from __future__ import annotations

import kubernetes
import pytest

from webhookcerts.kube import client as kube_client
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

"""Endpoint validation: the operator probes the real receiver with the next and the compromised certificate.

The provider's "integration and validation" step, done by the operator: with ``spec.validation`` set,
a pending next certificate must be accepted by the endpoint (``EndpointAcceptsNext``) and, after an
emergency, the compromised one refused (``EndpointRejectsCompromised``). The endpoint is the reference
receiver fed by trust-sync, as in ``test_reload``.
"""

from __future__ import annotations

import base64

import kubernetes
import pytest

from tests import conftest, whc
from tests.e2e.test_reload import EndpointFactory, api, endpoint, ready, server_pki  # noqa: F401 - fixtures
from tests.unit import mtls_pki
from webhookcerts.domain import names

pytestmark = pytest.mark.e2e


def verdicts(whcs: whc.Api, name: str, reason: str) -> list[str]:
    """The URL named by each Normal Event of ``reason`` (a condition turned True), one entry per Event
    and per count (an Event counted twice is announced twice)."""
    found = []
    for event in whcs.events(name, reason):
        if event.type == "Normal":
            found += [(event.message or "").split(": ", 1)[0]] * (event.count or 1)
    return found


@pytest.mark.long
def test_the_operator_validates_the_next_and_the_compromised_certificate_against_the_endpoint(
    api: whc.Api,  # noqa: F811 - the fixture
    operator: conftest.OperatorProcess,
    endpoint: EndpointFactory,  # noqa: F811 - the fixture
    server_pki: mtls_pki.Pki,  # noqa: F811 - the fixture
) -> None:
    name = "probed"
    api.create(name, duration="1h", renewBefore="30m")
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    ep = endpoint()
    api.core.create_namespaced_secret(
        api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="endpoint-ca"),
            data={"ca.crt": base64.b64encode(server_pki.server_ca.cert_path.read_bytes()).decode()},
        ),
    )
    health = ep.url.replace("/webhooks", "/healthz")
    # Due for renewal at once: the next certificate is issued and must be validated.
    api.patch_spec(
        name, renewBefore="59m59s", validation={"url": health, "caSecretRef": {"name": "endpoint-ca", "key": "ca.crt"}}
    )
    accepted = conftest.wait_for(
        lambda: (c := api.condition(name, names.ENDPOINT_ACCEPTS_NEXT)) is not None and c.status == "True" and c,
        timeout=120,
        what="EndpointAcceptsNext=True",
    )
    assert accepted.reason == "Accepted"
    assert health in accepted.message
    # The verdict was announced where people look, once: the Event is written in the pass that sets the
    # condition, before its status, so it is there now. (Reasons alone do not tell verdicts apart: an
    # endpoint that has not yet reloaded refuses the next certificate, EndpointAcceptsNext=False, a
    # Warning "Refused", as the compromised certificate's refusal is a Normal "Refused".)
    assert verdicts(api, name, "Accepted") == [health], api.events(name)

    api.emergency(name, "INC-7007")
    rejected = conftest.wait_for(
        lambda: (c := api.condition(name, names.ENDPOINT_REJECTS_COMPROMISED)) is not None and c.status == "True" and c,
        timeout=120,
        what="EndpointRejectsCompromised=True",
    )
    assert rejected.reason == "Refused"
    assert verdicts(api, name, "Refused") == [health], api.events(name)

"""Every API call of the operator is bounded in time: the client library would wait forever on a
connection the API server stopped answering. A call that brings its own timeout (a watch) keeps it."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import yaml

from webhookcerts.kube import client as kube_client
from webhookcerts.kube import leases


@pytest.fixture
def clients(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> kube_client.Clients:
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return kube_client.load(str(config))


def timeouts_seen(api: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []

    def request(method: str, url: str, **kw: Any) -> Any:
        seen.append(kw.get("_request_timeout"))
        raise RuntimeError("no API server here")

    monkeypatch.setattr(api.rest_client, "request", request)
    return seen


def test_a_call_without_a_timeout_gets_the_default_and_one_with_its_own_keeps_it(
    clients: kube_client.Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = timeouts_seen(clients.api, monkeypatch)
    for timeout in ({}, {"_request_timeout": (10, 330)}):
        with pytest.raises(RuntimeError):
            clients.core.list_namespaced_secret("ns", **timeout)
    assert seen == [kube_client.DEFAULT_REQUEST_TIMEOUT, (10, 330)]


def test_lease_calls_have_their_own_connections_without_retries_and_the_electors_timeout(
    clients: kube_client.Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert clients.elections is not None and clients.elections.configuration.retries == 0
    seen = timeouts_seen(clients.elections, monkeypatch)
    with pytest.raises(RuntimeError):
        leases.read(clients, "ns", "lease", timeout=1.5)
    assert seen == [1.5]


def _api_error(status: int, message: str) -> kube_client.ApiError:
    exc = kube_client.ApiError(status=status, reason="x")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


def test_a_denial_by_an_admission_policy_is_a_refusal_like_rbacs_and_an_invalid_object_is_not() -> None:
    # What the engine reports as Ready=False, Forbidden (with the message) instead of retrying quietly.
    denied = (
        "secrets \"ingress-tls\" is forbidden: ValidatingAdmissionPolicy 'r-webhookcerts-secrets' with binding "
        "'r-webhookcerts-secrets' denied request: in a trust Secret the webhookcerts operator writes only ca.crt"
    )
    assert kube_client.refused(_api_error(422, denied))
    assert kube_client.refused(_api_error(403, 'secrets is forbidden: User "x" cannot patch resource "secrets"'))
    assert not kube_client.refused(_api_error(422, 'Secret "x" is invalid: data[a b]: Invalid value'))
    assert not kube_client.refused(_api_error(409, "the object has been modified"))

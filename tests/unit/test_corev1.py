"""kube/corev1.py sends exactly the requests the client's generated CoreV1Api sends for the same calls.

Both are given one ApiClient whose ``call_api`` records the request instead of sending it (method, URL
with its query, headers, serialised body): the shim exists to avoid importing CoreV1Api (21 MB), not to
speak differently to the API server. A fresh interpreter shows that the operator's modules and the
shim leave CoreV1Api unimported.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from webhookcerts.kube import corev1


class Sent(Exception):
    def __init__(self, request: tuple[Any, ...]) -> None:
        super().__init__("recorded")
        self.request = request


class Recording(kubernetes.client.ApiClient):  # type: ignore[misc]
    def call_api(
        self, method: str, url: str, header_params: Any = None, body: Any = None, *rest: Any, **kw: Any
    ) -> Any:
        raise Sent((method, url, dict(header_params or {}), body, kw.get("_request_timeout")))


def sent(call: Callable[[], object]) -> tuple[Any, ...]:
    with pytest.raises(Sent) as caught:
        call()
    return caught.value.request


SECRET = kubernetes.client.V1Secret(
    metadata=kubernetes.client.V1ObjectMeta(name="acme-tls", labels={"a": "b"}),
    type="kubernetes.io/tls",
    data={"k": "dg=="},
)
EVENT = kubernetes.client.CoreV1Event(
    metadata=kubernetes.client.V1ObjectMeta(name="acme.1"),
    involved_object=kubernetes.client.V1ObjectReference(kind="WebhookCertificate", name="acme", namespace="ns"),
    reason="Issued",
    message="issued",
    type="Normal",
)
DELETE = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(resource_version="7"))
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("read_namespaced_secret", ("acme-tls", "ns"), {}),
    ("list_namespaced_secret", ("ns",), {"label_selector": "app.kubernetes.io/managed-by=webhookcerts"}),
    ("list_namespaced_secret", ("ns",), {"_request_timeout": 5}),
    ("create_namespaced_secret", ("ns", SECRET), {}),
    ("patch_namespaced_secret", ("acme-tls", "ns", {"metadata": {"labels": {"a": None}}, "data": {"k": "dg=="}}), {}),
    ("delete_namespaced_secret", ("acme-tls", "ns"), {"body": DELETE}),
    ("create_namespaced_event", ("ns", EVENT), {}),
    ("list_namespaced_event", ("ns",), {"field_selector": "involvedObject.name=acme"}),
]


@pytest.mark.parametrize(("method", "args", "kwargs"), CALLS, ids=[c[0] for c in CALLS])
def test_each_call_is_the_request_the_generated_client_sends(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    api = Recording(kubernetes.client.Configuration(host="https://127.0.0.1:6443"))
    ours = sent(lambda: getattr(corev1.CoreV1(api), method)(*args, **kwargs))
    theirs = sent(lambda: getattr(kubernetes.client.CoreV1Api(api), method)(*args, **kwargs))
    assert ours == theirs


def test_the_operator_writes_secrets_and_events_without_loading_core_v1_api() -> None:
    code = (
        "import sys, kubernetes\n"
        "import webhookcerts.cli.run, webhookcerts.handlers.operator, webhookcerts.service.engine\n"
        "from webhookcerts.kube import client, events, secrets\n"
        "client.Clients(kubernetes.client.ApiClient()).secrets_and_events\n"
        "print('kubernetes.client.api.core_v1_api' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(corev1.__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "False", done.stderr

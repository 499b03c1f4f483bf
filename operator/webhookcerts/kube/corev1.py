"""The few core/v1 calls every reconcile pass makes (Secrets, Events), without the client's CoreV1Api.

The kubernetes client's ``CoreV1Api`` is one generated module of some 60,000 lines: importing it costs
about 21 MB of resident memory (every method's parameters are annotated with pydantic fields), a fifth
of what the operator holds with a thousand objects (docs/benchmarks.md, scale). The operator writes
Secrets and Events on every pass and nothing else of core/v1 on most, so those calls go through the
same ``ApiClient`` the generated methods use, built the way they build them: same paths, headers,
authentication, serialisation of bodies, deserialisation into the same models, and the same
``ApiException`` for an answer that is not a success. Everything rarer (ConfigMaps, pods, namespaces)
keeps using ``CoreV1Api``, imported when first needed.
"""

from __future__ import annotations

from typing import Any

import kubernetes

_ACCEPT = "application/json"
# What the generated methods send: rest.py turns this into a strategic merge patch for a dict body.
_PATCH = "application/json-patch+json"


class CoreV1:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        response_type: str,
        *,
        path_params: dict[str, str],
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        request_timeout: Any = None,
    ) -> Any:
        headers: dict[str, str | None] = {"Accept": _ACCEPT}
        if content_type is not None:
            # Only patches name one; a body without it is sent as JSON (rest.py), as the generated code does.
            headers["Content-Type"] = content_type
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=query or [],
            header_params=headers,
            body=body,
            post_params=[],
            files={},
            auth_settings=["BearerToken"],
            collection_formats={},
            _host=None,
            _request_auth=None,
        )
        response = self.api.call_api(*serialized, _request_timeout=request_timeout)
        response.read()  # type: ignore[no-untyped-call]
        types = {"200": response_type, "201": response_type, "202": response_type, "401": None}
        return self.api.response_deserialize(response_data=response, response_types_map=types).data

    # Secrets ----------------------------------------------------------------------------------------

    def read_namespaced_secret(self, name: str, namespace: str) -> kubernetes.client.V1Secret:
        found: kubernetes.client.V1Secret = self._call(
            "GET",
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            "V1Secret",
            path_params={"namespace": namespace, "name": name},
        )
        return found

    def list_namespaced_secret(
        self, namespace: str, label_selector: str | None = None, _request_timeout: Any = None
    ) -> kubernetes.client.V1SecretList:
        query = [("labelSelector", label_selector)] if label_selector is not None else []
        found: kubernetes.client.V1SecretList = self._call(
            "GET",
            "/api/v1/namespaces/{namespace}/secrets",
            "V1SecretList",
            path_params={"namespace": namespace},
            query=query,
            request_timeout=_request_timeout,
        )
        return found

    def create_namespaced_secret(self, namespace: str, body: kubernetes.client.V1Secret) -> kubernetes.client.V1Secret:
        found: kubernetes.client.V1Secret = self._call(
            "POST",
            "/api/v1/namespaces/{namespace}/secrets",
            "V1Secret",
            path_params={"namespace": namespace},
            body=body,
        )
        return found

    def patch_namespaced_secret(self, name: str, namespace: str, body: object) -> kubernetes.client.V1Secret:
        found: kubernetes.client.V1Secret = self._call(
            "PATCH",
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            "V1Secret",
            path_params={"namespace": namespace, "name": name},
            body=body,
            content_type=_PATCH,
        )
        return found

    def delete_namespaced_secret(
        self, name: str, namespace: str, body: kubernetes.client.V1DeleteOptions | None = None
    ) -> kubernetes.client.V1Status:
        found: kubernetes.client.V1Status = self._call(
            "DELETE",
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            "V1Status",
            path_params={"namespace": namespace, "name": name},
            body=body,
        )
        return found

    # Events -----------------------------------------------------------------------------------------

    def create_namespaced_event(
        self, namespace: str, body: kubernetes.client.CoreV1Event
    ) -> kubernetes.client.CoreV1Event:
        found: kubernetes.client.CoreV1Event = self._call(
            "POST",
            "/api/v1/namespaces/{namespace}/events",
            "CoreV1Event",
            path_params={"namespace": namespace},
            body=body,
        )
        return found

    def list_namespaced_event(
        self, namespace: str, field_selector: str | None = None
    ) -> kubernetes.client.CoreV1EventList:
        query = [("fieldSelector", field_selector)] if field_selector is not None else []
        found: kubernetes.client.CoreV1EventList = self._call(
            "GET",
            "/api/v1/namespaces/{namespace}/events",
            "CoreV1EventList",
            path_params={"namespace": namespace},
            query=query,
        )
        return found

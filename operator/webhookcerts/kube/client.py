"""Kubernetes API clients built once from a kubeconfig or the in-cluster service account.

Every other ``kube`` module takes a ``Clients`` instead of reaching for global configuration, so the
operator, the CLI and the tests can each point at their own cluster.

Every call is bounded in time: the client library waits forever by default, and a connection the API
server stopped answering (a half-open TCP connection, a network partition) would hold a worker or the
leader election for good. A call that needs longer, or streams (a watch), passes its own timeout.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import pathlib
from typing import Any

import kubernetes
import urllib3
import yaml

from webhookcerts.domain import names
from webhookcerts.kube import corev1

# The operator's own marks on what it creates.
MANAGED_BY_LABEL = names.MANAGED_BY_LABEL
MANAGED_BY = names.MANAGED_BY


# (connect, read) seconds of a call that sets none; the read timeout bounds each wait for data, not the
# whole response, so a large list that keeps arriving is not cut off.
DEFAULT_REQUEST_TIMEOUT = (5.0, 15.0)


class ConfigError(RuntimeError):
    """No usable cluster configuration; the message says how to provide one."""


class BoundedApiClient(kubernetes.client.ApiClient):
    """An ApiClient whose every call has a timeout: ``timeout`` unless the call brings its own."""

    def __init__(self, configuration: kubernetes.client.Configuration, timeout: Any = DEFAULT_REQUEST_TIMEOUT) -> None:
        super().__init__(configuration)
        self.timeout = timeout

    def call_api(
        self,
        method: Any,
        url: Any,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        return super().call_api(method, url, header_params, body, post_params, _request_timeout or self.timeout)


@dataclasses.dataclass(frozen=True)
class Clients:
    api: kubernetes.client.ApiClient
    in_cluster: bool = False
    # The Lease's own connections, without urllib3's retries: a Lease call is bounded by the one
    # timeout the elector gives it, not by that timeout times the retries. None: ``api``'s.
    elections: kubernetes.client.ApiClient | None = None

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def secrets_and_events(self) -> corev1.CoreV1:
        """The core/v1 calls of every pass, without importing CoreV1Api (kube/corev1.py says why)."""
        return corev1.CoreV1(self.api)

    @property
    def apps(self) -> kubernetes.client.AppsV1Api:
        return kubernetes.client.AppsV1Api(self.api)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    @property
    def coordination(self) -> kubernetes.client.CoordinationV1Api:
        return kubernetes.client.CoordinationV1Api(self.elections or self.api)


def current_context(config_files: str) -> str | None:
    """The context kubectl uses of a list of kubeconfigs ($KUBECONFIG's form): the first one named.

    kubectl merges the files so that the first to set a value wins; the client library lets the last
    file's current-context win, which would pick another cluster and namespace than kubectl does.
    """
    for path in config_files.split(os.pathsep):
        with contextlib.suppress(OSError, yaml.YAMLError):
            config = yaml.safe_load(pathlib.Path(path).expanduser().read_text())
            name = config.get("current-context") if isinstance(config, dict) else None
            if name:
                return str(name)
    return None


def load(kubeconfig: str | None = None, context: str | None = None, *, retries: int | None = None) -> Clients:
    """Clients from ``kubeconfig`` (or $KUBECONFIG, ~/.kube/config), else the in-cluster account.

    ``retries`` replaces urllib3's three retries of a request that failed to connect (0: fail at once).
    """
    configuration = kubernetes.client.Configuration()
    explicit = kubeconfig or os.environ.get("KUBECONFIG")
    default_path = os.path.expanduser(kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
    in_cluster = False
    try:
        if explicit or os.path.exists(default_path):
            config_file = explicit or default_path
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=config_file,
                context=context or current_context(config_file),
                client_configuration=configuration,
            )
        else:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
            in_cluster = True
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise ConfigError(
            f"no usable Kubernetes configuration ({exc}); pass --kubeconfig, set KUBECONFIG, or run in a cluster"
        ) from exc
    if retries is not None:
        configuration.retries = retries
    elections = copy.deepcopy(configuration)
    elections.retries = 0
    return Clients(BoundedApiClient(configuration), in_cluster=in_cluster, elections=BoundedApiClient(elections))


@dataclasses.dataclass(frozen=True)
class Connection:
    """How to reach the API server, for a second client (Kopf's) that must talk to the same cluster."""

    server: str
    ca_path: str | None
    certificate_path: str | None
    private_key_path: str | None
    token: str | None
    in_cluster: bool


def connection(clients: Clients) -> Connection:
    cfg = clients.api.configuration
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    token = auth.split(" ", 1)[1] if auth and " " in auth else auth
    return Connection(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        token=token,
        in_cluster=clients.in_cluster,
    )


ApiError = kubernetes.client.ApiException
# No answer from the API server: a timeout, a refused or reset connection (after urllib3's retries).
TransportError = urllib3.exceptions.HTTPError

# Worth an immediate retry: optimistic-locking conflicts, throttling, an API server busy or restarting.
TRANSIENT_STATUSES = frozenset({409, 429, 500, 503, 504})


def refused(exc: kubernetes.client.ApiException) -> bool:
    """Whether the API server refused the call for want of a permission, which a person grants and no
    retry does: RBAC's 403, or a ValidatingAdmissionPolicy's denial (422, naming the policy; the chart's
    hold the operator to the writes it makes, so one denies only what it should not have tried)."""
    return exc.status == 403 or (exc.status == 422 and "ValidatingAdmissionPolicy" in api_error_reason(exc))


def api_error_reason(exc: kubernetes.client.ApiException) -> str:
    """The API server's one-line message from an ApiException, for conditions and CLI errors."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or exc)

"""The API calls of the ``webhookcerts`` command line, with every API failure turned into one sentence.

The CLI must not import the Kubernetes client (a layer contract), and a user should never see a
traceback or an HTTP body: a missing object, a missing permission, an absent kubeconfig or an
unreachable API server each become a ``CommandError`` whose message says what happened and, where
it can, what to do. The namespace is resolved the way kubectl resolves it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any, cast

import kubernetes
import urllib3

from webhookcerts.domain import models
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import resources, secrets

KIND = "webhookcertificate"
DEFAULT_KUBECONFIG = "~/.kube/config"
# Where a Pod finds the namespace it runs in, as kubectl does inside a cluster.
IN_CLUSTER_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CommandError(RuntimeError):
    """A failure the user can act on; the message is the whole story, printed as one line."""


@dataclasses.dataclass(frozen=True)
class Session:
    """The clients and the namespace one CLI invocation works in."""

    clients: kube_client.Clients
    namespace: str


def _config_file(kubeconfig: str | None) -> str | None:
    """The kubeconfig file(s) kubectl would read: --kubeconfig, $KUBECONFIG, ~/.kube/config; None for none."""
    if kubeconfig and not os.path.exists(kubeconfig):
        raise kube_client.ConfigError(f"kubeconfig {kubeconfig} does not exist")
    # Not the client library's default location: it is fixed at import from $KUBECONFIG, even an empty one.
    default_path = os.path.expanduser(DEFAULT_KUBECONFIG)
    configured = kubeconfig or os.environ.get("KUBECONFIG") or None
    if configured is None and os.path.exists(default_path):
        configured = default_path
    return configured


def connect(
    kubeconfig: str | None, context: str | None, namespace: str | None, *, retries: int | None = None
) -> Session:
    """Load the configuration like kubectl: --kubeconfig, $KUBECONFIG, ~/.kube/config, then in-cluster.

    The namespace is ``namespace`` when given, else the context's namespace, else ``default``.
    ``retries``: see ``kube_client.load``.
    """
    configured = _config_file(kubeconfig)
    if configured is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise kube_client.ConfigError(
            f"no kubeconfig: {DEFAULT_KUBECONFIG} does not exist and KUBECONFIG is not set; "
            "pass --kubeconfig FILE or set KUBECONFIG"
        )
    if configured is not None and context is None:
        # The one kubectl would use, so that the namespace below is that context's too.
        context = kube_client.current_context(configured)
    clients = kube_client.load(configured, context, retries=retries)
    return Session(clients, namespace or _default_namespace(clients, configured, context))


def _default_namespace(clients: kube_client.Clients, config_file: str | None, context: str | None) -> str:
    if clients.in_cluster or config_file is None:
        with contextlib.suppress(OSError):
            return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
        return "default"
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=config_file
        )
    except (kubernetes.config.ConfigException, OSError):
        # The clients loaded from this file a moment ago; a context list it cannot give is no reason to fail.
        return "default"
    chosen = next((c for c in contexts or [] if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


@contextlib.contextmanager
def _api_errors(session: Session, *, name: str | None = None, what: str = KIND) -> Iterator[None]:
    """Turn the client's exceptions into a ``CommandError`` that names the object and the namespace."""
    try:
        yield
    except kubernetes.client.ApiException as exc:
        raise CommandError(_explain(exc, session.namespace, name, what)) from None
    except urllib3.exceptions.HTTPError as exc:
        host = session.clients.api.configuration.host
        raise CommandError(f"cannot reach the API server at {host}: {_root_cause(exc)}") from None


def _explain(exc: kubernetes.client.ApiException, namespace: str, name: str | None, what: str) -> str:
    reason = kube_client.api_error_reason(exc)
    if exc.status == 403:
        return f"permission denied: {reason}"
    if exc.status == 401:
        return f"unauthorized: the API server did not accept the credentials ({reason})"
    if exc.status == 404:
        if _names_an_object(exc) and name is not None:
            return f"{what} {name} not found in namespace {namespace}"
        # A 404 that names no object means the resource type itself is not served.
        return (
            f"the API server does not serve {models.PLURAL}.{models.GROUP}/{models.VERSION}: "
            "is the WebhookCertificate CRD installed? (kubectl apply -f crds/)"
        )
    return f"the API server answered {exc.status}: {reason}"


def _names_an_object(exc: kubernetes.client.ApiException) -> bool:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return False
    details = body.get("details") if isinstance(body, dict) else None
    return isinstance(details, dict) and bool(details.get("name"))


def _root_cause(exc: BaseException) -> str:
    # urllib3 wraps the socket error in a MaxRetryError whose own text repeats the URL and pool.
    reason = getattr(exc, "reason", None)
    return str(reason if isinstance(reason, BaseException) else exc)


def get(session: Session, name: str) -> dict[str, Any]:
    with _api_errors(session, name=name):
        obj = cast(
            dict[str, Any],
            session.clients.custom.get_namespaced_custom_object(
                models.GROUP, models.VERSION, session.namespace, models.PLURAL, name
            ),
        )
    return obj


def list_objects(session: Session, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
    with _api_errors(session):
        if all_namespaces:
            return resources.list_all(session.clients)
        return resources.list_namespace(session.clients, session.namespace)


def annotate(session: Session, name: str, annotations: dict[str, str | None]) -> None:
    with _api_errors(session, name=name):
        resources.patch_annotations(session.clients, session.namespace, name, annotations)


def read_secret(session: Session, name: str) -> secrets.SecretData:
    with _api_errors(session, name=name, what="Secret"):
        secret = secrets.read(session.clients, session.namespace, name)
    if secret is None:
        raise CommandError(f"Secret {name} not found in namespace {session.namespace}")
    return secret


# --- what shell completion looks up: names only, quickly, and never at any cost -----------------------

# kubectl's own way to ask for names only: the metadata of each object, not its status and certificates.
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


def names(session: Session, *, timeout: float) -> list[str]:
    """The names of the WebhookCertificates in the session's namespace."""
    with _api_errors(session):
        listed = session.clients.custom.list_namespaced_custom_object(
            models.GROUP,
            models.VERSION,
            session.namespace,
            models.PLURAL,
            _request_timeout=timeout,
            _headers={"Accept": _METADATA_ONLY},
        )
    items = listed.get("items") if isinstance(listed, dict) else None
    return sorted(str(name) for item in items or [] if (name := (item.get("metadata") or {}).get("name")))


def namespaces(session: Session, *, timeout: float) -> list[str]:
    with _api_errors(session, what="namespaces"):
        listed = session.clients.core.list_namespace(_request_timeout=timeout)
    return sorted(str(ns.metadata.name) for ns in listed.items or [] if ns.metadata and ns.metadata.name)


def contexts(kubeconfig: str | None) -> list[str]:
    """The context names of the kubeconfig kubectl would read; none when there is none."""
    configured = _config_file(kubeconfig)
    if configured is None:
        return []
    try:
        listed, _ = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=configured
        )
    except (kubernetes.config.ConfigException, OSError):
        return []
    return sorted(str(c["name"]) for c in listed or [] if c.get("name"))

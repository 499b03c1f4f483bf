"""Watching one Secret by name: the API side of ``trust-sync``.

A field selector on ``metadata.name`` keeps the watch to that one object, so the sidecar needs RBAC on
a single Secret's list/watch and never caches the namespace's others. The watch follows the usual
list-then-watch contract: list to learn the state and a resourceVersion, watch from there, and when
the server says that version is gone (410 Gone, after compaction) list again. Network and server errors
back off and retry forever; a sidecar that gives up leaves the receiver on a stale trust store.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
from collections.abc import Iterator

import kubernetes
import urllib3

from webhookcerts.kube import client as kube_client

_log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 240
_BACKOFF_INITIAL = 0.5
_BACKOFF_MAX = 30.0


@dataclasses.dataclass(frozen=True)
class SecretVersion:
    """One observed state of the Secret: its decoded data, or None while it does not exist, and its
    annotations (the operator's ``webhookcerts.io/trust-hash`` names the version a reporter serves)."""

    resource_version: str
    data: dict[str, bytes] | None = dataclasses.field(repr=False)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        keys = None if self.data is None else sorted(self.data)
        return f"SecretVersion(resource_version={self.resource_version!r}, keys={keys})"


def _decode(secret: kubernetes.client.V1Secret) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _annotations(secret: kubernetes.client.V1Secret) -> dict[str, str]:
    metadata = secret.metadata
    return dict((metadata.annotations if metadata is not None else None) or {})


def _resource_version(obj: object) -> str:
    metadata = getattr(obj, "metadata", None)
    return str(getattr(metadata, "resource_version", "") or "")


def watch_secret(
    clients: kube_client.Clients,
    namespace: str,
    name: str,
    *,
    stop: threading.Event | None = None,
    timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
) -> Iterator[SecretVersion]:
    """Yield the Secret's state now and after every change, until ``stop`` is set.

    States can repeat (after a re-list); callers compare content, not events.
    """
    stop = stop or threading.Event()
    core = clients.core
    selector = f"metadata.name={name}"
    backoff = _BACKOFF_INITIAL
    while not stop.is_set():
        try:
            listed = core.list_namespaced_secret(namespace, field_selector=selector)
            version = _resource_version(listed)
            items = listed.items or []
            if items:
                yield SecretVersion(version, _decode(items[0]), _annotations(items[0]))
            else:
                yield SecretVersion(version, None)
            backoff = _BACKOFF_INITIAL
            while not stop.is_set():
                watcher = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                for event in watcher.stream(  # type: ignore[no-untyped-call]
                    core.list_namespaced_secret,
                    namespace,
                    field_selector=selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=timeout_seconds,
                    _request_timeout=(10, timeout_seconds + 30),
                ):
                    kind = event["type"]
                    obj = event["object"]
                    version = _resource_version(obj) or version
                    if kind in ("ADDED", "MODIFIED"):
                        yield SecretVersion(version, _decode(obj), _annotations(obj))
                    elif kind == "DELETED":
                        yield SecretVersion(version, None)
                    if stop.is_set():
                        watcher.stop()  # type: ignore[no-untyped-call]
                        break
        except kubernetes.client.ApiException as exc:
            if exc.status == 410:
                _log.info("watch of secret %s/%s expired (410 Gone); listing again", namespace, name)
                continue
            _log.warning(
                "watching secret %s/%s failed: %s %s; retrying in %.1fs",
                namespace,
                name,
                exc.status,
                exc.reason,
                backoff,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            _log.warning(
                "watching secret %s/%s failed: %s; retrying in %.1fs", namespace, name, type(exc).__name__, backoff
            )
        if stop.wait(backoff):
            return
        backoff = min(_BACKOFF_MAX, backoff * 2)

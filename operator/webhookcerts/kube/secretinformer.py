"""The operator's own Secrets, listed and watched without Kopf: client-go's reflector, for plain data.

Kopf gives every watched object a worker of its own (a task, a queue, the raw event, its per-object
state) and holds each one until every indexed object has been listed. For the WebhookCertificates
that machinery is the operator's; for the Secrets, which the operator only needs as data, it was the
largest part of its memory at start-up: a Kopf operator that does nothing but index the 1,500 Secrets
of 1,000 objects peaks 38 MB above one that sees none (benchmarks/memory.py, docs/benchmarks.md).

So Secrets come through this reflector instead: a LIST in pages (each page decoded, handed over and
dropped), then a WATCH from the list's resourceVersion with bookmarks, as many times as the server
ends it. When the server says that version is gone (410, after compaction) or the connection breaks,
it lists again, and reports as deleted what the new list no longer holds: a deletion missed while
disconnected is still seen. Every read carries a read timeout longer than the server's own watch
timeout, so a connection that went silent (half-open) is given up rather than waited on forever.
Errors back off and retry forever: an operator that stopped seeing its Secrets would reconcile on a
stale view, which the resourceVersion preconditions of its writes turn into conflicts, not damage,
but no progress either.

The callbacks receive each Secret as the watch carries it (plain JSON, base64 data), as Kopf's raw
bodies were; ``on_synced`` is called once, when every namespace has been listed once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import kubernetes
import urllib3

from webhookcerts.kube import client as kube_client

_log = logging.getLogger(__name__)

PAGE = 100
WATCH_TIMEOUT_SECONDS = 300
# Past the server's own end of a watch: a read that long without a byte is a dead connection.
READ_MARGIN_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 10
_BACKOFF_INITIAL = 0.5
_BACKOFF_MAX = 30.0

Body = Mapping[str, Any]


class Gone(Exception):
    """The resourceVersion watched from, or the list's continue token, has expired: list again."""


class SecretInformer:
    """List-then-watch of the Secrets with ``label_selector``, in each of ``namespaces`` (every
    namespace when empty), each namespace in a thread of its own."""

    def __init__(
        self,
        clients: kube_client.Clients,
        namespaces: Sequence[str],
        *,
        on_put: Callable[[Body], None],
        on_delete: Callable[[Body], None],
        on_synced: Callable[[], None],
        on_listed: Callable[[str | None, set[tuple[str, str]], str], None] | None = None,
        label_selector: str = f"{kube_client.MANAGED_BY_LABEL}={kube_client.MANAGED_BY}",
        watch_timeout: int = WATCH_TIMEOUT_SECONDS,
    ) -> None:
        self._api = clients.api
        self._namespaces: list[str | None] = list(namespaces) or [None]
        self._on_put, self._on_delete, self._on_synced = on_put, on_delete, on_synced
        self._on_listed = on_listed
        self._selector = label_selector
        self._watch_timeout = watch_timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._unlisted = set(self._namespaces)
        self._threads: list[threading.Thread] = []
        # Watches started, over every namespace (the tests see re-watches by it).
        self.watches = 0

    def start(self) -> None:
        for namespace in self._namespaces:
            thread = threading.Thread(
                target=self._run, args=(namespace,), name=f"secrets-{namespace or 'all'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        # A thread blocked reading a watch notices at its next event, bookmark or read timeout; the
        # threads are daemons, so nothing waits for that.
        self._stop.set()

    def dead_threads(self) -> list[str]:
        return [t.name for t in self._threads if not t.is_alive() and not self._stop.is_set()]

    # -- one namespace ---------------------------------------------------------------------------------

    def _run(self, namespace: str | None) -> None:
        known: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid, to report what a re-list lost
        where = namespace or "every namespace"
        backoff = _BACKOFF_INITIAL
        while not self._stop.is_set():
            doing = "listing"
            try:
                version = self._list(namespace, known)
                self._listed(namespace)
                backoff = _BACKOFF_INITIAL
                doing = "watching"
                while not self._stop.is_set():
                    version = self._watch(namespace, version, known)
            except Gone:
                _log.info("%s secrets in %s: resourceVersion expired (410 Gone); listing again", doing, where)
                # Not at once: a proxy answering 410 to everything would otherwise be a tight loop.
                if self._stop.wait(_BACKOFF_INITIAL):
                    return
                continue
            except kubernetes.client.ApiException as exc:
                # The server's own words say what was refused (a missing RBAC verb names itself).
                _log.warning(
                    "%s secrets in %s failed: %s %s: %s; retrying in %.1fs",
                    doing,
                    where,
                    exc.status,
                    exc.reason,
                    _message(exc),
                    backoff,
                )
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                _log.warning(
                    "%s secrets in %s failed: %s; retrying in %.1fs", doing, where, type(exc).__name__, backoff
                )
            if self._stop.wait(backoff):
                return
            backoff = min(_BACKOFF_MAX, backoff * 2)

    def _listed(self, namespace: str | None) -> None:
        with self._lock:
            if namespace not in self._unlisted:
                return
            self._unlisted.discard(namespace)
            done = not self._unlisted
        if done:
            self._on_synced()

    def _list(self, namespace: str | None, known: dict[tuple[str, str], str]) -> str:
        seen: set[tuple[str, str]] = set()
        token = ""
        while True:
            query = [("labelSelector", self._selector), ("limit", str(PAGE))]
            if token:
                query.append(("continue", token))
            page = json.loads(self._get(namespace, query, read_timeout=self._watch_timeout).read())
            _log.debug("listed a page of %d secrets", len(page.get("items") or []))
            for item in page.get("items") or []:
                key = _key(item, namespace)
                seen.add(key)
                known[key] = str(item["metadata"].get("uid", ""))
                self._hand_over(self._on_put, item)
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                version = str((page.get("metadata") or {}).get("resourceVersion", ""))
                break
        for key in set(known) - seen:
            uid = known.pop(key)
            _log.info("secret %s/%s is gone (not in a new listing)", key[0], key[1])
            self._hand_over(self._on_delete, {"metadata": {"namespace": key[0], "name": key[1], "uid": uid}})
        if self._on_listed is not None:
            # Also what the reflector never saw but its consumer holds (from its own writes).
            on_listed = self._on_listed
            self._hand_over(lambda _: on_listed(namespace, seen, version), {"metadata": {"namespace": namespace}})
        return version

    def _watch(self, namespace: str | None, version: str, known: dict[tuple[str, str], str]) -> str:
        query = [
            ("labelSelector", self._selector),
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self._watch_timeout)),
        ]
        response = self._get(namespace, query, read_timeout=self._watch_timeout + READ_MARGIN_SECONDS)
        self.watches += 1
        try:
            for event in _lines(response.response):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone
                    raise kubernetes.client.ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    known[_key(obj, namespace)] = str(obj["metadata"].get("uid", ""))
                    self._hand_over(self._on_put, obj)
                elif kind == "DELETED":
                    known.pop(_key(obj, namespace), None)
                    self._hand_over(self._on_delete, obj)
                if self._stop.is_set():
                    break
        finally:
            response.response.release_conn()
        return version

    @staticmethod
    def _hand_over(callback: Callable[[Body], None], obj: Body) -> None:
        # The consumer's failure on one Secret is not the connection's: it must neither re-list
        # forever nor end the thread. Logged by type and name only: the message may quote the data.
        try:
            callback(obj)
        except Exception as exc:
            meta = obj.get("metadata") or {}
            _log.error(
                "secret %s/%s could not be taken into the view: %s",
                meta.get("namespace"),
                meta.get("name"),
                type(exc).__name__,
            )

    def _get(self, namespace: str | None, query: list[tuple[str, str]], *, read_timeout: float) -> Any:
        path = "/api/v1/namespaces/{namespace}/secrets" if namespace else "/api/v1/secrets"
        serialized = self._api.param_serialize(
            method="GET",
            resource_path=path,
            path_params={"namespace": namespace} if namespace else {},
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*serialized, _request_timeout=(CONNECT_TIMEOUT_SECONDS, read_timeout))
        if response.status == 410:
            raise Gone
        if not 200 <= response.status < 300:
            body = response.read()  # type: ignore[no-untyped-call]
            raise kubernetes.client.ApiException(status=response.status, reason=response.reason, body=body)
        return response


def _message(exc: kubernetes.client.ApiException) -> str:
    # A Status body's message: it names the request and the account, never a Secret's content.
    try:
        return str(json.loads(exc.body or b"{}").get("message", ""))[:500]
    except (ValueError, AttributeError):
        return ""


def _key(obj: Body, namespace: str | None) -> tuple[str, str]:
    meta = obj["metadata"]
    return str(meta.get("namespace") or namespace or ""), str(meta["name"])


def _lines(raw: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    """The watch's events, one JSON document a line, as the server sends them."""
    pending = b""
    for chunk in raw.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)

"""Kopf registrations for WebhookCertificate: every trigger calls the same service function.

Create, update (spec or annotations), resume after a restart and a periodic timer all land in
``service.reconcile.reconcile``; the timer is what starts a planned rotation within a minute of
``renewalTime`` and what catches up after the operator was down. Handlers run synchronously, so Kopf
runs them in threads and RSA key generation never blocks its event loop; a per-object lock keeps the
timer and an event handler from reconciling one object at the same time.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Any

import kopf

from webhookcerts.domain import models, names
from webhookcerts.kube import client as kube_client
from webhookcerts.service import reconcile

logger = logging.getLogger(__name__)

TIMER_INTERVAL = 20.0
FORBIDDEN_RETRY = 30.0
KOPF_PREFIX = f"kopf.{names.PREFIX}"
RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)

_context: reconcile.Context | None = None
_locks: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)


def configure(context: reconcile.Context) -> None:
    """Set what the handlers reconcile with (the CLI does this before starting Kopf)."""
    global _context
    _context = context


def _ctx() -> reconcile.Context:
    global _context
    if _context is None:
        _context = reconcile.Context(kube_client.load())
    return _context


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # Kopf talks to the cluster our own clients were configured for, from a kubeconfig or in-cluster.
    conn = kube_client.connection(_ctx().clients)
    if conn.in_cluster:
        # Kopf re-reads the projected token itself when it rotates (it logs in again on a 401). Its
        # service-account login names the API server by its DNS name; ours, as client-go does, by the
        # address the kubelet puts in the environment: the same server, also where no cluster DNS runs.
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return dataclasses.replace(info, server=conn.server) if info is not None else None
    return kopf.ConnectionInfo(
        server=conn.server,
        ca_path=conn.ca_path,
        certificate_path=conn.certificate_path,
        private_key_path=conn.private_key_path,
        scheme="Bearer" if conn.token else None,
        token=conn.token,
    )


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our status is fully described by the CRD; Kopf's own bookkeeping goes to annotations so that
    # nothing it writes is pruned, and no Kopf-generated Events duplicate ours. Kopf ignores changes to
    # annotations under its storage prefix, so that prefix must not be the one users steer us with.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8


def _reconcile(body: kopf.Body) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    with _locks[body.metadata.uid or ""]:
        try:
            result = reconcile.reconcile_latest(_ctx(), namespace, name)
        except Exception as exc:
            _ctx().metrics.reconcile_failed(namespace, name, str(body.spec.get("environment", "")))
            if not isinstance(exc, kube_client.ApiError):
                raise
            message = kube_client.api_error_reason(exc)
            if exc.status == 403:
                # Missing RBAC is fixed by a person, not by retrying: report it where people look.
                reconcile.report_forbidden(_ctx(), namespace, name, message)
                raise kopf.TemporaryError(f"API 403: {message}", delay=FORBIDDEN_RETRY) from exc
            delay = 1 if exc.status in kube_client.TRANSIENT_STATUSES else 10
            raise kopf.TemporaryError(f"API {exc.status}: {message}", delay=delay) from exc
    if result is not None:
        logger.debug("%s: %s (%s)", body.metadata.name, result.decision.reason, result.decision.action.value)


@kopf.on.create(*RESOURCE, id="reconcile-create")
@kopf.on.update(*RESOURCE, id="reconcile-update")
@kopf.on.resume(*RESOURCE, id="reconcile-resume")
def on_change(body: kopf.Body, **_: Any) -> None:
    _reconcile(body)


@kopf.timer(*RESOURCE, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL, id="reconcile-timer")
def on_timer(body: kopf.Body, **_: Any) -> None:
    _reconcile(body)


@kopf.on.delete(*RESOURCE, id="forget")
def on_delete(body: kopf.Body, **_: Any) -> None:
    with _locks[body.metadata.uid or ""]:
        reconcile.forget(_ctx(), dict(body))
    _locks.pop(body.metadata.uid or "", None)

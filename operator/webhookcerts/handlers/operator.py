"""Kopf registrations: watches that feed the engine's view and queue, nothing that reconciles in Kopf.

Kopf's indexing phase runs for every object before any handler, and Kopf holds every handler until
all indexed resources have been listed once. So the view is filled from the index functions (they
return None: the view, not a Kopf index, is what the workers read), and the first ``on.event`` call
means the view is complete: only then may a pass assemble a trust store from it.

PresentationReports are watched too when they can be listed (``watch_reports``; every one: a reporter
cannot carry the operator's label, and a report is a few hundred bytes); each one's pod is read once
per report change, never watched.

Secrets are not watched through Kopf but by the operator's own reflector (kube/secretinformer.py says
why: Kopf's per-object workers were the largest part of the memory at start-up), with the operator's
label as a server-side selector: the operator sees the Secrets it wrote, never every Secret of the
cluster (cert-manager #3748). The view is complete once both have listed: the engine waits for the
WebhookCertificates (Kopf's first ``on.event`` call) and the Secrets (the reflector's first listing).

The liveness endpoint (``webhookcerts run --liveness``) answers from a probe handler that fails when
a worker or the leader election has stopped: Kopf's watches alone going on would be a pod that looks
alive and never reconciles (a standby is healthy: its threads run, they only wait).

No Kopf create/update/timer handlers: the engine's work queue schedules each object at its own due
time, and Kopf writes no progress annotations, so an idle cluster costs no writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from webhookcerts.domain import models, names, reports
from webhookcerts.handlers import rawbodies
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import secretinformer
from webhookcerts.service import engine as engine_mod
from webhookcerts.service import leader, reconcile

logger = logging.getLogger(__name__)

KOPF_PREFIX = f"kopf.{names.PREFIX}"
RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)
REPORTS = (models.GROUP, models.VERSION, reports.PLURAL)
STOP_TIMEOUT = 5.0

_engine: engine_mod.Engine | None = None
_elector: leader.Elector | None = None
_secrets: secretinformer.SecretInformer | None = None


def configure(
    engine: engine_mod.Engine,
    elector: leader.Elector | None = None,
    secrets: secretinformer.SecretInformer | None = None,
) -> None:
    """Set the engine the handlers feed, the leader election it follows, and the reflector that feeds
    it the Secrets (the CLI does this; the engine then waits for that reflector's first listing)."""
    global _engine, _elector, _secrets
    _engine, _elector, _secrets = engine, elector, secrets


def _get() -> engine_mod.Engine:
    global _engine
    if _engine is None:
        _engine = engine_mod.Engine(reconcile.Context(kube_client.load()))
    return _engine


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    # Kopf hands out read-only views over its raw dicts; the view keeps what it is given, less the
    # managedFields nothing here reads (a good part of every object's size, times every object).
    plain = {key: body[key] for key in body}
    plain["metadata"] = {k: v for k, v in plain["metadata"].items() if k != "managedFields"}
    return plain


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # Kopf talks to the cluster our own clients were configured for, from a kubeconfig or in-cluster.
    conn = kube_client.connection(_get().ctx.clients)
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
    # Kopf's own bookkeeping, if any, goes to annotations under its own prefix (never pruned, never
    # one users steer us with); Kopf posts no Events of its own beside ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.chunk_size = rawbodies.LIST_PAGE
    _get().start()
    if _secrets is not None:
        _secrets.start()
    if _elector is not None:
        _elector.start()


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if _secrets is not None:
        _secrets.stop()
    _get().stop(STOP_TIMEOUT)
    # After the passes in flight: the standby takes over from what they recorded.
    if _elector is not None:
        _elector.stop()


@kopf.on.probe(id="threads")
def threads(**_: Any) -> str:
    """'leading' or 'standing by'; fails (HTTP 500 on the liveness endpoint) naming threads that ended."""
    dead = (
        _get().dead_workers()
        + (_elector.dead_threads() if _elector is not None else [])
        + (_secrets.dead_threads() if _secrets is not None else [])
    )
    if dead:
        raise kopf.PermanentError(f"threads ended: {', '.join(dead)}")
    return "standing by" if _elector is not None and not _elector.leading else "leading"


@kopf.index(*RESOURCE, id="certificates")
async def index_certificate(body: kopf.Body, **_: Any) -> None:
    _get().certificate_seen(_plain(body))
    rawbodies.release(body)


@kopf.on.event(*RESOURCE, id="certificate-events")
async def certificate_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    engine = _get()
    engine.synced(engine_mod.CERTIFICATES)
    if type == "DELETED":
        engine.certificate_gone(_plain(body))


async def index_report(body: kopf.Body, **_: Any) -> None:
    # The report's pod is read here, once per report change, off the event loop: the pass reads only
    # the view.
    engine, plain = _get(), _plain(body)
    facts = await asyncio.to_thread(engine.read_pod, plain["metadata"]["namespace"], plain["metadata"]["name"])
    engine.report_seen(plain, facts)


async def report_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        _get().report_gone(_plain(body))


def watch_reports() -> None:
    """Watch PresentationReports too. Registered only once the CLI has listed them: Kopf holds every
    handler until each indexed resource is listed, and gives up on a listing it is refused, so an
    install whose RBAC predates the reports (or without their CRD) would otherwise never reconcile.
    """
    kopf.index(*REPORTS, id="presentation-reports")(index_report)
    kopf.on.event(*REPORTS, id="report-events")(report_event)
    _get().view.reports_known = True

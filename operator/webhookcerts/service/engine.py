"""The operator's engine: the watch-fed view, the work queue and the workers that reconcile from them.

How a change flows: a watch event (Kopf, in ``handlers``) goes into the ``View``; when it changed
something, the object it concerns is queued. Workers take queued objects one at a time per object
and run one reconcile pass each; a pass schedules its object again at its own next due time
(renewalTime, expiry for the automatic cut-over, a backoff after an error, a probe to repeat), and
at the latest after the resync interval, a safety net that costs no API call while nothing changed.

An emergency annotation is queued urgent: one worker takes nothing else, and its pass stops after
containment, so neither planned work, nor probes, nor the start-up pass over every object, nor the
replacement's key generation stands between the annotation and the trust store losing the
compromised certificate.

Only the leader's workers take work (``lead``/``follow``, from the leader election): a worker checks
leadership again after it took an item, since it may have waited in the queue since before the loss,
and an item taken by a worker that no longer leads goes back to the queue.

Stopping drops the queue (it is rebuilt from the cluster at the next start) and waits only for the
passes in flight, each one a handful of writes and at most one key generation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
from collections.abc import Mapping
from typing import Any

import pydantic

from webhookcerts.domain import names, policy, reporters
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import report_reads as kube_reports
from webhookcerts.kube import resources, secrets
from webhookcerts.service import probes, reconcile, state, view, workqueue

logger = logging.getLogger(__name__)

DEFAULT_RESYNC = 600.0
# The watches the view is filled from (``Engine.expect``).
CERTIFICATES = "webhookcertificates"
SECRETS = "secrets"
FORBIDDEN_RETRY = 30.0
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 300.0
# A conflict is the view a moment behind: decided again almost at once.
CONFLICT_BACKOFF_INITIAL = 0.05
CONFLICT_BACKOFF_MAX = 5.0

# ("certificate" | "trust", namespace, name)
Item = tuple[str, str, str]


def default_workers() -> int:
    # Key generation is bounded by the cores on its own; the rest of a pass waits on the API server.
    return max(4, 2 * (os.cpu_count() or 1))


def _urgent(entry: view.Certificate) -> bool:
    """An emergency annotation not yet handled, or a containment whose replacement is not issued yet
    (after a restart, its trust writes may never have landed): containment goes before any other work."""
    return entry.status is not None and policy.containment_pending(
        entry.status, entry.annotations.get(names.EMERGENCY_ANNOTATION)
    )


class Engine:
    def __init__(
        self,
        ctx: state.Context,
        *,
        workers: int | None = None,
        resync: float = DEFAULT_RESYNC,
        probe_interval: float = probes.DEFAULT_INTERVAL,
    ) -> None:
        self.ctx = dataclasses.replace(
            ctx,
            keygen=state.BoundedKeygen(ctx.keygen, recorder=ctx.metrics),
            bundle_recheck_seconds=resync,
            trust_changed=self._trust_changed,
        )
        self.view = view.View()
        self.queue: workqueue.WorkQueue[Item] = workqueue.WorkQueue()
        self.prober = probes.Prober(interval=probe_interval, on_done=self._probe_done)
        self.resync = resync
        self._workers = workers or default_workers()
        self._threads: list[threading.Thread] = []
        self._failures: dict[Item, int] = {}
        self._lock = threading.Lock()
        # The watches that must have listed once before the view is complete (``expect``).
        self._unlisted: set[str] = set()
        self._complete = False
        # Objects not yet reconciled once since start: when none is left, the start-up pass is done.
        self._unvisited: set[tuple[str, str]] | None = None
        # Workers take work only while this replica leads (always, without leader election).
        self._leading = threading.Event()
        self._leading.set()
        # Held while a worker decides to start a pass and while leadership is given up: once ``follow``
        # returned, no pass starts.
        self._leadership = threading.Lock()

    # the watch side (called from Kopf's event loop: nothing here may block) ---------------------

    def certificate_seen(self, body: Mapping[str, Any]) -> None:
        entry, changed = self.view.put_certificate(body)
        if changed:
            self.queue.add(("certificate", entry.namespace, entry.name), urgent=_urgent(entry))

    def certificate_gone(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        gone = self.view.drop_certificate(namespace, name)
        self.prober.forget(namespace, name)
        self.ctx.metrics.forget(namespace, name)
        if gone is not None and gone.trust_secret is not None:
            self.queue.add(("trust", namespace, gone.trust_secret))

    def secret_seen(self, body: Mapping[str, Any]) -> None:
        secret = secrets.from_body(body)
        namespace = str(body["metadata"]["namespace"])
        if self.view.put_secret(namespace, secret):
            self._secret_changed(namespace, secret.name)

    def secret_gone(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        if self.view.drop_secret(namespace, name, str(meta.get("uid", ""))):
            self._secret_changed(namespace, name)

    def secrets_listed(self, namespace: str | None, listed: set[tuple[str, str]], version: str) -> None:
        """A complete listing of the operator's Secrets (``namespace``, or every one when None): a Secret
        the view holds but the listing lacks, no newer than it, was deleted unseen (a watch was down,
        or the view had it from the operator's own write before any event): it is dropped and its
        objects queued, as a deletion event would have."""
        for secret_namespace, secret in self.view.unlisted_secrets(namespace, listed, version):
            if self.view.drop_secret(secret_namespace, secret.name, secret.uid):
                logger.info("secret %s/%s is gone (not in a new listing)", secret_namespace, secret.name)
                self._secret_changed(secret_namespace, secret.name)

    def _secret_changed(self, namespace: str, name: str) -> None:
        # A key, next or bundle Secret is found by the index of who claims it (its owner, and a
        # rival the conflict is reported to); a trust Secret is rewritten once, and its namers follow
        # only if its content changed. Either way only the objects concerned are queued.
        for entry in self.view.claimants(namespace, name):
            if any(claimed == name and role != "trust" for claimed, role in entry.claimed):
                self.queue.add(("certificate", namespace, entry.name))
        if self.view.is_trust_secret(namespace, name):
            self.queue.add(("trust", namespace, name))

    def read_pod(self, namespace: str, name: str) -> reporters.PodFacts | None:
        """A report's pod, read once per report change (blocking: the handlers run it in a thread).
        None when it could not be read: the report keeps the facts it had (or counts as unverified)."""
        try:
            return reporters.PodFacts.of(kube_reports.read_pod(self.ctx.clients, namespace, name))
        except (kube_client.ApiError, kube_client.TransportError) as exc:
            logger.warning(
                "pod %s/%s of a PresentationReport could not be read (%s)", namespace, name, type(exc).__name__
            )
            return None

    def report_seen(self, body: Mapping[str, Any], facts: reporters.PodFacts | None) -> None:
        meta = body["metadata"]
        namespace = str(meta["namespace"])
        held = self.view.report(namespace, str(meta["name"]))
        if facts is None:
            facts = held.facts if held is not None else reporters.PodFacts(exists=False, problem="no answer")
        try:
            report = reporters.Report.parse(body, facts)
        except pydantic.ValidationError as exc:
            logger.warning(
                "%s/%s: unreadable PresentationReport ignored (%d error(s))", namespace, meta["name"], exc.error_count()
            )
            return
        before = self.view.put_report(report)
        if before is None:
            return
        for trust_secret in {report.spec.trust_secret_name, before} - {""}:
            self._trust_changed(namespace, trust_secret)

    def report_gone(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        gone = self.view.drop_report(str(meta["namespace"]), str(meta["name"]))
        if gone is not None:
            self._trust_changed(gone.namespace, gone.spec.trust_secret_name)

    def expect(self, *sources: str) -> None:
        """Before start: the view is complete only once each of these watches called ``synced(source)``."""
        with self._lock:
            self._unlisted.update(sources)

    def synced(self, source: str | None = None) -> None:
        """A watch has seen every object once (``None``: every watch has). When none is left to list,
        passes may start (a trust union is now complete)."""
        if self.view.wait_synced(0):
            return
        with self._lock:
            if source is None:
                self._unlisted.clear()
            else:
                self._unlisted.discard(source)
            if self._unlisted or self._complete:
                return
            self._complete = True
            self._unvisited = {(c.namespace, c.name) for c in self.view.certificates()}
        logger.info("watches synced: %d WebhookCertificates in view", len(self._unvisited))
        self.view.mark_synced()
        self._visited(None)

    def follow(self) -> None:
        """Stand by: keep the view current, take no work (another replica holds the lease). Passes in
        flight finish; no pass starts once this returned."""
        with self._leadership:
            self._leading.clear()

    def lead(self) -> None:
        """Take over: every object is passed once more, as at start-up (the other replica may have
        stopped half-way through anything), then work goes on from the queue."""
        self._leading.set()
        if not self.view.wait_synced(0):
            return  # the start-up pass follows the first sync
        with self._lock:
            self._unvisited = {(c.namespace, c.name) for c in self.view.certificates()}
        logger.info("leading: passing every one of %d WebhookCertificates once", len(self._unvisited))
        for entry in self.view.certificates():
            self.queue.add(("certificate", entry.namespace, entry.name), urgent=_urgent(entry))
        self._visited(None)

    def _visited(self, key: tuple[str, str] | None) -> None:
        with self._lock:
            if self._unvisited is None:
                return
            if key is not None:
                self._unvisited.discard(key)
            if self._unvisited:
                return
            self._unvisited = None
        logger.info("start-up pass done: every WebhookCertificate reconciled once")

    def _trust_changed(self, namespace: str, secret_name: str) -> None:
        # The neighbours' recorded trust hash (and their consumers) follow the new content; for each an
        # ordinary pass that finds nothing else to do sends one status patch.
        for entry in self.view.naming_trust(namespace, secret_name):
            self.queue.add(("certificate", namespace, entry.name))

    def _probe_done(self, namespace: str, name: str) -> None:
        self.queue.add(("certificate", namespace, name))

    # the worker side ------------------------------------------------------------------------------

    def start(self) -> None:
        lanes = [True] + [False] * self._workers
        for index, urgent_only in enumerate(lanes):
            thread = threading.Thread(
                target=self._work,
                args=(urgent_only,),
                name=f"reconcile-{'urgent' if urgent_only else index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def dead_workers(self) -> list[str]:
        """The names of the worker threads that have ended (for the liveness probe)."""
        return [thread.name for thread in self._threads if not thread.is_alive()]

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.shutdown()
        self._leading.set()  # wakes workers standing by: the queue is shut, they return
        self.prober.shutdown()
        self.view.mark_synced()  # wakes workers still waiting for the first sync
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _work(self, urgent_only: bool) -> None:
        self.view.wait_synced()
        while True:
            self._leading.wait()
            try:
                item = self.queue.get(urgent_only=urgent_only)
            except workqueue.ShutDown:
                return
            if item is None:
                continue
            if not self._claim(item):
                self.queue.put_back(item)
                continue
            try:
                self.process(item, urgent=urgent_only)
            except Exception:
                logger.exception("%s %s/%s: unexpected failure", *item)
                # A failed urgent pass is retried urgent: a containment never waits behind ordinary work.
                self._retry(item, urgent=urgent_only)
            finally:
                self.queue.done(item)

    def _claim(self, item: Item) -> bool:
        """Whether this replica still leads, so that the worker may run its pass on ``item``."""
        with self._leadership:
            if not self._leading.is_set():
                return False
            logger.debug("%s %s/%s: pass starts", *item)
            return True

    def process(self, item: Item, *, urgent: bool = False) -> None:
        kind, namespace, name = item
        try:
            result = None
            if kind == "trust":
                reconcile.sync_trust(self.ctx, self.view, namespace, name)
            else:
                result = reconcile.run(self.ctx, self.view, namespace, name, urgent=urgent, prober=self.prober)
        except kube_client.ApiError as exc:
            self._api_error(item, exc, urgent)
            return
        except kube_client.TransportError as exc:
            # A call that timed out or found no server: no bug to trace, the next attempt may get through.
            logger.warning("%s %s/%s: no answer from the API server (%s); retrying", *item, type(exc).__name__)
            self._retry(item, urgent=urgent)
            return
        with self._lock:
            self._failures.pop(item, None)
        if kind == "trust":
            return
        if not urgent:
            self._visited((namespace, name))
        if result is None:
            return
        if urgent:
            self.queue.add(item)  # the ordinary pass that issues the replacement key
            return
        delay = self.resync * random.uniform(0.9, 1.0)  # noqa: S311 - spreading resyncs, not a secret
        if result.wakeup is not None:
            delay = min(delay, max(0.0, (result.wakeup - self.ctx.clock.now()).total_seconds()))
        if result.requeue_after is not None:
            delay = min(delay, result.requeue_after)
        self.queue.add(item, delay=delay)

    def _api_error(self, item: Item, exc: kube_client.ApiError, urgent: bool) -> None:
        kind, namespace, name = item
        message = kube_client.api_error_reason(exc)
        if exc.status == 409 and kind == "certificate":
            # Someone changed the object since the view saw it (a user, another operator process): read
            # it once and decide again on what is there now. Not an error: in a shared cluster it is the
            # precondition doing its job, and an alert on it would fire for every annotation a user sets.
            self._refresh(namespace, name)
            self._retry(item, initial=CONFLICT_BACKOFF_INITIAL, maximum=CONFLICT_BACKOFF_MAX, urgent=urgent)
            return
        if kind == "certificate":
            entry = self.view.certificate(namespace, name)
            environment = entry.spec.environment if entry is not None and entry.spec is not None else ""
            self.ctx.metrics.reconcile_failed(namespace, name, environment)
        if kube_client.refused(exc):
            # Missing RBAC (or a write an admission policy denies) is fixed by a person, not by
            # retrying: report it where people look.
            if kind == "certificate":
                reconcile.report_forbidden(self.ctx, namespace, name, message)
            self.queue.add(item, delay=FORBIDDEN_RETRY, urgent=urgent)
            return
        logger.warning("%s %s/%s: API %s: %s; retrying", kind, namespace, name, exc.status, message)
        # Urgent stays urgent: the retry of a containment must not become an ordinary pass, which
        # would generate the replacement key before the trust store is written.
        self._retry(item, urgent=urgent)

    def _refresh(self, namespace: str, name: str) -> None:
        """Read the object and its key Secrets once: a conflict says the view is behind on one of them
        (another operator process may have written a next key a moment ago: it is adopted, not
        generated again)."""
        try:
            body = resources.get(self.ctx.clients, namespace, name)
            if body is None:
                self.view.drop_certificate(namespace, name)
                return
            entry, _ = self.view.put_certificate(body)
            if entry.spec is None:
                return
            for secret_name in (entry.spec.secret_name, entry.spec.next_secret_name):
                found = secrets.read(self.ctx.clients, namespace, secret_name)
                if found is not None:
                    self.view.put_secret(namespace, found)
                else:
                    self.view.drop_secret(namespace, secret_name)
        except kube_client.ApiError:
            return

    def _retry(
        self,
        item: Item,
        *,
        initial: float = BACKOFF_INITIAL,
        maximum: float = BACKOFF_MAX,
        urgent: bool = False,
    ) -> None:
        """Queue the item again after an exponential backoff per item, reset by its next success."""
        with self._lock:
            failures = self._failures.get(item, 0)
            self._failures[item] = failures + 1
        self.queue.add(item, delay=min(maximum, initial * 2**failures), urgent=urgent)

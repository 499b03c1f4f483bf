"""Leader election between operator replicas, with a Lease: one reconciles, the others stand by warm.

Why not Kopf's peering: the work is done by the engine's workers, not by Kopf handlers, and Kopf's
peering pause stops only Kopf's own watches. A paused replica would keep reconciling from a view that
no longer changes, and its replacement would start cold. Here every replica watches (its view stays
current, so a takeover needs no re-listing) and only the holder of the Lease takes work from the queue.

The holder renews every ``retry`` seconds; if it cannot renew for ``renew_deadline`` it stops
reconciling before the Lease can expire, so two replicas never reconcile at once for longer than a
pass in flight (and those passes write with resourceVersion preconditions). A replica that stops
releases the Lease, so the next one takes over at once; one that is killed is replaced once the
Lease has gone unrenewed for ``duration`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from webhookcerts.domain import leadership
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import leases

logger = logging.getLogger(__name__)

DEFAULT_DURATION = 15
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY = 2.0


class Elector:
    def __init__(
        self,
        clients: kube_client.Clients,
        namespace: str,
        name: str,
        identity: str,
        *,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        duration: int = DEFAULT_DURATION,
        renew_deadline: float | None = None,
        retry: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients, self.namespace, self.name, self.identity = clients, namespace, name, identity
        self.duration = duration
        self.renew_deadline = (
            renew_deadline if renew_deadline is not None else min(DEFAULT_RENEW_DEADLINE, duration * 2 / 3)
        )
        self.retry = retry if retry is not None else min(DEFAULT_RETRY, duration / 5)
        self._on_started, self._on_stopped, self._clock = on_started, on_stopped, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: leadership.Record | None = None
        self._seen_at = 0.0
        self._renewed_at = 0.0
        self.leading = False
        self._holder_logged: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop electing; a holder releases the Lease so that a standby takes over without waiting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.leading:
            self._lose("stopping")
            try:
                record = leases.read(self.clients, self.namespace, self.name)
                if record is not None and record.holder == self.identity:
                    leases.write(
                        self.clients,
                        self.namespace,
                        self.name,
                        holder="",
                        duration_seconds=1,
                        transitions=record.transitions,
                        basis=record,
                    )
                    logger.info("released the lease %s/%s", self.namespace, self.name)
            except kube_client.ApiError as exc:
                logger.warning("could not release the lease: API %s: %s", exc.status, kube_client.api_error_reason(exc))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except kube_client.ApiError as exc:
                # A conflict is another replica's write in between: decided again next round.
                if exc.status != 409:
                    logger.warning(
                        "lease %s/%s: API %s: %s",
                        self.namespace,
                        self.name,
                        exc.status,
                        kube_client.api_error_reason(exc),
                    )
            except Exception:
                logger.exception("lease %s/%s: unexpected failure", self.namespace, self.name)
            if self.leading and self._clock() - self._renewed_at > self.renew_deadline:
                self._lose(f"the lease was not renewed for {self.renew_deadline:.0f} s")
            self._stop.wait(self.retry)

    def _round(self) -> None:
        record = leases.read(self.clients, self.namespace, self.name)
        if record != self._seen:
            self._seen, self._seen_at = record, self._clock()
        move = leadership.decide(record, self.identity, unchanged_for=self._clock() - self._seen_at)
        if move is leadership.Move.WAIT:
            assert record is not None
            if self.leading:
                self._lose(f"{record.holder} holds the lease now")
            if self._holder_logged != record.holder:
                self._holder_logged = record.holder
                logger.info("standing by: %s holds the lease %s/%s", record.holder, self.namespace, self.name)
            return
        transitions = 0 if record is None else record.transitions + (1 if move is leadership.Move.TAKE else 0)
        leases.write(
            self.clients,
            self.namespace,
            self.name,
            holder=self.identity,
            duration_seconds=self.duration,
            transitions=transitions,
            basis=record,
        )
        self._renewed_at = self._clock()
        if not self.leading:
            self.leading = True
            self._holder_logged = self.identity
            logger.info("leading: %s holds the lease %s/%s and reconciles", self.identity, self.namespace, self.name)
            self._on_started()

    def _lose(self, why: str) -> None:
        self.leading = False
        logger.warning("no longer leading (%s): reconciling stops", why)
        self._on_stopped()

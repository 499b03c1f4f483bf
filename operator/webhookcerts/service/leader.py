"""Leader election between operator replicas, with a Lease: one reconciles, the others stand by warm.

Why not Kopf's peering: the work is done by the engine's workers, not by Kopf handlers, and Kopf's
peering pause stops only Kopf's own watches. A paused replica would keep reconciling from a view that
no longer changes, and its replacement would start cold. Here every replica watches (its view stays
current, so a takeover needs no re-listing) and only the holder of the Lease takes work from the queue.

The holder renews every ``retry`` seconds. Once ``renew_deadline`` has passed since it sent its last
successful renewal, it stops reconciling, before the Lease can expire for a standby (``duration``):
a watchdog thread of its own decides that on the clock, whatever the renewal in flight is doing, so a
connection the API server stopped answering cannot keep an old leader leading. Every Lease call gives
up after a third of the deadline (and every other API call after its own timeout, ``kube.client``), so
the next attempt comes in time. A renewal answered only after the deadline does not count; the next
one that succeeds is a fresh start (the engine passes every object again), never a silent resumption.

Two replicas therefore never reconcile at once for longer than a pass in flight: the workers check
leadership after taking an item (``Engine.follow`` returns once no new pass can start, and the loss
is logged after it), and passes in flight write with resourceVersion preconditions. A replica that
stops releases the Lease, so the next one takes over at once; one that is killed is replaced once
the Lease has gone unrenewed for ``duration`` seconds.
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
        # A read and a write that both hang still leave a third of the deadline for another attempt.
        self.call_timeout = self.renew_deadline / 3
        self._on_started, self._on_stopped, self._clock = on_started, on_stopped, clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Guards leading and _renewed_at, and runs the callbacks: one transition at a time, in order.
        self._lock = threading.RLock()
        self._seen: leadership.Record | None = None
        self._seen_at = 0.0
        self._renewed_at = 0.0
        self.leading = False
        self._holder_logged: str | None = None

    def start(self) -> None:
        for target, name in ((self._loop, "leader-election"), (self._watchdog, "leader-deadline")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def dead_threads(self) -> list[str]:
        """The names of this elector's threads that have ended (for the liveness probe)."""
        return [thread.name for thread in self._threads if not thread.is_alive()]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop electing; a holder releases the Lease so that a standby takes over without waiting."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._lose("stopping"):
            try:
                record = leases.read(self.clients, self.namespace, self.name, timeout=self.call_timeout)
                if record is not None and record.holder == self.identity:
                    leases.write(
                        self.clients,
                        self.namespace,
                        self.name,
                        holder="",
                        duration_seconds=1,
                        transitions=record.transitions,
                        basis=record,
                        timeout=self.call_timeout,
                    )
                    logger.info("released the lease %s/%s", self.namespace, self.name)
            except kube_client.ApiError as exc:
                logger.warning("could not release the lease: API %s: %s", exc.status, kube_client.api_error_reason(exc))
            except kube_client.TransportError as exc:
                logger.warning("could not release the lease: %s", exc)

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
            except kube_client.TransportError as exc:
                logger.warning("lease %s/%s: no answer from the API server: %s", self.namespace, self.name, exc)
            except Exception:
                logger.exception("lease %s/%s: unexpected failure", self.namespace, self.name)
            self._stop.wait(self.retry)

    def _round(self) -> None:
        record = leases.read(self.clients, self.namespace, self.name, timeout=self.call_timeout)
        if record != self._seen:
            self._seen, self._seen_at = record, self._clock()
        move = leadership.decide(record, self.identity, unchanged_for=self._clock() - self._seen_at)
        if move is leadership.Move.WAIT:
            assert record is not None
            self._lose(f"{record.holder} holds the lease now")
            if self._holder_logged != record.holder:
                self._holder_logged = record.holder
                logger.info("standing by: %s holds the lease %s/%s", record.holder, self.namespace, self.name)
            return
        transitions = 0 if record is None else record.transitions + (1 if move is leadership.Move.TAKE else 0)
        # The deadline counts from before the write: the API server applied it after this, so a standby
        # cannot see the Lease expire before sent_at + duration.
        sent_at = self._clock()
        leases.write(
            self.clients,
            self.namespace,
            self.name,
            holder=self.identity,
            duration_seconds=self.duration,
            transitions=transitions,
            basis=record,
            timeout=self.call_timeout,
        )
        self._renewed(sent_at)

    def _renewed(self, sent_at: float) -> None:
        with self._lock:
            if self._stop.is_set() or self._clock() - sent_at >= self.renew_deadline:
                return  # too late to count: the next renewal that succeeds in time starts afresh
            self._renewed_at = sent_at
            if self.leading:
                return
            self.leading = True
            self._holder_logged = self.identity
            logger.info("leading: %s holds the lease %s/%s and reconciles", self.identity, self.namespace, self.name)
            self._on_started()

    def _watchdog(self) -> None:
        """Give leadership up when the renew deadline passes, whatever the renewal in flight is doing."""
        while not self._stop.is_set():
            with self._lock:
                left = self._renewed_at + self.renew_deadline - self._clock() if self.leading else self.retry
                if left <= 0:
                    self._lose(f"the lease was not renewed for {self.renew_deadline:.0f} s")
                    left = self.retry
            # Never longer than ``retry`` at a time: leadership may start meanwhile.
            self._stop.wait(min(left, self.retry))

    def _lose(self, why: str) -> bool:
        """Stop reconciling (once: False when not leading). Logged after the engine stopped taking work,
        so that no pass of this replica starts after the line."""
        with self._lock:
            if not self.leading:
                return False
            self.leading = False
            self._on_stopped()
            logger.warning("no longer leading (%s): reconciling stopped", why)
            return True

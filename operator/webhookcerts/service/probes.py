"""Endpoint validation (``spec.validation``) run beside the reconcile workers, bounded in time and rate.

A probe is a TLS handshake with a timeout; an endpoint that black-holes would hold a reconcile worker
for that long, and many of them would hold all of them. So a pass only asks for a probe and reads the
last answer: the probe runs on its own small pool, at most once per ``interval`` for one certificate
and endpoint, and its answer wakes the object up (``on_done``) so the next pass records it as a
condition. One writer of status remains: the reconcile pass.

An answer that is not yet the one the lifecycle waits for (the endpoint has not reloaded its trust store
yet, or is restarting) is asked again soon, then less and less often (2 s, 4 s, 8 s ... up to
``interval``), as cert-manager backs off a failed issuance: the usual case, an endpoint a few seconds
behind the trust Secret, is seen within seconds instead of a whole interval later, and an endpoint that
stays wrong costs one probe per interval.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from webhookcerts.domain import models, names
from webhookcerts.kube import secrets
from webhookcerts.service import validation
from webhookcerts.service.state import Pass

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 60.0
FIRST_RETRY = 2.0

ProbeKey = tuple[str, str, str, str, str]  # namespace, name, condition type, fingerprint, url


@dataclasses.dataclass(frozen=True)
class Answer:
    result: validation.Probe
    at: float
    wait: float  # seconds from ``at`` until the next probe is due
    misses: int  # answers in a row that were not the one wanted


def _always(_: validation.Probe) -> bool:
    return True


class Prober:
    """Probes on a pool of their own; ``workers=0`` probes inline (the in-process tests, the CLI)."""

    def __init__(
        self,
        *,
        workers: int = 2,
        interval: float = DEFAULT_INTERVAL,
        first_retry: float = FIRST_RETRY,
        on_done: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "probe") if workers else None
        self.interval = interval
        self._first_retry = min(first_retry, interval)
        self._on_done = on_done
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[ProbeKey, Answer] = {}
        self._running: set[ProbeKey] = set()

    def answer(
        self,
        key: ProbeKey,
        run: Callable[[], validation.Probe],
        wanted: Callable[[validation.Probe], bool] = _always,
    ) -> validation.Probe | None:
        """The latest answer for ``key``; a new probe is started when it is due. None until one came.

        ``wanted`` says whether an answer is the one the lifecycle waits for: one that is not makes the
        next probe due sooner (see the module's docstring)."""
        with self._lock:
            held = self._answers.get(key)
            due = held is None or self._clock() - held.at >= held.wait
            start = due and key not in self._running
            if start:
                self._running.add(key)
        if start:
            if self._pool is None:
                self._finish(key, run, wanted, notify=False)
                with self._lock:
                    held = self._answers.get(key)
            else:
                self._pool.submit(self._finish, key, run, wanted, notify=True)
        return held.result if held is not None else None

    def due_in(self, key: ProbeKey) -> float:
        """Seconds until ``key``'s next probe is due (0 when it is, or when none was answered yet)."""
        with self._lock:
            held = self._answers.get(key)
            return 0.0 if held is None else max(0.0, held.at + held.wait - self._clock())

    def _finish(
        self,
        key: ProbeKey,
        run: Callable[[], validation.Probe],
        wanted: Callable[[validation.Probe], bool],
        *,
        notify: bool,
    ) -> None:
        try:
            result = run()
        except Exception as exc:  # a probe must never take the pool down with it
            logger.warning("%s/%s: probe of %s failed: %s", key[0], key[1], key[4], type(exc).__name__)
            result = validation.Probe(validation.Outcome.UNREACHABLE, f"the probe failed: {type(exc).__name__}")
        with self._lock:
            previous = self._answers.get(key)
            if wanted(result):
                misses, wait = 0, self.interval
            else:
                misses = previous.misses + 1 if previous is not None else 1
                wait = min(self.interval, self._first_retry * 2 ** (misses - 1))
            self._answers[key] = Answer(result, self._clock(), wait, misses)
            self._running.discard(key)
        if notify and self._on_done is not None:
            self._on_done(key[0], key[1])

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._answers if k[:2] == (namespace, name)]:
                del self._answers[key]

    def shutdown(self) -> None:
        if self._pool is not None:
            # Probes in flight end by their own timeout; nobody waits for them on the way out.
            self._pool.shutdown(wait=False, cancel_futures=True)


def validate(p: Pass, prober: Prober) -> None:
    """Conditions from probing the endpoint with the pending next, and with a revoked compromised one."""
    check = p.spec.validation
    current, pending = p.status.current, p.status.next
    probes: list[tuple[str, secrets.SecretData | None, bool]] = []
    if check is not None and pending is not None:
        probes.append((names.ENDPOINT_ACCEPTS_NEXT, p.next_raw, True))
    else:
        p.drop_condition(names.ENDPOINT_ACCEPTS_NEXT)
    revoked_now = (
        current is not None and current.compromised_by and current.fingerprint in p.status.revoked_fingerprints
    )
    if check is not None and revoked_now:
        probes.append((names.ENDPOINT_REJECTS_COMPROMISED, p.current_raw, False))
    else:
        p.drop_condition(names.ENDPOINT_REJECTS_COMPROMISED)
    if check is None or not probes:
        return
    ca_pem = None
    if check.ca_secret_ref is not None:
        ca_secret = secrets.read(p.ctx.clients, p.resource.namespace, check.ca_secret_ref.name)
        ca_pem = ca_secret.data.get(check.ca_secret_ref.key) if ca_secret else None
        if ca_pem is None:
            ref = check.ca_secret_ref
            for type, _, _ in probes:
                # Unknown, not False: the endpoint was never asked, so it has neither accepted nor refused.
                p.set_condition(
                    type, "Unknown", "CASecretNotFound", f"validation.caSecretRef {ref.name} has no key {ref.key}"
                )
            return
    for type, secret, want_accept in probes:
        if secret is None or names.TLS_KEY not in secret.data or names.TLS_CERT not in secret.data:
            continue
        cert_pem, key_pem = secret.data[names.TLS_CERT], secret.data[names.TLS_KEY]
        fingerprint = pending.fingerprint if want_accept and pending else current.fingerprint if current else ""
        key = (p.resource.namespace, p.resource.name, type, fingerprint, check.url)

        def run(cert: bytes = cert_pem, private: bytes = key_pem, ca: bytes | None = ca_pem) -> validation.Probe:
            return validation.probe(
                check.url, cert, private, ca_pem=ca, timeout=check.timeout_seconds, accept_status=check.accept_status
            )

        def wanted(result: validation.Probe, accept: bool = want_accept) -> bool:
            return verdict(result, want_accept=accept)[0] == "True"

        result = prober.answer(key, run, wanted)
        if result is None:
            continue  # asked for; the answer wakes this object up
        status, reason = verdict(result, want_accept=want_accept)
        p.set_condition(type, status, reason, f"{check.url}: {result.detail}")
        if status != "True":
            # Not yet what the lifecycle needs (an endpoint still reloading, say): ask again when the
            # next probe is due, sooner after the first misses.
            again = max(prober.due_in(key), 0.5)
            p.requeue_after = min(p.requeue_after or again, again)


def verdict(result: validation.Probe, *, want_accept: bool) -> tuple[models.ConditionStatus, str]:
    """The condition a probe's answer makes: True when the endpoint did what the lifecycle needs."""
    good = validation.Outcome.ACCEPTED if want_accept else validation.Outcome.REFUSED
    if result.outcome is good:
        return "True", result.outcome.value
    if result.outcome in (validation.Outcome.UNREACHABLE, validation.Outcome.INCONCLUSIVE):
        # Neither is evidence either way: a down endpoint has refused nothing, a 404 accepted nothing.
        return "Unknown", result.outcome.value
    return "False", "Refused" if want_accept else "StillAccepted"

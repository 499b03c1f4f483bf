"""One reconcile pass's state and plumbing: what it reads from the view, how it records and reports.

A pass reads the object, its key Secrets and its neighbours from the watch-fed ``View`` and writes
through ``kube``; what the API server answers to a write goes back into the view (write-through), so
the rest of the pass, and the next one, see the operator's own writes at once. Status is recorded with
the resourceVersion the pass started from: if anyone changed the object meanwhile (a user, a second
operator process), the write fails with a conflict and the pass is decided again on the new state.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from webhookcerts.domain import clock as clock_mod
from webhookcerts.domain import conditions, models, names, ownership, pki, policy
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import events, resources, secrets
from webhookcerts.service import derived, metrics, presentations, view

logger = logging.getLogger(__name__)

KeyGenerator = Callable[[models.Subject, datetime.datetime, datetime.timedelta], pki.KeyPair]


class SecretConflict(Exception):
    """A Secret this object claims belongs to someone else: nothing is written to it."""


class CheckCache:
    """Key-pair checks by Secret uid and resourceVersion: an unchanged Secret is never verified again.

    One entry per Secret, its latest version: an older version is never asked about again (the view
    only moves forward). A hit also needs the same key and certificate bytes (a digest of them): a
    resourceVersion is not proof of content when etcd was restored from a snapshot under a running
    operator. An entry does not keep the certificate's PEM when the Secret's ``tls.crt`` holds it byte
    for byte (the usual case): it is taken from the Secret again on a hit, whose bytes the digest has
    matched. A copy of every certificate, kept beside the view's, was 2 kB per object
    (docs/benchmarks.md, scale).
    """

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[str, tuple[str, bytes, policy.SecretObservation]] = (
            collections.OrderedDict()
        )
        self.misses = 0

    def observe(self, secret: secrets.SecretData | None) -> policy.SecretObservation:
        if secret is None:
            return policy.SecretObservation.missing()
        digest = _pair_digest(secret)
        with self._lock:
            hit = self._seen.get(secret.uid)
            if hit is not None and hit[:2] == (secret.resource_version, digest):
                self._seen.move_to_end(secret.uid)
                return _with_pem(hit[2], secret)
            self.misses += 1
        seen = observe_secret(secret)
        with self._lock:
            self._seen[secret.uid] = (secret.resource_version, digest, _without_pem(seen, secret))
            self._seen.move_to_end(secret.uid)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return seen

    def __len__(self) -> int:
        return len(self._seen)


def _pair_digest(secret: secrets.SecretData) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for key in (names.TLS_KEY, names.TLS_CERT):
        value = secret.data.get(key)
        # The length first: a missing value and an empty one, or bytes moved across the two, differ.
        digest.update(b"-" if value is None else len(value).to_bytes(8, "big") + value)
    return digest.digest()


def _without_pem(seen: policy.SecretObservation, secret: secrets.SecretData) -> policy.SecretObservation:
    if seen.info is None or seen.info.pem.encode() != secret.data.get(names.TLS_CERT):
        return seen
    return dataclasses.replace(seen, info=dataclasses.replace(seen.info, pem=""))


def _with_pem(kept: policy.SecretObservation, secret: secrets.SecretData) -> policy.SecretObservation:
    if kept.info is None or kept.info.pem:
        return kept
    # The digest matched: tls.crt is the very bytes the entry was made from.
    return dataclasses.replace(kept, info=dataclasses.replace(kept.info, pem=secret.data[names.TLS_CERT].decode()))


class BoundedKeygen:
    """RSA key generation, at most one per core at a time, each one timed into ``metrics``.

    cryptography releases the GIL while OpenSSL generates, so threads reach the machine's bound; more
    at once than there are cores would only make every one of them slower. The time recorded is the
    generation's own, inside its slot: the wait for a slot is queueing, not key generation.
    """

    def __init__(
        self,
        generate: KeyGenerator,
        slots: int | None = None,
        recorder: metrics.Metrics | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._generate = generate
        self.slots = slots or os.cpu_count() or 1
        self._slots = threading.BoundedSemaphore(self.slots)
        self._metrics = recorder
        self._timer = timer

    def __call__(self, subject: models.Subject, now: datetime.datetime, duration: datetime.timedelta) -> pki.KeyPair:
        with self._slots:
            started = self._timer()
            pair = self._generate(subject, now, duration)
            if self._metrics is not None:
                self._metrics.key_generated(self._timer() - started)
            return pair


@dataclasses.dataclass(frozen=True)
class Context:
    clients: kube_client.Clients
    clock: clock_mod.Clock = dataclasses.field(default_factory=clock_mod.SystemClock)
    keygen: KeyGenerator = pki.new_key_pair
    metrics: metrics.Metrics = dataclasses.field(default_factory=metrics.default)
    checks: CheckCache = dataclasses.field(default_factory=CheckCache)
    # When each object's bundle password was last read, with the certificates the bundle then held.
    bundle_checks: dict[tuple[str, str], tuple[tuple[str, ...], float]] = dataclasses.field(default_factory=dict)
    # How long an unchanged bundle goes without reading its password Secret (which the operator does
    # not watch: it belongs to the user and carries no label of ours). 0: every pass reads it; the
    # engine sets its resync interval here.
    bundle_recheck_seconds: float = 0.0
    # When each trust Secret's truststore password (and each trust ConfigMap) was last looked at.
    truststore_checks: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    # The trust hash each trust ConfigMap was last written with: one whose write failed half-way (the
    # Secret written, the ConfigMap not) is due again at the next pass, not at the next recheck.
    config_map_hashes: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    # The digest of the truststores each trust Secret held when they were last checked against ca.crt
    # with the password: any other bytes (an edit by hand) are checked at once, not at the next recheck.
    truststore_digests: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    # Told (namespace, trust Secret) after a trust Secret's content changed: the engine wakes the other
    # objects naming it, so their recorded trust hash and their consumers follow.
    trust_changed: Callable[[str, str], None] | None = None


def observe_secret(secret: secrets.SecretData | None) -> policy.SecretObservation:
    if secret is None:
        return policy.SecretObservation.missing()
    key, cert = secret.data.get(names.TLS_KEY), secret.data.get(names.TLS_CERT)
    if not key or not cert:
        missing = " and ".join(k for k, v in ((names.TLS_KEY, key), (names.TLS_CERT, cert)) if not v)
        return policy.SecretObservation(
            exists=True,
            problem="SecretCorrupted",
            message=f"has no {missing}",
            annotations=secret.annotations,
        )
    try:
        info = pki.check_key_pair(key, cert)
    except pki.InvalidKeyMaterial as exc:
        return policy.SecretObservation(
            exists=True, problem=exc.reason, message=str(exc), annotations=secret.annotations
        )
    except Exception as exc:
        # Whatever a Secret holds must not make every pass raise before containment: it is corrupt.
        return policy.SecretObservation(
            exists=True,
            problem="SecretCorrupted",
            message=f"cannot be read ({type(exc).__name__})",
            annotations=secret.annotations,
        )
    return policy.SecretObservation(exists=True, info=info, annotations=secret.annotations)


@dataclasses.dataclass(frozen=True)
class Resource:
    """Who is being reconciled: identity and the annotations users steer with."""

    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    annotations: dict[str, str]

    @classmethod
    def from_body(cls, body: Any) -> Resource:
        meta = body["metadata"]
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            resource_version=str(meta.get("resourceVersion") or ""),
            annotations=dict(meta.get("annotations") or {}),
        )

    def owner(self) -> secrets.Owner:
        return secrets.Owner(f"{models.GROUP}/{models.VERSION}", models.KIND, self.name, self.uid)


def read_secret(
    ctx: Context, seen: view.View, namespace: str, name: str, *, authoritative: bool
) -> secrets.SecretData | None:
    """A Secret from the view; from the API when the view cannot know it (no operator label yet)."""
    held = seen.secret(namespace, name)
    if held is not None or authoritative:
        return held
    found = secrets.read(ctx.clients, namespace, name)
    if found is not None:
        seen.put_secret(namespace, found)
    return found


class Pass:
    """The state of one reconcile pass over one WebhookCertificate."""

    def __init__(self, ctx: Context, seen: view.View, entry: view.Certificate) -> None:
        assert entry.spec is not None
        assert entry.status is not None
        self.ctx, self.view = ctx, seen
        self.resource = Resource.from_body(entry.body)
        self.spec: models.WebhookCertificateSpec = entry.spec
        self.status: models.WebhookCertificateStatus = entry.status.model_copy(deep=True)
        self.saved: dict[str, Any] = entry.status.to_api()
        self.current_raw: secrets.SecretData | None = None
        self.next_raw: secrets.SecretData | None = None
        self.last: policy.Observation | None = None
        self.trust_hash: str | None = None
        # Seconds after which this pass wants to run again though nothing it knows of is due.
        self.requeue_after: float | None = None
        # The Secrets this object names but may not write (another object's, a user's), with why: the
        # steps that would write them are refused, everything else goes on (``claims``).
        self.disputed: dict[str, str] = {}

    @property
    def now(self) -> datetime.datetime:
        return self.ctx.clock.now()

    def observe(self) -> policy.Observation:
        ns = self.resource.namespace
        # The current key may be a Secret made by hand (adopted), so the view's silence is confirmed
        # with the API; only the operator ever creates the next key, so its absence is the truth.
        self.current_raw = read_secret(self.ctx, self.view, ns, self.spec.secret_name, authoritative=False)
        self.next_raw = read_secret(self.ctx, self.view, ns, self.spec.next_secret_name, authoritative=True)
        self.last = policy.Observation(
            spec=self.spec,
            status=self.status,
            now=self.now,
            current_secret=self.ctx.checks.observe(self.current_raw),
            next_secret=self.ctx.checks.observe(self.next_raw),
            emergency_reference=self.resource.annotations.get(names.EMERGENCY_ANNOTATION),
            cutover_serial=self.resource.annotations.get(names.CUTOVER_ANNOTATION),
            discard_serial=self.resource.annotations.get(names.DISCARD_NEXT_ANNOTATION),
            presentations=presentations.observe(self),
        )
        return self.last

    def save(self) -> None:
        """Record status now, conditional on the version this pass read: later steps depend on it."""
        derived.derive(self)
        new = self.status.to_api()
        written = resources.patch_status(
            self.ctx.clients,
            self.resource.namespace,
            self.resource.name,
            self.saved,
            new,
            resource_version=self.resource.resource_version,
        )
        if written is not None:
            self.view.put_certificate(written)
            self.resource = dataclasses.replace(
                self.resource, resource_version=str(written["metadata"].get("resourceVersion", ""))
            )
        self.saved = new
        # The gauges mirror what was just recorded, so a scrape never lags the status people read.
        self.ctx.metrics.observe(self.resource.namespace, self.resource.name, self.spec.environment, self.status)

    def event(self, type: str, reason: str, message: str) -> None:
        logger.info("%s/%s: %s: %s", self.resource.namespace, self.resource.name, reason, message)
        events.record(
            self.ctx.clients,
            self.resource.namespace,
            self.resource.name,
            self.resource.uid,
            type=type,
            reason=reason,
            message=message,
        )

    def update(self, **changes: Any) -> None:
        # Validate through the model so a step can never record a status the CRD would refuse.
        merged = {**self.status.model_dump(), **changes}
        self.status = models.WebhookCertificateStatus.model_validate(merged)

    def write_secret(
        self,
        name: str,
        *,
        role: ownership.Role,
        basis: secrets.SecretData | secrets.Unknown | None = secrets.UNKNOWN,
        annotations: Mapping[str, str | None] | None = None,
        **kwargs: Any,
    ) -> secrets.SecretData | None:
        """Write one of this object's Secrets and put what the server answered back into the view.

        ``basis`` is the copy the decision was taken on: the write is conditional on it (created when
        it is None, patched at its resourceVersion otherwise), so a Secret someone else wrote since (a
        second operator process generating the same next key) makes the write fail with a conflict
        and the pass is decided again, never overwritten. Without a basis, the view's copy is used,
        read from the API when the view has none.

        The Secret is stamped with its owner and ``role``, and owned by the object (garbage-collected
        with it) only under ``deletionPolicy: Delete``: the provider holds a copy of the key, so by
        default deleting the object leaves it (cert-manager leaves owner references off for the same
        reason). A create that finds a Secret nobody told the view of (a user's) raises
        ``SecretConflict`` when this object may not take it.
        """
        ns = self.resource.namespace
        if name in self.disputed:
            raise SecretConflict(self.disputed[name])
        if isinstance(basis, secrets.Unknown):
            held = self.view.secret(ns, name)
            if held is not None:
                basis = held
        labels, stamp = ownership.stamp(self.resource.name, role)
        delete = self.spec.deletion_policy == "Delete"
        try:
            written = secrets.write(
                self.ctx.clients,
                ns,
                name,
                labels={names.ENVIRONMENT_LABEL: self.spec.environment, **labels},
                annotations={**(annotations or {}), **stamp},
                owner=self.resource.owner() if delete else None,
                disown=None if delete else self.resource.uid,
                existing=basis,
                **kwargs,
            )
        except kube_client.ApiError as exc:
            if secrets.is_conflict(exc) and (basis is None or kwargs.get("create_only")):
                found = secrets.read(self.ctx.clients, ns, name)
                if found is not None:
                    self.view.put_secret(ns, found)
                    seen = ownership.holder(name, found.labels, found.annotations)
                    if not seen.managed or (seen.owner not in (None, self.resource.name)):
                        why = (
                            f"Secret {name} already exists and does not belong to WebhookCertificate "
                            f"{self.resource.name}: rename the Secret this object names, or delete that one "
                            "if it is not needed; nothing was written to it"
                        )
                        self.disputed[name] = why
                        raise SecretConflict(why) from None
            raise
        if written is not None:
            self.view.put_secret(ns, written)
        return written

    def write_key_secret(
        self, name: str, pair: pki.KeyPair, annotations: Mapping[str, str | None], create_only: bool
    ) -> None:
        # Key Secrets are written against what this pass observed, not what the view holds by the time
        # the key is generated (a second or more later).
        is_next = name == self.spec.next_secret_name
        observed = self.next_raw if is_next else self.current_raw
        self.write_secret(
            name,
            role="next" if is_next else "key",
            basis=observed,
            type=secrets.TLS,
            data={names.TLS_KEY: pair.key_pem, names.TLS_CERT: pair.cert_pem},
            annotations=annotations,
            create_only=create_only,
        )

    def delete_secret(self, name: str, resource_version: str | None = None) -> None:
        if name in self.disputed:
            raise SecretConflict(self.disputed[name])
        secrets.delete(self.ctx.clients, self.resource.namespace, name, resource_version=resource_version)
        self.view.drop_secret(self.resource.namespace, name)

    def new_pair(self) -> pki.KeyPair:
        return self.ctx.keygen(self.spec.subject, self.now, self.spec.duration_delta)

    def set_condition(self, type: str, status: models.ConditionStatus, reason: str, message: str) -> None:
        before = conditions.get(self.status.conditions, type)
        updated, _ = conditions.set_condition(
            self.status.conditions,
            type=type,
            status=status,
            reason=reason,
            message=message,
            now=self.now,
            observed_generation=self.resource.generation,
        )
        self.status.conditions = updated
        # An Event when a condition that people act on turns (or changes its reason), never on every pass.
        event_type = CONDITION_EVENTS.get(type, {}).get(status)
        if event_type and (before is None or before.status != status or before.reason != reason):
            self.event(event_type, reason, message)

    def drop_condition(self, type: str) -> None:
        self.status.conditions, _ = conditions.remove(self.status.conditions, type)


CONDITION_EVENTS: dict[str, dict[str, str]] = {
    names.READY: {"False": "Warning"},
    names.CUTOVER_REFUSED: {"True": "Warning"},
    names.EMERGENCY_REFUSED: {"True": "Warning"},
    names.DISCARD_REFUSED: {"True": "Warning"},
    names.TRUST_STORE_INCOMPLETE: {"True": "Warning"},
    names.BUNDLE_READY: {"False": "Warning"},
    names.RECIPIENT_KEY_EXPIRING: {"True": "Warning"},
    names.ENDPOINT_ACCEPTS_NEXT: {"True": "Normal", "False": "Warning"},
    names.ENDPOINT_REJECTS_COMPROMISED: {"True": "Normal", "False": "Warning"},
}

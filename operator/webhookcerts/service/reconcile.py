"""The one reconcile path for a WebhookCertificate, shared by the create/update/resume handlers and the timer.

A reconcile observes (the key Secrets, the annotations), asks ``domain.policy`` what to do, and
carries out that one decision as a small step that writes in a crash-safe order and records itself in
``status`` before anything depends on it. It then loops (a cut-over may follow an emergency in the
same pass only if the policy asks for it) and finally converges what is derived from status: the
conditions, the stage, the trust store, the bundles.

Crash-safe write orders (the lifecycle's invariant 3):
- rotation: write the next key Secret, record it in status, update the trust store;
- cut-over: write the current Secret, record status, update the trust store, delete the old key Secret.
A crash between two steps is repaired by the next reconcile: an unrecorded next Secret made for the
same purpose is adopted (never a second key), an interrupted cut-over is finished.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import pydantic

from webhookcerts.domain import clock as clock_mod
from webhookcerts.domain import conditions, models, names, pki, policy, renewal, trust
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import events, resources, secrets
from webhookcerts.service import consumers, metrics, validation

logger = logging.getLogger(__name__)

MAX_STEPS = 6
CONFLICT_RETRIES = 5

KeyGenerator = Callable[[models.Subject, datetime.datetime, datetime.timedelta], pki.KeyPair]


@dataclasses.dataclass(frozen=True)
class Context:
    clients: kube_client.Clients
    clock: clock_mod.Clock = dataclasses.field(default_factory=clock_mod.SystemClock)
    keygen: KeyGenerator = pki.new_key_pair
    metrics: metrics.Metrics = dataclasses.field(default_factory=metrics.default)


@dataclasses.dataclass(frozen=True)
class Resource:
    """Who is being reconciled: identity and the annotations users steer with."""

    namespace: str
    name: str
    uid: str
    generation: int
    annotations: dict[str, str]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Resource:
        meta = body["metadata"]
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            annotations=dict(meta.get("annotations") or {}),
        )

    def owner(self) -> secrets.Owner:
        return secrets.Owner(f"{models.GROUP}/{models.VERSION}", models.KIND, self.name, self.uid)


@dataclasses.dataclass(frozen=True)
class Result:
    status: models.WebhookCertificateStatus
    decision: policy.Decision
    wakeup: datetime.datetime | None


def parse_spec(body: dict[str, Any]) -> models.WebhookCertificateSpec:
    return models.WebhookCertificateSpec.model_validate(body.get("spec") or {})


def parse_status(body: dict[str, Any]) -> models.WebhookCertificateStatus:
    return models.WebhookCertificateStatus.model_validate(body.get("status") or {})


def reconcile(ctx: Context, body: dict[str, Any]) -> Result:
    """Bring one WebhookCertificate one step closer to what its spec, status and annotations ask for."""
    return _Reconciler(ctx, Resource.from_body(body), parse_spec(body), parse_status(body)).run()


def reconcile_latest(ctx: Context, namespace: str, name: str) -> Result | None:
    """Reconcile the object as the API server has it now (None when it is gone).

    Event bodies may predate our own last status write; reconciling one would write stale status
    back. Reading afresh under the caller's per-object lock rules that out.
    """
    body = resources.get(ctx.clients, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    return reconcile(ctx, body)


def forget(ctx: Context, body: dict[str, Any]) -> None:
    """A WebhookCertificate is going away: its certificates leave the shared trust store."""
    resource, spec = Resource.from_body(body), parse_spec(body)
    sync_trust(ctx, resource.namespace, spec.trust.secret_name, exclude=resource.name)
    ctx.metrics.forget(resource.namespace, resource.name)


def report_forbidden(ctx: Context, namespace: str, name: str, message: str) -> None:
    """The API server refused one of our calls (RBAC): say so in Ready and an Event, as far as allowed.

    ``message`` is the API server's, which names the verb, the resource and the service account. Each
    write here is best effort: the refused permission may be the very one needed to report it, and
    the log line is the one report that always gets out.
    """
    logger.warning("%s/%s: Forbidden: %s", namespace, name, message)
    try:
        body = resources.get(ctx.clients, namespace, name)
        if body is None:
            return
        resource, status = Resource.from_body(body), parse_status(body)
        before = status.to_api()
        previous = conditions.get(status.conditions, names.READY)
        status.conditions, changed = conditions.set_condition(
            status.conditions,
            type=names.READY,
            status="False",
            reason="Forbidden",
            message=message,
            now=ctx.clock.now(),
            observed_generation=resource.generation,
        )
        if not changed:
            return
        # An Event only when the report is news, never on every retry.
        if previous is None or previous.reason != "Forbidden" or previous.message != message:
            events.record(
                ctx.clients, namespace, name, resource.uid, type="Warning", reason="Forbidden", message=message
            )
        resources.patch_status(ctx.clients, namespace, name, before, status.to_api())
    except kube_client.ApiError as exc:
        logger.warning(
            "%s/%s: could not report the refusal: API %s: %s",
            namespace,
            name,
            exc.status,
            kube_client.api_error_reason(exc),
        )


# --- observation -----------------------------------------------------------------------------------


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
    return policy.SecretObservation(exists=True, info=info, annotations=secret.annotations)


def _record(info: pki.CertificateInfo, secret_name: str, revision: int) -> dict[str, Any]:
    return {
        "serial": info.serial,
        "fingerprint": info.fingerprint,
        "not_before": info.not_before,
        "not_after": info.not_after,
        "certificate": info.pem,
        "secret_name": secret_name,
        "revision": revision,
    }


class _Reconciler:
    def __init__(
        self,
        ctx: Context,
        resource: Resource,
        spec: models.WebhookCertificateSpec,
        status: models.WebhookCertificateStatus,
    ) -> None:
        self.ctx, self.resource, self.spec, self.status = ctx, resource, spec, status
        self.saved: dict[str, Any] = status.to_api()
        self.current_raw: secrets.SecretData | None = None
        self.next_raw: secrets.SecretData | None = None
        self.last: policy.Observation | None = None

    # plumbing -----------------------------------------------------------------------------------

    @property
    def now(self) -> datetime.datetime:
        return self.ctx.clock.now()

    def observe(self) -> policy.Observation:
        ns = self.resource.namespace
        self.current_raw = secrets.read(self.ctx.clients, ns, self.spec.secret_name)
        self.next_raw = secrets.read(self.ctx.clients, ns, self.spec.next_secret_name)
        self.last = policy.Observation(
            spec=self.spec,
            status=self.status,
            now=self.now,
            current_secret=observe_secret(self.current_raw),
            next_secret=observe_secret(self.next_raw),
            emergency_reference=self.resource.annotations.get(names.EMERGENCY_ANNOTATION),
            cutover_serial=self.resource.annotations.get(names.CUTOVER_ANNOTATION),
        )
        return self.last

    def save(self) -> None:
        """Record status now: later steps may depend on it surviving a crash."""
        self.derive()
        new = self.status.to_api()
        resources.patch_status(self.ctx.clients, self.resource.namespace, self.resource.name, self.saved, new)
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

    def key_secret_labels(self) -> dict[str, str]:
        return {names.ENVIRONMENT_LABEL: self.spec.environment, names.INSTANCE_LABEL: self.resource.name}

    def write_key_secret(self, name: str, pair: pki.KeyPair, annotations: dict[str, str], create_only: bool) -> None:
        secrets.write(
            self.ctx.clients,
            self.resource.namespace,
            name,
            type=secrets.TLS,
            data={names.TLS_KEY: pair.key_pem, names.TLS_CERT: pair.cert_pem},
            labels=self.key_secret_labels(),
            annotations=annotations,
            owner=self.resource.owner(),
            create_only=create_only,
        )

    def new_pair(self) -> pki.KeyPair:
        return self.ctx.keygen(self.spec.subject, self.now, self.spec.duration_delta)

    def adoptable_next(self, obs: policy.Observation, reason: str, incident: str | None) -> pki.KeyPair | None:
        """An unrecorded next Secret that an interrupted step made for this very purpose."""
        secret = obs.next_secret
        if secret.info is None or self.next_raw is None:
            return None
        wanted = {names.NEXT_REASON_ANNOTATION: reason, names.INCIDENT_ANNOTATION: incident or ""}
        if any(secret.annotations.get(k, "") != v for k, v in wanted.items()):
            return None
        if secret.info.fingerprint in self.status.revoked_fingerprints:
            return None
        return pki.KeyPair(self.next_raw.data[names.TLS_KEY], self.next_raw.data[names.TLS_CERT])

    def issue_next(
        self, obs: policy.Observation, reason: models.NextReason, incident: str | None
    ) -> pki.CertificateInfo:
        pair = self.adoptable_next(obs, reason, incident)
        if pair is None:
            pair = self.new_pair()
            annotations = {names.NEXT_REASON_ANNOTATION: reason, names.INCIDENT_ANNOTATION: incident or ""}
            self.write_key_secret(self.spec.next_secret_name, pair, annotations, create_only=False)
        return pki.inspect(pair.cert_pem)

    # the loop -----------------------------------------------------------------------------------

    def run(self) -> Result:
        refusals: list[policy.Decision] = []
        decision = policy.Decision(policy.Action.UP_TO_DATE, "UpToDate")
        for _ in range(MAX_STEPS):
            obs = self.observe()
            plan = policy.plan(obs)
            refusals = list(plan.refusals)
            decision = plan.decision
            step = _STEPS.get(decision.action)
            if step is None:
                break
            step(self, obs, decision)
        else:
            logger.warning(
                "%s/%s: still changing after %d steps", self.resource.namespace, self.resource.name, MAX_STEPS
            )
        self.observe()
        self.converge(decision, refusals)
        return Result(self.status, decision, policy.next_wakeup(self.spec, self.status))

    # steps ----------------------------------------------------------------------------------------

    def step_issue_initial(self, obs: policy.Observation, decision: policy.Decision) -> None:
        pair = self.new_pair()
        try:
            self.write_key_secret(self.spec.secret_name, pair, {}, create_only=True)
        except Exception as exc:
            if secrets.is_conflict(exc):
                return  # someone else wrote it first: the next observation adopts or flags it
            raise
        info = pki.inspect(pair.cert_pem)
        revision = self.status.revision + 1
        self.update(current=_record(info, self.spec.secret_name, revision), revision=revision)
        self.save()
        self.event(
            "Normal",
            "Issued",
            f"issued serial {info.serial} (expires {info.not_after:%Y-%m-%d}) into Secret {self.spec.secret_name}",
        )

    def step_adopt_current(self, obs: policy.Observation, decision: policy.Decision) -> None:
        assert obs.current_secret.info is not None
        info = obs.current_secret.info
        revision = max(self.status.revision, 1)
        self.update(current=_record(info, self.spec.secret_name, revision), revision=revision)
        self.save()
        self.event("Normal", "Adopted", f"adopted serial {info.serial} already in Secret {self.spec.secret_name}")

    def step_issue_next(self, obs: policy.Observation, decision: policy.Decision) -> None:
        info = self.issue_next(obs, "Planned", None)
        revision = self.status.revision + 1
        pending = {
            **_record(info, self.spec.next_secret_name, revision),
            "reason": "Planned",
            "issued_at": self.now,
        }
        self.update(next=pending, revision=revision)
        self.save()
        self.ctx.metrics.rotated(self.resource.namespace, self.resource.name, self.spec.environment, "planned")
        self.sync_trust()
        self.event(
            "Normal",
            "Renewing",
            f"{decision.message}; next serial {info.serial} in Secret {self.spec.next_secret_name}: "
            "submit its bundle to the provider, then cut over",
        )

    def step_emergency(self, obs: policy.Observation, decision: policy.Decision) -> None:
        reference = decision.reference or ""
        info = self.issue_next(obs, "Emergency", reference)
        revoked = list(self.status.revoked_fingerprints)
        history: list[Any] = list(self.status.history)
        discarded = self.status.next
        if discarded is not None and discarded.fingerprint != info.fingerprint:
            # A pending next was exposed to the same incident: it is discarded, never cut over to.
            history.insert(0, self.history_entry(discarded, "Compromised", reference))
            revoked.append(discarded.fingerprint)
        current = self.status.current
        changes: dict[str, Any] = {}
        if current is not None:
            changes["current"] = {**current.model_dump(), "compromised_by": reference}
            if self.spec.emergency_policy == "RevokeImmediately":
                revoked.append(current.fingerprint)
        revision = self.status.revision + 1
        pending = {
            **_record(info, self.spec.next_secret_name, revision),
            "reason": "Emergency",
            "issued_at": self.now,
        }
        self.update(
            **changes,
            next=pending,
            revision=revision,
            history=self.trim(history),
            revoked_fingerprints=_unique(revoked),
            last_emergency_rotation={"reference": reference, "handled_at": self.now},
        )
        self.save()
        self.ctx.metrics.rotated(self.resource.namespace, self.resource.name, self.spec.environment, "emergency")
        self.sync_trust()
        self.event(
            "Warning",
            "EmergencyRotation",
            f"incident {reference}: serial {current.serial if current else '-'} treated as compromised"
            f"{' and removed from the trust store' if self.spec.emergency_policy == 'RevokeImmediately' else ''}; "
            f"new serial {info.serial} in Secret {self.spec.next_secret_name}: submit its bundle, then cut over",
        )

    def step_cutover(self, obs: policy.Observation, decision: policy.Decision) -> None:
        pending = self.status.next
        assert pending is not None, "the policy cuts over only to a recorded next certificate"
        if obs.current_secret.fingerprint != pending.fingerprint:
            # The policy checked the next Secret holds exactly the pending certificate.
            assert self.next_raw is not None
            pair = pki.KeyPair(self.next_raw.data[names.TLS_KEY], self.next_raw.data[names.TLS_CERT])
            self.write_key_secret(self.spec.secret_name, pair, {}, create_only=False)
        old = self.status.current
        history: list[Any] = list(self.status.history)
        revoked = list(self.status.revoked_fingerprints)
        if old is not None:
            reason: models.RetireReason = "Compromised" if old.compromised_by else "Superseded"
            history.insert(0, self.history_entry(old, reason, old.compromised_by))
            revoked.append(old.fingerprint)
        current = {
            **pending.model_dump(exclude={"reason", "issued_at", "compromised_by"}),
            "secret_name": self.spec.secret_name,
        }
        self.update(current=current, next=None, history=self.trim(history), revoked_fingerprints=_unique(revoked))
        self.save()
        self.ctx.metrics.cut_over(self.resource.namespace, self.resource.name, self.spec.environment)
        self.sync_trust()
        # Only now, with the trust store no longer naming it, is the old key destroyed.
        secrets.delete(self.ctx.clients, self.resource.namespace, self.spec.next_secret_name)
        self.event(
            "Normal",
            "CutOver",
            f"{decision.message}: serial {pending.serial} is now current"
            f"{f'; serial {old.serial} retired and its key destroyed' if old else ''}",
        )

    def step_delete_stale_next(self, obs: policy.Observation, decision: policy.Decision) -> None:
        secrets.delete(self.ctx.clients, self.resource.namespace, self.spec.next_secret_name)
        self.event("Normal", decision.reason, decision.message)

    def history_entry(
        self, record: models.CertificateRecord, reason: models.RetireReason, incident: str | None
    ) -> dict[str, Any]:
        return {
            "serial": record.serial,
            "fingerprint": record.fingerprint,
            "not_before": record.not_before,
            "not_after": record.not_after,
            "revision": record.revision,
            "reason": reason,
            "retired_at": self.now,
            "incident": incident,
        }

    def trim(self, history: list[Any]) -> list[Any]:
        return history[: self.spec.revision_history_limit]

    # derived state --------------------------------------------------------------------------------

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
        event_type = _CONDITION_EVENTS.get(type, {}).get(status)
        if event_type and (before is None or before.status != status or before.reason != reason):
            self.event(event_type, reason, message)

    def drop_condition(self, type: str) -> None:
        self.status.conditions, _ = conditions.remove(self.status.conditions, type)

    def derive(self) -> None:
        """What follows from current and next alone: stage, renewal time and the conditions that mirror them.

        Called with every save, so a step's status is consistent the moment it lands, not a pass later.
        """
        current, pending = self.status.current, self.status.next
        self.status.stage = stage_of(self.status)
        self.status.renewal_time = (
            renewal.renewal_time(current.not_after, self.spec.renew_before_delta) if current else None
        )
        if pending is not None:
            reason = "Renewing" if pending.reason == "Planned" else "EmergencyRotation"
            self.set_condition(
                names.ROTATION_IN_PROGRESS,
                "True",
                reason,
                f"next serial {pending.serial} is trusted beside the current one; cut over once the provider uses it",
            )
        elif conditions.get(self.status.conditions, names.ROTATION_IN_PROGRESS) is not None:
            self.set_condition(names.ROTATION_IN_PROGRESS, "False", "Idle", "no rotation is pending")

        if current is not None and current.compromised_by:
            self.set_condition(
                names.COMPROMISED,
                "True",
                "EmergencyRotation",
                f"incident {current.compromised_by}: serial {current.serial} is compromised",
            )
        elif conditions.get(self.status.conditions, names.COMPROMISED) is not None:
            self.set_condition(names.COMPROMISED, "False", "CutOver", "the compromised certificate has been retired")

        if renewal.is_short_validity(self.spec.duration_delta):
            self.set_condition(
                names.SHORT_VALIDITY,
                "True",
                "BelowOneYear",
                f"duration {self.spec.duration} is shorter than the provider's recommended minimum of one year (8760h)",
            )
        else:
            self.drop_condition(names.SHORT_VALIDITY)

    def converge(self, decision: policy.Decision, refusals: list[policy.Decision]) -> None:
        current = self.status.current
        if decision.action is policy.Action.NOT_READY:
            self.set_condition(names.READY, "False", decision.reason, decision.message)
        elif current is not None:
            self.set_condition(
                names.READY,
                "True",
                "CertificateValid",
                f"serial {current.serial} valid until {current.not_after:%Y-%m-%dT%H:%M:%SZ}",
            )
        else:
            self.set_condition(names.READY, "False", "Issuing", "no certificate has been issued yet")

        by_type = {
            policy.Action.REFUSE_CUTOVER: names.CUTOVER_REFUSED,
            policy.Action.REFUSE_EMERGENCY: names.EMERGENCY_REFUSED,
        }
        for action, type in by_type.items():
            refusal = next((r for r in refusals if r.action is action), None)
            if refusal is not None:
                self.set_condition(type, "True", refusal.reason, refusal.message)
            else:
                self.drop_condition(type)

        self.status.observed_generation = self.resource.generation
        self.sync_trust()
        if self.spec.bundle is not None:
            self.sync_bundle()
        self.validate_endpoint()
        self.save()

    def validate_endpoint(self) -> None:
        """Probe the endpoint with the pending next certificate, and with a revoked compromised one."""
        check = self.spec.validation
        current, pending = self.status.current, self.status.next
        probes: list[tuple[str, secrets.SecretData | None, bool]] = []
        if check is not None and pending is not None:
            probes.append((names.ENDPOINT_ACCEPTS_NEXT, self.next_raw, True))
        else:
            self.drop_condition(names.ENDPOINT_ACCEPTS_NEXT)
        revoked_now = (
            current is not None and current.compromised_by and current.fingerprint in self.status.revoked_fingerprints
        )
        if check is not None and revoked_now:
            probes.append((names.ENDPOINT_REJECTS_COMPROMISED, self.current_raw, False))
        else:
            self.drop_condition(names.ENDPOINT_REJECTS_COMPROMISED)
        if check is None or not probes:
            return
        ca_pem = None
        if check.ca_secret_ref is not None:
            ca_secret = secrets.read(self.ctx.clients, self.resource.namespace, check.ca_secret_ref.name)
            ca_pem = ca_secret.data.get(check.ca_secret_ref.key) if ca_secret else None
            if ca_pem is None:
                for type, _, _ in probes:
                    self.set_condition(
                        type,
                        "False",
                        "CASecretNotFound",
                        f"validation.caSecretRef {check.ca_secret_ref.name} has no usable CA",
                    )
                return
        for type, secret, want_accept in probes:
            if secret is None or names.TLS_KEY not in secret.data:
                continue
            result = validation.probe(
                check.url,
                secret.data[names.TLS_CERT],
                secret.data[names.TLS_KEY],
                ca_pem=ca_pem,
                timeout=check.timeout_seconds,
            )
            good = validation.Outcome.ACCEPTED if want_accept else validation.Outcome.REFUSED
            if result.outcome is good:
                self.set_condition(type, "True", result.outcome.value, f"{check.url}: {result.detail}")
            elif result.outcome is validation.Outcome.UNREACHABLE:
                self.set_condition(type, "Unknown", "Unreachable", f"{check.url}: {result.detail}")
            else:
                reason = "Refused" if want_accept else "StillAccepted"
                self.set_condition(type, "False", reason, f"{check.url}: {result.detail}")

    def sync_trust(self) -> None:
        hash_ = sync_trust(
            self.ctx,
            self.resource.namespace,
            self.spec.trust.secret_name,
            mine=(self.resource.name, self.spec, self.status),
        )
        if self.status.trust is None or self.status.trust.hash != hash_:
            self.update(trust={"secret_name": self.spec.trust.secret_name, "hash": hash_})
        if self.spec.consumers:
            statuses, patched = consumers.nudge(
                self.ctx.clients, self.resource.namespace, self.spec.consumers, hash_, self.status.consumers, self.now
            )
            self.status.consumers = statuses
            self.ctx.metrics.trust_reloaded(
                self.resource.namespace, self.resource.name, self.spec.environment, len(patched)
            )
            if patched:
                self.event(
                    "Normal", "TrustReloadRequested", f"trust store {hash_[:12]} announced to {', '.join(patched)}"
                )
        elif self.status.consumers:
            self.status.consumers = []

    def bundle_sources(self) -> list[tuple[pki.Role, str, secrets.SecretData]]:
        """The key Secrets worth submitting: the current one (unless compromised) and a pending next."""
        assert self.last is not None
        compromised = self.status.current is not None and bool(self.status.current.compromised_by)
        candidates: list[tuple[pki.Role, policy.SecretObservation, secrets.SecretData | None, bool]] = [
            ("current", self.last.current_secret, self.current_raw, compromised),
            ("next", self.last.next_secret, self.next_raw, False),
        ]
        return [
            (role, seen.info.fingerprint, raw)
            for role, seen, raw, skip in candidates
            if seen.info is not None and raw is not None and not skip
        ]

    def sync_bundle(self) -> None:
        assert self.spec.bundle is not None
        ref = self.spec.bundle.password_secret_ref
        password_secret = secrets.read(self.ctx.clients, self.resource.namespace, ref.name)
        if password_secret is None or not password_secret.data.get(ref.key):
            what = (
                f"Secret {ref.name} does not exist"
                if password_secret is None
                else f"Secret {ref.name} has no key {ref.key!r}"
            )
            self.set_condition(
                names.BUNDLE_READY,
                "False",
                "PasswordSecretNotFound",
                f"{what}: create it with the bundle password; no bundle is written without one",
            )
            return
        password = password_secret.data[ref.key]
        sources = self.bundle_sources()
        source_id = hashlib.sha256(
            "/".join([password_secret.uid, password_secret.resource_version, *(fp for _, fp, _ in sources)]).encode()
        ).hexdigest()
        name = self.spec.bundle_secret_name
        existing = secrets.read(self.ctx.clients, self.resource.namespace, name)
        if existing is not None and existing.annotations.get(names.BUNDLE_SOURCE_ANNOTATION) == source_id:
            files = sorted(existing.data)
        else:
            data: dict[str, bytes] = {}
            for role, _, secret in sources:
                data.update(
                    pki.bundle_files(
                        self.spec.environment,
                        self.resource.name,
                        secret.data[names.TLS_KEY],
                        secret.data[names.TLS_CERT],
                        password,
                        role,
                    )
                )
            secrets.write(
                self.ctx.clients,
                self.resource.namespace,
                name,
                type=secrets.OPAQUE,
                data=data,
                labels=self.key_secret_labels(),
                annotations={names.BUNDLE_SOURCE_ANNOTATION: source_id},
                owner=self.resource.owner(),
            )
            files = sorted(data)
            self.event(
                "Normal",
                "BundleWritten",
                f"password-protected bundle for {self.spec.environment} written to Secret {name}: {', '.join(files)}",
            )
        self.update(bundle={"secret_name": name, "files": files})
        self.set_condition(names.BUNDLE_READY, "True", "BundleWritten", f"Secret {name} holds {len(files)} files")


_STEPS: dict[policy.Action, Callable[[_Reconciler, policy.Observation, policy.Decision], None]] = {
    policy.Action.ISSUE_INITIAL: _Reconciler.step_issue_initial,
    policy.Action.ADOPT_CURRENT: _Reconciler.step_adopt_current,
    policy.Action.ISSUE_NEXT: _Reconciler.step_issue_next,
    policy.Action.EMERGENCY: _Reconciler.step_emergency,
    policy.Action.CUTOVER: _Reconciler.step_cutover,
    policy.Action.DELETE_STALE_NEXT: _Reconciler.step_delete_stale_next,
}
_CONDITION_EVENTS: dict[str, dict[str, str]] = {
    names.READY: {"False": "Warning"},
    names.CUTOVER_REFUSED: {"True": "Warning"},
    names.EMERGENCY_REFUSED: {"True": "Warning"},
    names.BUNDLE_READY: {"False": "Warning"},
    names.ENDPOINT_ACCEPTS_NEXT: {"True": "Normal", "False": "Warning"},
    names.ENDPOINT_REJECTS_COMPROMISED: {"True": "Normal", "False": "Warning"},
}


def stage_of(status: models.WebhookCertificateStatus) -> models.Stage:
    if status.current is None:
        return "Issuing"
    if status.next is not None:
        return "Compromised" if status.next.reason == "Emergency" else "Rotating"
    return "Active"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- the shared trust store ----------------------------------------------------------------------


def sync_trust(
    ctx: Context,
    namespace: str,
    secret_name: str,
    *,
    mine: tuple[str, models.WebhookCertificateSpec, models.WebhookCertificateStatus] | None = None,
    exclude: str | None = None,
) -> str:
    """Write the trust Secret as the union of what every WebhookCertificate naming it trusts; its hash.

    ``mine`` is the caller's in-memory view (fresher than what the API lists). Revoked fingerprints are
    the union of every status and of the trust Secret's own audit annotation, so a retired certificate
    never returns even when another object's status is read stale. Conflicts retry at once.
    """
    for attempt in range(CONFLICT_RETRIES):
        pems: list[str] = []
        revoked: set[str] = set()
        skip = {n for n in (exclude, mine[0] if mine else None) if n}
        views = []
        for obj in resources.list_namespace(ctx.clients, namespace):
            if obj["metadata"]["name"] in skip:
                continue
            try:
                spec, status = parse_spec(obj), parse_status(obj)
            except pydantic.ValidationError:
                logger.warning(
                    "%s/%s: unreadable WebhookCertificate skipped for trust",
                    namespace,
                    obj["metadata"]["name"],
                )
                continue
            if spec.trust.secret_name == secret_name:
                views.append((spec, status))
        if mine is not None:
            views.append((mine[1], mine[2]))
        for spec, status in views:
            pems.extend(trust.trusted_certificates(status, spec))
            revoked.update(status.revoked_fingerprints)
        existing = secrets.read(ctx.clients, namespace, secret_name)
        if existing is not None:
            revoked.update(f for f in existing.annotations.get(names.REVOKED_ANNOTATION, "").split(",") if f)
        data = trust.assemble(pems, revoked)
        hash_ = trust.trust_hash(data)
        try:
            secrets.write(
                ctx.clients,
                namespace,
                secret_name,
                type=secrets.OPAQUE,
                data={names.TRUST_KEY: data},
                annotations={
                    names.TRUST_HASH_ANNOTATION: hash_,
                    names.REVOKED_ANNOTATION: ",".join(sorted(revoked)),
                },
            )
        except Exception as exc:
            if secrets.is_conflict(exc) and attempt < CONFLICT_RETRIES - 1:
                continue
            raise
        return hash_
    raise AssertionError("unreachable")

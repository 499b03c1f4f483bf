"""Pydantic models of the WebhookCertificate resource: the spec users write and the status we keep.

They mirror the CRD's OpenAPI schema in ``crds/`` field for field (a unit test compares the two), so
what admission accepts is what the operator can parse, and nothing the operator writes to ``status``
is pruned by the API server.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import pydantic
from pydantic import alias_generators

from webhookcerts.domain import durations

GROUP = "webhookcerts.io"
VERSION = "v1alpha1"
KIND = "WebhookCertificate"
PLURAL = "webhookcertificates"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Secret name; the operator derives `<secretName>-next` and `<secretName>-bundle`, hence the shorter limit.
SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"  # noqa: S105 - a pattern, not a secret
SECRET_NAME_MAX = 240

EmergencyPolicy = Literal["RevokeImmediately", "KeepUntilCutover"]
ReloadMode = Literal["Hot", "Rollout"]
Stage = Literal["Issuing", "Active", "Rotating", "Compromised"]
ConditionStatus = Literal["True", "False", "Unknown"]
NextReason = Literal["Planned", "Emergency"]
RetireReason = Literal["Superseded", "Compromised", "Discarded"]
DeletionPolicy = Literal["Retain", "Delete"]
CutoverPolicy = Literal["Manual", "Observed"]

SecretName = Annotated[str, pydantic.Field(min_length=1, max_length=SECRET_NAME_MAX, pattern=SECRET_NAME)]
# Bounded so the CRD's CEL rules (duration(), matches()) fit the API server's cost budget.
Duration = Annotated[str, pydantic.Field(max_length=32, pattern=durations.PATTERN)]


class Model(pydantic.BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = pydantic.ConfigDict(alias_generator=alias_generators.to_camel, populate_by_name=True, extra="forbid")

    def to_api(self) -> dict[str, object]:
        """The JSON-ready dict the API server expects (aliases, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- spec ------------------------------------------------------------------------------------------


class Subject(Model):
    common_name: str = pydantic.Field(min_length=1, max_length=64)
    organization: str | None = pydantic.Field(default=None, min_length=1, max_length=64)
    organizational_unit: str | None = pydantic.Field(default=None, min_length=1, max_length=64)
    country: str | None = pydantic.Field(default=None, pattern=r"^[A-Z]{2}$")


class SecretKeyRef(Model):
    name: SecretName
    key: str = pydantic.Field(default="password", min_length=1, max_length=253)


class ConfigMapTarget(Model):
    name: str = pydantic.Field(min_length=1, max_length=253, pattern=SECRET_NAME)


class StoreKey(Model):
    key: str = pydantic.Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")

    @pydantic.field_validator("key")
    @classmethod
    def _not_the_pem(cls, value: str) -> str:
        if value == "ca.crt":
            raise ValueError("ca.crt holds the PEM bundle; name the truststore differently")
        return value


class AdditionalFormats(Model):
    pkcs12: StoreKey | None = None
    jks: StoreKey | None = None
    password_secret_ref: SecretKeyRef


class TrustSpec(Model):
    secret_name: SecretName
    config_map: ConfigMapTarget | None = None
    additional_formats: AdditionalFormats | None = None


class ObjectKeyRef(Model):
    name: SecretName
    key: str = pydantic.Field(min_length=1, max_length=253)


RecipientFormat = Literal["cms", "openpgp"]
RECIPIENT_NAME_MAX = 32
RECIPIENTS_MAX = 8


class BundleRecipient(Model):
    """A public key of the provider's to seal the bundle to, read from a ConfigMap or a Secret key."""

    name: str = pydantic.Field(min_length=1, max_length=RECIPIENT_NAME_MAX, pattern=DNS_LABEL)
    format: RecipientFormat
    config_map_ref: ObjectKeyRef | None = None
    secret_ref: ObjectKeyRef | None = None

    @pydantic.model_validator(mode="after")
    def _exactly_one_source(self) -> BundleRecipient:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError(f"recipient {self.name}: set exactly one of configMapRef and secretRef")
        return self


class BundleSpec(Model):
    password_secret_ref: SecretKeyRef | None = None
    recipients: list[BundleRecipient] = pydantic.Field(default_factory=list, max_length=RECIPIENTS_MAX)
    secret_name: SecretName | None = None

    @pydantic.model_validator(mode="after")
    def _password_or_recipients(self) -> BundleSpec:
        if self.password_secret_ref is None and not self.recipients:
            raise ValueError("bundle needs passwordSecretRef, recipients, or both")
        seen = [r.name for r in self.recipients]
        if len(set(seen)) != len(seen):
            raise ValueError("bundle.recipients: each name may appear once")
        return self


class LabelSelectorRequirement(Model):
    key: str = pydantic.Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = pydantic.Field(default_factory=list)


class LabelSelector(Model):
    match_labels: dict[str, str] = pydantic.Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = pydantic.Field(default_factory=list)


class Consumer(Model):
    selector: LabelSelector
    reload: ReloadMode = "Hot"


class CASecretRef(Model):
    """A CA in a Secret: ``ca.crt`` unless named, as everywhere else in Kubernetes."""

    name: SecretName
    key: str = pydantic.Field(default="ca.crt", min_length=1, max_length=253)


# nginx's answers to a client certificate it did not verify (400 as sent, 495/496 behind error_page):
# naming one in acceptStatus would read nginx's refusal as an acceptance.
CERTIFICATE_REFUSAL_STATUSES = frozenset({400, 495, 496})
ACCEPT_STATUS_MAX = 16
HttpStatus = Annotated[int, pydantic.Field(ge=100, le=599)]


class ValidationSpec(Model):
    url: str = pydantic.Field(pattern=r"^https://", max_length=2048)
    ca_secret_ref: CASecretRef | None = None
    timeout_seconds: int = pydantic.Field(default=10, ge=1, le=300)
    accept_status: list[HttpStatus] = pydantic.Field(default_factory=list, max_length=ACCEPT_STATUS_MAX)

    @pydantic.field_validator("accept_status")
    @classmethod
    def _no_refusal(cls, value: list[int]) -> list[int]:
        # The CRD's CEL rule says the same at admission; this guards objects that predate it.
        named = sorted(CERTIFICATE_REFUSAL_STATUSES.intersection(value))
        if named:
            raise ValueError(f"acceptStatus may not name {named}: nginx refuses a client certificate with them")
        return value


# A quiet period shorter than this proves nothing: reporters write in batches and the provider retries a
# failed delivery after up to 600 s, so a minute without the current certificate is noise, not a switch.
QUIET_PERIOD_MIN = datetime.timedelta(minutes=1)
MIN_PRESENTATIONS_MAX = 1_000_000


class ObservedCutoverSpec(Model):
    """When the reports prove the provider switched: the next accepted often enough, the current quiet."""

    min_presentations: int = pydantic.Field(default=10, ge=1, le=MIN_PRESENTATIONS_MAX)
    quiet_period: Duration = "1h"

    @pydantic.field_validator("quiet_period")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if durations.parse(value) < QUIET_PERIOD_MIN:
            raise ValueError(f"cutover.observed.quietPeriod {value} is shorter than the minimum of 1m")
        return value

    @property
    def quiet_period_delta(self) -> datetime.timedelta:
        return durations.parse(self.quiet_period)


class CutoverSpec(Model):
    """Who cuts over a planned or emergency rotation: a person (``Manual``), or the reports (``Observed``)."""

    policy: CutoverPolicy = "Manual"
    observed: ObservedCutoverSpec = pydantic.Field(default_factory=ObservedCutoverSpec)


class WebhookCertificateSpec(Model):
    environment: str = pydantic.Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    subject: Subject
    duration: Duration = "8760h"
    renew_before: Duration = "2160h"
    secret_name: SecretName
    trust: TrustSpec
    revision_history_limit: int = pydantic.Field(default=10, ge=1, le=100)
    emergency_policy: EmergencyPolicy = "RevokeImmediately"
    deletion_policy: DeletionPolicy = "Retain"
    bundle: BundleSpec | None = None
    consumers: list[Consumer] = pydantic.Field(default_factory=list)
    validation: ValidationSpec | None = None
    cutover: CutoverSpec = pydantic.Field(default_factory=CutoverSpec)

    @pydantic.model_validator(mode="after")
    def _renew_before_shorter_than_duration(self) -> WebhookCertificateSpec:
        # The CRD's CEL rules say the same at admission; this guards objects that predate a rule.
        if self.duration_delta < datetime.timedelta(hours=1):
            raise ValueError(f"duration {self.duration} is shorter than the minimum of 1h")
        if self.renew_before_delta >= self.duration_delta:
            raise ValueError(
                f"renewBefore ({self.renew_before}) must be shorter than duration ({self.duration}), "
                "or the certificate would renew in a loop"
            )
        # Only under Observed: the quiet period's default must not refuse a Manual object's short renewBefore.
        observed = self.cutover.observed
        if self.cutover.policy == "Observed" and observed.quiet_period_delta >= self.renew_before_delta:
            raise ValueError(
                f"cutover.observed.quietPeriod ({observed.quiet_period}) must be shorter than "
                f"renewBefore ({self.renew_before}), or the current certificate expires before it can be proven quiet"
            )
        return self

    @property
    def duration_delta(self) -> datetime.timedelta:
        return durations.parse(self.duration)

    @property
    def renew_before_delta(self) -> datetime.timedelta:
        return durations.parse(self.renew_before)

    @property
    def next_secret_name(self) -> str:
        return f"{self.secret_name}-next"

    @property
    def bundle_secret_name(self) -> str:
        if self.bundle is not None and self.bundle.secret_name:
            return self.bundle.secret_name
        return f"{self.secret_name}-bundle"


# --- status ----------------------------------------------------------------------------------------


class StatusModel(Model):
    # Status written by an older operator version may carry fields we no longer know: keep reading.
    model_config = pydantic.ConfigDict(alias_generator=alias_generators.to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: datetime.datetime
    observed_generation: int | None = None


class CertificateRecord(StatusModel):
    """A certificate the operator issued: public data only, never the key."""

    serial: str
    fingerprint: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    certificate: str
    secret_name: str
    revision: int
    compromised_by: str | None = None
    # What the endpoints' reports say of this certificate: accepted presentations summed over the
    # counted reporters (counts restart with a reporter), first and last accepted presentation seen.
    first_presented: datetime.datetime | None = None
    last_presented: datetime.datetime | None = None
    presentations: int | None = None


class NextCertificate(CertificateRecord):
    reason: NextReason
    issued_at: datetime.datetime


class HistoryEntry(StatusModel):
    serial: str
    fingerprint: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    revision: int
    reason: RetireReason
    retired_at: datetime.datetime
    incident: str | None = None
    # nginx and HAProxy log the SHA-1 fingerprint: a revoked certificate is recognised by it too.
    sha1: str | None = None


class EmergencyRecord(StatusModel):
    reference: str
    handled_at: datetime.datetime


class TrustStoreRecord(StatusModel):
    """One trust Secret this object has written, and what it asked to be written there beside ca.crt.

    Kept in status, which only the operator writes: what a trust Secret's own annotations say can be
    edited by anyone who can edit that Secret, and a forgotten truststore key would keep trusting what
    ca.crt has since dropped.
    """

    secret_name: str
    keys: list[str] = pydantic.Field(default_factory=list)
    config_maps: list[str] = pydantic.Field(default_factory=list)


class TrustStatus(StatusModel):
    secret_name: str
    hash: str
    stores: list[TrustStoreRecord] = pydantic.Field(default_factory=list)


class ConsumerStatus(StatusModel):
    selector: str
    reload: ReloadMode
    trust_hash: str
    targets: list[str] = pydantic.Field(default_factory=list)
    updated_at: datetime.datetime


class BundleStatus(StatusModel):
    secret_name: str
    files: list[str] = pydantic.Field(default_factory=list)


REPORTERS_MAX = 32
REVOKED_PRESENTATIONS_MAX = 16


class ReporterStatus(StatusModel):
    """One counted endpoint reporting on the object's trust store."""

    pod: str
    reporter: str
    heartbeat_time: datetime.datetime  # as of the last status change: a heartbeat alone writes nothing
    stale: bool


class RevokedCount(StatusModel):
    pod: str
    since: datetime.datetime  # the report's startTime: a restarted reporter counts from zero again
    presentations: int


class RevokedPresentations(StatusModel):
    """What has been counted and alarmed of one revoked certificate presented: a restart of the
    operator neither alarms again nor counts again what is recorded here."""

    fingerprint: str
    burst_started: datetime.datetime
    last_seen: datetime.datetime
    reporters: list[RevokedCount] = pydantic.Field(default_factory=list)


class WebhookCertificateStatus(StatusModel):
    observed_generation: int | None = None
    stage: Stage | None = None
    revision: int = 0
    conditions: list[Condition] = pydantic.Field(default_factory=list)
    current: CertificateRecord | None = None
    next: NextCertificate | None = None
    renewal_time: datetime.datetime | None = None
    history: list[HistoryEntry] = pydantic.Field(default_factory=list)
    revoked_fingerprints: list[str] = pydantic.Field(default_factory=list)
    last_emergency_rotation: EmergencyRecord | None = None
    emergency_references: list[str] = pydantic.Field(default_factory=list)
    trust: TrustStatus | None = None
    consumers: list[ConsumerStatus] = pydantic.Field(default_factory=list)
    bundle: BundleStatus | None = None
    reporters: list[ReporterStatus] = pydantic.Field(default_factory=list)
    revoked_presentations: list[RevokedPresentations] = pydantic.Field(default_factory=list)

"""The names users and other tools see: annotations, labels, Secret keys, condition types.

The lifecycle design fixes them; keeping them in one module keeps the CLI, the operator, the chart
and the docs in agreement.
"""

from __future__ import annotations

import hashlib

PREFIX = "webhookcerts.io"

# Annotations a user sets on a WebhookCertificate.
EMERGENCY_ANNOTATION = f"{PREFIX}/emergency-rotation"
CUTOVER_ANNOTATION = f"{PREFIX}/cutover"
# The non-emergency way out of a lost or damaged next key: its serial, to discard it and issue anew.
DISCARD_NEXT_ANNOTATION = f"{PREFIX}/discard-next"

# Annotations the operator sets.
TRUST_HASH_ANNOTATION = f"{PREFIX}/trust-hash"
REVOKED_ANNOTATION = f"{PREFIX}/revoked-fingerprints"
NEXT_REASON_ANNOTATION = f"{PREFIX}/next-reason"
INCIDENT_ANNOTATION = f"{PREFIX}/incident"
BUNDLE_SOURCE_ANNOTATION = f"{PREFIX}/bundle-source"
# On the key Secrets: what status knows of incidents, kept with the key material so that an object
# deleted and re-created (status empty) comes back as it was (domain/incidents.py). The revoked
# fingerprints use REVOKED_ANNOTATION, as on a trust Secret.
COMPROMISED_BY_ANNOTATION = f"{PREFIX}/compromised-by"
EMERGENCIES_ANNOTATION = f"{PREFIX}/emergency-rotations"
# On every Secret the operator writes for one WebhookCertificate: whose it is (the full name; the
# certificate label holds at most 63 characters).
OWNER_ANNOTATION = f"{PREFIX}/owner"
# On a trust Secret: which WebhookCertificate contributed which fingerprints, and whether they stay
# trusted once that object is deleted (its deletionPolicy).
SOURCES_ANNOTATION = f"{PREFIX}/sources"
# On a Secret or ConfigMap the operator did not create: its owner's consent to its becoming a trust
# target (spec.trust.secretName, spec.trust.configMap.name) of the WebhookCertificates it names
# (comma-separated, or ``*`` for any in its namespace). Only the keys the operator manages are written.
TRUST_TARGET_ANNOTATION = f"{PREFIX}/trust-target"

# On everything the operator writes; Secrets are watched by it (server-side label selector).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "webhookcerts"
ENVIRONMENT_LABEL = f"{PREFIX}/environment"
INSTANCE_LABEL = f"{PREFIX}/certificate"
# key, next, bundle or trust: what a Secret is for (kubectl get secret -l webhookcerts.io/role=key).
ROLE_LABEL = f"{PREFIX}/role"

TRUST_KEY = "ca.crt"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"

# Condition types.
READY = "Ready"
ROTATION_IN_PROGRESS = "RotationInProgress"
SHORT_VALIDITY = "ShortValidity"
COMPROMISED = "Compromised"
CUTOVER_REFUSED = "CutoverRefused"
# Under spec.cutover.policy Observed, while a next is pending: whether the reports prove the switch.
CUTOVER_READY = "CutoverReady"
EMERGENCY_REFUSED = "EmergencyRefused"
DISCARD_REFUSED = "DiscardRefused"
SECRET_CONFLICT = "SecretConflict"  # noqa: S105 - a condition type
TRUST_STORE_INCOMPLETE = "TrustStoreIncomplete"
BUNDLE_READY = "BundleReady"
# A bundle recipient's public key expires before a certificate sealed to it does.
RECIPIENT_KEY_EXPIRING = "RecipientKeyExpiring"
ENDPOINT_ACCEPTS_NEXT = "EndpointAcceptsNext"
ENDPOINT_REJECTS_COMPROMISED = "EndpointRejectsCompromised"
# What the endpoints' PresentationReports say (issue 24).
NEXT_IN_USE = "NextInUse"
CURRENT_IN_USE = "CurrentInUse"
REPORTERS_STALE = "ReportersStale"
REVOKED_CERTIFICATE_PRESENTED = "RevokedCertificatePresented"

# A consumer's pod or pod template carries one annotation per trust Secret, so that several
# WebhookCertificates with different trust Secrets selecting the same workload never overwrite each
# other's hash (and roll it forever).
CONSUMER_ANNOTATION_PREFIX = f"trust-hash.{PREFIX}"
_ANNOTATION_NAME_MAX = 63


def consumer_annotation(trust_secret_name: str) -> str:
    """The annotation holding ``trust_secret_name``'s hash on a consumer: ``trust-hash.webhookcerts.io/<name>``.

    The part after the slash is a qualified name (at most 63 characters, alphanumeric at both ends).
    A Secret name is a DNS subdomain (up to 253 characters): a longer one is cut to 54 characters and
    given the first 8 hex digits of its SHA-256, so two long names sharing a start stay apart.
    """
    name = trust_secret_name
    if len(name) > _ANNOTATION_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-._')}-{digest}"
    return f"{CONSUMER_ANNOTATION_PREFIX}/{name}"


# A label value: at most 63 characters, letters, digits, '-', '_' and '.', alphanumeric at both ends.
LABEL_VALUE_MAX = 63


def _label_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "-_.")


def label_value(name: str) -> str:
    """``name`` as a label value: itself when it is one, else cut to 54 characters plus ``-`` and the
    first 8 hex of its SHA-256 (63 in all), so two long names sharing a start keep distinct values.

    Object names are DNS subdomains of up to 253 characters, so only their length can disqualify
    them; any other character a caller passes becomes ``-``, so the result is always a label value.
    """
    if len(name) <= LABEL_VALUE_MAX and all(map(_label_char, name)) and (not name or (name[0] + name[-1]).isalnum()):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    prefix = "".join(c if _label_char(c) else "-" for c in name[: LABEL_VALUE_MAX - len(digest) - 1])
    prefix = prefix.strip("-_.")
    return f"{prefix}-{digest}" if prefix else digest

"""The names users and other tools see: annotations, labels, Secret keys, condition types.

The lifecycle design fixes them; keeping them in one module keeps the CLI, the operator, the chart
and the docs in agreement.
"""

from __future__ import annotations

PREFIX = "webhookcerts.io"

# Annotations a user sets on a WebhookCertificate.
EMERGENCY_ANNOTATION = f"{PREFIX}/emergency-rotation"
CUTOVER_ANNOTATION = f"{PREFIX}/cutover"

# Annotations the operator sets.
TRUST_HASH_ANNOTATION = f"{PREFIX}/trust-hash"
REVOKED_ANNOTATION = f"{PREFIX}/revoked-fingerprints"
NEXT_REASON_ANNOTATION = f"{PREFIX}/next-reason"
INCIDENT_ANNOTATION = f"{PREFIX}/incident"
BUNDLE_SOURCE_ANNOTATION = f"{PREFIX}/bundle-source"

ENVIRONMENT_LABEL = f"{PREFIX}/environment"
INSTANCE_LABEL = f"{PREFIX}/certificate"

TRUST_KEY = "ca.crt"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"

# Condition types.
READY = "Ready"
ROTATION_IN_PROGRESS = "RotationInProgress"
SHORT_VALIDITY = "ShortValidity"
COMPROMISED = "Compromised"
CUTOVER_REFUSED = "CutoverRefused"
EMERGENCY_REFUSED = "EmergencyRefused"
BUNDLE_READY = "BundleReady"
ENDPOINT_ACCEPTS_NEXT = "EndpointAcceptsNext"
ENDPOINT_REJECTS_COMPROMISED = "EndpointRejectsCompromised"

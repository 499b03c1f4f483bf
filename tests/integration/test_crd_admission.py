"""The CRD on a real API server: defaults filled in, bad specs refused with a message that says what to fix.

Admission is the first line of defence: a renewBefore longer than the duration would renew in a loop
(cert-manager issue #5838), a trust Secret named like a key Secret would publish a private key. These
are refused before the operator ever sees them, and the API server's own message tells the user how to
fix the spec.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests import conftest
from webhookcerts.domain import models

pytestmark = pytest.mark.integration

Manifest = dict[str, Any]


def manifest(name: str = "acme") -> Manifest:
    return {
        "apiVersion": f"{models.GROUP}/{models.VERSION}",
        "kind": models.KIND,
        "metadata": {"name": name},
        "spec": {
            "environment": "sandbox",
            "subject": {"commonName": "acme.webhooks.example.com"},
            "secretName": "acme-client",
            "trust": {"secretName": "acme-trust"},
        },
    }


def apply(kubectl: conftest.KubectlRunner, namespace: str, body: Manifest, *, check: bool = True) -> str:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=check)
    return result.stderr if result.returncode else ""


def patch_status(
    kubectl: conftest.KubectlRunner, namespace: str, status: dict[str, Any], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Write the status of ``acme`` as the operator does: a merge patch of the status subresource."""
    patch = ["patch", "whc", "acme", "-n", namespace, "--subresource=status", "--type=merge"]
    return kubectl(*patch, "-p", json.dumps({"status": status}), check=check)


def _set(path: str, value: object) -> Callable[[Manifest], None]:
    def change(body: Manifest) -> None:
        *parents, last = path.split(".")
        node = body["spec"]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def _drop(path: str) -> Callable[[Manifest], None]:
    def change(body: Manifest) -> None:
        *parents, last = path.split(".")
        node = body["spec"]
        for part in parents:
            node = node[part]
        del node[last]

    return change


def _both(*changes: Callable[[Manifest], None]) -> Callable[[Manifest], None]:
    def change(body: Manifest) -> None:
        for one in changes:
            one(body)

    return change


def _consumer(selector: dict[str, object]) -> Callable[[Manifest], None]:
    return _set("consumers", [{"selector": selector}])


def _recipients(*recipients: dict[str, object]) -> Callable[[Manifest], None]:
    return _set("bundle", {"recipients": list(recipients)})


INVALID: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "environment not a DNS label": (
        _set("environment", "Live_EU"),
        "environment must be a DNS label: lower-case letters, digits and '-'",
    ),
    "environment missing": (_drop("environment"), "spec.environment: Required value"),
    "subject missing": (_drop("subject"), "spec.subject: Required value"),
    "common name too long": (_set("subject.commonName", "x" * 65), "may not be more than 64"),
    "country not a code": (
        _set("subject.country", "Germany"),
        "country must be a two-letter upper-case ISO 3166 code, for example DE",
    ),
    "duration below one hour": (_set("duration", "30m"), "duration must be at least 1h"),
    "duration in days": (
        _set("duration", "365d"),
        "duration must be a Go duration with units h, m, s or ms, for example 8760h",
    ),
    "renewBefore not a duration": (
        _set("renewBefore", "90 days"),
        "renewBefore must be a Go duration with units h, m, s or ms, for example 2160h",
    ),
    "renewBefore longer than duration": (
        _set("duration", "2000h"),
        "renewBefore must be shorter than duration, or the certificate would renew in a loop",
    ),
    "renewBefore equal to duration": (
        _both(_set("duration", "4320h"), _set("renewBefore", "4320h")),
        "renewBefore must be shorter than duration",
    ),
    "trust store is the key Secret": (
        _set("trust.secretName", "acme-client"),
        "trust.secretName must name a Secret of its own",
    ),
    "trust store is the next key Secret": (
        _set("trust.secretName", "acme-client-next"),
        "trust.secretName must name a Secret of its own",
    ),
    "secretName not a Secret name": (_set("secretName", "Acme_Client"), "spec.secretName in body should match"),
    "acceptStatus names nginx's refusal": (
        _set("validation", {"url": "https://endpoint.example/", "acceptStatus": [405, 400]}),
        "acceptStatus may not name 400, 495 or 496, nginx's refusals of a client certificate",
    ),
    "bundle Secret is the trust store": (
        _set("bundle", {"passwordSecretRef": {"name": "pw"}, "secretName": "acme-trust"}),
        "bundle.secretName must differ from secretName, secretName-next and trust.secretName",
    ),
    "bundle without a password or a recipient": (
        _set("bundle", {}),
        "bundle needs passwordSecretRef (a password-protected bundle), recipients (bundles sealed to the "
        "provider's public keys), or both",
    ),
    "bundle with an empty recipient list and no password": (
        _set("bundle", {"recipients": []}),
        "bundle needs passwordSecretRef",
    ),
    "recipient name not a DNS label": (
        _recipients({"name": "Upvest_Live", "format": "cms", "configMapRef": {"name": "k", "key": "tls.crt"}}),
        "spec.bundle.recipients[0].name in body should match",
    ),
    "recipient name too long for a file name": (
        _recipients({"name": "r" * 33, "format": "cms", "configMapRef": {"name": "k", "key": "tls.crt"}}),
        "may not be more than 32",
    ),
    "recipient format unknown": (
        _recipients({"name": "upvest", "format": "smime", "configMapRef": {"name": "k", "key": "tls.crt"}}),
        'supported values: "cms", "openpgp"',
    ),
    "recipient with both a ConfigMap and a Secret": (
        _recipients(
            {
                "name": "upvest",
                "format": "cms",
                "configMapRef": {"name": "k", "key": "tls.crt"},
                "secretRef": {"name": "k", "key": "tls.crt"},
            }
        ),
        "a recipient's key comes from exactly one of configMapRef and secretRef",
    ),
    "recipient without a key": (
        _recipients({"name": "upvest", "format": "openpgp"}),
        "a recipient's key comes from exactly one of configMapRef and secretRef",
    ),
    "recipient ref without a key name": (
        _recipients({"name": "upvest", "format": "cms", "secretRef": {"name": "k"}}),
        "spec.bundle.recipients[0].secretRef.key: Required value",
    ),
    "two recipients of one name": (
        _recipients(
            {"name": "upvest", "format": "cms", "configMapRef": {"name": "k", "key": "tls.crt"}},
            {"name": "upvest", "format": "openpgp", "secretRef": {"name": "k", "key": "key.asc"}},
        ),
        "spec.bundle.recipients[1]: Duplicate value",
    ),
    "unknown emergency policy": (
        _set("emergencyPolicy", "Later"),
        'supported values: "RevokeImmediately", "KeepUntilCutover"',
    ),
    "history limit zero": (_set("revisionHistoryLimit", 0), "should be greater than or equal to 1"),
    "empty consumer selector": (
        _consumer({}),
        "selector must have matchLabels or matchExpressions; an empty selector would pick every workload",
    ),
    "In without values": (
        _consumer({"matchExpressions": [{"key": "app", "operator": "In"}]}),
        "values must be non-empty for the operators In and NotIn",
    ),
    "validation over plain http": (
        _set("validation", {"url": "http://receiver.example.com/"}),
        "validation.url must start with https://",
    ),
    "misspelt field": (_set("renewBfore", "2160h"), 'unknown field "spec.renewBfore"'),
    "unknown deletion policy": (_set("deletionPolicy", "Orphan"), 'supported values: "Retain", "Delete"'),
    "truststores without a format": (
        _set("trust.additionalFormats", {"passwordSecretRef": {"name": "pw"}}),
        "name at least one of pkcs12 and jks, or leave additionalFormats out",
    ),
    "truststores under one key": (
        _set(
            "trust.additionalFormats",
            {"pkcs12": {"key": "t"}, "jks": {"key": "t"}, "passwordSecretRef": {"name": "pw"}},
        ),
        "pkcs12.key and jks.key must differ",
    ),
    "truststore over the PEM bundle": (
        _set("trust.additionalFormats", {"jks": {"key": "ca.crt"}, "passwordSecretRef": {"name": "pw"}}),
        "ca.crt holds the PEM bundle; name the truststore differently",
    ),
    "unknown cut-over policy": (
        _set("cutover", {"policy": "Automatic"}),
        'supported values: "Manual", "Observed"',
    ),
    "no presentations required": (
        _set("cutover", {"policy": "Observed", "observed": {"minPresentations": 0}}),
        "should be greater than or equal to 1",
    ),
    "quiet period not a duration": (
        _set("cutover", {"policy": "Observed", "observed": {"quietPeriod": "1 hour"}}),
        "cutover.observed.quietPeriod must be a Go duration with units h, m, s or ms, for example 1h",
    ),
    "quiet period below a minute": (
        _set("cutover", {"policy": "Observed", "observed": {"quietPeriod": "59s"}}),
        "cutover.observed.quietPeriod must be at least 1m",
    ),
    "quiet period as long as renewBefore": (
        _both(_set("renewBefore", "2h"), _set("cutover", {"policy": "Observed", "observed": {"quietPeriod": "120m"}})),
        "cutover.observed.quietPeriod must be shorter than renewBefore",
    ),
    "truststores without a password": (
        _set("trust.additionalFormats", {"jks": {"key": "t.jks"}}),
        "spec.trust.additionalFormats.passwordSecretRef: Required value",
    ),
}


def test_a_valid_spec_is_stored_with_the_defaults(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None
) -> None:
    body = manifest()
    body["spec"]["consumers"] = [{"selector": {"matchLabels": {"app": "receiver"}}}]
    body["spec"]["bundle"] = {"passwordSecretRef": {"name": "acme-bundle-password"}}
    body["spec"]["validation"] = {"url": "https://endpoint.example/", "caSecretRef": {"name": "endpoint-ca"}}
    apply(kubectl, namespace, body)
    stored = json.loads(kubectl("get", "whc", "acme", "-n", namespace, "-o", "json").stdout)
    spec = stored["spec"]
    assert spec["duration"] == "8760h"
    assert spec["renewBefore"] == "2160h"
    assert spec["revisionHistoryLimit"] == 10
    assert spec["emergencyPolicy"] == "RevokeImmediately"
    assert spec["bundle"]["passwordSecretRef"] == {"name": "acme-bundle-password", "key": "password"}
    # A CA is not a password: ca.crt, as every other reference to a CA in Kubernetes.
    assert spec["validation"] == {
        "url": "https://endpoint.example/",
        "caSecretRef": {"name": "endpoint-ca", "key": "ca.crt"},
        "timeoutSeconds": 10,
        "acceptStatus": [],
    }
    assert spec["consumers"] == [
        {"selector": {"matchLabels": {"app": "receiver"}, "matchExpressions": []}, "reload": "Hot"}
    ]
    # Nobody cuts over but a person unless asked.
    assert spec["cutover"] == {"policy": "Manual", "observed": {"minPresentations": 10, "quietPeriod": "1h"}}
    # What the API server stored, the operator parses; and parsing adds nothing the server lacks.
    parsed = models.WebhookCertificateSpec.model_validate(spec)
    assert parsed.to_api() == spec


def test_observed_cutover_fills_in_what_it_leaves_out_and_binds_the_quiet_period_only_under_observed(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None
) -> None:
    body = manifest()
    body["spec"]["cutover"] = {"policy": "Observed", "observed": {"minPresentations": 3}}
    apply(kubectl, namespace, body)
    spec = json.loads(kubectl("get", "whc", "acme", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["cutover"] == {"policy": "Observed", "observed": {"minPresentations": 3, "quietPeriod": "1h"}}
    assert models.WebhookCertificateSpec.model_validate(spec).to_api() == spec
    # Under Manual the quiet period is never used: a renewBefore shorter than its default is fine.
    manual = manifest("manual")
    manual["spec"]["renewBefore"] = "30m"
    apply(kubectl, namespace, manual)
    manual["spec"]["cutover"] = {"policy": "Observed"}
    assert "cutover.observed.quietPeriod must be shorter than renewBefore" in apply(
        kubectl, namespace, manual, check=False
    )


def test_a_bundle_sealed_to_recipients_needs_no_password(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None
) -> None:
    body = manifest()
    body["spec"]["bundle"] = {
        "recipients": [
            {"name": "upvest-live", "format": "cms", "configMapRef": {"name": "upvest-public", "key": "tls.crt"}},
            {"name": "upvest-pgp", "format": "openpgp", "secretRef": {"name": "upvest-pgp", "key": "key.asc"}},
        ]
    }
    apply(kubectl, namespace, body)
    spec = json.loads(kubectl("get", "whc", "acme", "-n", namespace, "-o", "json").stdout)["spec"]
    assert "passwordSecretRef" not in spec["bundle"]
    assert [r["name"] for r in spec["bundle"]["recipients"]] == ["upvest-live", "upvest-pgp"]
    parsed = models.WebhookCertificateSpec.model_validate(spec)
    assert parsed.to_api() == spec


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_spec_is_refused_with_a_message_that_says_what_to_fix(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None, case: str
) -> None:
    change, message = INVALID[case]
    body = copy.deepcopy(manifest("invalid"))
    change(body)
    error = apply(kubectl, namespace, body, check=False)
    assert error, f"{case}: the API server accepted {body['spec']}"
    assert message in error
    assert kubectl("get", "whc", "invalid", "-n", namespace, check=False).returncode != 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("environment", "live", "environment is immutable: create another WebhookCertificate"),
        ("secretName", "acme-other", "secretName is immutable: the provider holds the key stored there"),
    ],
)
def test_fields_the_provider_depends_on_cannot_change(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None, field: str, value: str, message: str
) -> None:
    apply(kubectl, namespace, manifest())
    changed = manifest()
    changed["spec"][field] = value
    error = apply(kubectl, namespace, changed, check=False)
    assert message in error
    # Fields without the rule still change.
    changed = manifest()
    changed["spec"]["subject"]["organization"] = "Acme GmbH"
    apply(kubectl, namespace, changed)


def _status() -> models.WebhookCertificateStatus:
    when = datetime.datetime(2026, 3, 1, 9, 30, tzinfo=datetime.UTC)
    record = {
        "serial": "0A1B",
        "fingerprint": "ab" * 32,
        "notBefore": when,
        "notAfter": when + datetime.timedelta(hours=8760),
        "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "secretName": "acme-client",
        "revision": 1,
    }
    return models.WebhookCertificateStatus.model_validate(
        {
            "observedGeneration": 1,
            "stage": "Rotating",
            "revision": 2,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "UpToDate", "lastTransitionTime": when},
                {
                    "type": "RotationInProgress",
                    "status": "True",
                    "reason": "Renewing",
                    "message": "m",
                    "lastTransitionTime": when,
                    "observedGeneration": 1,
                },
            ],
            "current": record,
            "next": {
                **record,
                "serial": "0C",
                "fingerprint": "cd" * 32,
                "secretName": "acme-client-next",
                "revision": 2,
                "reason": "Planned",
                "issuedAt": when,
            },
            "renewalTime": when + datetime.timedelta(hours=6600),
            "history": [
                {
                    "serial": "09",
                    "fingerprint": "ef" * 32,
                    "notBefore": when,
                    "notAfter": when,
                    "revision": 0,
                    "reason": "Compromised",
                    "retiredAt": when,
                    "incident": "INC-7",
                }
            ],
            "revokedFingerprints": ["ef" * 32],
            "lastEmergencyRotation": {"reference": "INC-7", "handledAt": when},
            "trust": {"secretName": "acme-trust", "hash": "12" * 32},
            "consumers": [
                {
                    "selector": "app=receiver",
                    "reload": "Rollout",
                    "trustHash": "12" * 32,
                    "targets": ["Deployment/receiver"],
                    "updatedAt": when,
                }
            ],
            "bundle": {"secretName": "acme-client-bundle", "files": ["sandbox-acme-0A1B.p12"]},
        }
    )


def test_status_written_by_the_operator_is_kept_whole(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None
) -> None:
    apply(kubectl, namespace, manifest())
    status = _status().to_api()
    patch_status(kubectl, namespace, status)
    stored = json.loads(kubectl("get", "whc", "acme", "-n", namespace, "-o", "json").stdout)
    # Nothing pruned, nothing added: the schema knows every field the operator writes.
    assert stored["status"] == status
    assert models.WebhookCertificateStatus.model_validate(stored["status"]) == _status()


def test_status_that_breaks_the_schema_is_refused(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None
) -> None:
    apply(kubectl, namespace, manifest())
    result = patch_status(kubectl, namespace, {"stage": "Sleeping"}, check=False)
    assert result.returncode != 0
    assert 'supported values: "Issuing", "Active", "Rotating", "Compromised"' in result.stderr


def test_kubectl_get_shows_the_printer_columns(
    kubectl: conftest.KubectlRunner, namespace: str, crd_installed: None
) -> None:
    apply(kubectl, namespace, manifest())
    status = _status()
    assert status.current is not None
    # A past time (the provider presented it a while ago), whatever today's date.
    status.current.last_presented = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(
        hours=3
    )
    patch_status(kubectl, namespace, status.to_api())
    header, row = kubectl("get", "whc", "-n", namespace).stdout.splitlines()
    assert header.split() == [
        "NAME",
        "ENVIRONMENT",
        "READY",
        "STAGE",
        "EXPIRES",
        "RENEWAL",
        "CURRENT-SEEN",
        "NEXT-SEEN",
        "AGE",
    ]
    # kubectl leaves an empty date column blank: cells are cut at the header's column starts.
    starts = [header.index(word) for word in header.split()] + [len(row)]
    name, environment, ready, stage, expires, renewal, current_seen, next_seen, _age = (
        row[a:b].strip() for a, b in itertools.pairwise(starts)
    )
    assert (name, environment, ready, stage) == ("acme", "sandbox", "True", "Rotating")
    # When the provider last presented each: an age for the current, nothing yet for the next.
    assert re.fullmatch(r"\d+h(\d+m)?", current_seen), current_seen
    assert next_seen == ""
    # The times themselves: a date column would print these future times as "<invalid>".
    assert expires == "2027-03-01T09:30:00Z"
    assert renewal == "2026-12-01T09:30:00Z"
    wide_header, wide_row = kubectl("get", "whc", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide_header.split()[-3:-1] == ["SERIAL", "SECRET"]
    assert wide_row.split()[-3:-1] == ["0A1B", "acme-client"]
    # The category is what users type to see everything the operator manages; with the
    # PresentationReports in it too, kubectl names each row by its kind.
    by_category = kubectl("get", "webhookcerts", "-n", namespace).stdout.splitlines()
    # PresentationReports share the category, so kubectl names each row with its kind.
    assert by_category[1].split()[:2] == [f"{models.KIND.lower()}.{models.GROUP}/acme", "sandbox"]

"""The trust store in the other shapes servers read: PKCS#12 and JKS truststores, and a ConfigMap copy.

Several WebhookCertificates may share one trust Secret, so what it holds is what any of them asks for:
the union of the truststore keys, and of the ConfigMaps. They must agree on the truststores' password
Secret; when they do not, no truststore is written and the writer's condition says which objects to
align.

A PKCS#12 truststore is encrypted with a random salt, so encoding the same certificates twice gives
different bytes: the truststores are re-encoded only when the certificates (the trust hash) or the
password Secret changed, never on an idle pass, or every pass would rewrite the Secret and reload the
servers for nothing. The password Secret is the user's and not watched: it is read when the
certificates change, and at most once per ``bundle_recheck_seconds`` otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterable

from webhookcerts.domain import models, names, trust, truststores
from webhookcerts.kube import configmaps, secrets
from webhookcerts.service import state

SOURCE_ANNOTATION = f"{names.PREFIX}/truststore-source"
# On the trust Secret: the ConfigMaps it was last copied to, so that one no longer named is emptied.
CONFIG_MAPS_ANNOTATION = f"{names.PREFIX}/config-maps"


@dataclasses.dataclass(frozen=True)
class Targets:
    pkcs12: str | None = None
    jks: str | None = None
    password: models.SecretKeyRef | None = None
    config_maps: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def formats(self) -> bool:
        return self.pkcs12 is not None or self.jks is not None


def targets(specs: Iterable[tuple[str, models.WebhookCertificateSpec]]) -> Targets:
    """What the objects sharing one trust Secret ask it to hold beside ca.crt."""
    pkcs12: str | None = None
    jks: str | None = None
    passwords: dict[tuple[str, str], list[str]] = {}
    config_maps: set[str] = set()
    for name, spec in sorted(specs):
        if spec.trust.config_map is not None:
            config_maps.add(spec.trust.config_map.name)
        formats = spec.trust.additional_formats
        if formats is None:
            continue
        pkcs12 = pkcs12 or (formats.pkcs12.key if formats.pkcs12 else None)
        jks = jks or (formats.jks.key if formats.jks else None)
        ref = formats.password_secret_ref
        passwords.setdefault((ref.name, ref.key), []).append(name)
    problem = None
    password = None
    if len(passwords) > 1:
        problem = (
            "the WebhookCertificates sharing it name different truststore passwords ("
            + "; ".join(f"{', '.join(who)}: Secret {n} key {k}" for (n, k), who in sorted(passwords.items()))
            + "): give them the same additionalFormats.passwordSecretRef; no truststore is written until then"
        )
    elif passwords:
        ((ref_name, ref_key),) = passwords
        password = models.SecretKeyRef(name=ref_name, key=ref_key)
    return Targets(pkcs12, jks, password, tuple(sorted(config_maps)), problem)


def encode(
    ctx: state.Context,
    namespace: str,
    secret_name: str,
    wanted: Targets,
    pem: bytes,
    trust_hash: str,
    existing: secrets.SecretData | None,
) -> tuple[dict[str, bytes], dict[str, str], str | None]:
    """The truststore keys for the trust Secret, the annotation recording their source, and a problem."""
    if not wanted.formats or wanted.problem is not None:
        return {}, {}, wanted.problem
    assert wanted.password is not None
    keys = [k for k in (wanted.pkcs12, wanted.jks) if k is not None]
    held = existing.data if existing is not None else {}
    recorded = existing.annotations.get(SOURCE_ANNOTATION, "") if existing is not None else ""
    checked = ctx.truststore_checks.get((namespace, secret_name))
    if (
        all(k in held for k in keys)
        and recorded.startswith(f"{trust_hash}/")
        and checked is not None
        and time.monotonic() - checked < ctx.bundle_recheck_seconds
    ):
        return {k: held[k] for k in keys}, {SOURCE_ANNOTATION: recorded}, None
    password_secret = secrets.read(ctx.clients, namespace, wanted.password.name)
    password = password_secret.data.get(wanted.password.key) if password_secret is not None else None
    if password_secret is None or not password:
        # The certificates stay trusted in ca.crt; only the truststores wait for the password.
        return (
            {k: held[k] for k in keys if k in held},
            {SOURCE_ANNOTATION: recorded} if recorded else {},
            f"truststore password Secret {wanted.password.name} (key {wanted.password.key}) is missing or empty: "
            "the PKCS#12 and JKS truststores are not written until it is there",
        )
    ctx.truststore_checks[(namespace, secret_name)] = time.monotonic()
    source = hashlib.sha256(
        "/".join([password_secret.uid, password_secret.resource_version, *keys]).encode()
    ).hexdigest()[:32]
    annotation = f"{trust_hash}/{source}"
    if recorded == annotation and all(k in held for k in keys):
        return {k: held[k] for k in keys}, {SOURCE_ANNOTATION: annotation}, None
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return (
            {k: held[k] for k in keys if k in held},
            {SOURCE_ANNOTATION: recorded} if recorded else {},
            f"the truststore password in Secret {wanted.password.name} is not UTF-8 text: put a text password there",
        )
    data: dict[str, bytes] = {}
    try:
        if wanted.pkcs12 is not None:
            data[wanted.pkcs12] = truststores.pkcs12(pem, text)
        if wanted.jks is not None:
            data[wanted.jks] = truststores.jks(pem, text)
    except truststores.TrustStoreError as exc:
        # A password the JDK cannot use (PKCS#12 takes ASCII only): say so, keep what was there.
        return (
            {k: held[k] for k in keys if k in held},
            {SOURCE_ANNOTATION: recorded} if recorded else {},
            f"the truststores could not be written with the password in Secret {wanted.password.name}: {exc}",
        )
    return data, {SOURCE_ANNOTATION: annotation}, None


def config_maps_annotation(wanted: Targets, before: secrets.SecretData | None) -> dict[str, str]:
    """The record of the ConfigMaps copied to; none on a store that never had one (nothing to rewrite)."""
    had = before is not None and bool(before.annotations.get(CONFIG_MAPS_ANNOTATION))
    return {CONFIG_MAPS_ANNOTATION: ",".join(wanted.config_maps)} if wanted.config_maps or had else {}


def write_config_maps(
    ctx: state.Context,
    namespace: str,
    wanted: Targets,
    pem: bytes,
    formats: dict[str, bytes],
    trust_hash: str,
    *,
    changed: bool,
    before: secrets.SecretData | None,
) -> None:
    """Bring each ConfigMap to the trust Secret's content: after every change of it, and otherwise at
    most once per ``bundle_recheck_seconds`` (a ConfigMap deleted or edited by hand is restored then).

    A ConfigMap the trust Secret was copied to before and no object names now keeps no certificate:
    its ca.crt becomes the trust-nobody placeholder (it may be the user's, so it is not deleted), or it
    would go on trusting what this store has since revoked.
    """
    previous = before.annotations.get(CONFIG_MAPS_ANNOTATION, "") if before is not None else ""
    for name in sorted({n for n in previous.split(",") if n} - set(wanted.config_maps)):
        configmaps.write(
            ctx.clients,
            namespace,
            name,
            data={names.TRUST_KEY: trust.PLACEHOLDER_PEM.decode("ascii")},
            binary={},
            annotations={names.TRUST_HASH_ANNOTATION: trust.trust_hash(trust.PLACEHOLDER_PEM)},
        )
    for name in wanted.config_maps:
        checked = ctx.truststore_checks.get((namespace, f"configmap/{name}"))
        if not changed and checked is not None and time.monotonic() - checked < ctx.bundle_recheck_seconds:
            continue
        configmaps.write(
            ctx.clients,
            namespace,
            name,
            data={names.TRUST_KEY: pem.decode("ascii")},
            binary=formats,
            annotations={names.TRUST_HASH_ANNOTATION: trust_hash},
        )
        # Only a write that went through counts as checked: a refused one (RBAC) is tried, and
        # reported, again at the next pass.
        ctx.truststore_checks[(namespace, f"configmap/{name}")] = time.monotonic()

"""The trust store in the other shapes servers read: PKCS#12 and JKS truststores, and a ConfigMap copy.

Several WebhookCertificates may share one trust Secret, so what it holds is what any of them asks for:
the union of the truststore keys, and of the ConfigMaps. They must agree on the truststores' password
Secret; when they do not, no truststore is written and the writer's condition says which objects to
align.

A truststore never holds a certificate ``ca.crt`` does not: when it cannot be encoded for the present
``ca.crt`` (no password, passwords that disagree, a password the JDK cannot use) it is removed, unless
it was encoded for exactly the present ``ca.crt``; so is one no longer asked for (its key removed or
renamed, the formats dropped). Keeping an old truststore while the set only grows would need a record
of what it holds that the operator can trust without its password: an annotation is not one (anyone
who can edit the Secret can edit it), so that is not done.

A PKCS#12 truststore is encrypted with a random salt, so encoding the same certificates twice gives
different bytes: the truststores are re-encoded only when the certificates (the trust hash) or the
password Secret changed, never on an idle pass, or every pass would rewrite the Secret and reload the
servers for nothing. The password Secret is the user's and not watched: it is read when the
certificates change, and at most once per ``bundle_recheck_seconds`` otherwise; each time it is read,
the truststores are decoded with it and compared with ``ca.crt``: one edited by hand is rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping

from webhookcerts.domain import models, names, ownership, trust, truststores
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import configmaps, secrets
from webhookcerts.service import state

SOURCE_ANNOTATION = f"{names.PREFIX}/truststore-source"
# On the trust Secret: the truststore keys it holds now (a secondary record; each object's status
# records the keys it asked for, and either is enough for a key no longer asked for to be removed).
KEYS_ANNOTATION = f"{names.PREFIX}/truststore-keys"
REMOVED = (
    "; they are removed rather than left holding a set ca.crt no longer holds (a revoked certificate would "
    "stay trusted): a JVM reading them may fail to reload until they are back"
)
KEPT = "; those written for the present ca.crt are kept, and removed at its next change"
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


@dataclasses.dataclass(frozen=True)
class Encoded:
    """The truststore keys to write, the managed keys to remove, the annotations recording them."""

    data: dict[str, bytes]
    remove: tuple[str, ...]
    annotations: dict[str, str]
    problem: str | None
    # Every key the operator writes or wrote here (what a ConfigMap copy drops too when not in data).
    managed: frozenset[str]
    # Keys found holding another set than ca.crt (edited by hand) and rewritten.
    restored: tuple[str, ...] = ()


def _format_keys(wanted: Targets) -> dict[str, str]:
    found: dict[str, str] = {}
    if wanted.pkcs12 is not None:
        found[wanted.pkcs12] = "pkcs12"
    if wanted.jks is not None:
        found[wanted.jks] = "jks"
    return found


def _holds(blob: bytes, format: str, password: str, pem: bytes) -> bool:
    """Whether a truststore holds exactly the certificates of ``pem`` (read with the password)."""
    try:
        held = truststores.certificates_of(blob, format, password)
    except truststores.TrustStoreError:
        return False
    return {hashlib.sha256(der).hexdigest() for der in held} == set(trust.fingerprints_of([pem]))


def encode(
    ctx: state.Context,
    namespace: str,
    secret_name: str,
    wanted: Targets,
    pem: bytes,
    trust_hash: str,
    existing: secrets.SecretData | None,
    recorded_keys: Collection[str] = (),
) -> Encoded:
    """The truststore keys for the trust Secret, those to remove, and why they could not be written.

    ``recorded_keys`` are the keys the objects' statuses say they asked for in this Secret: with the
    Secret's own record, what a key no longer asked for is known by.
    """
    held = existing.data if existing is not None else {}
    annotations = existing.annotations if existing is not None else {}
    listed = {k for k in annotations.get(KEYS_ANNOTATION, "").split(",") if k}
    formats = _format_keys(wanted)
    managed = frozenset((listed | set(recorded_keys) | set(formats)) - {names.TRUST_KEY})
    data, source, problem, restored = _encode(ctx, namespace, secret_name, wanted, formats, pem, trust_hash, existing)
    recorded = annotations.get(SOURCE_ANNOTATION, "")
    written: dict[str, str] = {}
    if data or recorded:
        written[SOURCE_ANNOTATION] = source
    if data or listed:
        written[KEYS_ANNOTATION] = ",".join(sorted(data))
    remove = tuple(sorted(k for k in managed if k in held and k not in data))
    return Encoded(data, remove, written, problem, managed, restored)


def _encode(
    ctx: state.Context,
    namespace: str,
    secret_name: str,
    wanted: Targets,
    formats: dict[str, str],
    pem: bytes,
    trust_hash: str,
    existing: secrets.SecretData | None,
) -> tuple[dict[str, bytes], str, str | None, tuple[str, ...]]:
    """The truststores, their source annotation, a problem, and the keys found edited by hand."""
    if not formats:
        return {}, "", wanted.problem, ()
    held = existing.data if existing is not None else {}
    recorded = existing.annotations.get(SOURCE_ANNOTATION, "") if existing is not None else ""
    # Encoded for exactly the present ca.crt: what may stay while the password cannot be used.
    exact = (
        {k: held[k] for k in formats}
        if recorded.startswith(f"{trust_hash}/") and all(k in held for k in formats)
        else {}
    )

    def cannot(problem: str) -> tuple[dict[str, bytes], str, str | None, tuple[str, ...]]:
        return exact, recorded if exact else "", problem + (KEPT if exact else REMOVED), ()

    if wanted.problem is not None:
        return cannot(wanted.problem)
    assert wanted.password is not None
    checked = ctx.truststore_checks.get((namespace, secret_name))
    if (
        exact
        and checked is not None
        and time.monotonic() - checked < ctx.bundle_recheck_seconds
        and ctx.truststore_digests.get((namespace, secret_name)) == _digest(exact)
    ):
        return exact, recorded, None, ()
    try:
        password_secret = secrets.read(ctx.clients, namespace, wanted.password.name)
    except (kube_client.ApiError, kube_client.TransportError) as exc:
        # Never a reason to keep ca.crt unwritten (a containment waits on it): the truststores wait.
        return cannot(
            f"truststore password Secret {wanted.password.name} could not be read ({type(exc).__name__}): "
            "the PKCS#12 and JKS truststores cannot be written until it can"
        )
    password = password_secret.data.get(wanted.password.key) if password_secret is not None else None
    if password_secret is None or not password:
        return cannot(
            f"truststore password Secret {wanted.password.name} (key {wanted.password.key}) is missing or empty: "
            "the PKCS#12 and JKS truststores cannot be written until it is there"
        )
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return cannot(
            f"the truststore password in Secret {wanted.password.name} is not UTF-8 text: put a text password there"
        )
    ctx.truststore_checks[(namespace, secret_name)] = time.monotonic()
    source = hashlib.sha256(
        "/".join([password_secret.uid, password_secret.resource_version, *formats]).encode()
    ).hexdigest()[:32]
    annotation = f"{trust_hash}/{source}"
    restored: tuple[str, ...] = ()
    if recorded == annotation and exact:
        # The password is at hand: what the truststores hold is checked, not taken from the annotation.
        restored = tuple(k for k, format in formats.items() if not _holds(exact[k], format, text, pem))
        if not restored:
            ctx.truststore_digests[(namespace, secret_name)] = _digest(exact)
            return exact, annotation, None, ()
    data: dict[str, bytes] = {}
    try:
        for key, format in formats.items():
            data[key] = truststores.encode(pem, format, text)
    except truststores.TrustStoreError as exc:
        # A password the JDK cannot use (PKCS#12 takes ASCII only).
        return cannot(f"the truststores could not be written with the password in Secret {wanted.password.name}: {exc}")
    ctx.truststore_digests[(namespace, secret_name)] = _digest(data)
    return data, annotation, None, restored


def _digest(stores: dict[str, bytes]) -> str:
    return hashlib.sha256(
        b"".join(hashlib.sha256(k.encode() + b"\0" + v).digest() for k, v in sorted(stores.items()))
    ).hexdigest()


def config_maps_annotation(wanted: Targets, before: secrets.SecretData | None) -> dict[str, str]:
    """The record of the ConfigMaps copied to; none on a store that never had one (nothing to rewrite)."""
    had = before is not None and bool(before.annotations.get(CONFIG_MAPS_ANNOTATION))
    return {CONFIG_MAPS_ANNOTATION: ",".join(wanted.config_maps)} if wanted.config_maps or had else {}


def write_config_maps(
    ctx: state.Context,
    namespace: str,
    wanted: Targets,
    pem: bytes,
    encoded: Encoded,
    trust_hash: str,
    *,
    changed: bool,
    before: secrets.SecretData | None,
    recorded: Collection[str] = (),
    elsewhere: Collection[str] = (),
    naming: Mapping[str, Collection[str]] | None = None,
) -> list[str]:
    """Bring each ConfigMap to the trust Secret's content: after every change of it, and otherwise at
    most once per ``bundle_recheck_seconds`` (a ConfigMap deleted or edited by hand is restored then).

    Its binaryData holds the truststores the Secret holds, and none of the managed keys it does not:
    never a truststore for another set than its ca.crt.

    A ConfigMap the trust Secret was copied to before (by its annotation, or by ``recorded``: what the
    statuses say was asked for) and no object names now keeps no certificate: its ca.crt becomes the
    trust-nobody placeholder and its truststores are removed (it may be the user's, so it is not
    deleted), or it would go on trusting what this store has since revoked. One another trust Secret
    is copied to now (``elsewhere``) is that Secret's to write.

    A ConfigMap of someone else's (no label of ours: every write of the operator's puts it there) is
    taken over only with its owner's consent, the trust-target annotation naming an object of
    ``naming`` (the WebhookCertificates that name it). The records of what was asked for (the
    annotation, the statuses) are no proof that the operator wrote a ConfigMap, so they do not count.
    One no longer named is emptied whatever its labels say: containment never waits on consent. What
    was refused, with how to consent, is returned.
    """
    previous = before.annotations.get(CONFIG_MAPS_ANNOTATION, "") if before is not None else ""
    refused: list[str] = []
    stale = ({n for n in previous.split(",") if n} | set(recorded)) - set(wanted.config_maps) - set(elsewhere)
    placeholder_hash = trust.trust_hash(trust.PLACEHOLDER_PEM)
    for name in sorted(stale):
        if not _due(ctx, namespace, name, changed or name in previous.split(","), placeholder_hash):
            continue
        configmaps.write(
            ctx.clients,
            namespace,
            name,
            data={names.TRUST_KEY: trust.PLACEHOLDER_PEM.decode("ascii")},
            binary={},
            annotations={names.TRUST_HASH_ANNOTATION: placeholder_hash},
            remove_binary=encoded.managed,
            create=False,
        )
        _written(ctx, namespace, name, placeholder_hash)
    for name in wanted.config_maps:
        if not _due(ctx, namespace, name, changed, trust_hash):
            continue
        who = sorted((naming or {}).get(name, ()))
        try:
            configmaps.write(
                ctx.clients,
                namespace,
                name,
                data={names.TRUST_KEY: pem.decode("ascii")},
                binary=encoded.data,
                annotations={names.TRUST_HASH_ANNOTATION: trust_hash},
                remove_binary=encoded.managed,
                take=_consented(who),
            )
        except configmaps.NotTaken:
            refused.append(ownership.consent_refusal("ConfigMap", name, ",".join(who) or "<name>"))
            continue
        # Only a write that went through counts as checked: a refused one (RBAC, consent) is tried,
        # and reported, again at the next pass.
        _written(ctx, namespace, name, trust_hash)
    return refused


def _consented(who: Collection[str]) -> Callable[[configmaps.ConfigMapData], bool]:
    def take(found: configmaps.ConfigMapData) -> bool:
        given = ownership.consent(found.annotations)
        return any(ownership.consents(given, name) for name in who)

    return take


def _written(ctx: state.Context, namespace: str, name: str, trust_hash: str) -> None:
    ctx.truststore_checks[(namespace, f"configmap/{name}")] = time.monotonic()
    ctx.config_map_hashes[(namespace, name)] = trust_hash


def _due(ctx: state.Context, namespace: str, name: str, changed: bool, trust_hash: str) -> bool:
    """Whether the ConfigMap is to be written: its content changed, a write of the present content never
    went through (a failed pass: the Secret was written and is unchanged now), or its recheck is due."""
    checked = ctx.truststore_checks.get((namespace, f"configmap/{name}"))
    return (
        changed
        or checked is None
        or ctx.config_map_hashes.get((namespace, name)) != trust_hash
        or time.monotonic() - checked >= ctx.bundle_recheck_seconds
    )

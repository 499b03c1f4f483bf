"""Whose a Secret is, and in which role: the rule that keeps the operator off Secrets it did not write.

A WebhookCertificate claims up to four Secrets by name: its key (``spec.secretName``), its next key
(``<secretName>-next``), its bundle and its trust store. Every Secret the operator writes says which
object it belongs to and in which role (the ``webhookcerts.io/role`` label, the
``webhookcerts.io/owner`` annotation), so a claim can be checked against the Secret itself:

- a trust Secret is shared: any number of objects may name it, and an existing Secret of the user's
  (an endpoint's ``tls.crt``/``tls.key``) may become one, as only ``ca.crt`` (and the truststore keys
  asked for) is managed in it; but only with its owner's consent, the ``webhookcerts.io/trust-target``
  annotation on it naming the object (or ``*``): whoever may create a WebhookCertificate must not be
  able to overwrite another team's CA bundle or an ingress's ``auth-tls-secret`` by naming it. Consent
  gates only taking a Secret over: one the object already wrote (labelled as the operator's, or
  recorded in its status) is written whatever its annotations say, so containment never waits on it;
- a key Secret made by hand may be adopted (that is how an existing key is brought in); once adopted
  it carries the owner's name;
- everything else (a Secret of another object, of the same object in another role, a user's Secret
  where a next key or a bundle would go) is never written: the claim is refused with a message that
  names the Secret, both claimants and what to rename.

Two objects claiming one name before the Secret exists: the older one (creationTimestamp, then name)
gets it, so both operator processes of a rolling update refuse the same one. Pure: no I/O here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from webhookcerts.domain import models, names

Role = Literal["key", "next", "bundle", "trust"]

_FIELD: dict[Role, str] = {
    "key": "spec.secretName",
    "next": "spec.secretName (the next key goes to <secretName>-next)",
    "bundle": "spec.bundle.secretName",
    "trust": "spec.trust.secretName",
}


def claims(spec: models.WebhookCertificateSpec) -> list[tuple[str, Role]]:
    """The Secrets one object's spec names, each with the role it has for that object."""
    claimed: list[tuple[str, Role]] = [
        (spec.secret_name, "key"),
        (spec.next_secret_name, "next"),
        (spec.trust.secret_name, "trust"),
    ]
    if spec.bundle is not None:
        claimed.append((spec.bundle_secret_name, "bundle"))
    return claimed


@dataclasses.dataclass(frozen=True)
class Holder:
    """What an existing Secret says about who wrote it."""

    managed: bool
    owner: str | None = None
    role: Role | None = None
    # On a Secret of someone else's: the WebhookCertificates its owner lets write their trust there.
    consent: frozenset[str] = frozenset()


def consent(annotations: Mapping[str, str]) -> frozenset[str]:
    """The WebhookCertificate names (or ``*``) the trust-target annotation lists."""
    value = annotations.get(names.TRUST_TARGET_ANNOTATION, "")
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def consents(given: frozenset[str], me: str) -> bool:
    return "*" in given or me in given


def consent_refusal(kind: Literal["Secret", "ConfigMap"], name: str, me: str) -> str:
    """Why ``me`` may not take over ``name``, and how its owner lets it."""
    return (
        f"{kind} {name} exists and was not written by webhookcerts: WebhookCertificate {me} writes its trust "
        f"store there only with the consent of its owner, who gives it with `kubectl annotate {kind.lower()} "
        f"{name} {names.TRUST_TARGET_ANNOTATION}={me}` in this namespace (a comma-separated list of "
        "WebhookCertificate names, or *); only ca.crt and the truststore keys asked for are then written, "
        "everything else it holds is kept; nothing was written to it"
    )


def holder(name: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> Holder:
    if labels.get(names.MANAGED_BY_LABEL) != names.MANAGED_BY:
        return Holder(managed=False, consent=consent(annotations))
    role = labels.get(names.ROLE_LABEL)
    owner = annotations.get(names.OWNER_ANNOTATION) or labels.get(names.INSTANCE_LABEL)
    if role in ("key", "next", "bundle", "trust"):
        return Holder(True, owner if role != "trust" else None, role)  # type: ignore[arg-type]
    # Written by a release that did not record roles: key Secrets named their object, trust Secrets
    # named none. The role is then taken from the claim that matches the owner.
    if owner is None:
        return Holder(True, None, "trust")
    return Holder(True, owner, None)


@dataclasses.dataclass(frozen=True)
class Claimant:
    name: str
    role: Role
    created: str


def _compatible(a: Role, b: Role) -> bool:
    return a == "trust" and b == "trust"


def conflict(
    secret: str,
    role: Role,
    me: Claimant,
    existing: Holder | None,
    rivals: list[Claimant],
    own_claims: list[tuple[str, Role]],
) -> str | None:
    """Why ``me`` may not write ``secret`` in ``role``; None when it may."""
    twice = [r for n, r in own_claims if n == secret and r != role]
    if twice:
        return (
            f"Secret {secret} is named twice by this WebhookCertificate, as its {role} and its {twice[0]}: "
            f"give {_FIELD[role]} and {_FIELD[twice[0]]} different names"
        )
    if existing is not None and existing.managed:
        if role == "trust" and existing.role == "trust":
            return None
        if existing.owner == me.name and existing.role in (role, None):
            return None
        if existing.role == "trust":
            what = "is a trust store shared by WebhookCertificates"
        else:
            what = f"holds the {existing.role or 'key material'} of WebhookCertificate {existing.owner}"
        return (
            f"Secret {secret} {what}; WebhookCertificate {me.name} claims it as its {role}: "
            f"rename {_FIELD[role]} of {me.name}; nothing was written to the Secret"
        )
    if existing is not None and role == "trust" and not consents(existing.consent, me.name):
        return consent_refusal("Secret", secret, me.name)
    if existing is not None and role in ("next", "bundle"):
        return (
            f"Secret {secret} exists and was not written by webhookcerts; WebhookCertificate {me.name} "
            f"would write its {role} there: rename {_FIELD[role]}, or delete the Secret if it is not needed; "
            "nothing was written to it"
        )
    first = min([me, *(r for r in rivals if not _compatible(role, r.role))], key=lambda c: (c.created, c.name))
    if first.name != me.name:
        return (
            f"Secret {secret} is claimed by WebhookCertificate {first.name} as its {first.role} and by "
            f"{me.name} as its {role}: rename {_FIELD[role]} of {me.name} (or {_FIELD[first.role]} of "
            f"{first.name}); nothing was written to the Secret"
        )
    return None


def stamp(owner: str, role: Role) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations that say whose a Secret is."""
    labels: dict[str, str] = {names.ROLE_LABEL: role}
    if role == "trust":
        return labels, {}
    labels[names.INSTANCE_LABEL] = names.label_value(owner)
    return labels, {names.OWNER_ANNOTATION: owner}

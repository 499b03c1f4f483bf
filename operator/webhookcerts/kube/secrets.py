"""Reading and writing the Secrets the operator owns: key pairs, trust stores, bundles.

Writes compare before they send, so an unchanged Secret is never rewritten (nothing downstream
reloads for nothing), and reads go by name: the operator never lists every Secret in the cluster
(cert-manager's 5 GiB lesson, issue #3748).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import kubernetes

from webhookcerts.kube import client as kube_client

TLS = "kubernetes.io/tls"
OPAQUE = "Opaque"


@dataclasses.dataclass(frozen=True)
class SecretData:
    name: str
    type: str
    data: dict[str, bytes]
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str
    uid: str
    # The uids of the objects that own it (ownerReferences): what garbage collection deletes it with.
    owner_uids: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # Secrets hold private keys: their representation names the keys, never the values.
        return f"SecretData(name={self.name!r}, type={self.type!r}, keys={sorted(self.data)})"


@dataclasses.dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, object]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


class Unknown:
    """Marks "the caller has no copy of this Secret": ``write`` reads it first."""


UNKNOWN = Unknown()


def read(clients: kube_client.Clients, namespace: str, name: str) -> SecretData | None:
    try:
        secret = clients.secrets_and_events.read_namespaced_secret(name, namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return _from_model(secret)


def _from_model(secret: kubernetes.client.V1Secret) -> SecretData:
    meta = secret.metadata or kubernetes.client.V1ObjectMeta()
    return SecretData(
        name=meta.name or "",
        type=secret.type or OPAQUE,
        data={k: base64.b64decode(v) for k, v in (secret.data or {}).items()},
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        resource_version=meta.resource_version or "",
        uid=meta.uid or "",
        owner_uids=tuple(ref.uid for ref in meta.owner_references or ()),
    )


def from_body(body: Mapping[str, Any]) -> SecretData:
    """A Secret as a watch event carries it (plain JSON, base64 data)."""
    meta = body.get("metadata") or {}
    return SecretData(
        name=meta.get("name", ""),
        type=body.get("type") or OPAQUE,
        data={k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()},
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        resource_version=meta.get("resourceVersion", ""),
        uid=meta.get("uid", ""),
        owner_uids=tuple(str(ref.get("uid", "")) for ref in meta.get("ownerReferences") or ()),
    )


def list_managed(clients: kube_client.Clients, namespace: str) -> list[SecretData]:
    """Every Secret of the namespace that carries the operator's label (what the operator watches)."""
    selector = f"{kube_client.MANAGED_BY_LABEL}={kube_client.MANAGED_BY}"
    items = clients.secrets_and_events.list_namespaced_secret(namespace, label_selector=selector).items or []
    return [_from_model(item) for item in items]


def _encode(data: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}


def write(
    clients: kube_client.Clients,
    namespace: str,
    name: str,
    *,
    type: str,
    data: dict[str, bytes],
    labels: dict[str, str] | None = None,
    annotations: Mapping[str, str | None] | None = None,
    owner: Owner | None = None,
    disown: str | None = None,
    create_only: bool = False,
    existing: SecretData | Unknown | None = UNKNOWN,
    only_keys: bool = False,
    remove: Collection[str] = (),
) -> SecretData | None:
    """Create the Secret, or bring an existing one to exactly ``data``; what the server now holds, or
    None when nothing had to be sent.

    ``create_only`` refuses to touch an existing Secret (``AlreadyExists`` propagates): the first key
    of a WebhookCertificate must never overwrite something a user or an earlier run put there.
    ``existing`` is the caller's copy of the Secret (from its watch-fed view), read here when not
    given. A patch carries that copy's resourceVersion, so a stale copy fails with a conflict (409)
    instead of overwriting a change it has not seen.

    ``only_keys`` manages the keys of ``data`` and nothing else: whatever else an existing Secret holds
    (an endpoint's own ``tls.crt`` and ``tls.key`` beside the trust store's ``ca.crt``) stays byte for
    byte. Without it the Secret is brought to exactly ``data`` (the operator's own key Secrets).
    ``remove`` names keys that must go from an existing Secret even so (a truststore the operator wrote
    and can no longer vouch for).

    An annotation given as None is taken off an existing Secret (and not set on a new one).

    ``owner`` makes the object the Secret's owner (garbage-collected with it); ``disown`` is the uid
    of an object whose ownership an existing Secret loses (its deletionPolicy turned to Retain).
    """
    labels = {kube_client.MANAGED_BY_LABEL: kube_client.MANAGED_BY, **(labels or {})}
    annotations = dict(annotations or {})
    if create_only:
        existing = None
    elif isinstance(existing, Unknown):
        existing = read(clients, namespace, name)
    if existing is None:
        body = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(
                name=name,
                namespace=namespace,
                labels=labels,
                annotations={k: v for k, v in annotations.items() if v is not None} or None,
                owner_references=[owner.reference()] if owner else None,
            ),
            type=type,
            data=_encode(data),
        )
        return _from_model(clients.secrets_and_events.create_namespaced_secret(namespace, body))
    same_labels = all(existing.labels.get(k) == v for k, v in labels.items())
    same_annotations = all(existing.annotations.get(k) == v for k, v in annotations.items())
    gone = [k for k in remove if k in existing.data and k not in data]
    same_data = (
        all(existing.data.get(k) == v for k, v in data.items())
        and (only_keys or set(existing.data) == set(data))
        and not gone
    )
    owners_wrong = (owner is not None and owner.uid not in existing.owner_uids) or (
        disown is not None and disown in existing.owner_uids
    )
    if same_data and same_labels and same_annotations and not owners_wrong:
        return None
    # A merge patch names every key it changes; keys that must go are sent as null.
    patch_data: dict[str, str | None] = (
        {k: None for k in gone} if only_keys else {k: None for k in existing.data if k not in data}
    )
    patch_data.update(_encode({k: v for k, v in data.items() if existing.data.get(k) != v}))
    metadata: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "resourceVersion": existing.resource_version,
    }
    if owners_wrong:
        # Patches are strategic merges, which merge ownerReferences by uid: the list is replaced.
        metadata["ownerReferences"] = [
            {"$patch": "replace"},
            *_owner_references(clients, namespace, name, owner, disown),
        ]
    written = clients.secrets_and_events.patch_namespaced_secret(
        name, namespace, {"metadata": metadata, "data": patch_data}
    )
    return _from_model(written)


def _owner_references(
    clients: kube_client.Clients, namespace: str, name: str, owner: Owner | None, disown: str | None
) -> list[dict[str, object]]:
    # A merge patch replaces the whole list: the owners someone else set are read and kept.
    meta = clients.secrets_and_events.read_namespaced_secret(name, namespace).metadata
    kept: list[dict[str, object]] = [
        {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "name": ref.name,
            "uid": ref.uid,
            **({"controller": ref.controller} if ref.controller is not None else {}),
            **({"blockOwnerDeletion": ref.block_owner_deletion} if ref.block_owner_deletion is not None else {}),
        }
        for ref in (meta.owner_references if meta is not None else None) or []
        if ref.uid != disown and (owner is None or ref.uid != owner.uid)
    ]
    return [*kept, owner.reference()] if owner is not None else kept


def delete(clients: kube_client.Clients, namespace: str, name: str, *, resource_version: str | None = None) -> bool:
    """Delete the Secret (only at ``resource_version`` when given: 409 if it changed); True when it existed."""
    options = (
        kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(resource_version=resource_version)
        )
        if resource_version
        else None
    )
    try:
        clients.secrets_and_events.delete_namespaced_secret(name, namespace, body=options)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, kubernetes.client.ApiException) and exc.status in (409,)

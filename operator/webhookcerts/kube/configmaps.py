"""Writing the trust store into a ConfigMap as well (Gateway API implementations read caCertificateRefs).

Only the keys the operator manages are written; everything else a ConfigMap holds stays as it is. A
write compares first (nothing is sent when nothing changed) and carries the resourceVersion it read.
Whether a ConfigMap the operator did not create may be taken over is the caller's to say (``take``):
it is asked with what the read found, so the decision and the patch rest on the same copy.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Collection

import kubernetes

from webhookcerts.domain import names
from webhookcerts.kube import client as kube_client


@dataclasses.dataclass(frozen=True)
class ConfigMapData:
    name: str
    data: dict[str, str]
    binary: dict[str, bytes]
    labels: dict[str, str]
    resource_version: str
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def managed(self) -> bool:
        return self.labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY


class NotTaken(Exception):
    """A ConfigMap of someone else's that the caller may not take over: nothing was written to it."""


def read(clients: kube_client.Clients, namespace: str, name: str) -> ConfigMapData | None:
    try:
        found = clients.core.read_namespaced_config_map(name, namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    meta = found.metadata or kubernetes.client.V1ObjectMeta()
    return ConfigMapData(
        name=meta.name or name,
        data=dict(found.data or {}),
        binary={k: base64.b64decode(v) for k, v in (found.binary_data or {}).items()},
        labels=dict(meta.labels or {}),
        resource_version=meta.resource_version or "",
        annotations=dict(meta.annotations or {}),
    )


def write(
    clients: kube_client.Clients,
    namespace: str,
    name: str,
    *,
    data: dict[str, str],
    binary: dict[str, bytes],
    annotations: dict[str, str],
    remove_binary: Collection[str] = (),
    create: bool = True,
    take: Callable[[ConfigMapData], bool] | None = None,
) -> bool:
    """Bring the managed keys of the ConfigMap to ``data`` and ``binary``; True when something was sent.

    ``remove_binary`` names binaryData keys that must go (truststores the operator wrote there before
    and that no longer hold what ``ca.crt`` holds, or are no longer asked for). ``take`` is asked
    before an existing ConfigMap without the operator's label is written: False raises ``NotTaken``.
    """
    labels = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.ROLE_LABEL: "trust"}
    existing = read(clients, namespace, name)
    if existing is None:
        if not create:
            return False
        body = kubernetes.client.V1ConfigMap(
            metadata=kubernetes.client.V1ObjectMeta(
                name=name, namespace=namespace, labels=labels, annotations=annotations
            ),
            data=data or None,
            binary_data={k: base64.b64encode(v).decode("ascii") for k, v in binary.items()} or None,
        )
        clients.core.create_namespaced_config_map(namespace, body)
        return True
    if take is not None and not existing.managed and not take(existing):
        raise NotTaken(name)
    gone = [k for k in remove_binary if k in existing.binary and k not in binary]
    same = (
        not gone
        and all(existing.data.get(k) == v for k, v in data.items())
        and all(existing.binary.get(k) == v for k, v in binary.items())
        and all(existing.labels.get(k) == v for k, v in labels.items())
    )
    if same:
        return False
    clients.core.patch_namespaced_config_map(
        name,
        namespace,
        {
            "metadata": {"labels": labels, "annotations": annotations, "resourceVersion": existing.resource_version},
            "data": {k: v for k, v in data.items() if existing.data.get(k) != v},
            # A merge patch: a key sent as null is deleted.
            "binaryData": {
                **dict.fromkeys(gone),
                **{k: base64.b64encode(v).decode("ascii") for k, v in binary.items() if existing.binary.get(k) != v},
            },
        },
    )
    return True

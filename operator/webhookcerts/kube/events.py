"""Kubernetes Events about a WebhookCertificate, for ``kubectl describe`` and alerting.

Messages are written by the service layer and never carry key material.
"""

from __future__ import annotations

import datetime
import uuid

import kubernetes

from webhookcerts.domain import models
from webhookcerts.kube import client as kube_client

COMPONENT = "webhookcerts"
# An Event's name is a DNS subdomain (RFC 1123): at most 253 characters, each dot-separated label
# starting and ending with a letter or digit.
NAME_MAX = 253


def event_name(name: str, suffix: str) -> str:
    """``{name}.{suffix}``, the name shortened so the whole stays a valid Event name for any object name.

    The suffix (random hex) keeps Events unique; the prefix only helps a reader, so it is the part cut.
    A cut can end a label on ``-`` or leave a trailing ``.``; those are stripped.
    """
    prefix = name[: max(NAME_MAX - len(suffix) - 1, 0)].rstrip("-.")
    return f"{prefix}.{suffix}" if prefix else suffix


def record(
    clients: kube_client.Clients,
    namespace: str,
    name: str,
    uid: str,
    *,
    type: str,
    reason: str,
    message: str,
    kind: str = models.KIND,
    api_version: str = f"{models.GROUP}/{models.VERSION}",
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    event = kubernetes.client.CoreV1Event(
        metadata=kubernetes.client.V1ObjectMeta(name=event_name(name, uuid.uuid4().hex[:16]), namespace=namespace),
        involved_object=kubernetes.client.V1ObjectReference(
            api_version=api_version,
            kind=kind,
            name=name,
            namespace=namespace,
            uid=uid,
        ),
        type=type,
        reason=reason,
        message=message[:1024],
        source=kubernetes.client.V1EventSource(component=COMPONENT),
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        reporting_component=COMPONENT,
        reporting_instance=COMPONENT,
    )
    clients.secrets_and_events.create_namespaced_event(namespace, event)


def list_for(clients: kube_client.Clients, namespace: str, name: str) -> list[kubernetes.client.CoreV1Event]:
    events = clients.secrets_and_events.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={models.KIND}"
    )
    items: list[kubernetes.client.CoreV1Event] = events.items
    return items

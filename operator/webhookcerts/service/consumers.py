"""Telling the receiving pods that their trust store changed (the spec's ``consumers``).

Run after a trust write whose hash the consumers' status does not yet record: a consumer that already
carries the current trust hash is left alone, so nothing is patched (and nothing restarts) when
nothing changed, and a pass with nothing new to announce lists no pods at all. A pod created since the
last change mounts the current Secret from its start and needs no nudge.

Each trust Secret has its own annotation on a consumer (``names.consumer_annotation``): several
WebhookCertificates with different trust Secrets may select the same pods or workload, and each then
keeps its own hash there instead of overwriting the others' (which would roll the workload forever).
"""

from __future__ import annotations

import datetime

from webhookcerts.domain import models, names, selectors
from webhookcerts.kube import client as kube_client
from webhookcerts.kube import workloads


def announced(consumers: list[models.Consumer], previous: list[models.ConsumerStatus], trust_hash: str) -> bool:
    """True when the status records every consumer as already told about ``trust_hash``."""
    told = {(c.selector, c.reload) for c in previous if c.trust_hash == trust_hash}
    return all((selectors.to_string(c.selector), c.reload) in told for c in consumers)


def nudge(
    clients: kube_client.Clients,
    namespace: str,
    trust_secret: str,
    consumers: list[models.Consumer],
    trust_hash: str,
    previous: list[models.ConsumerStatus],
    now: datetime.datetime,
) -> tuple[list[models.ConsumerStatus], list[str]]:
    """Bring every consumer to ``trust_hash`` of the Secret ``trust_secret``; the new consumer status
    and what was patched. Only that Secret's annotation is read and written."""
    annotation = names.consumer_annotation(trust_secret)
    before = {(c.selector, c.reload): c for c in previous}
    statuses: list[models.ConsumerStatus] = []
    patched: list[str] = []
    all_workloads: list[workloads.Target] | None = None
    for consumer in consumers:
        selector = selectors.to_string(consumer.selector)
        if consumer.reload == "Hot":
            targets = workloads.pods(clients, namespace, selector, annotation)
        else:
            if all_workloads is None:
                all_workloads = workloads.workloads(clients, namespace, annotation)
            targets = [t for t in all_workloads if selectors.matches(consumer.selector, t.labels)]
        for target in targets:
            if target.annotation != trust_hash:
                workloads.annotate(clients, namespace, target, annotation, trust_hash)
                patched.append(f"{target.kind}/{target.name}")
        old = before.get((selector, consumer.reload))
        names_ = sorted(f"{t.kind}/{t.name}" for t in targets)
        unchanged = old is not None and old.trust_hash == trust_hash and old.targets == names_
        statuses.append(
            models.ConsumerStatus(
                selector=selector,
                reload=consumer.reload,
                trust_hash=trust_hash,
                targets=names_,
                updated_at=old.updated_at if unchanged and old is not None else now,
            )
        )
    return statuses, patched

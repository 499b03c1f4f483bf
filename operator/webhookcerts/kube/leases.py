"""Reading and writing the coordination.k8s.io Lease the operator replicas elect their leader with.

Every write carries the resourceVersion it was decided on, so two replicas taking one expired Lease
at once cannot both succeed: the second gets a conflict (409) and stays a follower. Every call takes the
elector's ``timeout`` (seconds, the whole call): a renewal must give up in time for the next attempt.
"""

from __future__ import annotations

import datetime

import kubernetes

from webhookcerts.domain import leadership
from webhookcerts.kube import client as kube_client


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def read(clients: kube_client.Clients, namespace: str, name: str, *, timeout: float) -> leadership.Record | None:
    try:
        lease = clients.coordination.read_namespaced_lease(name, namespace, _request_timeout=timeout)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    spec = lease.spec or kubernetes.client.V1LeaseSpec()
    return leadership.Record(
        holder=spec.holder_identity or "",
        duration_seconds=int(spec.lease_duration_seconds or 0),
        renew_time=spec.renew_time.isoformat() if spec.renew_time else "",
        transitions=int(spec.lease_transitions or 0),
        resource_version=(lease.metadata.resource_version if lease.metadata else None) or "",
        acquire_time=spec.acquire_time,
    )


def write(
    clients: kube_client.Clients,
    namespace: str,
    name: str,
    *,
    holder: str,
    duration_seconds: int,
    transitions: int,
    basis: leadership.Record | None,
    timeout: float,
) -> None:
    """Create the Lease (``basis`` None) or replace it at ``basis``'s version; 409 when someone was first."""
    now = _now()
    body = kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={kube_client.MANAGED_BY_LABEL: kube_client.MANAGED_BY},
            resource_version=basis.resource_version if basis is not None else None,
        ),
        spec=kubernetes.client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=duration_seconds,
            lease_transitions=transitions,
            renew_time=now,
            # A renewal keeps the acquire time the holder set when it took the Lease.
            acquire_time=basis.acquire_time if basis is not None and basis.holder == holder else now,
        ),
    )
    if basis is None:
        clients.coordination.create_namespaced_lease(namespace, body, _request_timeout=timeout)
    else:
        clients.coordination.replace_namespaced_lease(name, namespace, body, _request_timeout=timeout)

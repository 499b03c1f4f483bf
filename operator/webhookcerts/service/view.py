"""The operator's in-memory view of the cluster: WebhookCertificates, the Secrets it owns, and the
PresentationReports of their trust stores (each with the facts of its pod, read when the report changed).

Fed by watches (Kopf's indexing phase, which sees every object before any handler runs) and by the
operator's own writes (write-through: what the API server answered goes in at once, so the next pass
does not act on the state from before its own write). A reconcile reads here instead of the API, and
a trust write asks only for the WebhookCertificates naming that trust Secret: the cost of a pass is
what the object and its neighbours contribute, never a namespace LIST.

Staleness is safe by construction rather than by luck: every write made from this view carries the
resourceVersion it was decided on, so a decision taken on a stale copy fails with a conflict and is
taken again, never recorded.

Secrets are watched by the operator's label only. A Secret absent from the view is therefore known to
be absent only in roles the operator alone creates (the next key); one a user may have made by hand
(a current key to adopt, a trust Secret that predates the operator) is looked up by the caller.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import threading
import zlib
from collections.abc import Mapping
from typing import Any

import pydantic

from webhookcerts.domain import models, names, ownership, reporters
from webhookcerts.kube import secrets

Key = tuple[str, str]


def _version(resource_version: str) -> int:
    # resourceVersions are opaque to clients, but etcd's are integers: enough to keep a late watch
    # event from overwriting what the operator has just written. Anything else compares as "newer".
    try:
        return int(resource_version)
    except ValueError:
        return -1


# Per store an object's status records: its trust Secret, truststore keys and ConfigMaps.
Stores = tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]


def trust_facts(
    spec: models.WebhookCertificateSpec, status: models.WebhookCertificateStatus
) -> tuple[Stores, str | None]:
    """What a trust write reads of an object: the stores its status records, and the ConfigMap its spec
    copies its own trust Secret to."""
    stores = tuple(
        (r.secret_name, tuple(r.keys), tuple(r.config_maps)) for r in (status.trust.stores if status.trust else ())
    )
    return stores, spec.trust.config_map.name if spec.trust.config_map is not None else None


@dataclasses.dataclass(frozen=True)
class Certificate:
    """One WebhookCertificate as last seen, validated once per resourceVersion; ``body`` holds its metadata.

    The spec and status are kept as the JSON they arrived as, compressed, and parsed again when read
    (the last ``PARSED_KEPT`` parses are kept): pydantic models cost about three times the JSON they
    come from (each model instance, its ``__dict__`` and its set of fields set: 8 kB against 3 kB per
    object), and with a thousand objects they were the view's largest part (benchmarks/memory.py).
    zlib at its fastest level takes the JSON from 3.3 to 2.1 kB (the PEMs do not compress much), at
    tens of microseconds a parse. Entries are
    never changed in place (a pass works on a deep copy of the status), so a parse is as good as the
    first one.
    """

    body: Mapping[str, Any]
    resource_version: str
    # ``{"spec": ..., "status": ...}`` as JSON, compressed, when both validated; None when they did not.
    raw: bytes | None
    problem: str | None
    # The trust Secret it names, read from the raw spec when the spec as a whole cannot be parsed: a
    # store it shares must know it is there (and keep its certificates) rather than drop it.
    trust_secret: str | None = None
    # The Secrets its spec names, with their roles (``ownership.claims``), kept so that the view's
    # indexes never parse under the view's lock.
    claimed: tuple[tuple[str, ownership.Role], ...] = ()
    # What a trust write reads of every object of the namespace (service/trust_store.py), kept so that
    # no trust write parses them all: per store in status, its trust Secret, truststore keys and
    # ConfigMaps; and the ConfigMap the spec copies its own trust Secret to.
    stores: Stores = ()
    config_map: str | None = None

    @property
    def spec(self) -> models.WebhookCertificateSpec | None:
        return _parsed(self)[0] if self.raw is not None else None

    @property
    def status(self) -> models.WebhookCertificateStatus | None:
        return _parsed(self)[1] if self.raw is not None else None

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.body["metadata"].get("uid", ""))

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.body["metadata"].get("annotations") or {})

    @property
    def created(self) -> str:
        return str(self.body["metadata"].get("creationTimestamp") or "")

    @property
    def deleting(self) -> bool:
        return bool(self.body["metadata"].get("deletionTimestamp"))

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Certificate:
        # Only the metadata a pass reads is kept beside the spec and status.
        meta = {k: body["metadata"][k] for k in _KEPT_METADATA if k in body["metadata"]}
        kept = {"metadata": meta}
        parts = {"spec": body.get("spec") or {}, "status": body.get("status") or {}}
        try:
            spec, status = _validate(parts)
        except pydantic.ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            named = ((body.get("spec") or {}).get("trust") or {}).get("secretName")
            trust_secret = named if isinstance(named, str) and named else None
            return cls(kept, str(meta.get("resourceVersion", "")), None, problem, trust_secret)
        raw = zlib.compress(json.dumps(parts, default=_jsonable).encode(), 1)
        claimed = tuple(ownership.claims(spec))
        stores, config_map = trust_facts(spec, status)
        version = str(meta.get("resourceVersion", ""))
        entry = cls(kept, version, raw, None, spec.trust.secret_name, claimed, stores, config_map)
        _remember(entry, (spec, status))
        return entry


Parsed = tuple[models.WebhookCertificateSpec, models.WebhookCertificateStatus]
# Enough for a pass and the neighbours it reads (the objects sharing its trust Secret), and for the
# watch events that follow its writes; a few hundred kB.
PARSED_KEPT = 64
_parsed_lock = threading.Lock()
_parsed_kept: collections.OrderedDict[int, tuple[Certificate, Parsed]] = collections.OrderedDict()


def _jsonable(value: object) -> str:
    # A body from a watch is JSON already; one written through from a Python object may hold datetimes.
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _validate(parts: Mapping[str, Any]) -> Parsed:
    return (
        models.WebhookCertificateSpec.model_validate(parts["spec"]),
        models.WebhookCertificateStatus.model_validate(parts["status"]),
    )


def _remember(entry: Certificate, parsed: Parsed) -> None:
    # Keyed by the entry itself (held in the value, so its id is not reused while it is kept).
    with _parsed_lock:
        _parsed_kept[id(entry)] = (entry, parsed)
        _parsed_kept.move_to_end(id(entry))
        while len(_parsed_kept) > PARSED_KEPT:
            _parsed_kept.popitem(last=False)


def _parsed(entry: Certificate) -> Parsed:
    with _parsed_lock:
        hit = _parsed_kept.get(id(entry))
        if hit is not None and hit[0] is entry:
            _parsed_kept.move_to_end(id(entry))
            return hit[1]
    assert entry.raw is not None
    parsed = _validate(json.loads(zlib.decompress(entry.raw)))
    _remember(entry, parsed)
    return parsed


_KEPT_METADATA = (
    "namespace",
    "name",
    "uid",
    "resourceVersion",
    "generation",
    "annotations",
    "creationTimestamp",
    "deletionTimestamp",
)


class View:
    """Thread-safe: watch callbacks write from the event loop, reconcile workers read from threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._certificates: dict[Key, Certificate] = {}
        self._by_trust: dict[Key, set[str]] = {}
        # Every Secret name any object's spec claims, in any role: who else wants a Secret.
        self._by_claim: dict[Key, set[str]] = {}
        self._secrets: dict[Key, secrets.SecretData] = {}
        # PresentationReports by (namespace, pod), each with its pod's facts as read at its last change.
        self._reports: dict[Key, reporters.Report] = {}
        # Whether reports are read at all: False leaves ``Observation.presentations`` unknown (None)
        # rather than "no reporter" (an older install without the report CRD, a snapshot without it).
        self.reports_known = False
        self._synced = threading.Event()

    # feeding --------------------------------------------------------------------------------------

    def put_certificate(self, body: Mapping[str, Any]) -> tuple[Certificate, bool]:
        """Record a WebhookCertificate unless the view already holds it or a newer version; the entry
        held now, and whether this changed it (a watch event echoing the operator's own write does not).
        """
        meta = body["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        with self._lock:
            held = self._certificates.get(key)
            if held is not None and held.uid == meta.get("uid"):
                version = str(meta.get("resourceVersion", ""))
                if held.resource_version == version or _version(version) < _version(held.resource_version):
                    return held, False
            entry = Certificate.parse(body)
            self._unindex(key)
            self._certificates[key] = entry
            if entry.trust_secret is not None:
                self._by_trust.setdefault((key[0], entry.trust_secret), set()).add(key[1])
            for secret_name, _ in entry.claimed:
                self._by_claim.setdefault((key[0], secret_name), set()).add(key[1])
            return entry, True

    def drop_certificate(self, namespace: str, name: str) -> Certificate | None:
        with self._lock:
            self._unindex((namespace, name))
            return self._certificates.pop((namespace, name), None)

    def _unindex(self, key: Key) -> None:
        held = self._certificates.get(key)
        if held is None:
            return
        for index, secret_names in (
            (self._by_trust, [held.trust_secret] if held.trust_secret else []),
            (self._by_claim, [n for n, _ in held.claimed]),
        ):
            for secret_name in secret_names:
                names_ = index.get((key[0], secret_name))
                if names_ is not None:
                    names_.discard(key[1])
                    if not names_:
                        del index[(key[0], secret_name)]

    def put_secret(self, namespace: str, secret: secrets.SecretData) -> bool:
        """Record a Secret unless the view holds it or a newer version; True when this changed it."""
        key = (namespace, secret.name)
        with self._lock:
            held = self._secrets.get(key)
            if held is not None and held.uid == secret.uid:
                version = secret.resource_version
                if held.resource_version == version or _version(version) < _version(held.resource_version):
                    return False
            self._secrets[key] = secret
            return True

    def unlisted_secrets(
        self, namespace: str | None, listed: set[Key], version: str
    ) -> list[tuple[str, secrets.SecretData]]:
        """The Secrets with the operator's label the view holds in ``namespace`` (every one when None)
        that a complete listing at ``version`` did not return, though the view's copy is no newer than
        that listing: deleted while no watch was there to say so."""
        label = (names.MANAGED_BY_LABEL, names.MANAGED_BY)
        with self._lock:
            return [
                (ns, s)
                for (ns, name), s in self._secrets.items()
                if (namespace is None or ns == namespace)
                and (ns, name) not in listed
                and s.labels.get(label[0]) == label[1]
                and _version(s.resource_version) <= _version(version)
            ]

    def drop_secret(self, namespace: str, name: str, uid: str = "") -> bool:
        """Forget a deleted Secret; True when the view still held it (not the operator's own delete)."""
        with self._lock:
            held = self._secrets.get((namespace, name))
            if held is None:
                return False
            # A delete observed for an older incarnation must not hide the Secret re-created since.
            if uid and held.uid != uid:
                return False
            del self._secrets[(namespace, name)]
            return True

    def put_report(self, report: reporters.Report) -> str | None:
        """Record a report unless the view holds it or a newer version. Returns None when nothing
        changed, else the trust Secret it named before ("" if new or the same): who must look again."""
        key = (report.namespace, report.pod)
        with self._lock:
            held = self._reports.get(key)
            if held is not None and held.uid == report.uid:
                version = report.resource_version
                newer = _version(version) >= _version(held.resource_version)
                if (held.resource_version == version and held.facts == report.facts) or not newer:
                    return None
            self._reports[key] = report
            before = held.spec.trust_secret_name if held is not None else ""
            return before if before != report.spec.trust_secret_name else ""

    def drop_report(self, namespace: str, pod: str) -> reporters.Report | None:
        with self._lock:
            return self._reports.pop((namespace, pod), None)

    def report(self, namespace: str, pod: str) -> reporters.Report | None:
        with self._lock:
            return self._reports.get((namespace, pod))

    def reports_for(self, namespace: str, trust_secret: str) -> list[reporters.Report]:
        """The reports of one trust store, by pod name."""
        with self._lock:
            found = [
                r
                for (ns, _), r in self._reports.items()
                if ns == namespace and r.spec.trust_secret_name == trust_secret
            ]
        return sorted(found, key=lambda r: r.pod)

    def mark_synced(self) -> None:
        self._synced.set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    # reading --------------------------------------------------------------------------------------

    def certificate(self, namespace: str, name: str) -> Certificate | None:
        with self._lock:
            return self._certificates.get((namespace, name))

    def certificates(self) -> list[Certificate]:
        with self._lock:
            return list(self._certificates.values())

    def naming_trust(self, namespace: str, secret_name: str) -> list[Certificate]:
        """The WebhookCertificates whose spec names this trust Secret, by name."""
        with self._lock:
            names_ = sorted(self._by_trust.get((namespace, secret_name), ()))
            return [self._certificates[(namespace, n)] for n in names_]

    def claimants(self, namespace: str, secret_name: str) -> list[Certificate]:
        """The WebhookCertificates whose spec names this Secret in any role, by name."""
        with self._lock:
            names_ = sorted(self._by_claim.get((namespace, secret_name), ()))
            return [self._certificates[(namespace, n)] for n in names_]

    def trust_secrets(self, namespace: str) -> list[secrets.SecretData]:
        """The trust Secrets the operator has written in a namespace (by their role label)."""
        with self._lock:
            return [
                s
                for (ns, _), s in self._secrets.items()
                if ns == namespace and s.labels.get(names.ROLE_LABEL) == "trust"
            ]

    def namespace_secrets(self, namespace: str) -> list[secrets.SecretData]:
        """Every Secret of a namespace the view holds (the operator's, by its label)."""
        with self._lock:
            return [s for (ns, _), s in self._secrets.items() if ns == namespace]

    def is_trust_secret(self, namespace: str, name: str) -> bool:
        with self._lock:
            return (namespace, name) in self._by_trust

    def secret(self, namespace: str, name: str) -> secrets.SecretData | None:
        with self._lock:
            return self._secrets.get((namespace, name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._certificates)

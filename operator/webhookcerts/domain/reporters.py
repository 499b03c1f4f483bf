"""Whether a PresentationReport may be counted: its pod exists, is the report's owner, runs, and serves
the trust store the report names.

A report is written by its own pod (the chart's admission policy checks the writer's token), but the
report's word alone proves nothing to an automatic decision that drops trust: a pod that serves some
other trust store, or none, would otherwise vouch for a cut-over it never saw. So the operator reads the
pod once per report change (``kube.reports.read_pod``), keeps the few facts below in its view beside
the report, and each pass decides from them with the spec of the object it reconciles (whose ConfigMap
copy a pod may mount instead of the Secret).

A pod that stops running stops heartbeating: it turns stale after 3 intervals, which is what an
observed cut-over waits on; the pod check catches the pod that heartbeats but is not what it says.

Pure: the API object in, facts and verdicts out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from webhookcerts.domain import reports


@dataclasses.dataclass(frozen=True)
class PodFacts:
    """What the operator read of a report's pod: identity, phase, and which names it serves."""

    exists: bool
    uid: str = ""
    phase: str = ""
    secrets: frozenset[str] = frozenset()  # Secret volumes, direct or in a projected volume
    config_maps: frozenset[str] = frozenset()  # ConfigMap volumes, direct or projected
    mentions: frozenset[str] = frozenset()  # every word of the containers' args, command and env values
    problem: str = ""  # why the pod could not be read (the GET refused or unanswered)

    @classmethod
    def missing(cls) -> PodFacts:
        return cls(exists=False)

    @classmethod
    def of(cls, pod: Mapping[str, Any] | None) -> PodFacts:
        if pod is None:
            return cls.missing()
        spec = pod.get("spec") or {}
        secrets: set[str] = set()
        config_maps: set[str] = set()
        for volume in spec.get("volumes") or ():
            _volume_names(volume, secrets, config_maps)
        words: set[str] = set()
        for container in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ())):
            for arg in (*(container.get("command") or ()), *(container.get("args") or ())):
                words.update(_words(str(arg)))
            for env in container.get("env") or ():
                if isinstance(env.get("value"), str):
                    words.update(_words(env["value"]))
        return cls(
            exists=True,
            uid=str((pod.get("metadata") or {}).get("uid") or ""),
            phase=str((pod.get("status") or {}).get("phase") or ""),
            secrets=frozenset(secrets),
            config_maps=frozenset(config_maps),
            mentions=frozenset(words),
        )

    def serves(self, namespace: str, trust_secret: str, config_maps: Iterable[str] = ()) -> bool:
        """A volume of the trust Secret or of its ConfigMap copy, or a container pointed at the Secret
        (trust-sync's ``--secret NS/NAME``, or the name alone in an argument or env value)."""
        if trust_secret in self.secrets or self.config_maps.intersection(config_maps):
            return True
        return trust_secret in self.mentions or f"{namespace}/{trust_secret}" in self.mentions


def _volume_names(volume: Mapping[str, Any], secrets: set[str], config_maps: set[str]) -> None:
    if (volume.get("secret") or {}).get("secretName"):
        secrets.add(str(volume["secret"]["secretName"]))
    if (volume.get("configMap") or {}).get("name"):
        config_maps.add(str(volume["configMap"]["name"]))
    for source in (volume.get("projected") or {}).get("sources") or ():
        if (source.get("secret") or {}).get("name"):
            secrets.add(str(source["secret"]["name"]))
        if (source.get("configMap") or {}).get("name"):
            config_maps.add(str(source["configMap"]["name"]))


def _words(text: str) -> set[str]:
    # "--secret=ns/name", "--secret ns/name", "ns/name,other": the names, whatever separates them.
    for separator in "=,; \t":
        text = text.replace(separator, "\n")
    return {word for word in text.split("\n") if word}


def owner_uid(body: Mapping[str, Any]) -> str | None:
    """The uid of the report's one Pod owner named like the report (the contract's shape), else None."""
    meta = body.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    if len(owners) != 1:
        return None
    owner = owners[0]
    if owner.get("apiVersion") != "v1" or owner.get("kind") != "Pod" or owner.get("name") != meta.get("name"):
        return None
    return str(owner.get("uid") or "") or None


@dataclasses.dataclass(frozen=True)
class Report:
    """One PresentationReport as the view holds it: the spec, its owner and its pod's facts."""

    namespace: str
    pod: str  # the report's name: its pod's
    resource_version: str
    uid: str
    spec: reports.PresentationReportSpec
    owner_uid: str | None
    facts: PodFacts

    @classmethod
    def parse(cls, body: Mapping[str, Any], facts: PodFacts) -> Report:
        """Raises ``pydantic.ValidationError`` for a spec the schema would not have admitted."""
        meta = body["metadata"]
        return cls(
            namespace=str(meta["namespace"]),
            pod=str(meta["name"]),
            resource_version=str(meta.get("resourceVersion") or ""),
            uid=str(meta.get("uid") or ""),
            spec=reports.PresentationReportSpec.model_validate(body.get("spec") or {}),
            owner_uid=owner_uid(body),
            facts=facts,
        )

    def source(self, config_maps: Iterable[str] = ()) -> reports.ReportSource:
        """The report with the operator's verdict on whether it may be counted, and why not."""
        why = self.why_not(config_maps)
        return reports.ReportSource(pod=self.pod, spec=self.spec, counted=not why, why_not=why)

    def why_not(self, config_maps: Iterable[str] = ()) -> str:
        pod, facts = self.pod, self.facts
        if facts.problem:
            return f"pod {pod} could not be read ({facts.problem})"
        if self.owner_uid is None:
            return f"report {pod} is not owned by its pod (one ownerReference to Pod {pod} expected)"
        if not facts.exists:
            return f"pod {pod} does not exist"
        if facts.uid != self.owner_uid:
            return f"pod {pod} is not the one that owns the report (uid {facts.uid}, report's owner {self.owner_uid})"
        if facts.phase != "Running":
            return f"pod {pod} is {facts.phase or 'in no phase'}, not Running"
        if not facts.serves(self.namespace, self.spec.trust_secret_name, config_maps):
            return f"pod {pod} does not serve trust Secret {self.spec.trust_secret_name}"
        return ""

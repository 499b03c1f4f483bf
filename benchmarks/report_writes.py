"""Counting the writes of one PresentationReport where they land: a watch, and the API server's counter.

``ReportWatch`` sees one ADDED or MODIFIED event, with a new resourceVersion, per write of the report,
and notes when each arrived and what the report then counted for one certificate; the API server's
``apiserver_request_total`` counts the write requests on presentationreports, failed ones too, as a
cross-check. ``write_figures`` turns the arrival times into the figures benchmarks/reporting.py records.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
import time
from typing import Any

import kubernetes

from benchmarks import harness
from webhookcerts.domain import models, reports

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY"})
_REQUESTS = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def report_write_requests(exposition: str) -> int:
    """Write requests (any answer) on presentationreports in the API server's Prometheus exposition."""
    total = 0.0
    for labels, value in _REQUESTS.findall(exposition):
        label = dict(_LABEL.findall(labels))
        if label.get("resource") == reports.PLURAL and label.get("verb") in WRITE_VERBS:
            total += float(value)
    return round(total)


def write_figures(times: list[float], start: float, end: float) -> dict[str, Any]:
    """The writes (watch arrival times) of the window [start, end]: how many, per minute, the largest gap.

    The gap is taken between consecutive writes, counting the last one before the window and the first
    one after it, so a heartbeat late across the window's edge is not missed."""
    ordered = sorted(times)
    inside = [t for t in ordered if start <= t <= end]
    before = [t for t in ordered if t < start][-1:]
    after = [t for t in ordered if t > end][:1]
    span = [*before, *inside, *after]
    gaps = [b - a for a, b in itertools.pairwise(span)]
    window = end - start
    return {
        "writes": len(inside),
        "window_s": round(window, 2),
        "writes_per_min": round(len(inside) / window * 60, 2) if window > 0 else None,
        "largest_gap_s": round(max(gaps), 2) if gaps else None,
        "at_s": [round(t - start, 1) for t in inside],
    }


def api_write_requests(handle: harness.Cluster) -> int:
    method, url, headers, body, _ = handle.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = handle.api.call_api(method, url, headers, body)
    response.read()
    return report_write_requests(response.data.decode())


@dataclasses.dataclass(frozen=True)
class Write:
    at: float  # time.monotonic() when the watch event arrived
    kind: str  # ADDED or MODIFIED
    resource_version: str
    accepted: int  # the client certificate's counts in this version of the report
    refused: int


class ReportWatch:
    """Every write of one PresentationReport, as the API server's watch delivers them."""

    def __init__(self, handle: harness.Cluster, name: str, sha256: str) -> None:
        self._custom = handle.custom
        self._namespace, self._name, self._sha256 = handle.namespace, name, sha256
        self._lock = threading.Lock()
        self._writes: list[Write] = []
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self.error: str | None = None  # the last error the watch met; None: it saw every write
        self._version = ""
        self._thread = threading.Thread(target=self._run, name="report-watch", daemon=True)

    def __enter__(self) -> ReportWatch:
        # Listed first (the report does not exist yet): the watch starts from there and misses nothing.
        self._list()
        self._thread.start()
        return self

    def _list(self) -> None:
        listed = self._custom.list_namespaced_custom_object(
            models.GROUP, models.VERSION, self._namespace, reports.PLURAL, field_selector=self._selector
        )
        self._version = str(listed["metadata"]["resourceVersion"])
        for item in listed.get("items", []):
            self._note("ADDED", item)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def _selector(self) -> str:
        return f"metadata.name={self._name}"

    def writes(self) -> list[Write]:
        with self._lock:
            return list(self._writes)

    def _note(self, kind: str, obj: dict[str, Any]) -> None:
        version = str(obj["metadata"]["resourceVersion"])
        certificates = (obj.get("spec") or {}).get("certificates") or []
        entry = next((c for c in certificates if c.get("sha256") == self._sha256), {})
        with self._lock:
            if version in self._seen:
                return
            self._seen.add(version)
            self._writes.append(
                Write(time.monotonic(), kind, version, int(entry.get("accepted", 0)), int(entry.get("refused", 0)))
            )

    def _run(self) -> None:
        relist = False
        while not self._stop.is_set():
            try:
                if relist:
                    self._list()
                    relist = False
                watch = kubernetes.watch.Watch()
                for event in watch.stream(
                    self._custom.list_namespaced_custom_object,
                    models.GROUP,
                    models.VERSION,
                    self._namespace,
                    reports.PLURAL,
                    field_selector=self._selector,
                    resource_version=self._version,
                    timeout_seconds=5,
                    _request_timeout=(5.0, 30.0),
                ):
                    obj = event["object"]
                    self._version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._note(event["type"], obj)
                    if self._stop.is_set():
                        watch.stop()
            except kubernetes.client.ApiException as exc:
                self.error = f"{exc.status} {exc.reason}"[:300]
                relist = exc.status == 410  # too old: list again; the writes in between are lost (said by error)
                self._stop.wait(0.2)
            except Exception as exc:  # noted, and the watch resumes from the last version seen
                self.error = f"{type(exc).__name__}: {exc}"[:300]
                self._stop.wait(0.2)

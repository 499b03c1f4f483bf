"""What test_presentations.py drives and reads: the object's status as the reports fill it, the
operator's counter, a provider simulator part-way through its switch, nginx on the host logging what
trust-sync reads (docs/receivers/nginx.md's fields).
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import shlex
import threading
import time
import urllib.request
from typing import Any

from tests import conftest, whc
from tests import servers as launchers
from tests.e2e import endpoints
from webhookcerts.receiver import providersim


@dataclasses.dataclass
class Operator:
    process: conftest.OperatorProcess
    metrics_port: int

    def revoked_presentations(self, fingerprint: str) -> float:
        """webhookcerts_revoked_certificate_presentations_total for ``fingerprint`` (0 while absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("webhookcerts_revoked_certificate_presentations_total{")
            and f'fingerprint="{fingerprint}"' in line
        )


# --- what the object says --------------------------------------------------------------------------


def status(api: whc.Api, name: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(name).get("status") or {}
    return found


def presented(api: whc.Api, name: str, role: str) -> int:
    """status.<role>.presentations: accepted presentations, summed over the counted reporters."""
    return int((status(api, name).get(role) or {}).get("presentations") or 0)


def condition(api: whc.Api, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in status(api, name).get("conditions", []) if c["type"] == kind), {})


def current_is(api: whc.Api, name: str, fingerprint: str) -> bool:
    return (status(api, name).get("current") or {}).get("fingerprint") == fingerprint


def stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def settled(api: whc.Api, name: str, **spec: Any) -> None:
    """Patch the spec and wait until the operator has reconciled that generation: a pass that ran now."""
    api.patch_spec(name, **spec)
    generation = api.get(name)["metadata"]["generation"]
    conftest.wait_for(lambda: status(api, name).get("observedGeneration") == generation, what="a reconcile")


def rotate(api: whc.Api, name: str, clients: pathlib.Path) -> tuple[endpoints.Client, endpoints.Client]:
    """The current client and, once a planned rotation made it, the next one."""
    old = endpoints.client_from_secret(api, f"{name}-tls", clients, "old")
    api.patch_spec(name, renewBefore="59m59s")
    conftest.wait_for(lambda: api.status(name).stage == "Rotating", timeout=180, what="stage Rotating")
    # Not due again: the certificate the cut-over makes current must not start a rotation of its own.
    api.patch_spec(name, renewBefore="30m")
    new = endpoints.client_from_secret(api, f"{name}-tls-next", clients, "new")
    return old, new


# --- the provider part-way through its switch --------------------------------------------------------


class Switching:
    """Back-to-back campaigns of the provider simulator (endpoints.Provider's shape), each presenting the
    next certificate with the share set when it begins and the current certificate with the rest; a
    campaign runs to its end (retries included), so changing the share never cuts a delivery short."""

    def __init__(self, endpoint: endpoints.TlsEndpoint, current: pathlib.Path, next_: pathlib.Path) -> None:
        self.endpoint, self.current, self.next = endpoint, current, next_
        self.rate, self.seconds = 10.0, 2.0
        self.share = 0.0
        self.campaigns: list[endpoints.Campaign] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._driver = threading.Thread(target=self._drive, name="switching-provider", daemon=True)
        self.error: BaseException | None = None

    def present(self, share: float) -> None:
        with self._lock:
            self.share = share

    def start(self) -> Switching:
        self._driver.start()
        return self

    def started(self) -> int:
        with self._lock:
            return len(self.campaigns)

    def finished(self, count: int) -> bool:
        """The first ``count`` campaigns have ended."""
        with self._lock:
            first = self.campaigns[:count]
        return len(first) == count and not any(c.running() for c in first)

    def run_campaigns(self, count: int) -> None:
        """Wait until ``count`` campaigns begun after this call have ended."""
        target = self.started() + count
        conftest.wait_for(lambda: self.finished(target), timeout=180, what=f"{count} more campaign(s)")

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._driver.join(timeout=120)
        for campaign in list(self.campaigns):
            if campaign.thread is not None:
                campaign.thread.join(timeout=300)
        if self.error is not None:
            raise self.error
        summaries = [c.summary for c in self.campaigns]
        assert None not in summaries, "a campaign did not finish"
        return [s for s in summaries if s is not None]

    def _drive(self) -> None:
        due = time.monotonic()
        try:
            while not self._stop.is_set():
                with self._lock:
                    share = self.share
                config = self.endpoint.simulator(
                    self.current,
                    mix_bundle=self.next,
                    mix=share,
                    rate=self.rate,
                    duration=self.seconds,
                    max_attempts=endpoints.MAX_ATTEMPTS,
                    backoff_initial=0.1,
                    backoff_max=2.0,
                    timeout=30.0,
                )
                simulator = providersim.Simulator(config)
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                campaign = endpoints.Campaign(f"{share:g}")
                campaign.thread = threading.Thread(target=self._run, args=(campaign, simulator), daemon=True)
                with self._lock:
                    self.campaigns.append(campaign)
                campaign.thread.start()
                due += self.seconds
        except BaseException as exc:
            self.error = exc

    @staticmethod
    def _run(campaign: endpoints.Campaign, simulator: providersim.Simulator) -> None:
        campaign.summary = simulator.run()


def by_certificate(summaries: list[dict[str, Any]], fingerprint: str, outcome: str) -> int:
    return sum(s["by_certificate"].get(fingerprint, {}).get(outcome, 0) for s in summaries)


# --- nginx on the host, trust-sync reading its access log in a pod ------------------------------------

# docs/receivers/nginx.md: the fields trust-sync reads, last on the line (a client cannot forge them).
NGINX_LOG_FORMAT = (
    '$remote_addr [$time_local] "$request" $status webhookcerts fp=$ssl_client_fingerprint verify="$ssl_client_verify"'
)


def start_nginx(ws: launchers.Workspace, host_dir: pathlib.Path) -> tuple[endpoints.TlsEndpoint, list[str]]:
    """nginx on a loopback port trusting ``<host_dir>/trust/ca.crt``, logging to ``<host_dir>/access.log``;
    the endpoint and the command that reloads it."""
    nginx = launchers.start_nginx(
        ws,
        host_dir / "trust" / "ca.crt",
        log_format=("reports", f"log_format reports '{NGINX_LOG_FORMAT}';"),
        access_log=str(host_dir / "access.log"),
    )
    assert nginx.reload_command is not None
    return endpoints.TlsEndpoint(nginx.port, ws.material.server_ca), shlex.split(nginx.reload_command)


def http_status(ep: endpoints.TlsEndpoint, client: endpoints.Client) -> str:
    return ep.curl(client)[1]


def alarms(api: whc.Api, name: str) -> int:
    """RevokedCertificatePresented Events about ``name``, each counted as often as it was emitted."""
    found = api.events(name, "RevokedCertificatePresented")
    assert all(e.type == "Warning" for e in found), found
    return sum(e.count or 1 for e in found)

"""The provider's side of the demo: the provider simulator delivering without pause, counted per step,
and what the receiver's log says it accepted."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import http.client
import json
import pathlib
import threading
from typing import Any

from demo_console import NAMESPACE, DemoError, Timeline, Tools
from webhookcerts.receiver import providersim

RATE = 4.0  # deliveries per second and environment: enough to see, little for 2 cores


class Provider:
    """The provider simulator for one environment, delivering without pause with the bundle it was last
    given, in short campaigns whose outcomes are counted under the step the demo is in."""

    def __init__(self, environment: str, url: str, ca: pathlib.Path, password: bytes) -> None:
        self.environment, self.url, self.ca, self.password = environment, url, ca, password
        self.bundle: pathlib.Path | None = None
        self.step = ""
        self._campaign = ""  # the step the campaign in flight counts under
        self._begun = self._ended = 0  # campaigns begun and ended (one at a time)
        self._changed = threading.Condition()
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.reasons: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, name=f"provider-{environment}", daemon=True)

    def enter(self, step: str) -> None:
        """Count what comes from now on under ``step``, once the campaign in flight has ended: a campaign
        begun in the step before would otherwise run into this one's events under the wrong heading."""
        with self._changed:
            self.step = step
            started = not self._thread.is_alive() or self._changed.wait_for(lambda: self._campaign == step, 60)
        if not started:
            raise DemoError(f"the {self.environment} provider did not start a campaign in a minute")

    def use(self, bundle: pathlib.Path) -> None:
        self.bundle = bundle

    def delivered_a_campaign(self) -> None:
        """Returns once a whole campaign begun after this call has ended: one that presented the bundle
        in use now, under the step the demo is in (what the demo used to give a few seconds' sleep)."""
        with self._changed:
            target = self._begun + 1
            ended = self._changed.wait_for(lambda: self._ended >= target, 60)
        if not ended:
            raise DemoError(f"the {self.environment} provider did not finish a campaign in a minute")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _drive(self) -> None:
        while not self._stop.is_set():
            assert self.bundle is not None
            with self._changed:
                step = self._campaign = self.step
                self._begun += 1
                self._changed.notify_all()
            config = providersim.Config(
                url=self.url,
                bundle=self.bundle,
                password=self.password,
                ca=self.ca,
                rate=RATE,
                count=int(RATE * 2),
                # A provider retries; a refused certificate is refused again, so few attempts suffice.
                max_attempts=3,
                backoff_initial=0.2,
                timeout=10.0,
            )
            summary = providersim.run(config, self._stop)
            self.counts[step]["delivered"] += summary["delivered"]
            self.counts[step]["failed"] += summary["failed"]
            # Why attempts failed (a refused certificate, a timeout...): a retried one counts too.
            for kind in ("handshake_failures", "http_errors", "connection_errors"):
                for reason, n in summary[kind].items():
                    self.reasons[step][reason] += n
            with self._changed:
                self._ended += 1
                self._changed.notify_all()


@dataclasses.dataclass
class Accepted:
    count: int = 0
    first: float = 0.0
    last: float = 0.0


def enter(providers: dict[str, Provider], step: str) -> None:
    for provider in providers.values():
        provider.enter(step)


def accepted_by_receiver(tools: Tools, timeline: Timeline, pod: str) -> dict[str, Accepted]:
    """Deliveries the receiver answered 200, by client certificate fingerprint, with the first and the
    last one on the demo's clock: ``kubectl logs --timestamps`` of the receiver's pod."""
    out = tools.kubectl("logs", "--timestamps", "-n", NAMESPACE, pod, show=False, check=False)
    found: dict[str, Accepted] = collections.defaultdict(Accepted)
    for line in out.splitlines():
        stamp, _, text = line.partition(" ")
        if not text.startswith("{"):
            continue
        record = json.loads(text)
        if record.get("event") == "delivery" and record.get("status") == 200:
            at = timeline.since_start(datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")))
            seen = found[record["client_fingerprint"]]
            seen.first = at if not seen.count else seen.first
            seen.count, seen.last = seen.count + 1, at
    return found


def refuses(port: int, ctx: Any) -> bool:
    """Whether a fresh connection presenting ``ctx``'s certificate is refused (at the handshake or after)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("POST", "/webhooks", body=b"{}", headers={"Content-Type": "application/json"})
        return conn.getresponse().status != 200
    except OSError:
        return True
    finally:
        conn.close()

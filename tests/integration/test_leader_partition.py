"""A leader cut off from the API server stops before the standby starts, and runs no pass after that.

The first replica reaches the API server through a TCP forwarder in this test; ``black_hole`` makes it
forward nothing more, either way, while every connection stays open and new ones are accepted: what
a half-open connection or a partition looks like to the client (no reset, no refusal, only silence).
Its Lease renewal then never gets an answer. The second replica talks to the API server directly and
takes the Lease once it has gone unrenewed for the lease duration.

What is shown, from the two logs (one process writes its log in order, and both log the wall clock of
this machine): the old leader logs "no longer leading" for its renew deadline, before the standby
logs "leading:"; passes kept starting on the old leader up to that line (a 1 s resync keeps every
object coming due), and none starts after it; the work asked for after the cut is done by the standby.

Margins: the lease duration is the product's default (15 s: renew deadline 10 s, retry 2 s). The old
leader gives up at most 10 s after it sent its last renewal, the standby takes over no earlier than 15
s after it saw that renewal: 5 s in which the old leader's watchdog, a thread that only waits, must
get the processor once. Nothing else here depends on how fast the machine is.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import pathlib
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import kubernetes
import pytest
import yaml

from tests import conftest, whc
from webhookcerts.devcluster import base
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import names

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LEASE = "webhookcerts-partition"
DURATION = 15  # the default: renew deadline 10 s, retry 2 s
PASS_STARTS = re.compile(r": certificate \S+/(\S+): pass starts$")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


class BlackHoleProxy:
    """Forwards loopback connections to ``target``; after ``black_hole()`` nothing more passes, either way,
    and no connection is closed (new ones are accepted and left unanswered)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.holed = threading.Event()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def black_hole(self) -> None:
        self.holed.set()

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.holed.is_set():
                continue  # accepted, never answered
            upstream = socket.create_connection(self.target)
            self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self.holed.is_set():
                    dst.sendall(data)
            if not self.holed.is_set():
                dst.shutdown(socket.SHUT_WR)


def kubeconfig_through(proxy: BlackHoleProxy, kubeconfig: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    """The cluster's kubeconfig with the server's address replaced by the proxy's. The API server's
    certificate names 127.0.0.1 (the devcluster's address), so the proxied connection still verifies it."""
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["clusters"]:
        assert entry["cluster"]["server"].startswith("https://127.0.0.1:"), entry
        entry["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path.write_text(yaml.safe_dump(config))
    return path


def replica(kubeconfig: pathlib.Path, namespace: str, log: pathlib.Path, health_port: int) -> conftest.OperatorProcess:
    args = ["--peering", LEASE, "--lease-namespace", namespace, "--lease-duration", str(DURATION)]
    args += ["--resync-interval", "1", "--liveness", f"http://127.0.0.1:{health_port}/healthz"]
    return conftest.OperatorProcess(kubeconfig, namespace, log, args)


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read()).get("threads", "")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""  # not listening yet


def stamp(line: str) -> datetime.datetime:
    found = STAMP.match(line)
    assert found, line
    return datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")


def first_line(log: str, needle: str) -> int | None:
    lines = log.splitlines()
    return next((i for i, line in enumerate(lines) if needle in line), None)


def passes(lines: list[str]) -> list[tuple[datetime.datetime, str]]:
    return [(stamp(line), found.group(1)) for line in lines if (found := PASS_STARTS.search(line))]


def ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str, crd_installed: None) -> whc.Api:
    return whc.Api(api_client, namespace)


@pytest.fixture
def proxy(cluster: devcluster.DevCluster) -> Iterator[BlackHoleProxy]:
    host, port = cluster.apiserver_url.removeprefix("https://").rsplit(":", 1)
    forwarder = BlackHoleProxy((host, int(port)))
    yield forwarder
    forwarder.close()


@pytest.mark.long
def test_a_leader_cut_off_from_the_api_server_stops_before_the_standby_starts_and_runs_no_pass_after(
    api: whc.Api, cluster: devcluster.DevCluster, proxy: BlackHoleProxy, tmp_path: pathlib.Path
) -> None:
    ports = base.free_port(), base.free_port()
    first = replica(
        kubeconfig_through(proxy, cluster.kubeconfig, tmp_path / "first.kubeconfig"),
        api.namespace,
        tmp_path / "first.log",
        ports[0],
    )
    second = replica(cluster.kubeconfig, api.namespace, tmp_path / "second.log", ports[1])
    first.start()
    try:
        conftest.wait_for(lambda: "leading:" in first.logs(), what="the first replica (through the proxy) to lead")
        second.start()
        conftest.wait_for(lambda: "standing by:" in second.logs(), what="the second replica to stand by")
        for name in ("cut-0", "cut-1"):
            api.create(name)
        for name in ("cut-0", "cut-1"):
            conftest.wait_for(lambda n=name: ready(api, n), timeout=180, what=f"{name} Ready")
        # Both alive by their liveness endpoints: the standby's threads only wait.
        assert conftest.wait_for(lambda: health(ports[0]) == (200, "leading"), what="the leader healthy")
        assert conftest.wait_for(lambda: health(ports[1]) == (200, "standing by"), what="the standby healthy")
        assert not passes(second.logs().splitlines()), "the standby ran passes while the first one led"
        compromised = api.status("cut-0").current
        assert compromised is not None

        holed_at = datetime.datetime.now()
        proxy.black_hole()
        # Asked for right after the cut: only a replica that can reach the API server can do it.
        api.create("after-cut")
        api.emergency("cut-0", "INC-CUT")

        conftest.wait_for(lambda: "leading:" in second.logs(), timeout=120, what="the standby to take the Lease")
        first_log, second_log = first.logs().splitlines(), second.logs().splitlines()
        lost = first_line(first.logs(), "no longer leading")
        took = first_line(second.logs(), "leading:")
        assert lost is not None, "the cut-off leader never gave leadership up"
        assert took is not None
        lost_at, took_at = stamp(first_log[lost]), stamp(second_log[took])
        print(
            f"cut at {holed_at}, old leader gave up at {lost_at} ({(lost_at - holed_at).total_seconds():.2f} s), "
            f"standby leads at {took_at} ({(took_at - holed_at).total_seconds():.2f} s)"
        )
        assert "the lease was not renewed for 10 s" in first_log[lost]
        assert lost_at < took_at, "the standby started while the old leader still led"

        # Passes kept starting on the old leader after the cut, right up to its loss (the positive
        # control: work was coming due), and none started after it.
        assert any(at >= holed_at for at, _ in passes(first_log[:lost])), (
            "no pass came due between the cut and the loss"
        )
        assert passes(first_log[lost:]) == []

        conftest.wait_for(lambda: ready(api, "after-cut"), timeout=180, what="after-cut Ready under the new leader")
        conftest.wait_for(
            lambda: (s := api.status("cut-0")).current is not None and s.current.compromised_by == "INC-CUT",
            timeout=120,
            what="cut-0's containment",
        )
        assert compromised.fingerprint not in api.trusted_fingerprints()
        # Everything written after the cut came from the standby: the old leader never even saw it.
        first_log = first.logs().splitlines()
        assert passes(first_log[lost:]) == []
        assert not any("after-cut" in line or "INC-CUT" in line for line in first_log)
        assert {"after-cut", "cut-0"} <= {name for _, name in passes(second.logs().splitlines())}
        # Still alive while cut off: it stands by, its threads run.
        conftest.wait_for(lambda: health(ports[0]) == (200, "standing by"), what="the old leader healthy, standing by")
    finally:
        first.stop()
        second.stop()
        print(f"--- first ---\n{first.logs()[-12000:]}\n--- second ---\n{second.logs()[-8000:]}")

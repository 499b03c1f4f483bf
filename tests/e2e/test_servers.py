"""Servers other than the reference receiver, fed by trust-sync: nginx, HAProxy, a Java and a Go server.

test_reload.py proves the reference receiver through a planned rotation, an emergency and the strangers;
this module runs the same story against the servers users put in front of their webhooks, each as its
own process on the host, on a free loopback port:

- **nginx** (``ssl_verify_client on; ssl_client_certificate <dir>/ca.crt; ssl_verify_depth 1``),
  reloaded by trust-sync ``--exec "nginx -c CONF -e LOG -s reload"``;
- **HAProxy** (``bind ... ssl crt server.pem ca-file <dir>/ca.crt verify required``) in master-worker
  mode, reloaded by trust-sync ``--exec`` sending SIGUSR2 to the master;
- **Java** (tests/e2e/servers/HttpsServer.java: the JDK's HttpsServer, ``setNeedClientAuth(true)``),
  reloading its SSLContext by itself when the truststore changes; two JVMs per store type: one reads
  the operator's truststore (``spec.trust.additionalFormats``, mirrored by trust-sync as it is), the
  other the one trust-sync encodes itself (``--format pkcs12|jks``);
- **Go** (tests/e2e/servers/goserver: net/http, ``tls.RequireAndVerifyClientCert``), reloading through
  ``GetConfigForClient`` when ca.crt changes.

For each, under continuous delivery by the provider simulator (tests/e2e/test_reload.py's Provider):

- an emergency on one WebhookCertificate while the provider delivers with another one's certificate:
  nothing lost through the reloads, the compromised certificate refused (a keep-alive connection
  opened with it before included), its replacement accepted, a stranger and no certificate refused;
- a planned rotation and cut-over that lose no delivery. This found a defect: OpenSSL without
  X509_V_FLAG_PARTIAL_CHAIN (nginx, HAProxy) looks a trust anchor up by subject and then by authority
  key identifier; the operator's current and next certificates share a subject, and without that
  identifier one of the two was refused for the whole overlap. The operator now sets it (its own key
  identifier); OneAnchorPerSubject names the symptom should it come back;
- without a cluster (test_servers_static.py): one subject twice (with and without an authority key
  identifier), a listed certificate that has expired, TLS 1.1.

Where a server behaves differently the test says how (nginx refuses with HTTP 400 after the
handshake, never a TLS alert; the JDK's own trust manager accepts an expired listed certificate).
docs/receivers/ has a page per server.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import http.client
import json
import os
import pathlib
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests import conftest, processes, whc
from tests import servers as launchers
from tests.e2e import test_reload as reload
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import names, pki
from webhookcerts.receiver import providersim

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


# --- the servers' material (fixtures in tests/conftest.py) ------------------------------------------


def stranger_of(material: launchers.Material) -> reload.Client:
    never = material.pki.stranger
    return reload.Client("stranger", never.cert_path, never.key_path, never.fingerprint)


# --- one server process, as the client sees it ----------------------------------------------------


@dataclasses.dataclass
class ServerEndpoint(reload.TlsEndpoint):
    """A server under test: its port, its log of deliveries, and how it refuses."""

    name: str
    log: pathlib.Path
    refusal: str  # HANDSHAKE or HTTP_400 (tests/servers.py)
    kept: str  # MISDIRECTED or CLOSED
    _fingerprints: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    launched: launchers.Launched | None = dataclasses.field(default=None, repr=False)

    def deliveries(self) -> list[tuple[int, str]]:
        """(HTTP status, client certificate fingerprint) of every request the server logged."""
        found = []
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            if not line.startswith('{"'):
                continue
            record = json.loads(line)
            if record.get("event") != "delivery":
                continue
            fingerprint = record.get("client_fingerprint")
            if fingerprint is None:  # nginx logs the certificate itself, URL-escaped
                fingerprint = self._fingerprint(record.get("client_cert", ""))
            found.append((int(record["status"]), fingerprint))
        return found

    def _fingerprint(self, escaped: str) -> str:
        if not escaped:
            return ""
        if escaped not in self._fingerprints:
            self._fingerprints[escaped] = pki.inspect(urllib.parse.unquote(escaped).encode()).fingerprint
        return self._fingerprints[escaped]

    def delivered_by(self, fingerprint: str) -> int:
        return sum(1 for status, fp in self.deliveries() if status == 200 and fp == fingerprint)

    def loaded(self, fingerprint: str) -> bool:
        """Whether the server logged a trust generation listing ``fingerprint`` (the Java and Go servers)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            if line.startswith('{"') and '"trust_loaded"' in line and fingerprint in json.loads(line)["fingerprints"]:
                return True
        return False

    def refuses(self, client: reload.Client | None) -> bool:
        code, status = self.curl(client)
        if self.refusal == launchers.HTTP_400:
            return code == 0 and status == "400"
        return code != 0 and status == "000"

    @classmethod
    def of(cls, launched: launchers.Launched) -> ServerEndpoint:
        fields = (launched.port, launched.server_ca, launched.name, launched.log, launched.refusal, launched.kept)
        return cls(*fields, launched=launched)

    def reloaded(self) -> bool:
        """The server has finished taking the trust store as it is now (tests/servers.py: nginx's and
        HAProxy's old workers have exited; the Java or Go server logged the trust the store holds)."""
        assert self.launched is not None, f"{self.name}: not started by tests/servers.py"
        return self.launched.reloaded()


# --- the servers under test, fed by trust-sync -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kind:
    """One server configuration the stories run against."""

    name: str
    java_store: str | None = None  # "pkcs12" or "jks": the operator writes truststores, two JVMs read them
    # OpenSSL without X509_V_FLAG_PARTIAL_CHAIN (nginx, HAProxy: neither can set it) takes one
    # certificate per subject name from the CA file as the trust anchor for a self-signed client; see
    # test_two_certificates_of_one_subject_and_an_expired_one below.
    one_anchor_per_subject: bool = False

    @property
    def store_type(self) -> str:
        return {"pkcs12": "PKCS12", "jks": "JKS"}[self.java_store or ""]

    @property
    def extension(self) -> str:
        return {"pkcs12": "p12", "jks": "jks"}[self.java_store or ""]


KINDS = [
    Kind("nginx", one_anchor_per_subject=True),
    Kind("haproxy", one_anchor_per_subject=True),
    Kind("java-pkcs12", "pkcs12"),
    Kind("java-jks", "jks"),
    Kind("go"),
]


def trust_spec(kind: Kind) -> dict[str, Any]:
    spec: dict[str, Any] = {"secretName": reload.TRUST_SECRET}
    if kind.java_store:
        spec["additionalFormats"] = {
            "pkcs12": {"key": "truststore.p12"},
            "jks": {"key": "truststore.jks"},
            "passwordSecretRef": {"name": "truststore-password", "key": "password"},
        }
    return spec


@dataclasses.dataclass
class Fleet:
    """The endpoints of one kind (two for Java: the operator's truststore and trust-sync's) and trust-sync."""

    endpoints: list[ServerEndpoint]
    trust_dir: pathlib.Path
    trust_sync_log: pathlib.Path
    reloads_by_exec: bool

    def lists(self, *clients: reload.Client) -> bool:
        """Whether trust-sync has written a ca.crt that lists every one of ``clients``."""
        path = self.trust_dir / names.TRUST_KEY
        held = whc.fingerprints_in(path.read_bytes()) if path.exists() else set()
        return {c.fingerprint for c in clients} <= held

    def records(self, event: str) -> list[dict[str, Any]]:
        """trust-sync's JSON log records of one kind (``--once`` first, then the watcher)."""
        found = []
        for line in self.trust_sync_log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found


FleetFactory = Callable[[Kind], Fleet]


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest,
    cluster: devcluster.DevCluster,
    namespace: str,
    material: launchers.Material,
    tmp_path: pathlib.Path,
) -> Iterator[FleetFactory]:
    """Starts trust-sync and the servers of a kind once the trust Secret exists; stops them all afterwards.

    The way a pod would run them: ``trust-sync --once`` first (an init container: the server starts with
    a trust store), the server, then trust-sync watching, with the server's reload command as ``--exec``.
    The watcher finds the files as --once left them and runs the command only after a real change.
    """
    ws = launchers.Workspace(tmp_path, material)
    env = {**os.environ, "PYTHONPATH": str(processes.REPO / "operator"), "KUBECONFIG": str(cluster.kubeconfig)}
    trust_dir = tmp_path / "trust"

    def trust_sync(*extra: str, once: bool = False) -> pathlib.Path:
        log = ws.log("trust-sync")
        argv = [sys.executable, "-m", "webhookcerts", "trust-sync"]
        argv += ["--secret", f"{namespace}/{reload.TRUST_SECRET}", "--dir", str(trust_dir), *extra]
        if once:
            done = subprocess.run([*argv, "--once"], env=env, cwd=processes.REPO, capture_output=True, timeout=120)
            with log.open("ab") as out:
                out.write(done.stdout + done.stderr)
            assert done.returncode == 0, log.read_text()
        else:
            ws.spawn("trust-sync", argv, log, env)
        return log

    def start(kind: Kind) -> Fleet:
        ca = trust_dir / names.TRUST_KEY
        if kind.java_store:
            # trust-sync copies the keys named (ca.crt and the operator's truststore.p12 and .jks: only
            # ca.crt unless named) and encodes its own store beside them, under another name.
            own = f"trust-sync.{kind.extension}"
            store_args = ["--key", names.TRUST_KEY, "--key", "truststore.p12", "--key", "truststore.jks"]
            store_args += ["--format", kind.java_store, "--store-name", own]
            store_args += ["--password-file", str(material.truststore_password)]
            log = trust_sync(*store_args)
            operator_store = trust_dir / f"truststore.{kind.extension}"
            conftest.wait_for(
                lambda: (trust_dir / own).exists() and operator_store.exists(),
                what="trust-sync to write its truststore and the operator's",
            )
            classes = request.getfixturevalue("java_classes")
            endpoints = [
                ServerEndpoint.of(
                    launchers.start_java(ws, classes, operator_store, kind.store_type, f"{kind.name}-operator-store")
                ),
                ServerEndpoint.of(
                    launchers.start_java(ws, classes, trust_dir / own, kind.store_type, f"{kind.name}-trust-sync-store")
                ),
            ]
            return Fleet(endpoints, trust_dir, log, reloads_by_exec=False)
        if kind.name == "go":
            log = trust_sync("--key", names.TRUST_KEY)
            conftest.wait_for(ca.exists, what="trust-sync to write the trust store")
            started = launchers.start_go(ws, request.getfixturevalue("go_server"), ca)
            return Fleet([ServerEndpoint.of(started)], trust_dir, log, reloads_by_exec=False)
        trust_sync("--key", names.TRUST_KEY, once=True)
        started = {"nginx": launchers.start_nginx, "haproxy": launchers.start_haproxy}[kind.name](ws, ca)
        assert started.reload_command is not None
        log = trust_sync("--key", names.TRUST_KEY, "--exec", started.reload_command)
        return Fleet([ServerEndpoint.of(started)], trust_dir, log, reloads_by_exec=True)

    try:
        yield start
    finally:
        ws.stop()
        ws.dump()


# --- the stories ----------------------------------------------------------------------------------------


def create_secret(api: whc.Api, name: str, value: bytes) -> None:
    api.core.create_namespaced_secret(
        api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=name), data={"password": base64.b64encode(value).decode()}
        ),
    )


BUNDLE = {"passwordSecretRef": {"name": "bundle-password", "key": "password"}}


def prepare(api: whc.Api, kind: Kind) -> None:
    create_secret(api, "bundle-password", reload.BUNDLE_PASSWORD)
    if kind.java_store:
        create_secret(api, "truststore-password", launchers.TRUSTSTORE_PASSWORD.encode())


def first_bundle(api: whc.Api, name: str, environment: str, path: pathlib.Path) -> pathlib.Path:
    """The PKCS#12 bundle of ``name``'s current certificate, as the client submits it to the provider."""
    current = api.status(name).current
    assert current is not None
    data = conftest.wait_for(
        lambda: reload.bundle_file(api, f"{name}-tls-bundle", environment, name, current.serial),
        what=f"{name}'s bundle",
    )
    path.write_bytes(data)
    return path


def bundle_of(client: reload.Client, directory: pathlib.Path, friendly_name: str) -> pathlib.Path:
    path = directory / f"{client.name}.p12"
    path.write_bytes(
        pki.pkcs12_bundle(
            client.key_path.read_bytes(), client.cert_path.read_bytes(), reload.BUNDLE_PASSWORD, friendly_name
        )
    )
    return path


def simulate(ep: ServerEndpoint, bundle: pathlib.Path) -> dict[str, Any]:
    """Ten deliveries with one bundle, two attempts each (the provider simulator as a library)."""
    config = providersim.Config(
        url=ep.url,
        bundle=bundle,
        password=reload.BUNDLE_PASSWORD,
        ca=ep.server_ca,
        rate=20,
        count=10,
        max_attempts=2,
        backoff_initial=0.05,
        timeout=30.0,
    )
    return providersim.run(config)


def assert_refused_by_summary(ep: ServerEndpoint, summary: dict[str, Any]) -> None:
    """Nothing delivered, and every attempt refused the way this server refuses."""
    assert (summary["delivered"], summary["failed"]) == (0, 10), (ep.name, summary)
    if ep.refusal == launchers.HTTP_400:
        assert summary["http_errors"] == {"400": summary["attempts"]}, (ep.name, summary)
    else:
        refusals = sum(summary["handshake_failures"].values()) + sum(summary["connection_errors"].values())
        assert refusals == summary["attempts"], (ep.name, summary)


def post_on(conn: http.client.HTTPSConnection, event: str) -> str:
    """One delivery on a kept connection: its HTTP status, or CLOSED when the server closed the connection."""
    try:
        body = json.dumps({"event": event}).encode()
        conn.request("POST", "/webhooks", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
    except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError):
        return launchers.CLOSED
    return str(response.status)


class Provider(reload.Provider):
    """test_reload.py's continuous provider, whose running campaigns can be cut short when the test has
    already failed (a server refusing every delivery would otherwise keep them retrying for minutes)."""

    def __init__(self, endpoint: reload.TlsEndpoint, *, rate: float) -> None:
        super().__init__(endpoint, rate=rate)
        self.abort = threading.Event()

    def _run(self, campaign: reload.Campaign, simulator: providersim.Simulator) -> None:
        campaign.summary = simulator.run(self.abort)


def start_providers(eps: list[ServerEndpoint], label: str, bundle: pathlib.Path) -> list[Provider]:
    """One continuous provider per endpoint, sharing the rate test_reload.py uses (the machine has 2 cores)."""
    providers = [Provider(ep, rate=reload.RATE / len(eps)) for ep in eps]
    for provider in providers:
        provider.use(label, bundle)
        provider.start()
    return providers


def stop_providers(providers: list[Provider]) -> list[list[reload.Campaign]]:
    """Stop every provider, even when one of them fails to stop cleanly; then raise the first failure.

    Called from a ``finally``: when the test is already failing, the campaigns still running are cut
    short instead of retrying to the end; their summaries are never looked at.
    """
    failing = sys.exc_info()[0] is not None
    for provider in providers:
        provider._stop.set()  # none starts another campaign while the others are being joined
        if failing:
            provider.abort.set()
    campaigns, errors = [], []
    for provider in providers:
        try:
            campaigns.append(provider.stop())
        except BaseException as exc:  # re-raised below, once the others have stopped
            errors.append(exc)
    if errors:
        raise errors[0]
    return campaigns


def assert_lossless(ep: ServerEndpoint, campaigns: list[reload.Campaign]) -> dict[str, list[dict[str, Any]]]:
    """Every campaign delivered everything it sent; the summaries by label."""
    summaries: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for campaign in campaigns:
        assert campaign.summary is not None
        summaries[campaign.label].append(campaign.summary)
    everything = [s for group in summaries.values() for s in group]
    sent = sum(s["sent"] for s in everything)
    delivered = sum(s["delivered"] for s in everything)
    retries = sum(s["retries"] for s in everything)
    print(f"{ep.name}: {len(everything)} campaigns, {sent} sent, {delivered} delivered, {retries} retries")
    assert [s["failed"] for s in everything] == [0] * len(everything), (ep.name, everything)
    assert delivered == sent, ep.name
    return summaries


def assert_exec_reloads(servers: Fleet) -> None:
    """For a server reloaded by trust-sync's --exec: the first write was --once's, without a command, and
    each of the watcher's swaps ran the command once, successfully."""
    if servers.reloads_by_exec:
        synced, ran, failed = (servers.records(e) for e in ("synced", "exec", "exec_failed"))
        assert len(synced) >= 2 and failed == [], (synced, failed)
        assert [r["exit_status"] for r in ran] == [0] * (len(synced) - 1), ran


def took_the_trust(servers: Fleet, ep: ServerEndpoint, client: reload.Client) -> bool:
    """Evidence that ``ep`` reloaded a trust store listing ``client``: its own log (Java, Go), or
    trust-sync having run the reload command, successfully, after every swap (nginx, HAProxy)."""
    if not servers.reloads_by_exec:
        return ep.loaded(client.fingerprint)
    try:
        assert_exec_reloads(servers)
    except AssertionError:
        return False
    return True


@pytest.mark.long
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_an_emergency_under_continuous_delivery_refuses_the_compromised_certificate(
    kind: Kind,
    api: whc.Api,
    operator: conftest.OperatorProcess,
    fleet: FleetFactory,
    material: launchers.Material,
    tmp_path: pathlib.Path,
) -> None:
    """The provider delivers with one WebhookCertificate's certificate while another one's is compromised:
    its deliveries go on through every reload, the compromised certificate is refused (a keep-alive
    connection from before included), the replacement accepted, strangers refused before and after."""
    steady, urgent = "steady", "urgent"
    prepare(api, kind)
    api.create(steady, bundle=BUNDLE, trust=trust_spec(kind))
    api.create(urgent, trust=trust_spec(kind))
    for name in (steady, urgent):
        conftest.wait_for(lambda name=name: reload.ready(api, name), what=f"{name} Ready=True")
    bundles, clients = tmp_path / "bundles", tmp_path / "clients"
    bundles.mkdir()
    steady_p12 = first_bundle(api, steady, "sandbox", bundles / "steady.p12")
    delivering = reload.client_from_secret(api, f"{steady}-tls", clients, "steady")
    compromised = reload.client_from_secret(api, f"{urgent}-tls", clients, "compromised")
    stranger = stranger_of(material)

    servers = fleet(kind)
    eps = servers.endpoints
    for ep in eps:
        assert ep.accepts(delivering), ep.name
        assert ep.accepts(compromised), ep.name
        assert ep.refuses(stranger), f"{ep.name} did not refuse a stranger"
        assert ep.refuses(None), f"{ep.name} did not refuse a client without a certificate"
    # A keep-alive connection opened with the compromised certificate before the incident.
    kept = [ep.connect(compromised) for ep in eps]
    for ep, conn in zip(eps, kept, strict=True):
        assert post_on(conn, "before") == "200", ep.name

    providers = start_providers(eps, "steady", steady_p12)
    try:
        conftest.wait_for(lambda: all(p.started("steady") for p in providers), what="the deliveries to start")
        annotated = time.monotonic()
        api.emergency(urgent, "INC-5150")
        for ep in eps:
            conftest.wait_for(lambda ep=ep: ep.refuses(compromised), what=f"{ep.name} to refuse the compromised one")
            # Not a benchmark (polled every 0.25 s, on a busy machine): a figure for the report.
            took = time.monotonic() - annotated
            print(f"{ep.name}: the compromised certificate refused {took:.1f} s after the annotation")
            # nginx's and HAProxy's old worker serves on (kept connections; nginx's even new ones) until
            # it has handled the reload, and the Java and Go servers answer a kept connection by the
            # trust they last loaded: the guarantee holds from then on (test_servers_reload.py proves
            # the wait; benchmarks/servers.py measures it).
            conftest.wait_for(ep.reloaded, what=f"{ep.name}'s reload to finish")
        # The connection from before does not carry the compromised certificate any further.
        after = [post_on(conn, "after") for conn in kept]
        assert after == [ep.kept for ep in eps], f"kept connections after the emergency: {after}"
        conftest.wait_for(
            lambda: (s := api.status(urgent)).stage == "Compromised" and s.next is not None, what="the replacement"
        )
        replacement = api.status(urgent).next
        assert replacement is not None and replacement.reason == "Emergency"
        fresh = reload.client_from_secret(api, f"{urgent}-tls-next", clients, "fresh")
        assert fresh.fingerprint == replacement.fingerprint
        for ep in eps:
            conftest.wait_for(lambda ep=ep: ep.accepts(fresh), what=f"{ep.name} to accept the replacement")
        # The provider simulator with either bundle: the compromised one delivers nothing, the new one all.
        compromised_p12, fresh_p12 = bundle_of(compromised, bundles, urgent), bundle_of(fresh, bundles, urgent)
        for ep in eps:
            before = ep.delivered_by(compromised.fingerprint)
            assert_refused_by_summary(ep, simulate(ep, compromised_p12))
            with_fresh = simulate(ep, fresh_p12)
            assert (with_fresh["delivered"], with_fresh["failed"]) == (10, 0), (ep.name, with_fresh)
            assert ep.delivered_by(compromised.fingerprint) == before, ep.name
        # One whole campaign after the replacement arrived.
        counts = [p.started("steady") for p in providers]
        for provider, count in zip(providers, counts, strict=True):
            conftest.wait_for(lambda p=provider, n=count: p.started("steady") > n, what="another campaign")
    finally:
        for conn in kept:
            conn.close()
        campaigns = stop_providers(providers)

    for ep, mine in zip(eps, campaigns, strict=True):
        summaries = assert_lossless(ep, mine)
        assert ep.delivered_by(delivering.fingerprint) >= sum(s["delivered"] for s in summaries["steady"]), ep.name
        assert ep.refuses(compromised), ep.name
        assert ep.accepts(fresh), ep.name
        assert ep.accepts(delivering), ep.name
        assert ep.refuses(stranger), ep.name
        assert ep.refuses(None), ep.name
        accepted = {fp for status, fp in ep.deliveries() if status == 200}
        assert accepted == {delivering.fingerprint, compromised.fingerprint, fresh.fingerprint}, ep.name
    assert_exec_reloads(servers)


class OneAnchorPerSubject(AssertionError):
    """A server refuses one of two listed certificates that share a subject name (nginx, HAProxy)."""


def overlap(servers: Fleet, old: reload.Client, new: reload.Client) -> None:
    """Once ca.crt lists both and each server has finished reloading it, every endpoint must accept
    both; raises OneAnchorPerSubject when one of them is refused (the other accepted). No time is
    allowed for anything: the wait is for the server's own evidence of the reload, then one look."""
    conftest.wait_for(lambda: servers.lists(old, new), what="trust-sync to write both certificates")
    for ep in servers.endpoints:
        conftest.wait_for(
            lambda ep=ep: took_the_trust(servers, ep, new) and ep.reloaded(),
            timeout=120,
            what=f"{ep.name} to reload the trust store listing both",
        )
        verdicts = {c.name: ep.accepts(c) for c in (old, new)}
        if all(verdicts.values()):
            continue
        refused = [n for n, ok in verdicts.items() if not ok]
        if len(refused) == 1:
            raise OneAnchorPerSubject(
                f"{ep.name} refuses the {refused[0]} certificate while ca.crt lists both "
                f"(one subject, {old.name} and {new.name}): {verdicts}"
            )
        raise AssertionError(f"{ep.name} accepts neither certificate of the overlap: {verdicts}")


# Every kind, nginx and HAProxy included: the operator's certificates carry their own key identifier
# as the authority key identifier, so OpenSSL tells the two same-subject anchors of an overlap apart.
ROTATION_KINDS = [pytest.param(k, id=k.name) for k in KINDS]


@pytest.mark.long
@pytest.mark.parametrize("kind", ROTATION_KINDS)
def test_a_planned_rotation_and_cutover_under_continuous_delivery_lose_nothing(
    kind: Kind,
    api: whc.Api,
    operator: conftest.OperatorProcess,
    fleet: FleetFactory,
    material: launchers.Material,
    tmp_path: pathlib.Path,
) -> None:
    name, environment = "planned", "sandbox"
    prepare(api, kind)
    # Not due yet: the planned rotation is made due (renewBefore close to duration) once deliveries flow.
    api.create(name, environment=environment, duration="1h", renewBefore="30m", bundle=BUNDLE, trust=trust_spec(kind))
    conftest.wait_for(lambda: reload.ready(api, name), what="Ready=True")
    bundles, clients = tmp_path / "bundles", tmp_path / "clients"
    bundles.mkdir()
    old_p12 = first_bundle(api, name, environment, bundles / "old.p12")
    old = reload.client_from_secret(api, f"{name}-tls", clients, "old")

    servers = fleet(kind)
    eps = servers.endpoints
    for ep in eps:
        assert ep.accepts(old), ep.name
    providers = start_providers(eps, "old", old_p12)
    try:
        for provider in providers:
            conftest.wait_for(lambda p=provider: p.started("old") >= 2, timeout=120, what="deliveries to flow")
        api.patch_spec(name, renewBefore="59m59s")
        # The rotation starts; the endpoints trust the next certificate beside the current one.
        conftest.wait_for(lambda: api.status(name).stage == "Rotating", timeout=180, what="stage Rotating")
        # Not due again: the certificate the cut-over makes current must not start a rotation of its own.
        api.patch_spec(name, renewBefore="30m")
        pending = api.status(name).next
        assert pending is not None and pending.reason == "Planned"
        new_p12 = conftest.wait_for(
            lambda: reload.bundle_file(api, f"{name}-tls-bundle", environment, name, pending.serial),
            what="the next bundle",
        )
        (bundles / "new.p12").write_bytes(new_p12)
        new = reload.client_from_secret(api, f"{name}-tls-next", clients, "new")
        assert new.fingerprint == pending.fingerprint
        overlap(servers, old, new)

        # The provider switches, finishes what it sent with the old certificate, then the cut-over.
        for provider in providers:
            provider.use("new", bundles / "new.p12")
        for provider in providers:
            conftest.wait_for(
                lambda p=provider: p.finished_with("old"), timeout=180, what="the old campaigns to finish"
            )
        api.cutover(name, pending.serial)
        conftest.wait_for(
            lambda: (c := api.status(name).current) is not None and c.fingerprint == new.fingerprint,
            what="the cut-over",
        )
        for ep in eps:
            conftest.wait_for(lambda ep=ep: ep.refuses(old), what=f"{ep.name} to refuse the old certificate")
            conftest.wait_for(ep.reloaded, what=f"{ep.name}'s reload to finish")
        # At least one whole campaign with the new certificate after the old one left the trust store.
        counts = [p.started("new") for p in providers]
        for provider, count in zip(providers, counts, strict=True):
            conftest.wait_for(lambda p=provider, n=count: p.started("new") > n, timeout=120, what="another campaign")
    finally:
        campaigns = stop_providers(providers)

    for ep, mine in zip(eps, campaigns, strict=True):
        summaries = assert_lossless(ep, mine)
        assert sum(s["delivered"] for s in summaries["old"]) > 0, ep.name
        assert sum(s["delivered"] for s in summaries["new"]) > 0, ep.name
        # The server saw each of them, by the certificate that carried it.
        assert ep.delivered_by(old.fingerprint) >= sum(s["delivered"] for s in summaries["old"]), ep.name
        assert ep.delivered_by(new.fingerprint) >= sum(s["delivered"] for s in summaries["new"]), ep.name
        assert ep.refuses(old), ep.name
        assert ep.accepts(new), ep.name
        assert ep.refuses(stranger_of(material)), ep.name
        assert ep.refuses(None), ep.name
    assert_exec_reloads(servers)

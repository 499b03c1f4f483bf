"""The reload path end to end: operator, trust-sync, receiver and provider simulator together.

The operator runs as users run it against the real API server; trust-sync stands in for the kubelet
and mirrors the trust Secret into a directory in the kubelet's layout; the reference receiver runs as
its own process on a loopback port with its own serving certificate and reloads from that directory;
the provider simulator presents the certificates the operator issued, from the bundles a client would
submit. Nothing here is timed: each test waits, generously, for a behaviour, and then asserts it.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import http.client
import json
import os
import pathlib
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import conftest, processes, whc
from tests.unit import mtls_pki
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, names, pki
from webhookcerts.receiver import providersim

pytestmark = pytest.mark.e2e

TRUST_SECRET = "webhook-trust"
BUNDLE_PASSWORD = b"e2e-bundle-password-3c9f"
# A real provider retries for hours; ten attempts with backoff up to 2 s ride out a busy 2-core machine.
MAX_ATTEMPTS = 10
RATE = 50.0


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory: pytest.TempPathFactory) -> mtls_pki.Pki:
    """The receiver's own serving certificate and CA, and a self-signed stranger."""
    return mtls_pki.make(tmp_path_factory.mktemp("server-pki"))


# --- client certificates as PEM files for curl and openssl ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Client:
    """A client certificate and its key as files (what curl and openssl take)."""

    name: str
    cert_path: pathlib.Path
    key_path: pathlib.Path
    fingerprint: str


def write_client(directory: pathlib.Path, name: str, key_pem: bytes, cert_pem: bytes) -> Client:
    cert_path, key_path = mtls_pki.write_pem_files(directory, name, key_pem, cert_pem)
    return Client(name, cert_path, key_path, pki.inspect(cert_pem).fingerprint)


def client_from_secret(api: whc.Api, secret_name: str, directory: pathlib.Path, name: str) -> Client:
    data = api.secret(secret_name)
    assert data is not None, f"Secret {secret_name} does not exist"
    return write_client(directory, name, data[names.TLS_KEY], data[names.TLS_CERT])


def expired_twin(client: Client, subject: models.Subject, directory: pathlib.Path) -> Client:
    """A certificate for the same key and subject as ``client``, whose validity ended an hour ago."""
    key_pem = client.key_path.read_bytes()
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    cert = pki.issue_certificate(key, subject, now - datetime.timedelta(hours=2), datetime.timedelta(hours=1))
    return write_client(directory, f"{client.name}-expired", key_pem, cert.public_bytes(serialization.Encoding.PEM))


# --- the endpoint: trust-sync and the receiver as processes -----------------------------------------


@dataclasses.dataclass
class TlsEndpoint:
    """Any mTLS webhook endpoint on a loopback port, as a client sees it (tests/e2e/test_servers.py
    plugs nginx, HAProxy, a Java and a Go server in here): deliveries and handshakes with curl and
    openssl. A refusal is a failed handshake; a server that refuses otherwise overrides ``refuses``."""

    port: int
    server_ca: pathlib.Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/webhooks"

    def context(self, client: Client) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.server_ca))
        ctx.load_cert_chain(client.cert_path, client.key_path)
        return ctx

    def connect(self, client: Client) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(client), timeout=30)

    def curl(self, client: Client | None, *extra: str) -> tuple[int, str]:
        """(curl's exit code, the HTTP status or 000) of one delivery."""
        args = ["curl", "-sS", "--max-time", "30", "--cacert", str(self.server_ca)]
        if client is not None:
            args += ["--cert", str(client.cert_path), "--key", str(client.key_path)]
        args += ["-H", "Content-Type: application/json", "--data", '{"event": "e2e"}']
        args += ["-o", os.devnull, "-w", "%{http_code}", *extra, self.url]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout.strip()

    def accepts(self, client: Client) -> bool:
        return self.curl(client) == (0, "200")

    def refuses(self, client: Client | None) -> bool:
        code, status = self.curl(client)
        return code != 0 and status == "000"

    def s_client(self, client: Client | None, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}", "-CAfile", str(self.server_ca)]
        args += ["-verify_return_error", "-servername", "localhost"]
        if client is not None:
            args += ["-cert", str(client.cert_path), "-key", str(client.key_path)]
        return subprocess.run([*args, *extra], input="", capture_output=True, text=True, timeout=60)


@dataclasses.dataclass
class Endpoint(TlsEndpoint):
    """The client's webhook endpoint: trust-sync writing the trust directory, the receiver reading it."""

    trust_dir: pathlib.Path
    receiver_log: pathlib.Path
    trust_sync_log: pathlib.Path

    def records(self, event: str) -> list[dict[str, Any]]:
        """The receiver's JSON log records of one kind."""
        found = []
        for line in self.receiver_log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    def delivered_by(self, fingerprint: str) -> int:
        return sum(1 for r in self.records("delivery") if r["status"] == 200 and r["client_fingerprint"] == fingerprint)

    def health(self, client: Client) -> dict[str, Any]:
        conn = self.connect(client)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, body
            result: dict[str, Any] = json.loads(body)
            return result
        finally:
            conn.close()

    def trusts(self, client: Client, fingerprint: str) -> bool:
        """Whether the receiver's current trust store lists ``fingerprint`` (asked with ``client``)."""
        return fingerprint in {c["fingerprint"] for c in self.health(client)["trusted"]}


EndpointFactory = Callable[[], Endpoint]


@pytest.fixture
def endpoint(
    cluster: devcluster.DevCluster, namespace: str, server_pki: mtls_pki.Pki, tmp_path: pathlib.Path
) -> Iterator[EndpointFactory]:
    """Starts (once the trust Secret exists) trust-sync and then the receiver; stops both afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = {"trust-sync": tmp_path / "trust-sync.log", "receiver": tmp_path / "receiver.log"}
    env = {"KUBECONFIG": str(cluster.kubeconfig)}

    def start() -> Endpoint:
        trust_dir = tmp_path / "trust"
        sync_argv = ["trust-sync", "--secret", f"{namespace}/{TRUST_SECRET}", "--dir", str(trust_dir)]
        procs.append(processes.spawn(sync_argv, logs["trust-sync"], env))
        conftest.wait_for(lambda: (trust_dir / names.TRUST_KEY).exists(), what="trust-sync to write the trust store")
        server = server_pki.server
        receiver = processes.receiver(server.cert_path, server.key_path, trust_dir, logs["receiver"], env=env)
        procs.append(receiver)
        port = conftest.wait_for(
            lambda: processes.listening_port(receiver, logs["receiver"]), what="the receiver to listen"
        )
        return Endpoint(port, server_pki.server_ca.cert_path, trust_dir, logs["receiver"], logs["trust-sync"])

    try:
        yield start
    finally:
        for proc in reversed(procs):
            processes.stop(proc)
        for name, path in logs.items():
            if path.exists():
                print(f"--- {name} log ---\n{path.read_text(errors='replace')[-12000:]}")


# --- the provider: a continuous stream of deliveries that switches certificates ---------------------


@dataclasses.dataclass
class Campaign:
    label: str
    thread: threading.Thread | None = None
    summary: dict[str, Any] | None = None

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class Provider:
    """Delivers continuously at ``rate``/s as back-to-back campaigns of the provider simulator.

    Each campaign presents the bundle the provider uses when the campaign is prepared and runs to the
    end (every delivery delivered or given up after its retries), so switching the certificate never
    cuts a delivery short. The next campaign is prepared (its bundle opened) while the current one
    runs, so the stream has no gaps.
    """

    def __init__(self, endpoint: TlsEndpoint, *, rate: float = RATE, seconds: float = 2.0) -> None:
        self.endpoint, self.rate, self.seconds = endpoint, rate, seconds
        self._lock = threading.Lock()
        self._bundle: tuple[str, pathlib.Path] | None = None
        self._stop = threading.Event()
        self._driver: threading.Thread | None = None
        self.campaigns: list[Campaign] = []
        self.error: BaseException | None = None

    def use(self, label: str, bundle: pathlib.Path) -> None:
        """Present this bundle from the next campaign on (the provider switching certificates)."""
        with self._lock:
            self._bundle = (label, bundle)

    def start(self) -> None:
        self._driver = threading.Thread(target=self._drive, name="provider", daemon=True)
        self._driver.start()

    def started(self, label: str) -> int:
        with self._lock:
            return sum(1 for c in self.campaigns if c.label == label)

    def finished_with(self, label: str) -> bool:
        """No campaign with ``label`` runs, and none will start (a later one has already started)."""
        with self._lock:
            labels = [c.label for c in self.campaigns]
            running = any(c.label == label and c.running() for c in self.campaigns)
        return bool(labels) and labels[-1] != label and not running

    def stop(self) -> list[Campaign]:
        """Start no further campaign; let the running ones finish; return them all."""
        self._stop.set()
        if self._driver is not None:
            self._driver.join(timeout=120)
        for campaign in list(self.campaigns):
            if campaign.thread is not None:
                campaign.thread.join(timeout=300)
            assert not campaign.running(), "a campaign did not finish"
        if self.error is not None:
            raise self.error
        return self.campaigns

    def _drive(self) -> None:
        due = time.monotonic()
        try:
            while not self._stop.is_set():
                with self._lock:
                    assert self._bundle is not None, "use() a bundle before start()"
                    label, bundle = self._bundle
                simulator = providersim.Simulator(
                    providersim.Config(
                        url=self.endpoint.url,
                        bundle=bundle,
                        password=BUNDLE_PASSWORD,
                        ca=self.endpoint.server_ca,
                        rate=self.rate,
                        duration=self.seconds,
                        max_attempts=MAX_ATTEMPTS,
                        backoff_initial=0.1,
                        backoff_max=2.0,
                        timeout=30.0,
                    )
                )
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                campaign = Campaign(label)
                thread = threading.Thread(target=self._run, args=(campaign, simulator), daemon=True)
                campaign.thread = thread
                with self._lock:
                    self.campaigns.append(campaign)
                thread.start()
                due += self.seconds
        except BaseException as exc:
            self.error = exc

    @staticmethod
    def _run(campaign: Campaign, simulator: providersim.Simulator) -> None:
        campaign.summary = simulator.run()


def bundle_file(api: whc.Api, bundle_secret: str, environment: str, name: str, serial: str) -> bytes | None:
    """The PKCS#12 file the operator wrote for ``serial`` (what the client submits to the provider)."""
    data = api.secret(bundle_secret) or {}
    return data.get(f"{environment}-{name}-{serial}.p12")


def create_password_secret(api: whc.Api, name: str) -> None:
    api.core.create_namespaced_secret(
        api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            data={"password": base64.b64encode(BUNDLE_PASSWORD).decode()},
        ),
    )


def ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


# --- the tests -------------------------------------------------------------------------------------


@pytest.mark.long
def test_planned_rotation_with_cutover_under_continuous_delivery_loses_nothing(
    api: whc.Api, operator: conftest.OperatorProcess, endpoint: EndpointFactory, tmp_path: pathlib.Path
) -> None:
    name, environment = "planned", "sandbox"
    create_password_secret(api, "bundle-password")
    # Not due yet: the planned rotation is made due (renewBefore close to duration) once deliveries flow.
    api.create(
        name,
        environment=environment,
        duration="1h",
        renewBefore="30m",
        bundle={"passwordSecretRef": {"name": "bundle-password", "key": "password"}},
    )
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    first = api.status(name).current
    assert first is not None
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    old_p12 = conftest.wait_for(
        lambda: bundle_file(api, f"{name}-tls-bundle", environment, name, first.serial), what="the first bundle"
    )
    (bundles / "old.p12").write_bytes(old_p12)
    old = client_from_secret(api, f"{name}-tls", tmp_path / "clients", "old")
    assert old.fingerprint == first.fingerprint

    ep = endpoint()
    assert ep.accepts(old)
    provider = Provider(ep)
    provider.use("old", bundles / "old.p12")
    provider.start()
    try:
        conftest.wait_for(lambda: provider.started("old") >= 2, timeout=120, what="deliveries to flow")
        api.patch_spec(name, renewBefore="59m59s")
        # The rotation starts; the endpoint trusts the next certificate beside the current one.
        conftest.wait_for(lambda: api.status(name).stage == "Rotating", timeout=180, what="stage Rotating")
        # Not due again: the certificate the cut-over makes current must not start a rotation of its own.
        api.patch_spec(name, renewBefore="30m")
        pending = api.status(name).next
        assert pending is not None and pending.reason == "Planned"
        new_p12 = conftest.wait_for(
            lambda: bundle_file(api, f"{name}-tls-bundle", environment, name, pending.serial), what="the next bundle"
        )
        (bundles / "new.p12").write_bytes(new_p12)
        new = client_from_secret(api, f"{name}-tls-next", tmp_path / "clients", "new")
        assert new.fingerprint == pending.fingerprint
        conftest.wait_for(lambda: ep.trusts(old, new.fingerprint), what="the receiver to trust the next certificate")

        # The provider switches to the next certificate, finishes what it sent with the old one, and
        # only then is the cut-over confirmed, while deliveries go on.
        provider.use("new", bundles / "new.p12")
        conftest.wait_for(lambda: provider.finished_with("old"), timeout=180, what="the old campaigns to finish")
        api.cutover(name, pending.serial)
        conftest.wait_for(
            lambda: (c := api.status(name).current) is not None and c.fingerprint == new.fingerprint,
            what="the cut-over",
        )
        conftest.wait_for(lambda: not ep.trusts(new, old.fingerprint), what="the receiver to drop the old certificate")
        # At least one whole campaign with the new certificate after the old one left the trust store.
        after = provider.started("new")
        conftest.wait_for(lambda: provider.started("new") > after, timeout=120, what="another campaign")
    finally:
        campaigns = provider.stop()

    summaries = collections.defaultdict(list)
    for campaign in campaigns:
        assert campaign.summary is not None
        summaries[campaign.label].append(campaign.summary)
    everything = [s for group in summaries.values() for s in group]
    sent = sum(s["sent"] for s in everything)
    delivered = sum(s["delivered"] for s in everything)
    print(f"campaigns: {json.dumps(summaries, indent=1)}")
    assert [s["failed"] for s in everything] == [0] * len(everything)
    assert delivered == sent
    assert sum(s["delivered"] for s in summaries["old"]) > 0
    assert sum(s["delivered"] for s in summaries["new"]) > 0
    # The receiver saw each of them, by the certificate that carried it.
    assert ep.delivered_by(old.fingerprint) >= sum(s["delivered"] for s in summaries["old"])
    assert ep.delivered_by(new.fingerprint) >= sum(s["delivered"] for s in summaries["new"])
    # And the cut-over really took the old certificate away.
    assert ep.refuses(old)
    assert ep.accepts(new)


def test_emergency_refuses_the_compromised_certificate_and_accepts_the_new_one(
    api: whc.Api, operator: conftest.OperatorProcess, endpoint: EndpointFactory, tmp_path: pathlib.Path
) -> None:
    name = "urgent"
    api.create(name)
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    compromised = client_from_secret(api, f"{name}-tls", tmp_path / "clients", "compromised")
    ep = endpoint()
    assert ep.accepts(compromised)
    # A keep-alive connection made before the incident must not outlive it.
    kept = ep.connect(compromised)
    kept.request("POST", "/webhooks", body=b'{"event": "before"}', headers={"Content-Type": "application/json"})
    before = kept.getresponse()
    before.read()
    assert before.status == 200

    api.emergency(name, "INC-4242")
    conftest.wait_for(lambda: ep.refuses(compromised), what="the receiver to refuse the compromised certificate")
    # The keep-alive connection from before is told to reconnect (and then cannot), well within the
    # receiver's idle timeout.
    kept.request("POST", "/webhooks", body=b'{"event": "after"}', headers={"Content-Type": "application/json"})
    stale = kept.getresponse()
    stale.read()
    kept.close()
    assert stale.status == 421

    # The trust store changes before the reconcile finishes; the stage follows at its end.
    conftest.wait_for(
        lambda: (s := api.status(name)).stage == "Compromised" and s.next is not None, what="the replacement"
    )
    status = api.status(name)
    assert status.next is not None and status.next.reason == "Emergency"
    fresh = client_from_secret(api, f"{name}-tls-next", tmp_path / "clients", "fresh")
    assert fresh.fingerprint == status.next.fingerprint
    # Containment reached the endpoint first (a store trusting nobody); the replacement comes after.
    conftest.wait_for(lambda: ep.accepts(fresh), what="the endpoint to accept the replacement")

    # openssl agrees; TLS 1.2 puts the client certificate's verdict inside the handshake.
    refused = ep.s_client(compromised, "-tls1_2")
    accepted = ep.s_client(fresh, "-tls1_2")
    assert refused.returncode != 0, refused.stdout
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "Protocol  : TLSv1.2" in accepted.stdout

    # The provider simulator: the compromised bundle delivers nothing, the new one everything.
    def bundle(client: Client) -> pathlib.Path:
        path = tmp_path / f"{client.name}.p12"
        p12 = pki.pkcs12_bundle(client.key_path.read_bytes(), client.cert_path.read_bytes(), BUNDLE_PASSWORD, name)
        path.write_bytes(p12)
        return path

    def simulate(client: Client) -> dict[str, Any]:
        config = providersim.Config(
            url=ep.url,
            bundle=bundle(client),
            password=BUNDLE_PASSWORD,
            ca=ep.server_ca,
            rate=20,
            count=10,
            max_attempts=2,
            backoff_initial=0.05,
            timeout=30.0,
        )
        return providersim.run(config)

    accepted_before = ep.delivered_by(compromised.fingerprint)
    with_compromised, with_fresh = simulate(compromised), simulate(fresh)
    assert (with_compromised["delivered"], with_compromised["failed"]) == (0, 10), with_compromised
    assert (
        sum(with_compromised["handshake_failures"].values()) + sum(with_compromised["connection_errors"].values())
        == with_compromised["attempts"]
    )
    assert (with_fresh["delivered"], with_fresh["failed"]) == (10, 0), with_fresh
    assert ep.delivered_by(compromised.fingerprint) == accepted_before
    assert ep.delivered_by(fresh.fingerprint) >= 10
    assert any(r["reason"] == "certificate_verify_failed" for r in ep.records("handshake_failed"))


def test_no_certificate_a_stranger_an_expired_certificate_and_tls_1_1_are_refused(
    api: whc.Api,
    operator: conftest.OperatorProcess,
    endpoint: EndpointFactory,
    server_pki: mtls_pki.Pki,
    tmp_path: pathlib.Path,
) -> None:
    name = "gate"
    api.create(name)
    conftest.wait_for(lambda: ready(api, name), what="Ready=True")
    trusted = client_from_secret(api, f"{name}-tls", tmp_path / "clients", "trusted")
    never = server_pki.stranger
    stranger = Client("stranger", never.cert_path, never.key_path, never.fingerprint)
    # The trusted key and subject in a certificate that has expired: not the listed certificate, so
    # refused (an expired certificate the trust store still lists is the last test's case).
    spec = models.WebhookCertificateSpec.model_validate(api.get(name)["spec"])
    expired = expired_twin(trusted, spec.subject, tmp_path / "clients")
    ep = endpoint()

    # The same commands get a trusted client in, so each refusal below is the receiver's doing.
    assert ep.curl(trusted) == (0, "200")
    assert ep.s_client(trusted, "-tls1_2").returncode == 0

    for client in (None, stranger, expired):
        label = client.name if client else "no certificate"
        code, status = ep.curl(client)
        assert code != 0 and status == "000", f"curl with {label}: exit {code}, HTTP {status}"
        done = ep.s_client(client, "-tls1_2")
        assert done.returncode != 0, f"openssl s_client with {label} connected:\n{done.stdout}"

    # TLS 1.1, offered for real (SECLEVEL=0 lets this machine's OpenSSL offer it), with the trusted cert.
    old_tls = ep.s_client(trusted, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert old_tls.returncode != 0
    assert "alert protocol version" in old_tls.stdout + old_tls.stderr
    code, status = ep.curl(trusted, "--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0")
    assert code != 0 and status == "000"

    refusals = ep.records("handshake_failed")
    reasons = {r["reason"] for r in refusals}
    assert {"peer_did_not_return_a_certificate", "certificate_verify_failed", "unsupported_protocol"} <= reasons
    # Only the trusted certificate ever got a 200.
    assert {r["client_fingerprint"] for r in ep.records("delivery") if r["status"] == 200} == {trusted.fingerprint}


def adopted_key_secret(api: whc.Api, name: str, lifetime: datetime.timedelta) -> tuple[bytes, bytes, x509.Certificate]:
    """A key Secret ``<name>-tls`` made before its WebhookCertificate (which adopts it), with a
    certificate valid from now for ``lifetime``."""
    subject = models.Subject(common_name=f"{name}.webhooks.example.com", organization="Example")
    key = pki.generate_private_key()
    cert = pki.issue_certificate(key, subject, datetime.datetime.now(datetime.UTC), lifetime)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    api.core.create_namespaced_secret(
        api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=f"{name}-tls"),
            type="kubernetes.io/tls",
            data={
                k: base64.b64encode(v).decode() for k, v in {names.TLS_KEY: key_pem, names.TLS_CERT: cert_pem}.items()
            },
        ),
    )
    return key_pem, cert_pem, cert


def adopted_and_rotating(api: whc.Api, name: str, lifetime: datetime.timedelta, **spec: Any) -> float:
    """Adopts a fresh key Secret and waits for the next certificate (its renewal time long passed):
    the seconds it took, from before the key was made."""
    started = time.monotonic()
    adopted_key_secret(api, name, lifetime)
    api.create(name, **spec)
    conftest.wait_for(lambda: api.status(name).stage == "Rotating", what=f"{name}: adoption and the next certificate")
    conftest.wait_for(
        lambda: len(api.trusted_fingerprints(spec.get("trust", {}).get("secretName", TRUST_SECRET))) == 2,
        what=f"{name}: the trust store to list both",
    )
    return time.monotonic() - started


@pytest.mark.long
def test_an_expired_certificate_is_refused_while_the_trust_store_still_lists_it(
    api: whc.Api, operator: conftest.OperatorProcess, endpoint: EndpointFactory, tmp_path: pathlib.Path
) -> None:
    # A key Secret that already exists is adopted; this one holds a certificate about to expire. The
    # operator then starts the next certificate at once (its renewal time has long passed) and would
    # cut over when the current one expires, so it is stopped before that: while it is down, the
    # expired certificate stays in the trust store, and only the receiver's own check stands between
    # it and a delivery.
    #
    # How long "about to expire" must be is measured, not guessed: the same steps (a key made, adopted,
    # the next certificate issued, with a key generation of the operator's) are timed first on a
    # long-lived certificate with a trust Secret of its own, and the certificate lives four times
    # that (and 5 s more) from the moment its own steps start.
    rehearsal = adopted_and_rotating(api, "rehearsal", datetime.timedelta(hours=1), trust={"secretName": "rehearsal"})
    lifetime = datetime.timedelta(seconds=4 * rehearsal + 5)
    name = "lapsed"
    key_pem, cert_pem, cert = adopted_key_secret(api, name, lifetime)
    lapsing = write_client(tmp_path / "clients", "lapsing", key_pem, cert_pem)
    api.create(name)
    conftest.wait_for(lambda: api.status(name).stage == "Rotating", what="adoption and the next certificate")
    # Status records the next just before the trust Secret lists it: both listed, then the stop.
    conftest.wait_for(lambda: len(api.trusted_fingerprints()) == 2, what="the trust store to list both")
    operator.stop()
    status = api.status(name)
    assert status.current is not None and status.current.fingerprint == lapsing.fingerprint, (
        f"the operator retired the adopted certificate before it was stopped: its {lifetime.total_seconds():.0f} s "
        f"were four times what the same steps took just before ({rehearsal:.1f} s), and not enough"
    )
    successor = client_from_secret(api, f"{name}-tls-next", tmp_path / "clients", "successor")
    assert api.trusted_fingerprints() == {lapsing.fingerprint, successor.fingerprint}
    ep = endpoint()

    expiry = cert.not_valid_after_utc + datetime.timedelta(seconds=1)
    conftest.wait_for(
        lambda: datetime.datetime.now(datetime.UTC) > expiry,
        timeout=lifetime.total_seconds() + 60,
        what="the certificate to expire",
    )
    assert ep.trusts(successor, lapsing.fingerprint)  # still listed ...
    assert ep.refuses(lapsing)  # ... and refused all the same
    done = ep.s_client(lapsing, "-tls1_2")
    assert done.returncode != 0, done.stdout
    assert "certificate has expired" in [r.get("detail") for r in ep.records("handshake_failed")]
    assert ep.accepts(successor)

    # Back up, the operator cuts over on expiry by itself and the expired certificate leaves the store.
    operator.start()
    conftest.wait_for(
        lambda: (c := api.status(name).current) is not None and c.fingerprint == successor.fingerprint,
        what="the cut-over on expiry",
    )
    conftest.wait_for(lambda: not ep.trusts(successor, lapsing.fingerprint), what="the receiver to drop it")
    assert ep.accepts(successor)

"""The webhook endpoint as the provider sees it, and the provider: shared by the end-to-end modules.

A client certificate as files (curl and openssl take files); any mTLS endpoint on a loopback port
probed with curl and openssl (``TlsEndpoint``), the reference receiver with its log (``Endpoint``);
and ``Provider``, the provider simulator delivering continuously while it switches certificates.

The provider signs its webhooks (its "v6" scheme, provider_scheme.py), and a receiver that verifies
them answers an unsigned request 401 AFTER the TLS handshake accepted the certificate. So an endpoint
that verifies carries the provider's signing key (``ProviderKey``), and everything that probes it signs
as the provider does: a probe's 200 still means "accepted", and a refusal still means a refused
handshake (curl's 000), never a 401. The probes that must go unsigned or wrongly signed say so.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import whc
from tests.unit import mtls_pki
from webhookcerts.domain import models, names, pki
from webhookcerts.receiver import providersim, signatures, signing

TRUST_SECRET = "webhook-trust"
BUNDLE_PASSWORD = b"e2e-bundle-password-3c9f"
# A real provider retries for hours; ten attempts with backoff up to 2 s ride out a busy 2-core machine.
MAX_ATTEMPTS = 10
RATE = 50.0
PROBE_BODY = b'{"event": "e2e"}'


# --- the provider's signing key ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProviderKey:
    """A signing key of the provider: the private key the simulator signs with, and the directory of
    public keys (one ``<keyid>.pem`` per key) a receiver is given with ``--signature-key DIR``, as a
    mounted Secret gives it."""

    key_id: str
    private: pathlib.Path
    public_dir: pathlib.Path

    @property
    def public(self) -> pathlib.Path:
        return self.public_dir / f"{self.key_id}.pem"

    def sign(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers of a POST of ``body`` to ``url``, signed as the provider signs (v6 by default)."""
        key = signatures.load_private_key(self.private)
        signer = signing.signer(signing.DEFAULT_SCHEME, key, key_id=self.key_id)
        return signer.sign("POST", url, {"Content-Type": "application/json", **(headers or {})}, body)


def provider_key(directory: pathlib.Path, key_id: str = "provider-e2e") -> ProviderKey:
    """A fresh P-256 key (one of the provider's key types), its public half alone in ``<dir>/public``."""
    private_dir, public_dir = directory / "private", directory / "public"
    private_dir.mkdir(parents=True)
    public_dir.mkdir()
    private, public = mtls_pki.signing_key(private_dir, key_id)
    shutil.move(public, public_dir / f"{key_id}.pem")
    return ProviderKey(key_id, private, public_dir)


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
    # The key the endpoint verifies signatures with (what the provider signs with); None: it does not.
    signing: ProviderKey | None = dataclasses.field(default=None, kw_only=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/webhooks"

    def context(self, client: Client) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.server_ca))
        ctx.load_cert_chain(client.cert_path, client.key_path)
        return ctx

    def connect(self, client: Client) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(client), timeout=30)

    def signed(self, body: bytes, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers a delivery of ``body`` carries: signed when the endpoint verifies signatures."""
        if self.signing is None:
            return {"Content-Type": "application/json", **(headers or {})}
        return self.signing.sign(self.url, body, headers)

    def curl(
        self, client: Client | None, *extra: str, signed_by: ProviderKey | None = None, unsigned: bool = False
    ) -> tuple[int, str]:
        """(curl's exit code, the HTTP status or 000) of one delivery, signed with the endpoint's key
        (or ``signed_by``) unless ``unsigned``."""
        args = ["curl", "-sS", "--max-time", "30", "--cacert", str(self.server_ca)]
        if client is not None:
            args += ["--cert", str(client.cert_path), "--key", str(client.key_path)]
        key = None if unsigned else (signed_by or self.signing)
        headers = {"Content-Type": "application/json"} if key is None else key.sign(self.url, PROBE_BODY)
        for name, value in headers.items():
            if name.lower() != "content-length":  # curl sends its own, the same
                args += ["-H", f"{name}: {value}"]
        args += ["--data-binary", PROBE_BODY.decode()]
        args += ["-o", os.devnull, "-w", "%{http_code}", *extra, self.url]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout.strip()

    def accepts(self, client: Client) -> bool:
        """A signed delivery with this certificate is delivered."""
        return self.curl(client) == (0, "200")

    def refuses(self, client: Client | None) -> bool:
        """The handshake refuses this certificate (an HTTP answer, 401 included, means TLS accepted it)."""
        code, status = self.curl(client)
        return code != 0 and status == "000"

    def simulator(self, bundle: pathlib.Path, **settings: Any) -> providersim.Config:
        """The provider simulator delivering here with ``bundle``, signing as the provider does when the
        endpoint verifies signatures."""
        signing_settings: dict[str, Any] = {}
        if self.signing is not None:
            signing_settings = {"signing_key": self.signing.private, "key_id": self.signing.key_id}
        return providersim.Config(
            url=self.url, bundle=bundle, password=BUNDLE_PASSWORD, ca=self.server_ca, **signing_settings, **settings
        )

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

    def unverified_deliveries(self) -> list[dict[str, Any]]:
        """Deliveries answered 200 without the signature the endpoint's key made: none may exist."""
        assert self.signing is not None, "the endpoint verifies no signature"
        return [
            r
            for r in self.records("delivery")
            if r["status"] == 200 and r.get("signature_keyid") != self.signing.key_id
        ]

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
                    self.endpoint.simulator(
                        bundle,
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

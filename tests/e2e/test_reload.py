"""The reload path end to end: operator, trust-sync, receiver and provider simulator together.

The operator runs as users run it against the real API server; trust-sync stands in for the kubelet
and mirrors the trust Secret into a directory in the kubelet's layout; the reference receiver runs as
its own process on a loopback port with its own serving certificate and reloads from that directory;
the provider simulator presents the certificates the operator issued, from the bundles a client would
submit, and signs each delivery as the provider does (v6), which the receiver verifies: mTLS and the
signature both have to hold. Nothing here is timed: each test waits, generously, for a behaviour, and
then asserts it. The endpoint and the provider as the tests drive them are in endpoints.py.
"""

from __future__ import annotations

import base64
import collections
import datetime
import json
import pathlib
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests import conftest, processes, whc

# The other e2e modules take these from here (``reload.Client``...), as they did before endpoints.py.
from tests.e2e.endpoints import (  # noqa: F401 - re-exported
    BUNDLE_PASSWORD,
    RATE,
    TRUST_SECRET,
    Campaign,
    Client,
    Endpoint,
    Provider,
    ProviderKey,
    TlsEndpoint,
    client_from_secret,
    expired_twin,
    provider_key,
    write_client,
)
from tests.unit import mtls_pki
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, names, pki
from webhookcerts.receiver import providersim

pytestmark = pytest.mark.e2e

EndpointFactory = Callable[[], Endpoint]


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory: pytest.TempPathFactory) -> mtls_pki.Pki:
    """The receiver's own serving certificate and CA, and a self-signed stranger."""
    return mtls_pki.make(tmp_path_factory.mktemp("server-pki"))


@pytest.fixture
def endpoint(
    cluster: devcluster.DevCluster,
    namespace: str,
    server_pki: mtls_pki.Pki,
    tmp_path: pathlib.Path,
) -> Iterator[EndpointFactory]:
    """Starts (once the trust Secret exists) trust-sync and then the receiver, which requires the
    provider's signature (its key directory, as a mounted Secret gives it); stops both afterwards.
    The provider's signing key is made here, so that the modules that take this fixture need no other."""
    signing_key = provider_key(tmp_path / "provider-signing")
    procs: list[subprocess.Popen[bytes]] = []
    logs = {"trust-sync": tmp_path / "trust-sync.log", "receiver": tmp_path / "receiver.log"}
    env = {"KUBECONFIG": str(cluster.kubeconfig)}

    def start() -> Endpoint:
        trust_dir = tmp_path / "trust"
        sync_argv = ["trust-sync", "--secret", f"{namespace}/{TRUST_SECRET}", "--dir", str(trust_dir)]
        procs.append(processes.spawn(sync_argv, logs["trust-sync"], env))
        conftest.wait_for(lambda: (trust_dir / names.TRUST_KEY).exists(), what="trust-sync to write the trust store")
        server = server_pki.server
        keys = ["--signature-key", str(signing_key.public_dir), "--signature-scheme", "provider-v6"]
        receiver = processes.receiver(server.cert_path, server.key_path, trust_dir, logs["receiver"], *keys, env=env)
        procs.append(receiver)
        port = conftest.wait_for(
            lambda: processes.listening_port(receiver, logs["receiver"]), what="the receiver to listen"
        )
        server_ca = server_pki.server_ca.cert_path
        return Endpoint(port, server_ca, trust_dir, logs["receiver"], logs["trust-sync"], signing=signing_key)

    try:
        yield start
    finally:
        for proc in reversed(procs):
            processes.stop(proc)
        for name, path in logs.items():
            if path.exists():
                print(f"--- {name} log ---\n{path.read_text(errors='replace')[-12000:]}")


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
    # The receiver saw each of them, by the certificate that carried it, and verified each signature.
    assert ep.delivered_by(old.fingerprint) >= sum(s["delivered"] for s in summaries["old"])
    assert ep.delivered_by(new.fingerprint) >= sum(s["delivered"] for s in summaries["new"])
    assert ep.unverified_deliveries() == []
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
    kept.request("POST", "/webhooks", body=b'{"event": "before"}', headers=ep.signed(b'{"event": "before"}'))
    before = kept.getresponse()
    before.read()
    assert before.status == 200

    api.emergency(name, "INC-4242")
    conftest.wait_for(lambda: ep.refuses(compromised), what="the receiver to refuse the compromised certificate")
    # The keep-alive connection from before is told to reconnect (and then cannot), well within the
    # receiver's idle timeout.
    kept.request("POST", "/webhooks", body=b'{"event": "after"}', headers=ep.signed(b'{"event": "after"}'))
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
        config = ep.simulator(
            bundle(client),
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


def test_no_certificate_a_stranger_an_expired_certificate_tls_1_1_and_an_unsigned_delivery_are_refused(
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

    # mTLS and the provider's signature both hold. With the trusted certificate, a delivery without a
    # signature, and one signed under the provider's keyid by a key the receiver does not hold (a
    # forgery), are answered 401 after the handshake, while the signed one is delivered; and below, a
    # valid signature (every curl signs unless told not to) gets no untrusted certificate in.
    assert ep.signing is not None
    forger = provider_key(tmp_path / "forger", ep.signing.key_id)
    assert ep.curl(trusted, unsigned=True) == (0, "401")
    assert ep.curl(trusted, signed_by=forger) == (0, "401")
    assert ep.curl(trusted) == (0, "200")
    refused = [r for r in ep.records("delivery") if r["status"] == 401]
    assert [r["client_fingerprint"] for r in refused] == [trusted.fingerprint] * 2
    assert "signature-input header missing" in refused[0]["reason"], refused
    assert "signature does not verify" in refused[1]["reason"], refused

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
    # Only the trusted certificate ever got a 200, and only with the provider's signature.
    assert {r["client_fingerprint"] for r in ep.records("delivery") if r["status"] == 200} == {trusted.fingerprint}
    assert ep.unverified_deliveries() == []


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

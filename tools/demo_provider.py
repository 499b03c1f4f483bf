"""The provider's side of the demo: the provider simulator delivering without pause, counted per step,
and what the receiver's log says it accepted.

The provider signs every webhook (its "v6" scheme) with a signing key of its own, and the receiver
verifies the signature: so the simulator signs, and so does the demo's probe, whose question is the TLS
layer's verdict alone (an HTTP answer of any status means the handshake accepted the certificate)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import http.client
import json
import pathlib
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from demo_console import NAMESPACE, DemoError, Timeline, Tools
from webhookcerts.receiver import providersim, signatures, signing

RATE = 4.0  # deliveries per second and environment: enough to see, little for 2 cores
# Many providers' HTTP clients speak TLS 1.2, where the client's certificate travels in the clear: the
# reference receiver can then name a certificate it refused (a revoked one knocking) in its report.
TLS_MAX = "1.2"


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """The provider's webhook signing key: the private half stays with the provider (the simulator),
    the public half (``<keyid>.pem``) goes to the receiver."""

    key_id: str
    private: pathlib.Path
    public: pathlib.Path

    def sign(self, url: str, body: bytes) -> dict[str, str]:
        """A POST's headers, signed as the provider signs its webhooks."""
        key = signatures.load_private_key(self.private)
        signer = signing.signer(signing.DEFAULT_SCHEME, key, key_id=self.key_id)
        return signer.sign("POST", url, {"Content-Type": "application/json"}, body)


def signing_key(directory: pathlib.Path, key_id: str) -> SigningKey:
    """A new ECDSA P-256 key, one of the key types the provider signs with."""
    directory.mkdir(mode=0o700, parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "signing-key.pem", directory / f"{key_id}.pem"
    private.touch(mode=0o600)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return SigningKey(key_id, private, public)


class Provider:
    """The provider simulator for one environment, delivering without pause with the bundle it was last
    given, signed with the provider's key, in short campaigns whose outcomes are counted under the step
    the demo is in."""

    def __init__(self, environment: str, url: str, ca: pathlib.Path, password: bytes, key: SigningKey) -> None:
        self.environment, self.url, self.ca, self.password, self.key = environment, url, ca, password, key
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

    def current_bundle(self) -> bytes:
        assert self.bundle is not None
        return self.bundle.read_bytes()

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
                signing_key=self.key.private,
                key_id=self.key.key_id,
                rate=RATE,
                count=int(RATE * 2),
                # A provider retries; a refused certificate is refused again, so few attempts suffice.
                max_attempts=3,
                backoff_initial=0.2,
                timeout=10.0,
                tls_max=TLS_MAX,
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
    verified: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # by keyid


def receiver_log(tools: Tools, pod: str) -> list[tuple[str, dict[str, Any]]]:
    """The receiver's JSON records with their ``kubectl logs --timestamps`` stamps."""
    out = tools.kubectl("logs", "--timestamps", "-n", NAMESPACE, pod, show=False, check=False)
    records = []
    for line in out.splitlines():
        stamp, _, text = line.partition(" ")
        if text.startswith("{"):
            records.append((stamp, json.loads(text)))
    return records


def enter(providers: dict[str, Provider], step: str) -> None:
    for provider in providers.values():
        provider.enter(step)


def accepted_by_receiver(records: list[tuple[str, dict[str, Any]]], timeline: Timeline) -> dict[str, Accepted]:
    """Deliveries the receiver answered 200, by client certificate fingerprint, with the first and the
    last one on the demo's clock, and the signatures it verified on them (the keyid it logs)."""
    found: dict[str, Accepted] = collections.defaultdict(Accepted)
    for stamp, record in records:
        if record.get("event") == "delivery" and record.get("status") == 200:
            at = timeline.since_start(datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")))
            seen = found[record["client_fingerprint"]]
            seen.first = at if not seen.count else seen.first
            seen.count, seen.last = seen.count + 1, at
            if record.get("signature_keyid"):
                seen.verified[f"{record['signature_keyid']} ({record.get('signature_alg')})"] += 1
    return found


def unauthorized(records: list[tuple[str, dict[str, Any]]]) -> collections.Counter[str]:
    """Deliveries the receiver answered 401 (signature refused after the handshake), by reason."""
    return collections.Counter(
        r["reason"] for _, r in records if r.get("event") == "delivery" and r.get("status") == 401
    )


def answer(port: int, ctx: Any, headers: dict[str, str], body: bytes) -> int | None:
    """The HTTP status a fresh connection presenting ``ctx``'s certificate gets for a POST, or None
    when the TLS handshake refuses the certificate (an answer of any status means TLS accepted it)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("POST", "/webhooks", body=body, headers=headers)
        return conn.getresponse().status
    except OSError:  # ssl.SSLError included: under TLS 1.3 the refusal arrives on the first read
        return None
    finally:
        conn.close()


def refuses(port: int, ctx: Any, key: SigningKey) -> bool:
    """Whether the handshake of a fresh connection presenting ``ctx``'s certificate is refused. The probe
    is signed, so that it asks the TLS layer only: an answer (even a 401) means the certificate got in."""
    body = b'{"probe": "containment"}'
    return answer(port, ctx, key.sign(f"https://127.0.0.1:{port}/webhooks", body), body) is None

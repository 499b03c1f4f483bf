"""``make demo``: the whole story on the local cluster, in a few minutes, with nothing left running.

A local cluster with its node, the CRD applied with kubectl, the operator installed with the chart
(``helm install --wait``), a sandbox and a live WebhookCertificate, the reference receiver as a
Deployment reading the trust Secret (a ``reload: Hot`` consumer) and reporting which client
certificate each delivery presented (its PresentationReport, issue 24), and the provider simulator
delivering to it over TLS 1.2 with the bundles the plugin exports, signed as the provider signs its
webhooks (the receiver verifies with the provider's public key, mounted from a Secret as a key
directory). Then a planned rotation of sandbox, whose ``cutover.policy: Observed`` has the operator cut
over by itself once the receiver's reports show the provider switched; and an emergency rotation of
live, whose provider keeps presenting the compromised certificate for a moment: the receiver names the
certificate it refused and the operator raises the ``RevokedCertificatePresented`` alarm. Every command
a user would type is printed as it runs; the end is a timeline: what happened when (what the operator
concluded from the reports among it), deliveries delivered and failed per step, which certificate the
receiver accepted, the signatures it verified, what the operator saw, and how long containment took.

The cluster lives in a temporary directory and everything it runs is stopped and removed at the end,
on Ctrl-C or SIGTERM too (``devcluster`` ties each process to this one as well).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import pathlib
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "operator"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

# Beside this file (a script's directory is on sys.path): what the demo shows, and the provider.
from tests.unit import mtls_pki  # noqa: E402  (throw-away serving certificates, as the benchmarks use)

from demo_console import NAMESPACE, DemoError, Timeline, Tools, ready, tools_env  # noqa: E402
from demo_observed import (  # noqa: E402
    OBSERVED,
    REPORT_INTERVAL,
    REPORTER_ACCOUNT,
    announced,
    helm_values,
    narrate,
    operator_saw,
    service_account,
)
from demo_provider import (  # noqa: E402
    Provider,
    SigningKey,
    answer,
    enter,
    refuses,
    signing_key,
)
from demo_summary import RELEASE_NAMESPACE, summary  # noqa: E402
from webhookcerts.devcluster import base, workloads  # noqa: E402
from webhookcerts.devcluster import cluster as devcluster  # noqa: E402
from webhookcerts.domain import names, pki  # noqa: E402
from webhookcerts.receiver import providersim  # noqa: E402

TRUST = "webhook-trust"
APP = "receiver"
SERVING_PAIR = "receiver-tls"
# The provider's public webhook signing keys, one <keyid>.pem each: the receiver's --signature-key directory.
SIGNATURE_KEYS = "provider-signature-keys"
KEY_ID = "provider-demo"
OBJECTS: dict[str, dict[str, Any]] = {
    # Short lifetimes; the demo brings sandbox's renewal forward when the story gets there (a patch of
    # renewBefore, printed), instead of waiting for a date. Cut over when the reports prove the switch.
    "sandbox": {"duration": "1h", "renewBefore": "30m", "cutover": OBSERVED},
    # The emergency needs no schedule: it renews long after the demo has ended.
    "live": {"duration": "2h", "renewBefore": "1h"},
}


# --- what runs on the cluster -----------------------------------------------------------------------


def webhook_certificate(environment: str, lifetimes: dict[str, Any]) -> dict[str, Any]:
    name = f"upvest-{environment}"
    return {
        "apiVersion": "webhookcerts.io/v1alpha1",
        "kind": "WebhookCertificate",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "environment": environment,
            "subject": {"commonName": f"{environment}.webhooks.example.com", "organization": "Example"},
            "secretName": f"{name}-tls",
            **lifetimes,
            "bundle": {"passwordSecretRef": {"name": "bundle-password", "key": "password"}},
            "trust": {"secretName": TRUST},
            "consumers": [{"selector": {"matchLabels": {"app": APP}}, "reload": "Hot"}],
        },
    }


def secret(name: str, data: dict[str, bytes], kind: str = "Opaque") -> dict[str, Any]:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    metadata = {"name": name, "namespace": NAMESPACE}
    return {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": metadata, "data": encoded}


def export(tools: Tools, name: str, out: pathlib.Path, *, next_: bool = False) -> pathlib.Path:
    """``kubectl webhookcerts export``: the bundle files to submit; the PKCS#12 one is what the provider loads."""
    args = ["webhookcerts", "export", name, "-n", NAMESPACE, "--out", str(out)]
    tools.kubectl(*args, *(["--next"] if next_ else []), echo=True)
    status = tools.status(name)
    serial = status["next" if next_ else "current"]["serial"]
    environment = name.removeprefix("upvest-")
    return out / f"{pki.bundle_stem(environment, name, serial)}.p12"


# --- the story ---------------------------------------------------------------------------------------


def story(tools: Tools, timeline: Timeline, dev: devcluster.DevCluster, work: pathlib.Path) -> list[str]:
    say = timeline.say
    say("CRD: applied with kubectl, as users apply it")
    tools.kubectl("apply", "-f", "crds/")
    # The namespace first: the chart binds the receiver's account in it to the reporter ClusterRole.
    tools.kubectl("create", "namespace", NAMESPACE)
    say("the operator: installed with the chart on the node")
    tools.run(
        "helm", "install", "webhookcerts", "charts/webhookcerts", "-n", RELEASE_NAMESPACE, "--create-namespace",
        # The CRD is kubectl's, not the chart's: Helm would refuse to take it over.
        "-f", str(dev.chart_values), "--set", "crds.enabled=false", "--wait", "--timeout=5m",
        # The receiver is told of trust changes (consumers, Hot): rights off unless asked for.
        "--set", "consumers.enabled=true",
        # The receiver reports what it sees: its ServiceAccount may write its own pod's report.
        *helm_values(),
    )  # fmt: skip
    password = secrets.token_urlsafe(18).encode()
    served = mtls_pki.make(work / "serving-pki")
    server = served.server
    port = base.free_port()
    # Created, not applied (`kubectl apply` would keep a copy in an annotation), and never printed: the
    # bundle password reaches the provider by another channel.
    tools.apply(
        secret("bundle-password", {"password": password}),
        secret(
            SERVING_PAIR,
            {names.TLS_CERT: server.cert_pem, names.TLS_KEY: server.key_path.read_bytes()},
            "kubernetes.io/tls",
        ),
        verb="create",
    )
    say("the provider's webhook signing key (ECDSA P-256): its public key for the receiver, in a Secret")
    key = signing_key(work / "provider-signing", KEY_ID)
    tools.kubectl(
        "create", "secret", "generic", SIGNATURE_KEYS, "-n", NAMESPACE, f"--from-file={key.public.name}={key.public}",
        echo=True,
    )  # fmt: skip
    say("two WebhookCertificates: upvest-sandbox (a planned rotation soon) and upvest-live")
    tools.apply(*(webhook_certificate(env, lifetimes) for env, lifetimes in OBJECTS.items()))
    for env in OBJECTS:
        timeline.wait(f"upvest-{env} to be Ready", functools.partial(ready, tools, f"upvest-{env}"))
    tools.kubectl("get", "whc", "-n", NAMESPACE, echo=True)
    say(
        "the reference receiver: a Deployment reading the trust Secret, nudged by the operator on change, "
        f"requiring the provider's signature (--signature-key /signature-keys, the Secret {SIGNATURE_KEYS}), "
        f"reporting the certificates presented to it (--report-trust-secret {TRUST}, as ServiceAccount "
        f"{REPORTER_ACCOUNT})"
    )
    tools.apply(
        service_account(),
        workloads.receiver_deployment(
            APP,
            dev.images["webhookcerts"],
            port,
            trust_secret=TRUST,
            tls_secret=SERVING_PAIR,
            namespace=NAMESPACE,
            signature_keys=SIGNATURE_KEYS,
            reporting=workloads.Reporting(REPORTER_ACCOUNT, dev.pod_api_env(), REPORT_INTERVAL),
        ),
    )

    def serving_pod() -> str | None:
        out = tools.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app={APP}", "-o", "json", show=False)
        pods = [p for p in json.loads(out)["items"] if p["status"].get("phase") == "Running"]
        if len(pods) != 1:
            return None
        name: str = pods[0]["metadata"]["name"]
        logs = tools.kubectl("logs", "-n", NAMESPACE, name, show=False, check=False)
        return name if '"event": "listening"' in logs else None

    pod = timeline.wait("the receiver pod to listen", serving_pod)
    url = f"https://127.0.0.1:{port}/webhooks"
    bundles = work / "bundles"
    providers = {env: Provider(env, url, served.server_ca.cert_path, password, key) for env in OBJECTS}
    serials: dict[str, str] = {}
    for env, provider in providers.items():
        name = f"upvest-{env}"
        say(f"{name}: the bundle exported for the provider (submitted, with its password, securely)")
        provider.use(export(tools, name, bundles))
        current = tools.status(name)["current"]
        serials[current["fingerprint"]] = f"{env} {current['serial'][:12]}"
        provider.enter("steady")
        provider.start()
    try:
        return rotations(
            tools, timeline, providers, bundles, serials, pod, port, served.server_ca.cert_path, password, key
        )
    finally:
        for provider in providers.values():
            provider.stop()


def rotations(
    tools: Tools,
    timeline: Timeline,
    providers: dict[str, Provider],
    bundles: pathlib.Path,
    serials: dict[str, str],
    pod: str,
    port: int,
    server_ca: pathlib.Path,
    password: bytes,
    key: SigningKey,
) -> list[str]:
    say = timeline.say
    sandbox, live = providers["sandbox"], providers["live"]
    for provider in providers.values():
        provider.delivered_a_campaign()
    say("the provider delivers to both environments, each webhook signed (provider-v6) and verified")
    signatures_hold(timeline, port, key, providersim.client_context(sandbox.current_bundle(), password, server_ca))

    # Planned rotation: a new certificate beside the old, the provider moves, then the cut-over.
    enter(providers, "planned rotation")
    say("upvest-sandbox: renewal brought forward (renewBefore close to duration makes it due now)")
    renew_before(tools, "upvest-sandbox", "59m59s")
    pending = timeline.wait(
        "upvest-sandbox's planned rotation (renewBefore reached)",
        lambda: tools.status("upvest-sandbox").get("next"),
        180,
    )
    # Back to the usual margin, so that the certificate the cut-over makes current is not due at once.
    renew_before(tools, "upvest-sandbox", OBJECTS["sandbox"]["renewBefore"])
    say(f"upvest-sandbox: planned rotation started, next serial {pending['serial']}; the trust store lists both")
    serials[pending["fingerprint"]] = f"sandbox {pending['serial'][:12]} (next)"
    timeline.wait("the next bundle", lambda: tools.status("upvest-sandbox").get("bundle"), 60)
    new_bundle = timeline.wait("the next bundle's files", lambda: try_export(tools, "upvest-sandbox", bundles), 60)
    say("upvest-sandbox: the new bundle submitted; the provider switches to it")
    sandbox.use(new_bundle)
    say("upvest-sandbox: cutover.policy Observed, so no `webhookcerts cutover`: the operator waits for the reports")
    narrate(
        tools,
        timeline,
        "upvest-sandbox",
        "the operator to cut over by itself",
        lambda s: (s.get("current") or {}).get("fingerprint") == pending["fingerprint"],
        300,
    )
    announced(tools, timeline, "upvest-sandbox", "ObservedCutover")
    say("upvest-sandbox: cut over by itself: the old certificate retired, its key destroyed, no longer trusted")
    sandbox.delivered_a_campaign()

    # Emergency: trust removed first, then the new key, the provider moves, the cut-over.
    compromised = tools.status("upvest-live")["current"]
    compromised_ctx = providersim.client_context(
        (bundles / f"{pki.bundle_stem('live', 'upvest-live', compromised['serial'])}.p12").read_bytes(),
        password,
        server_ca,
    )
    enter(providers, "emergency")
    serials[compromised["fingerprint"]] += " (compromised)"
    say(f"upvest-live: key exposed (incident INC-DEMO-1): emergency rotation of serial {compromised['serial']}")
    annotated = timeline.now()
    rotate = subprocess.Popen(
        ["kubectl", "webhookcerts", "rotate", "upvest-live", "--emergency", "--reason", "INC-DEMO-1", "-n", NAMESPACE],
        env=tools.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    print(f"         $ {shlex.join(rotate.args)}  (waits for the replacement)", flush=True)  # type: ignore[arg-type]
    timeline.wait(
        "the receiver to refuse the compromised certificate", lambda: refuses(port, compromised_ctx, key), 120
    )
    contained = timeline.now() - annotated
    say(f"upvest-live: contained in {contained:.1f} s: the receiver refuses the compromised certificate")
    # The provider has not installed the replacement yet and keeps presenting the compromised certificate
    # (over TLS 1.2, in the clear: the receiver names what it refused, and reports it).
    announced(tools, timeline, "upvest-live", "RevokedCertificatePresented")
    output, errors = rotate.communicate(timeout=300)
    if rotate.returncode != 0:
        raise DemoError(f"kubectl webhookcerts rotate failed: {errors.strip()}")
    for line in output.rstrip().splitlines():
        print(f"           {line}", flush=True)
    replacement = tools.status("upvest-live")["next"]
    serials[replacement["fingerprint"]] = f"live {replacement['serial'][:12]} (replacement)"
    say(f"upvest-live: replacement issued, serial {replacement['serial']}; the compromised bundle was withdrawn")
    new_live = timeline.wait("the replacement's bundle", lambda: try_export(tools, "upvest-live", bundles), 60)
    say("upvest-live: the replacement submitted to the provider")
    live.use(new_live)
    live.delivered_a_campaign()
    tools.kubectl("webhookcerts", "cutover", "upvest-live", "-n", NAMESPACE, echo=True)
    say("upvest-live: cut over to the replacement; the compromised certificate stays revoked")
    enter(providers, "after")
    for provider in providers.values():
        provider.delivered_a_campaign()
    tools.kubectl("webhookcerts", "status", "-n", NAMESPACE, "-o", "wide", echo=True)
    tools.kubectl("webhookcerts", "history", "upvest-live", "-n", NAMESPACE, echo=True)
    return [
        *summary(tools, timeline, providers, serials, pod, contained),
        *operator_saw(tools, timeline, ["upvest-sandbox", "upvest-live"]),
    ]


def signatures_hold(timeline: Timeline, port: int, key: SigningKey, trusted: Any) -> None:
    """mTLS and the signature both hold: with a trusted certificate, a delivery without the provider's
    signature is answered 401 (after the handshake), the same delivery signed 200."""
    body = b'{"probe": "unsigned"}'
    unsigned = answer(port, trusted, {"Content-Type": "application/json"}, body)
    signed = answer(port, trusted, key.sign(f"https://127.0.0.1:{port}/webhooks", body), body)
    if (unsigned, signed) != (401, 200):
        raise DemoError(f"with a trusted certificate, unsigned got {unsigned} and signed got {signed}, not 401 and 200")
    timeline.say("a delivery with upvest-sandbox's trusted certificate but no signature: 401; signed: 200")


def renew_before(tools: Tools, name: str, value: str) -> None:
    patch = json.dumps({"spec": {"renewBefore": value}})
    tools.kubectl("patch", "whc", name, "-n", NAMESPACE, "--type", "merge", "-p", patch, echo=True)


def try_export(tools: Tools, name: str, out: pathlib.Path) -> pathlib.Path | None:
    try:
        return export(tools, name, out, next_=True)
    except DemoError:
        return None  # the operator writes the next bundle a moment after the next certificate


@contextlib.contextmanager
def _cluster(timeline: Timeline, directory: pathlib.Path) -> Iterator[devcluster.DevCluster]:
    dev = devcluster.DevCluster(directory / "cluster", tie_to_parent=True)
    try:
        timeline.say("the local cluster: etcd, kube-apiserver and a node (containerd, kubelet), about a minute")
        dev.up(node=True, log=lambda m: timeline.say(m, keep=False))
        yield dev
    finally:
        timeline.say("stopping the cluster and everything it ran", keep=False)
        dev.down()


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    timeline = Timeline()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="webhookcerts-demo-") as tmp,
            _cluster(timeline, pathlib.Path(tmp)) as dev,
        ):
            lines = story(Tools(timeline, tools_env(dev)), timeline, dev, pathlib.Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: the cluster and everything it ran were stopped", file=sys.stderr)
        return 130
    except (DemoError, devcluster.DevClusterError) as exc:
        print(f"\nmake demo: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    print(f"\nAll done in {timeline.stamp()}; nothing is left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

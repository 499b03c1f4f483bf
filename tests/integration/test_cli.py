"""The ``webhookcerts`` command and the ``kubectl webhookcerts`` plugin, run as users run them.

Every call is the installed console script in a subprocess against the real API server, with the
operator running where a verb needs it: the status table, an emergency rotation followed by a cut-over
and the history it leaves, the exported bundle opened by openssl, and the one-line errors for an unknown
name, a missing permission and a missing kubeconfig.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from tests import conftest, whc
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import models, names, pki

pytestmark = pytest.mark.integration

# The console scripts pip installed beside the interpreter running the tests.
VENV_BIN = pathlib.Path(sys.executable).parent
PASSWORD = "correct horse battery staple"
TIME = "%Y-%m-%dT%H:%M:%SZ"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _env(**extra: str) -> dict[str, str]:
    # Nothing from the developer's shell may pick the cluster or the namespace for the command.
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    # The code of this checkout, as for the operator processes (tests/processes.py): the console script
    # alone imports whichever checkout the shared venv was installed from.
    env["PYTHONPATH"] = str(conftest.REPO / "operator")
    env.update(extra)
    return env


def webhookcerts(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "webhookcerts"), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else _env(),
        timeout=300,
    )


@pytest.fixture
def api(api_client: kubernetes.client.ApiClient, namespace: str) -> whc.Api:
    return whc.Api(api_client, namespace)


@pytest.fixture
def cli(cluster: devcluster.DevCluster, namespace: str) -> Cli:
    """``webhookcerts VERB ARGS... --kubeconfig K -n NS``: the admin in the test's namespace."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return webhookcerts(*args, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace)

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failing command prints: exit 1, no traceback, nothing on stdout."""
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows by their first cell; no cell of ours contains a space."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    return lines[0], {row[0]: row for row in lines[1:]}


def ready(api: whc.Api, name: str) -> bool:
    condition = api.condition(name, names.READY)
    return condition is not None and condition.status == "True"


def stamp(value: Any) -> str:
    return str(value.strftime(TIME))


# --- status ----------------------------------------------------------------------------------------


@pytest.mark.long
def test_status_shows_expiry_renewal_stage_and_next_serial(
    api: whc.Api,
    operator: conftest.OperatorProcess,
    cli: Cli,
    cluster: devcluster.DevCluster,
    bin_dir: pathlib.Path,
    namespace: str,
) -> None:
    api.create("sandbox", environment="sandbox")
    # Renewal is due at once: this one sits in Rotating with a pending next serial.
    api.create("live", environment="live", duration="1h", renewBefore="59m50s", trust={"secretName": "live-trust"})
    conftest.wait_for(lambda: ready(api, "sandbox"), what="sandbox Ready")
    conftest.wait_for(lambda: api.status("live").stage == "Rotating", timeout=120, what="live Rotating")
    sandbox, live = api.status("sandbox"), api.status("live")
    assert sandbox.current is not None and sandbox.renewal_time is not None
    assert live.current is not None and live.next is not None and live.renewal_time is not None

    direct = ok(cli("status"))
    header, rows = table(direct)
    assert header == ["NAME", "ENVIRONMENT", "EXPIRES", "RENEWAL", "STAGE", "NEXT"]
    assert rows == {
        "sandbox": [
            "sandbox",
            "sandbox",
            stamp(sandbox.current.not_after),
            stamp(sandbox.renewal_time),
            "Active",
            "-",
        ],
        "live": ["live", "live", stamp(live.current.not_after), stamp(live.renewal_time), "Rotating", live.next.serial],
    }

    # The same table through kubectl, which finds the plugin on PATH and hands it $KUBECONFIG; -n before
    # the verb, as kubectl users type it.
    path = os.pathsep.join([str(bin_dir), str(VENV_BIN), os.environ.get("PATH", "")])
    plugin = subprocess.run(
        [str(bin_dir / "kubectl"), "webhookcerts", "-n", namespace, "status"],
        capture_output=True,
        text=True,
        env=_env(PATH=path, KUBECONFIG=str(cluster.kubeconfig)),
        timeout=120,
    )
    assert ok(plugin) == direct

    wide_header, wide = table(ok(cli("status", "-o", "wide")))
    assert wide_header[:6] == header and "SERIAL" in wide_header
    assert wide["live"][wide_header.index("SERIAL")] == live.current.serial
    assert wide["live"][wide_header.index("NEXT-REASON")] == "Planned"
    assert wide["sandbox"][wide_header.index("READY")] == "True"

    everywhere = [line.split() for line in ok(cli("status", "-A")).splitlines()]
    assert everywhere[0] == ["NAMESPACE", *header]
    assert [r[:2] for r in everywhere if r[0] == namespace] == [[namespace, "live"], [namespace, "sandbox"]]

    listing = json.loads(ok(cli("status", "-o", "json")))
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "List")
    items = {i["metadata"]["name"]: i["status"] for i in listing["items"]}
    assert items["live"]["next"]["serial"] == live.next.serial
    assert items["live"]["current"]["fingerprint"] == live.current.fingerprint
    assert items["sandbox"]["stage"] == "Active" and items["sandbox"].get("next") is None

    _, one = table(ok(cli("status", "sandbox")))
    assert list(one) == ["sandbox"]


def test_namespace_comes_from_the_kubeconfig_context(
    api: whc.Api, crd_installed: None, cluster: devcluster.DevCluster, namespace: str, tmp_path: pathlib.Path
) -> None:
    api.create("here")  # no operator: a row of dashes is still a row
    config = json.loads(cluster.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))

    _, rows = table(ok(webhookcerts("status", "--kubeconfig", str(kubeconfig))))
    assert rows == {"here": ["here", "sandbox", "-", "-", "-", "-"]}
    # -n wins over the context, as in kubectl.
    error = failed(webhookcerts("status", "here", "--kubeconfig", str(kubeconfig), "-n", "default"))
    assert error == "webhookcerts: webhookcertificate here not found in namespace default\n"


# --- rotate, cutover, history ----------------------------------------------------------------------


def test_emergency_rotation_then_cutover_then_history(
    api: whc.Api, operator: conftest.OperatorProcess, cli: Cli
) -> None:
    api.create("incident")
    conftest.wait_for(lambda: ready(api, "incident"), what="Ready=True")
    compromised = api.status("incident").current
    assert compromised is not None
    assert "no rotation is pending for incident" in failed(cli("cutover", "incident"))
    assert "--emergency" in failed(cli("rotate", "incident", "--reason", "INC-4242"))

    said = ok(cli("rotate", "incident", "--emergency", "--reason", "INC-4242", "--timeout", "120"))
    status = api.status("incident")
    assert status.stage == "Compromised"
    assert status.last_emergency_rotation is not None and status.last_emergency_rotation.reference == "INC-4242"
    assert status.next is not None and status.next.reason == "Emergency"
    assert f"compromised: serial {compromised.serial}, removed from the trust store" in said
    assert f"new:         serial {status.next.serial}" in said
    _, rows = table(ok(cli("status", "incident")))
    assert rows["incident"][4:] == ["Compromised", status.next.serial]

    assert "INC-4242 was already handled" in failed(cli("rotate", "incident", "--emergency", "--reason", "INC-4242"))
    refused = failed(cli("cutover", "incident", "--serial", "DEADBEEF"))
    assert f"that is serial {status.next.serial}" in refused
    assert names.CUTOVER_ANNOTATION not in (api.get("incident")["metadata"].get("annotations") or {})

    said = ok(cli("cutover", "incident", "--timeout", "120"))
    after = api.status("incident")
    assert after.stage == "Active"
    assert after.current is not None and after.current.fingerprint == status.next.fingerprint
    assert f"serial {status.next.serial} is now current" in said
    assert f"retired: serial {compromised.serial} (Compromised, incident INC-4242)" in said

    text = ok(cli("history", "incident"))
    history_header, history = table(text.split("\n\n")[0])
    assert history_header == [
        "SERIAL",
        "FINGERPRINT",
        "NOT",
        "AFTER",
        "REASON",
        "RETIRED",
        "AT",
        "INCIDENT",
        "LAST",
        "PRESENTED",
    ]
    entry = after.history[0]
    assert history == {
        compromised.serial: [
            compromised.serial,
            compromised.fingerprint[:16],
            stamp(compromised.not_after),
            "Compromised",
            stamp(entry.retired_at),
            "INC-4242",
            "-",  # no endpoint reports: never seen presented after its retirement
        ]
    }
    revoked = text.split("\n\n")[1].splitlines()
    assert revoked[0].startswith("Revoked fingerprints (1)")
    assert [line.strip() for line in revoked[1:]] == [compromised.fingerprint]

    document = json.loads(ok(cli("history", "incident", "-o", "json")))
    assert document["revokedFingerprints"] == after.revoked_fingerprints
    assert [models.HistoryEntry.model_validate(h) for h in document["history"]] == after.history
    assert "no rotation is pending" in failed(cli("cutover", "incident"))


# --- export ----------------------------------------------------------------------------------------


def _openssl(*args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    # The password goes through the environment, not a command line that `ps` shows.
    env = {**os.environ, "BUNDLE_PASSWORD": password}
    return subprocess.run(["openssl", *args], capture_output=True, text=True, env=env, timeout=120)


def _exported(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    return {path.name: path for path in directory.iterdir()}


def _check_bundle(files: dict[str, pathlib.Path], stem: str, fingerprint: str) -> None:
    assert sorted(files) == [f"{stem}.crt.pem", f"{stem}.key.enc.pem", f"{stem}.manifest.txt", f"{stem}.p12"]
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    p12, cert, key = files[f"{stem}.p12"], files[f"{stem}.crt.pem"], files[f"{stem}.key.enc.pem"]

    info = _openssl("pkcs12", "-info", "-noout", "-in", str(p12), "-passin", "env:BUNDLE_PASSWORD")
    assert info.returncode == 0, info.stderr
    assert _openssl("pkcs12", "-info", "-noout", "-in", str(p12), "-passin", "pass:wrong").returncode != 0
    assert _openssl("pkey", "-in", str(key), "-noout", "-passin", "pass:wrong").returncode != 0
    # The encrypted key belongs to the certificate: both name the same public key.
    from_key = _openssl("pkey", "-in", str(key), "-pubout", "-passin", "env:BUNDLE_PASSWORD")
    from_cert = _openssl("x509", "-in", str(cert), "-noout", "-pubkey")
    assert from_key.returncode == 0, from_key.stderr
    assert from_key.stdout == from_cert.stdout
    printed = _openssl("x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256").stdout
    assert pki.normalize_fingerprint(printed.split("=", 1)[1]) == fingerprint


def test_export_writes_bundle_files_that_openssl_opens(
    api: whc.Api, operator: conftest.OperatorProcess, cli: Cli, tmp_path: pathlib.Path
) -> None:
    api.create("plain")
    error = failed(cli("export", "plain", "--out", str(tmp_path / "none")))
    assert "plain has no bundle" in error and "spec.bundle.passwordSecretRef" in error
    assert "spec.bundle.recipients" in error
    assert not (tmp_path / "none").exists()

    api.core.create_namespaced_secret(
        api.namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="bundle-password"), string_data={"password": PASSWORD}
        ),
    )
    api.create("shop", bundle={"passwordSecretRef": {"name": "bundle-password"}})
    conftest.wait_for(
        lambda: (c := api.condition("shop", names.BUNDLE_READY)) is not None and c.status == "True",
        what="BundleReady",
    )
    current = api.status("shop").current
    assert current is not None

    out = tmp_path / "current"
    result = cli("export", "shop", "--out", str(out))
    said = ok(result) + result.stderr
    _check_bundle(_exported(out), f"sandbox-shop-{current.serial}", current.fingerprint)
    assert PASSWORD not in said and "PRIVATE KEY" not in said
    assert "Secret bundle-password" in said
    assert "no pending next certificate" in failed(cli("export", "shop", "--next", "--out", str(tmp_path / "x")))

    ok(cli("rotate", "shop", "--emergency", "--reason", "INC-77", "--timeout", "120"))
    pending = api.status("shop").next
    assert pending is not None
    out_next = tmp_path / "next"
    ok(cli("export", "shop", "--next", "--out", str(out_next)))
    _check_bundle(_exported(out_next), f"sandbox-shop-{pending.serial}", pending.fingerprint)
    # The compromised certificate is never exported: the error names the command for its replacement.
    withdrawn = failed(cli("export", "shop", "--out", str(tmp_path / "old")))
    assert f"serial {current.serial} of shop is compromised (incident INC-77)" in withdrawn
    assert f"webhookcerts export shop -n {api.namespace} --next --out {tmp_path / 'old'}" in withdrawn


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "nosuch"),
        ("history", "nosuch"),
        ("export", "nosuch", "--out", "unused"),
        ("rotate", "nosuch", "--emergency", "--reason", "INC-1"),
        ("cutover", "nosuch"),
    ],
)
def test_an_unknown_name_is_one_line_and_exit_1(
    crd_installed: None, cli: Cli, namespace: str, argv: tuple[str, ...]
) -> None:
    assert failed(cli(*argv)) == f"webhookcerts: webhookcertificate nosuch not found in namespace {namespace}\n"


def test_a_token_without_permissions_is_told_permission_denied(
    crd_installed: None,
    cluster: devcluster.DevCluster,
    kubectl: conftest.KubectlRunner,
    namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    kubectl("create", "serviceaccount", "auditor", "-n", namespace)
    kubeconfig = conftest.token_kubeconfig(
        kubectl, cluster, "auditor", namespace, tmp_path / "kubeconfig", default_namespace=True
    )
    denied = failed(webhookcerts("status", "--kubeconfig", str(kubeconfig)))
    assert denied.startswith("webhookcerts: permission denied: ")
    # The namespace came from the context, and the server's reason is passed on.
    reason = f'cannot list resource "webhookcertificates" in API group "webhookcerts.io" in the namespace "{namespace}"'
    assert reason in denied
    denied = failed(webhookcerts("history", "anything", "--kubeconfig", str(kubeconfig)))
    assert denied.startswith("webhookcerts: permission denied: ")
    assert 'cannot get resource "webhookcertificates"' in denied

    kubectl("create", "role", "whc-reader", "--verb=get,list", "--resource=webhookcertificates", "-n", namespace)
    kubectl(
        "create", "rolebinding", "auditor", "--role=whc-reader", f"--serviceaccount={namespace}:auditor",
        "-n", namespace,
    )  # fmt: skip
    allowed = conftest.wait_for(
        lambda: (r := webhookcerts("status", "--kubeconfig", str(kubeconfig))).returncode == 0 and r,
        what="the role binding to take effect",
    )
    assert allowed.stderr == f"No webhookcertificates found in namespace {namespace}.\n"


def test_a_missing_kubeconfig_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    error = failed(webhookcerts("status", "--kubeconfig", str(tmp_path / "nonexistent")))
    assert error == f"webhookcerts: kubeconfig {tmp_path / 'nonexistent'} does not exist\n"
    # No flag, no $KUBECONFIG, no ~/.kube/config and not in a Pod: say so instead of trying in-cluster.
    error = failed(webhookcerts("status", env=_env(HOME=str(tmp_path))))
    assert error.startswith("webhookcerts: no kubeconfig: ~/.kube/config does not exist and KUBECONFIG is not set")

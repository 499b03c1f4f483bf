"""``-o yaml|json|wide|name`` of the read verbs, shaped as ``kubectl get`` shapes them, and no key in any.

``status`` prints the WebhookCertificate objects themselves: one named object as itself, anything else
as a v1 List, without managed fields. No output but ``export`` may carry key material: the fixture
cluster holds the private key of the current certificate in the Secret the status names, and it must
not surface in any output format.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.unit import cli_fakes
from webhookcerts.cli import main as cli_main
from webhookcerts.domain import models


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> cli_fakes.FakeCluster:
    cluster = cli_fakes.FakeCluster().install(monkeypatch)
    # Added out of order: the output is sorted by namespace and name, as the API server lists them.
    cluster.add(cli_fakes.whc("zeta", pending=True))
    cluster.add(cli_fakes.whc("alpha"))
    cluster.add(cli_fakes.whc("elsewhere", "other"))
    for obj in cluster.objects.values():
        cluster.add_key_secret(obj["metadata"]["namespace"], obj["status"]["current"]["secretName"])
    return cluster


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli_main.main(["-n", "webhooks", *argv]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out


def parse(text: str, fmt: str) -> Any:
    return json.loads(text) if fmt == "json" else yaml.safe_load(text)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_a_named_object_is_printed_as_itself_without_managed_fields(
    fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    document = parse(run(capsys, "status", "zeta", "-o", fmt), fmt)
    stored = fake.objects["webhooks", "zeta"]
    assert document["apiVersion"] == f"{models.GROUP}/{models.VERSION}" and document["kind"] == models.KIND
    assert document["spec"] == stored["spec"] and document["status"] == stored["status"]
    assert "managedFields" not in document["metadata"]
    assert document["metadata"]["name"] == "zeta" and document["metadata"]["resourceVersion"] == "7"
    # The object read is left as it was: the copy is what lost its managed fields.
    assert stored["metadata"]["managedFields"]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_a_listing_is_a_v1_list_of_the_objects_in_name_order(
    fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    document = parse(run(capsys, "status", "-o", fmt), fmt)
    assert {k: v for k, v in document.items() if k != "items"} == {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }
    assert [i["metadata"]["name"] for i in document["items"]] == ["alpha", "zeta"]
    assert {i["kind"] for i in document["items"]} == {models.KIND}
    assert document["items"][1]["status"]["next"]["serial"] == "BB02"
    everywhere = parse(run(capsys, "status", "-A", "-o", fmt), fmt)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]] == [
        ("other", "elsewhere"),
        ("webhooks", "alpha"),
        ("webhooks", "zeta"),
    ]


def test_json_and_yaml_carry_the_same_document_and_json_is_indented_as_kubectl_does(
    fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    as_json, as_yaml = run(capsys, "status", "-o", "json"), run(capsys, "status", "-o", "yaml")
    assert json.loads(as_json) == yaml.safe_load(as_yaml)
    assert as_yaml.startswith("apiVersion: v1\nitems:\n- apiVersion: ")  # YAML proper, not JSON (also YAML)
    assert as_json.startswith('{\n    "apiVersion": "v1",\n')
    # The certificate reads as PEM in YAML, not as one line of escapes.
    assert "certificate: |\n" in as_yaml and "\\n" not in as_yaml


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_nothing_found_is_an_empty_list_and_no_message(
    fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    assert cli_main.main(["status", "-n", "empty", "-o", fmt]) == 0
    captured = capsys.readouterr()
    assert parse(captured.out, fmt)["items"] == [] and captured.err == ""


def test_wide_adds_columns_to_the_table(fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    narrow = [line.split() for line in run(capsys, "status").splitlines()]
    wide = [line.split() for line in run(capsys, "status", "-o", "wide").splitlines()]
    assert narrow[0] == ["NAME", "ENVIRONMENT", "EXPIRES", "RENEWAL", "STAGE", "NEXT"]
    wide_columns = ["NEXT-REASON", "READY", "SERIAL", "SECRET", "TRUST", "REVISION", "CURRENT-SEEN", "NEXT-SEEN"]
    assert wide[0] == [*narrow[0], *wide_columns]
    rows = {row[0]: dict(zip(wide[0], row, strict=True)) for row in wide[1:]}
    assert list(rows) == ["alpha", "zeta"]
    assert rows["zeta"] | {"EXPIRES": "", "RENEWAL": ""} == {
        "NAME": "zeta",
        "ENVIRONMENT": "live",
        "EXPIRES": "",
        "RENEWAL": "",
        "STAGE": "Rotating",
        "NEXT": "BB02",
        "NEXT-REASON": "Planned",
        "READY": "True",
        "SERIAL": "AA01",
        "SECRET": "key-aa01",
        "TRUST": "webhook-trust",
        "REVISION": "2",
        "CURRENT-SEEN": "-",
        "NEXT-SEEN": "-",
    }
    assert rows["alpha"]["NEXT"] == "-" and rows["alpha"]["NEXT-REASON"] == "-"


def test_name_prints_what_kubectl_takes_back(fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "status", "-o", "name").splitlines() == [
        f"webhookcertificate.{models.GROUP}/alpha",
        f"webhookcertificate.{models.GROUP}/zeta",
    ]


def test_history_as_yaml_is_the_json_document(fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.objects["webhooks", "zeta"]["status"]["revokedFingerprints"] = ["ab" * 32]
    as_json = json.loads(run(capsys, "history", "zeta", "-o", "json"))
    assert as_json == {"history": [], "revokedFingerprints": ["ab" * 32], "revokedPresentations": []}
    as_yaml = run(capsys, "history", "zeta", "-o", "yaml")
    assert yaml.safe_load(as_yaml) == as_json and as_yaml.startswith("history: []\n")


@pytest.mark.parametrize(
    "argv",
    [
        *(["status", *o] for o in (["-o", "json"], ["-o", "yaml"], ["-o", "wide"], ["-o", "name"], [])),
        *(["status", "zeta", "-o", f] for f in ("json", "yaml")),
        *(["status", "-A", "-o", f] for f in ("json", "yaml")),
        *(["history", "zeta", *o] for o in (["-o", "json"], ["-o", "yaml"], [])),
    ],
    ids=" ".join,
)
def test_no_output_carries_a_private_key(
    fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert fake.secrets["webhooks", "key-aa01"].data["tls.key"].startswith(b"-----BEGIN PRIVATE KEY")
    assert cli_main.main(["-n", "webhooks", *argv]) == 0
    captured = capsys.readouterr()
    assert "PRIVATE KEY" not in captured.out + captured.err
    # Not even read: these verbs need no right to the key Secrets.
    assert fake.secrets_read == []


def test_status_and_history_show_what_the_provider_presented(
    fake: cli_fakes.FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    status = fake.objects["webhooks", "zeta"]["status"]
    status["current"].update(lastPresented="2026-12-01T10:00:00Z", presentations=12)
    status["revokedFingerprints"] = ["ab" * 32]
    status["history"] = [
        {
            "serial": "0F",
            "fingerprint": "ab" * 32,
            "notBefore": "2025-01-01T00:00:00Z",
            "notAfter": "2026-01-01T00:00:00Z",
            "revision": 1,
            "reason": "Superseded",
            "retiredAt": "2025-12-01T00:00:00Z",
        }
    ]
    status["revokedPresentations"] = [
        {"fingerprint": "ab" * 32, "burstStarted": "2026-12-01T09:00:00Z", "lastSeen": "2026-12-01T09:01:00Z"}
    ]
    wide = [line.split() for line in run(capsys, "status", "-o", "wide").splitlines()]
    rows = {row[0]: dict(zip(wide[0], row, strict=True)) for row in wide[1:]}
    assert rows["zeta"]["CURRENT-SEEN"] == "2026-12-01T10:00:00Z(12)" and rows["zeta"]["NEXT-SEEN"] == "-"
    history = run(capsys, "history", "zeta").splitlines()
    assert history[0].split()[-2:] == ["LAST", "PRESENTED"] and history[1].split()[-1] == "2026-12-01T09:01:00Z"
    assert f"  presented after revocation: {'ab' * 32}, last at 2026-12-01T09:01:00Z" in history

"""kubectl's habits for the cluster options: ``-n``, ``--context``, ``--kubeconfig`` before or after the verb.

``kubectl webhookcerts -n NS export NAME`` used to fail with ``invalid choice: 'NS'``. Every verb that
talks to a cluster now takes the options on either side, in every spelling argparse (and kubectl) knows,
the later one winning; verbs that take none refuse them rather than ignore them. The namespace and the
kubeconfig are found as kubectl finds them when the options are absent.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import pytest

from tests.unit import cli_fakes
from webhookcerts.cli import main as cli_main
from webhookcerts.kube import cli_support
from webhookcerts.kube import client as kube_client

# Each verb that talks to a cluster, with the least it needs to parse.
CLUSTER_VERBS: dict[str, list[str]] = {
    "status": ["status"],
    "status-name": ["status", "w1"],
    "export": ["export", "w1", "--out", "DIR"],
    "rotate": ["rotate", "w1", "--emergency", "--reason", "INC-1", "--no-wait"],
    "cutover": ["cutover", "w1", "--no-wait"],
    "history": ["history", "w1"],
}
NAMESPACE_SPELLINGS = [["-n", "ns1"], ["-nns1"], ["--namespace", "ns1"], ["--namespace=ns1"]]


def verb_with(options: Sequence[str], verb: str, *, before: bool) -> list[str]:
    argv = CLUSTER_VERBS[verb]
    return [*options, *argv] if before else [argv[0], *options, *argv[1:]]


@pytest.mark.parametrize("before", [True, False], ids=["before-verb", "after-verb"])
@pytest.mark.parametrize("spelling", NAMESPACE_SPELLINGS, ids=lambda s: " ".join(s))
@pytest.mark.parametrize("verb", CLUSTER_VERBS)
def test_the_namespace_is_taken_before_or_after_every_cluster_verb(
    verb: str, spelling: list[str], before: bool
) -> None:
    args = cli_main.parse_args(verb_with(spelling, verb, before=before))
    assert args.namespace == "ns1"
    assert (args.context, args.kubeconfig) == (None, None)


@pytest.mark.parametrize("before", [True, False], ids=["before-verb", "after-verb"])
@pytest.mark.parametrize("verb", CLUSTER_VERBS)
def test_context_and_kubeconfig_are_taken_before_or_after_every_cluster_verb(verb: str, before: bool) -> None:
    options = ["--context", "ctx1", "--kubeconfig=/k/config"]
    args = cli_main.parse_args(verb_with(options, verb, before=before))
    assert (args.context, args.kubeconfig, args.namespace) == ("ctx1", "/k/config", None)


@pytest.mark.parametrize("verb", CLUSTER_VERBS)
def test_an_option_given_before_and_after_the_verb_takes_the_later(verb: str) -> None:
    options = ["-n", "early", "--context=early", "--kubeconfig", "early"]
    argv = verb_with(options, verb, before=True)
    argv[len(options) + 1 : len(options) + 1] = ["-n", "late", "--context", "late", "--kubeconfig=late"]
    args = cli_main.parse_args(argv)
    assert (args.namespace, args.context, args.kubeconfig) == ("late", "late", "late")
    # Twice before the verb, as kubectl: the last one.
    assert cli_main.parse_args(["-n", "first", "-n", "second", *CLUSTER_VERBS[verb]]).namespace == "second"


@pytest.mark.parametrize("verb", CLUSTER_VERBS)
def test_every_cluster_verb_connects_with_the_options_given_before_it(
    monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    fake = cli_fakes.FakeCluster().install(monkeypatch)
    fake.add(cli_fakes.whc("w1", "ns1", pending=True))
    cli_main.main(["--kubeconfig", "/k", "--context", "c", "-n", "ns1", *CLUSTER_VERBS[verb]])
    assert fake.connects == [("/k", "c", "ns1")]


def test_the_operators_repeatable_namespace_keeps_those_on_both_sides() -> None:
    assert cli_main.parse_args(["-n", "a", "run"]).namespace == ["a"]
    assert cli_main.parse_args(["-n", "a", "--namespace=b", "run", "-n", "c"]).namespace == ["a", "b", "c"]
    assert cli_main.parse_args(["run"]).namespace == []
    assert cli_main.parse_args(["--context", "c", "run", "--kubeconfig", "k"]).context == "c"


def test_trust_sync_takes_context_and_kubeconfig_on_either_side_but_no_namespace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    verb = ["trust-sync", "--secret", "ns/trust", "--dir", "d"]
    args = cli_main.parse_args(["--context", "a", "--kubeconfig=k", *verb, "--context", "b"])
    assert (args.context, args.kubeconfig) == ("b", "k")
    with pytest.raises(SystemExit) as exited:
        cli_main.parse_args(["-n", "x", *verb])
    assert exited.value.code == 2
    assert "-n/--namespace does not apply to trust-sync" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "argv"),
    [
        (["-n", "x"], ["receiver", "--cert", "c", "--key", "k", "--trust-dir", "t"]),
        (["--context", "x"], ["devcluster", "status"]),
        (["--kubeconfig", "x"], ["provider-sim", "--bundle", "b", "--password-env", "P", "--url", "https://h"]),
    ],
)
def test_a_verb_without_a_cluster_refuses_the_options_rather_than_ignore_them(
    capsys: pytest.CaptureFixture[str], option: list[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main.parse_args([*option, *argv])
    assert exited.value.code == 2
    assert f"does not apply to {argv[0]}" in capsys.readouterr().err


def test_a_namespace_value_is_never_taken_for_the_verb() -> None:
    # The bug of issue 15: "invalid choice: 'NS'".
    args = cli_main.parse_args(["-n", "status", "history", "w1"])
    assert (args.command, args.namespace, args.name) == ("history", "status", "w1")


# --- where the configuration and namespace come from when the options are absent ---------------------


def kubeconfig(
    path: pathlib.Path, current: str, namespaces: dict[str, str | None], server: str = "https://127.0.0.1:1"
) -> pathlib.Path:
    contexts = [
        {"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
        for name, ns in namespaces.items()
    ]
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": contexts,
                "current-context": current,
            }
        )
    )
    return path


@pytest.fixture
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    # Nothing of the developer's own cluster configuration may answer for the test.
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(cli_support, "DEFAULT_KUBECONFIG", str(tmp_path / "absent"))


@pytest.mark.usefixtures("no_ambient_config")
def test_kubeconfig_from_the_environment_and_namespace_from_its_current_context(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    config = kubeconfig(tmp_path / "config", "work", {"work": "team-a", "other": "team-b", "bare": None})
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert cli_support.connect(None, None, None).namespace == "team-a"
    assert cli_support.connect(None, "other", None).namespace == "team-b"
    assert cli_support.connect(None, "bare", None).namespace == "default"
    assert cli_support.connect(None, "other", "explicit").namespace == "explicit"


@pytest.mark.usefixtures("no_ambient_config")
def test_kubeconfig_may_list_several_files_as_kubectl_merges_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    first = kubeconfig(tmp_path / "first", "here", {"here": "from-first"})
    second = kubeconfig(tmp_path / "second", "there", {"there": "from-second"})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{first}:{second}")
    # The first file to name a current context decides it (the client library alone takes the last).
    assert cli_support.connect(None, None, None).namespace == "from-first"
    # A context of a later file can still be chosen.
    assert cli_support.connect(None, "there", None).namespace == "from-second"


@pytest.mark.usefixtures("no_ambient_config")
def test_the_operator_and_trust_sync_pick_the_cluster_kubectl_picks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    first = kubeconfig(tmp_path / "first", "here", {"here": None}, server="https://first.example:6443")
    # Clusters and users merge by name, the first file's winning: this file's must have other names.
    second = json.loads(kubeconfig(tmp_path / "second", "there", {}).read_text())
    second["clusters"] = [{"name": "c2", "cluster": {"server": "https://second.example:6443"}}]
    second["contexts"] = [{"name": "there", "context": {"cluster": "c2", "user": "u"}}]
    (tmp_path / "second").write_text(json.dumps(second))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'second'}")
    assert kube_client.load().api.configuration.host == "https://first.example:6443"
    assert kube_client.load(context="there").api.configuration.host == "https://second.example:6443"


@pytest.mark.usefixtures("no_ambient_config")
def test_an_explicit_kubeconfig_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "env", "e", {"e": "from-env"})))
    explicit = kubeconfig(tmp_path / "flag", "f", {"f": "from-flag"})
    assert cli_support.connect(str(explicit), None, None).namespace == "from-flag"


@pytest.mark.parametrize("pattern", ["team-*", "Payments", "a_b"])
def test_run_refuses_a_namespace_that_is_not_a_name(pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Kopf would take a pattern, the Secret reflector reads namespaces by name: refused before any
    # connection is made (none is configured here, so getting further would fail otherwise).
    assert cli_main.main(["run", "-n", "ok", "-n", pattern]) == 2
    assert f"not a namespace name: {pattern}" in capsys.readouterr().err

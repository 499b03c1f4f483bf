"""Shell completion as kubectl asks for it: ``kubectl_complete-webhookcerts WORDS...``, cobra's answer format.

kubectl passes the words typed after the plugin name, the last one the word being completed, and reads
candidates (``value<TAB>description``) and a last line ``:<directive>``. Names come from the cluster the
typed options point at; a stub API server on loopback stands in for it, and an unreachable one must
complete nothing, quickly and silently.
"""

from __future__ import annotations

import http.server
import json
import pathlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from urllib3.util import connection as urllib3_connection

from webhookcerts.cli import completion, shells
from webhookcerts.cli import main as cli_main

NO_FILE, DIRECTORIES, FILES = ":4", ":16", ":0"


class Lookups:
    """A lookup that answers from a dict and records what it was asked, with which cluster options."""

    def __init__(self, names: dict[str, list[str]] | None = None, error: Exception | None = None) -> None:
        self.names = names or {}
        self.error = error
        self.asked: list[tuple[str, dict[str, str]]] = []

    def __call__(self, what: str, cluster: dict[str, str]) -> list[str]:
        self.asked.append((what, cluster))
        if self.error is not None:
            raise self.error
        return self.names.get(what, [])


def complete(*words: str, lookup: completion.Lookup | None = None) -> list[str]:
    return completion.complete(cli_main.build_parser(), words, lookup or Lookups())


def values(lines: list[str]) -> list[str]:
    """The candidates without their descriptions, and without the directive line."""
    assert lines[-1].startswith(":"), lines
    return [line.split("\t")[0] for line in lines[:-1]]


# --- verbs, flags, values of -o -----------------------------------------------------------------------


def test_the_verbs_complete_with_their_help_and_no_file_names() -> None:
    lines = complete("")
    assert lines[-1] == NO_FILE
    assert {"status", "export", "rotate", "cutover", "history", "run", "trust-sync", "completion"} <= set(values(lines))
    assert "status\ta table of WebhookCertificates: expiry, renewal time, stage, pending serial" in lines
    assert values(complete("c")) == ["cutover", "completion"]
    assert values(complete("cu")) == ["cutover"]


@pytest.mark.parametrize("before", [["-n", "x"], ["-nx"], ["--namespace=x"], ["--context", "c", "--kubeconfig=k"]])
def test_the_verb_completes_after_cluster_options_before_it(before: list[str]) -> None:
    assert values(complete(*before, "his")) == ["history"]


def test_the_flags_of_the_verb_complete_and_only_its_own() -> None:
    flags = values(complete("rotate", "-"))
    assert {"-n", "--namespace", "--context", "--kubeconfig", "--emergency", "--reason", "--no-wait"} <= set(flags)
    assert "--output" not in flags and "--out" not in flags
    assert values(complete("-n", "x", "export", "w1", "--o")) == ["--out"]
    assert complete("status", "--all")[-1] == NO_FILE


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["status", "-o", ""], ["wide", "name", "json", "yaml"]),
        (["status", "--output", "j"], ["json"]),
        (["status", "w1", "-A", "-o", "y"], ["yaml"]),
        # The part after "=" is its own word to the shell: values without the flag, as cobra answers.
        (["status", "--output=y"], ["yaml"]),
        (["history", "w1", "-o", ""], ["json", "yaml"]),
    ],
)
def test_the_values_of_output_complete(words: list[str], expected: list[str]) -> None:
    lines = complete(*words)
    assert values(lines) == expected and lines[-1] == NO_FILE


@pytest.mark.parametrize(
    ("words", "directive"),
    [
        (["export", "w1", "--out", ""], DIRECTORIES),
        (["--kubeconfig", ""], FILES),
        (["status", "--kubeconfig", ""], FILES),
        (["rotate", "w1", "--reason", ""], NO_FILE),
        (["history", "w1", ""], NO_FILE),  # NAME given: nothing more to complete
        (["nosuch", ""], NO_FILE),
    ],
)
def test_the_directive_says_where_file_names_belong(words: list[str], directive: str) -> None:
    assert complete(*words) == [directive]


# --- names from the cluster -----------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [["status"], ["export"], ["rotate"], ["cutover"], ["history"]])
def test_a_name_completes_from_the_namespace_the_options_name_on_either_side(verb: list[str]) -> None:
    lookup = Lookups({completion.WEBHOOKCERTIFICATES: ["live", "sandbox", "shop"]})
    assert values(complete(*verb, "s", lookup=lookup)) == ["sandbox", "shop"]
    assert lookup.asked == [(completion.WEBHOOKCERTIFICATES, {})]
    lookup.asked.clear()
    complete("-n", "early", "--context=c", *verb, "--namespace", "late", "--kubeconfig", "k", "", lookup=lookup)
    assert lookup.asked == [(completion.WEBHOOKCERTIFICATES, {"namespace": "late", "context": "c", "kubeconfig": "k"})]


def test_namespaces_and_contexts_complete_too() -> None:
    lookup = Lookups({completion.NAMESPACES: ["kube-system", "webhooks"], completion.CONTEXTS: ["dev", "prod"]})
    assert values(complete("-n", "w", lookup=lookup)) == ["webhooks"]
    assert values(complete("status", "--namespace=k", lookup=lookup)) == ["kube-system"]
    assert values(complete("--context", "", lookup=lookup)) == ["dev", "prod"]
    assert values(complete("--kubeconfig", "/k", "status", "--context", "p", lookup=lookup)) == ["prod"]
    assert lookup.asked[-1] == (completion.CONTEXTS, {"kubeconfig": "/k"})


def test_a_failed_lookup_completes_no_names_and_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    lookup = Lookups(error=RuntimeError("cannot reach the API server"))
    assert complete("export", "", lookup=lookup) == [NO_FILE]
    assert capsys.readouterr() == ("", "")


# --- the entry points, against a stub API server --------------------------------------------------------


class StubApi(http.server.BaseHTTPRequestHandler):
    """Lists WebhookCertificates per namespace; records each request's path and Accept header."""

    requests: ClassVar[list[tuple[str, str]]] = []
    objects: ClassVar[dict[str, list[str]]] = {"webhooks": ["shop", "live"], "default": ["other"]}

    def do_GET(self) -> None:
        StubApi.requests.append((self.path, self.headers.get("Accept", "")))
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["apis", "webhookcerts.io", "v1alpha1"] and parts[3] == "namespaces":
            names = self.objects.get(parts[4], [])
            body: dict[str, Any] = {
                "kind": "PartialObjectMetadataList",
                "items": [{"metadata": {"name": n}} for n in names],
            }
        elif parts == ["api", "v1", "namespaces"]:
            items = [{"metadata": {"name": n}} for n in self.objects]
            body = {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": items}
        else:
            self.send_response(404)
            self.end_headers()
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def kubeconfig(path: pathlib.Path, server: str, namespace: str | None = None) -> pathlib.Path:
    context = {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "stub", "context": context}],
        "current-context": "stub",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def stub_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StubApi.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def test_the_console_script_completes_names_from_the_cluster_asking_for_metadata_only(
    stub_api: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kubeconfig(tmp_path / "config", stub_api, namespace="webhooks")
    assert cli_main.complete(["--kubeconfig", str(config), "export", ""]) == 0
    assert capsys.readouterr().out == "live\nshop\n:4\n"
    path, accept = StubApi.requests[-1]
    assert path.startswith("/apis/webhookcerts.io/v1alpha1/namespaces/webhooks/webhookcertificates")
    assert "as=PartialObjectMetadataList" in accept
    assert cli_main.complete(["--kubeconfig", str(config), "-n", ""]) == 0
    assert capsys.readouterr().out == "default\nwebhooks\n:4\n"
    assert cli_main.complete(["status", "--kubeconfig", str(config), "--context", ""]) == 0
    assert capsys.readouterr().out == "stub\n:4\n"
    # $KUBECONFIG and -n, the plain command's hidden verb, as kubectl users have them.
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert cli_main.main(["__complete", "status", "-n", "default", ""]) == 0
    assert capsys.readouterr().out == "other\n:4\n"


def connection_attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every connection the Kubernetes client opens (urllib3's create_connection), by address."""
    attempts: list[tuple[str, int]] = []
    original = urllib3_connection.create_connection

    def counted(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        return original(address, *args, **kwargs)

    monkeypatch.setattr(urllib3_connection, "create_connection", counted)
    return attempts


def completed_in_thread(argv: list[str]) -> int:
    """``complete(argv)`` in a thread: a lookup that never gives up fails the test instead of hanging it."""
    returned: list[int] = []
    thread = threading.Thread(target=lambda: returned.append(cli_main.complete(argv)), daemon=True)
    thread.start()
    thread.join(60)  # far beyond the lookup's own timeout: reached only if there is none
    assert not thread.is_alive(), "the completion never gave up on the cluster"
    return returned[0]


def test_an_unreachable_cluster_completes_nothing_at_once_and_silently(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = connection_attempts(monkeypatch)
    # Nothing listens on port 1: refused, and not retried (one attempt: no retry's back-off to wait out).
    config = kubeconfig(tmp_path / "config", "https://127.0.0.1:1")
    assert cli_main.complete(["--kubeconfig", str(config), "history", ""]) == 0
    assert attempts == [("127.0.0.1", 1)]
    assert capsys.readouterr() == (":4\n", "")
    assert cli_main.complete(["--kubeconfig", str(tmp_path / "absent"), "history", ""]) == 0
    assert capsys.readouterr() == (":4\n", "")
    assert attempts == [("127.0.0.1", 1)]


def test_a_cluster_that_never_answers_is_given_up_on(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = connection_attempts(monkeypatch)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections, never answers
        port = silent.getsockname()[1]
        config = kubeconfig(tmp_path / "config", f"http://127.0.0.1:{port}")
        assert completed_in_thread(["--kubeconfig", str(config), "cutover", ""]) == 0
    # Given up on after one request (its timeout), not retried.
    assert attempts == [("127.0.0.1", port)]
    assert capsys.readouterr() == (":4\n", "")


def test_the_pyproject_installs_the_executable_kubectl_looks_for() -> None:
    pyproject = (pathlib.Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"kubectl_complete-webhookcerts" = "webhookcerts.cli.main:complete"' in pyproject


# --- the bash script for the plain command ---------------------------------------------------------------


def bash_complete(tmp_path: pathlib.Path, line: str) -> list[str]:
    """COMPREPLY for ``line`` (cursor at its end), with the script loaded and compopt recorded."""
    command = tmp_path / "webhookcerts"
    paths = ":".join(sys.path)
    command.write_text(f'#!/bin/sh\nPYTHONPATH="{paths}" exec "{sys.executable}" -m webhookcerts.cli.main "$@"\n')
    command.chmod(0o755)
    script = tmp_path / "completion.bash"
    script.write_text(shells.BASH)
    line = line.replace("webhookcerts", str(command), 1)
    program = (
        f"source {script}\n"
        'compopt() { echo "compopt $*"; }\n'
        f"COMP_LINE={json.dumps(line)}; COMP_POINT=${{#COMP_LINE}}\n"
        "_webhookcerts_complete\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]


def test_the_bash_script_completes_the_plain_command(tmp_path: pathlib.Path) -> None:
    assert shells.BASH.rstrip().endswith("complete -F _webhookcerts_complete webhookcerts")
    assert bash_complete(tmp_path, "webhookcerts -n x st") == ["status"]
    assert bash_complete(tmp_path, "webhookcerts status --output=j") == ["json"]
    assert bash_complete(tmp_path, "webhookcerts history w1 -o ") == ["json", "yaml"]
    # No candidates: directories for --out, file names for --kubeconfig, nothing for a reason.
    assert bash_complete(tmp_path, "webhookcerts export w1 --out ") == ["compopt -o dirnames"]
    assert bash_complete(tmp_path, "webhookcerts --kubeconfig ") == ["compopt -o default"]
    assert bash_complete(tmp_path, "webhookcerts rotate w1 --reason ") == []


def test_completion_prints_the_bash_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == shells.BASH

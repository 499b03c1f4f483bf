"""The design page's lifecycle diagram and the runbooks name only what the code has.

On call, a runbook is followed to the letter: an annotation spelled wrong is ignored by the operator, a
metric that does not exist draws an empty graph, a flag the CLI does not know fails at 3 a.m. So every
stage, annotation, condition, Event reason, alert, metric, status field, `webhookcerts` command and
chart value the pages name is looked up where the code defines it (`vocabulary.py`).
"""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from tests import conftest, docs_examples
from tests.unit import vocabulary
from webhookcerts.cli import main as cli_main
from webhookcerts.domain import models, names

DOCS = conftest.REPO / "docs"
DESIGN = DOCS / "design.md"
RUNBOOK_DIR = DOCS / "runbooks"
RUNBOOKS = ("initial-setup.md", "planned-rotation.md", "emergency-rotation.md")
# Every page whose names are checked: the runbooks, their index and the design page.
PAGES = [RUNBOOK_DIR / name for name in (*RUNBOOKS, "README.md")] + [DESIGN]
USER_ANNOTATIONS = {names.EMERGENCY_ANNOTATION, names.CUTOVER_ANNOTATION, names.DISCARD_NEXT_ANNOTATION}

# `Event `X``, `conditions `X`, `Y` and `Z``: a name right after the word that says what it is.
KIND_AND_NAMES = re.compile(r"\b(Events?|conditions?|stages?|alerts?)\b((?:,?(?: and| or)? `[A-Za-z]+`)+)")
CONDITION_STATUS = re.compile(r"`([A-Za-z]+)`=(?:True|False|Unknown)\b")
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)")
FIELD = re.compile(r"(?<![\w/-])\.?((?:status|spec)(?:\.[a-zA-Z][a-zA-Z0-9]*)+)")


def page_id(path: pathlib.Path) -> str:
    return str(path).removeprefix(f"{DOCS}/")


# --- the lifecycle diagram -----------------------------------------------------------------------


def lifecycle_edges() -> list[tuple[str, str, str]]:
    """(from, to, label) of each arrow of the design page's one `stateDiagram-v2`."""
    blocks = [
        body
        for language, body in vocabulary.fenced_blocks(DESIGN.read_text())
        if language == "mermaid" and body.lstrip().startswith("stateDiagram-v2")
    ]
    assert len(blocks) == 1, f"{len(blocks)} mermaid stateDiagram-v2 blocks in {DESIGN.name}"
    edges = []
    for line in blocks[0].splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("%%"):
            continue
        arrow = re.fullmatch(r"([^\s:]+)\s*-->\s*([^\s:]+)\s*(?::(.*))?", line)
        assert arrow, f"not an arrow (the diagram draws arrows only): {line!r}"
        edges.append((arrow[1], arrow[2], (arrow[3] or "").strip()))
    return edges


def test_the_lifecycle_diagram_draws_every_stage_status_reports_and_nothing_else() -> None:
    edges = lifecycle_edges()
    drawn = {state for edge in edges for state in edge[:2]} - {"[*]"}
    assert drawn == vocabulary.stages(), f"drawn but no stage: {drawn - vocabulary.stages()}"
    assert [(a, b) for a, b, _ in edges if a == "[*]"] == [("[*]", "Issuing")]
    for stage in vocabulary.stages():
        assert any(a == stage and b != stage for a, b, _ in edges), f"{stage}: no way out"


def test_every_arrow_says_what_causes_it_in_names_the_code_has() -> None:
    annotations = vocabulary.annotations_and_labels()
    reasons = vocabulary.decision_reasons()
    drawn_annotations = set()
    for source, target, label in lifecycle_edges():
        arrow = f"{source} --> {target}: {label}"
        assert label, f"{arrow}: unlabelled"
        # Mermaid ends a transition's label at the first ':' or ';' and refuses the rest of the line.
        assert ":" not in label and ";" not in label, f"{arrow}: ':' or ';' in a label"
        used = vocabulary.annotations_in(label)
        assert used <= annotations, f"{arrow}: no such annotation {used - annotations}"
        drawn_annotations |= used
        bracketed = set(re.findall(r"\[([A-Za-z]+)\]", label))
        assert bracketed <= reasons, f"{arrow}: no policy decision has the reason {bracketed - reasons}"
        assert bracketed or source == "[*]", f"{arrow}: which policy decision takes it?"
    assert drawn_annotations >= USER_ANNOTATIONS, USER_ANNOTATIONS - drawn_annotations


# --- the runbooks ---------------------------------------------------------------------------------


def test_the_runbooks_are_indexed_and_linked() -> None:
    index = (RUNBOOK_DIR / "README.md").read_text()
    for name in RUNBOOKS:
        assert (RUNBOOK_DIR / name).is_file(), name
        assert f"]({name})" in index, f"runbooks/README.md does not link {name}"
    assert "](docs/runbooks/" in (conftest.REPO / "README.md").read_text()
    assert "](runbooks/" in DESIGN.read_text()


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_annotation_named_exists(page: pathlib.Path) -> None:
    text = page.read_text()
    # `webhookcerts.io/v1alpha1` is the API version, not an annotation.
    used = vocabulary.annotations_in(text) - {f"{models.GROUP}/{models.VERSION}"}
    assert used <= vocabulary.annotations_and_labels(), used - vocabulary.annotations_and_labels()


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_metric_named_is_a_series_the_operator_exposes(page: pathlib.Path) -> None:
    assert vocabulary.bad_selectors(page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_condition_reason_event_stage_and_alert_named_exists(page: pathlib.Path) -> None:
    text = page.read_text()
    known = vocabulary.string_constants() | vocabulary.alert_names()
    unknown = []
    for span in vocabulary.inline_code(text):
        if vocabulary.CAMEL.match(span) and span not in known:
            unknown.append(span)
        condition = re.fullmatch(r"([A-Z]\w+)=(True|False|Unknown)", span)
        if condition and condition[1] not in vocabulary.condition_types():
            unknown.append(f"condition {condition[1]}")
    kinds = {
        "event": vocabulary.event_reasons(),
        "condition": vocabulary.condition_types(),
        "stage": vocabulary.stages(),
        "alert": vocabulary.alert_names(),
    }
    for kind, spans in KIND_AND_NAMES.findall(vocabulary.prose(text)):
        allowed = kinds[kind.lower().removesuffix("s")]
        unknown += [f"{kind} {n}" for n in re.findall(r"`([A-Za-z]+)`", spans) if n not in allowed]
    # The runbooks' "where | what" tables: an Events row names Event reasons, a STAGE row starts with a stage.
    for where, what in re.findall(r"^\| *(Events|STAGE)(?: \(`[^`]*`\))? *\|([^|\n]*)\|", text, re.M):
        found = re.findall(r"`([A-Za-z]+)`", what)
        for n in found if where == "Events" else found[:1]:
            if n not in kinds["event" if where == "Events" else "stage"]:
                unknown.append(f"{where} {n}")
    # `Compromised`=True: a condition type.
    unknown += [f"condition {n}" for n in CONDITION_STATUS.findall(text) if n not in kinds["condition"]]
    for _, body in vocabulary.fenced_blocks(text):
        # `kubectl get events --field-selector reason=X`
        unknown += [f"Event {r}" for r in re.findall(r"\breason=([A-Z][A-Za-z]+)", body) if r not in kinds["event"]]
    assert not unknown


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_status_and_spec_field_named_is_in_the_crd(page: pathlib.Path) -> None:
    fields = set(FIELD.findall(page.read_text()))
    assert not [f for f in sorted(fields) if not vocabulary.crd_has(f)]


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of every bash block, split at pipes and `&&`, environment assignments dropped."""
    commands = []
    for language, body in vocabulary.fenced_blocks(markdown):
        if language not in ("bash", "sh"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("|", "||", "&&", ";", "(", ")"):
                    if command:
                        commands.append(command)
                    command = []
                elif command or not re.fullmatch(r"[A-Z_]+=.*", token):
                    command.append(token)
    return commands


def test_shell_commands_split_as_a_shell_would() -> None:
    text = '```bash\nNS=a kubectl webhookcerts status \\\n  -n "$NS" | grep x  # why\nhelm lint && echo ok\n```\n'
    assert shell_commands(text) == [
        ["kubectl", "webhookcerts", "status", "-n", "$NS"],
        ["grep", "x"],
        ["helm", "lint"],
        ["echo", "ok"],
    ]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_webhookcerts_command_and_helm_value_given_exists(page: pathlib.Path) -> None:
    parser = cli_main.build_parser()
    refused = []
    for command in shell_commands(page.read_text()):
        argv = command[2:] if command[:2] == ["kubectl", "webhookcerts"] else command[1:]
        if command[0] == "webhookcerts" or command[:2] == ["kubectl", "webhookcerts"]:
            try:
                parser.parse_args(argv)
            except SystemExit:
                refused.append(shlex.join(command))
        if command[0] == "helm":
            values = [command[i + 1].split("=")[0] for i, t in enumerate(command[:-1]) if t == "--set"]
            refused += [f"helm value {v}" for v in values if not vocabulary.values_schema_has(v)]
    assert not refused


def test_every_webhookcertificate_example_is_found() -> None:
    """The examples tests/integration/test_docs_examples.py applies: every page's, none missed."""
    found = docs_examples.examples()
    pages = {example.page for example in found}
    assert pages >= docs_examples.KNOWN, f"not found: {docs_examples.KNOWN - pages}"
    for page in docs_examples.PAGES:
        shown = docs_examples.examples_of(page)
        # A `kind: WebhookCertificate` line outside a YAML block, or in a document that does not parse
        # as one, would be an example nobody checks.
        assert len(shown) == docs_examples.kind_lines(page), f"{page}: an example outside a YAML block"


@pytest.mark.parametrize("example", docs_examples.examples(), ids=lambda e: e.id)
def test_every_webhookcertificate_shown_is_one_the_model_takes(example: docs_examples.Example) -> None:
    """The operator's model; the API server's schema is tests/integration/test_docs_examples.py's."""
    manifest = example.manifest("docs")
    assert manifest["apiVersion"] == f"{models.GROUP}/{models.VERSION}"
    models.WebhookCertificateSpec.model_validate(manifest["spec"])


def anchors(page: pathlib.Path) -> set[str]:
    """GitHub's anchors for the headings of a page: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", vocabulary.prose(page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_link_leads_to_a_page_and_heading_that_exist(page: pathlib.Path) -> None:
    broken = []
    for target, anchor in LINK.findall(vocabulary.prose(page.read_text())):
        if target.startswith(("http://", "https://")):
            continue
        destination = (page.parent / target) if target else page
        if not destination.exists() or (anchor and anchor not in anchors(destination)):
            broken.append(f"{target}#{anchor}" if anchor else target)
    assert not broken

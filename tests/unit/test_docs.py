"""The design page's lifecycle diagram names only what the code has (`vocabulary.py`)."""

from __future__ import annotations

import re

from tests import conftest
from tests.unit import vocabulary
from webhookcerts.domain import names

DOCS = conftest.REPO / "docs"
DESIGN = DOCS / "design.md"
USER_ANNOTATIONS = {names.EMERGENCY_ANNOTATION, names.CUTOVER_ANNOTATION, names.DISCARD_NEXT_ANNOTATION}

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

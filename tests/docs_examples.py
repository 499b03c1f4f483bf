"""Every WebhookCertificate the documentation shows, found and made applicable.

README.md and docs/**/*.md show WebhookCertificates in fenced YAML blocks. tests/unit/test_docs.py checks
that they are all found (no fewer than the known ones, and as many as the pages have ``kind:
WebhookCertificate`` lines) and that the operator's model takes each; tests/integration/test_docs_examples.py
applies each to a real API server (server-side dry run), whose schema and CEL rules are what a user meets.

A page may show only the fields it is about: an example whose spec holds a ``# ...`` line is a fragment,
and is applied over a minimal complete spec (its own fields win). Every other example must be complete.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import re
from typing import Any

import yaml

from tests.unit import vocabulary
from webhookcerts.domain import models

REPO = pathlib.Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# Pages known to show one: the search must find at least these (it cannot pass on zero).
KNOWN = {"README.md", "docs/runbooks/initial-setup.md", "docs/receivers/java.md", "docs/receivers/envoy-gateway.md"}
KIND_LINE = re.compile(rf"^\s*kind:\s*{models.KIND}\s*$", re.M)
FRAGMENT = re.compile(r"^\s*# \.\.\.\s*$", re.M)
# What a fragment is completed with: the fields the CRD requires.
MINIMAL_SPEC: dict[str, Any] = {
    "environment": "sandbox",
    "subject": {"commonName": "webhooks.example.com"},
    "secretName": "docs-example-tls",
    "trust": {"secretName": "docs-example-trust"},
}


@dataclasses.dataclass(frozen=True)
class Example:
    page: str  # relative to the repository
    number: int  # its place among the page's examples, from 1
    doc: dict[str, Any]
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.page}#{self.number}"

    def manifest(self, namespace: str) -> dict[str, Any]:
        """The example as it would be applied in ``namespace`` (a fragment over the minimal spec)."""
        doc = copy.deepcopy(self.doc)
        spec = doc.get("spec") or {}
        doc["spec"] = _merge(copy.deepcopy(MINIMAL_SPEC), spec) if self.fragment else spec
        metadata = doc.setdefault("metadata", {})
        metadata.setdefault("name", f"docs-example-{self.number}")
        metadata["namespace"] = namespace
        return doc


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def kind_lines(page: pathlib.Path) -> int:
    """How many ``kind: WebhookCertificate`` lines the page has, inside fenced blocks or not."""
    return len(KIND_LINE.findall(page.read_text()))


def examples_of(page: pathlib.Path) -> list[Example]:
    found: list[Example] = []
    for language, body in vocabulary.fenced_blocks(page.read_text()):
        if language not in ("yaml", "yml") or not KIND_LINE.search(body):
            continue
        for text in re.split(r"^---\s*$", body, flags=re.M):
            doc = yaml.safe_load(text)
            if isinstance(doc, dict) and doc.get("kind") == models.KIND:
                relative = str(page.relative_to(REPO))
                found.append(Example(relative, len(found) + 1, doc, bool(FRAGMENT.search(text))))
    return found


def examples() -> list[Example]:
    return [example for page in PAGES for example in examples_of(page)]

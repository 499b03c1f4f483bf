"""Every WebhookCertificate the documentation shows is one the API server accepts.

The examples (tests/docs_examples.py: README.md and docs/**/*.md, every one, fragments completed) are
applied with ``kubectl apply --dry-run=server``: the API server runs its whole admission, the CRD's
schema and its CEL rules included, and stores nothing. A user copying an example meets exactly this.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests import conftest, docs_examples
from webhookcerts.domain import models

pytestmark = pytest.mark.integration


def dry_run(kubectl: conftest.KubectlRunner, manifest: dict[str, Any]) -> tuple[int, str]:
    done = kubectl("apply", "--dry-run=server", "-f", "-", check=False, input=json.dumps(manifest))
    return done.returncode, done.stdout + done.stderr


def test_the_dry_run_refuses_what_the_crd_refuses(
    crd_installed: None, kubectl: conftest.KubectlRunner, namespace: str
) -> None:
    """The control: the same dry run refuses a CEL rule's violation (renewBefore longer than duration),
    so an example accepted below was judged by the schema, not waved through."""
    example = docs_examples.examples()[0]
    manifest = example.manifest(namespace)
    manifest["spec"].update(duration="24h", renewBefore="48h")
    code, said = dry_run(kubectl, manifest)
    assert code != 0 and "renewBefore" in said, said


@pytest.mark.parametrize("example", docs_examples.examples(), ids=lambda e: e.id)
def test_every_webhookcertificate_shown_is_one_the_api_server_accepts(
    example: docs_examples.Example, crd_installed: None, kubectl: conftest.KubectlRunner, namespace: str
) -> None:
    manifest = example.manifest(namespace)
    code, said = dry_run(kubectl, manifest)
    assert code == 0, f"{example.id} refused by the API server: {said}"
    assert "(server dry run)" in said, said
    # Nothing was stored: it was a dry run.
    kind = f"{models.PLURAL}.{models.GROUP}"
    listed = kubectl("get", kind, "-n", namespace, "-o", "name").stdout
    assert listed.strip() == "", listed

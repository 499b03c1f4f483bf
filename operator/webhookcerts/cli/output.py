"""``-o yaml|json|name``: objects printed as ``kubectl get`` prints them, for scripts and for diffing.

One object named on the command line is printed as itself, anything else as a ``v1`` ``List``; keys
are sorted and JSON is indented by four, as kubectl's printers do, and ``metadata.managedFields`` is
left out as kubectl leaves it out by default. Only what the API returned for the custom resource is
printed: these printers are never handed a Secret.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from webhookcerts.domain import models

DOCUMENT_FORMATS = ("json", "yaml")


def printable(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without its managed fields (a copy: the caller's object is left as it was)."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {"apiVersion": f"{models.GROUP}/{models.VERSION}", "kind": models.KIND, **obj, "metadata": metadata}


def as_list(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {"resourceVersion": ""}}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so that a certificate reads as PEM and not as escapes."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


def dump(document: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(document, indent=4, sort_keys=True)
    if fmt == "yaml":
        return yaml.dump(document, Dumper=_Dumper, sort_keys=True, default_flow_style=False).rstrip("\n")
    raise ValueError(f"not a document format: {fmt}")


def name_of(obj: dict[str, Any]) -> str:
    """``-o name``: resource.group/name, the form kubectl takes back as an argument."""
    return f"{models.KIND.lower()}.{models.GROUP}/{(obj.get('metadata') or {}).get('name')}"

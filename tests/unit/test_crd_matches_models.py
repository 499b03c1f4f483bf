"""The CRD's OpenAPI schema and the pydantic models must describe the same resource.

If they drift, either admission accepts what the operator cannot parse, or the API server prunes
status fields the operator wrote (and the operator loses track of its certificates). The models are
turned into the OpenAPI subset the CRD uses and compared with it key by key.
"""

from __future__ import annotations

import copy
import datetime
import pathlib
import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import annotated_types
import pydantic
import pydantic_core
import pytest
import yaml
from pydantic import fields as pydantic_fields

from webhookcerts.domain import durations, models, reports

CRD_PATH = pathlib.Path(__file__).resolve().parents[2] / "crds" / "webhookcertificates.webhookcerts.io.yaml"

# Keys the comparison checks. Anything else in the CRD must be in IGNORED, so a constraint added to the
# CRD alone (say maxItems) is noticed rather than silently stricter than the models.
COMPARED = {
    "type",
    "format",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "default",
}
IGNORED = {"description", "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys"}

Schema = dict[str, Any]


# --- the models as OpenAPI --------------------------------------------------------------------------


def _constraints(schema: Schema, metadata: list[Any]) -> Schema:
    is_array = schema["type"] == "array"
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            schema["minItems" if is_array else "minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            schema["maxItems" if is_array else "maxLength"] = item.max_length
        elif isinstance(item, annotated_types.Ge):
            schema["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            schema["maximum"] = item.le
        elif getattr(item, "pattern", None) is not None:
            schema["pattern"] = item.pattern
        else:
            raise TypeError(f"no OpenAPI counterpart known for the constraint {item!r}")
    return schema


def type_schema(annotation: Any, metadata: list[Any]) -> Schema:
    """The OpenAPI schema of one annotation, with the field's constraints."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        extra = list(metadata)
        for item in args[1:]:
            extra.extend(item.metadata if isinstance(item, pydantic_fields.FieldInfo) else [item])
        return type_schema(args[0], extra)
    if origin in (typing.Union, types.UnionType):
        # Optional: the operator writes absent fields as missing (exclude_none), never as null.
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"only Optional[X] unions map to OpenAPI, not {annotation!r}")
        return type_schema(rest[0], metadata)
    if origin is typing.Literal:
        if not all(isinstance(a, str) for a in args):
            raise TypeError(f"only string literals map to an OpenAPI enum: {annotation!r}")
        return _constraints({"type": "string", "enum": list(args)}, metadata)
    if origin is list:
        return _constraints({"type": "array", "items": type_schema(args[0], [])}, metadata)
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"object keys are strings: {annotation!r}")
        return _constraints({"type": "object", "additionalProperties": type_schema(args[1], [])}, metadata)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return model_schema(annotation)
    simple: dict[Any, Schema] = {
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        str: {"type": "string"},
        datetime.datetime: {"type": "string", "format": "date-time"},
    }
    if annotation in simple:
        return _constraints(dict(simple[annotation]), metadata)
    raise TypeError(f"no OpenAPI counterpart known for {annotation!r}")


def model_schema(model: type[pydantic.BaseModel]) -> Schema:
    properties: Schema = {}
    required = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        schema = type_schema(field.annotation, list(field.metadata))
        if field.is_required():
            required.append(alias)
        else:
            default = field.get_default(call_default_factory=True)
            if default is not None:
                schema["default"] = pydantic_core.to_jsonable_python(default)
        properties[alias] = schema
    result: Schema = {"type": "object", "properties": properties}
    if required:
        result["required"] = sorted(required)
    return result


# --- the CRD ----------------------------------------------------------------------------------------


def load_crd() -> Schema:
    data: Schema = yaml.safe_load(CRD_PATH.read_text())
    return data


def openapi(crd: Schema) -> Schema:
    (version,) = crd["spec"]["versions"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def normalize(schema: Schema, path: str, problems: list[str]) -> Schema:
    """The compared part of a CRD schema; keys the comparison does not know are reported."""
    unknown = set(schema) - COMPARED - IGNORED
    if unknown:
        problems.append(f"{path}: keys not mirrored in the models: {sorted(unknown)}")
    result = {k: v for k, v in schema.items() if k in COMPARED}
    if "properties" in result:
        result["properties"] = {
            name: normalize(sub, f"{path}.{name}", problems) for name, sub in result["properties"].items()
        }
    for key in ("items", "additionalProperties"):
        if isinstance(result.get(key), dict):
            result[key] = normalize(result[key], f"{path}{'[]' if key == 'items' else '{}'}", problems)
    if "required" in result:
        result["required"] = sorted(result["required"])
    return result


def differences(model: Schema, crd: Schema, path: str) -> list[str]:
    """Every disagreement between the models' schema and the CRD's, each with its path."""
    problems: list[str] = []
    for key in sorted(set(model) | set(crd)):
        here = f"{path} {key}"
        if key not in crd:
            problems.append(f"{here}: the models say {model[key]!r}, the CRD has nothing")
        elif key not in model:
            problems.append(f"{here}: the CRD says {crd[key]!r}, the models have nothing")
        elif key == "properties":
            names = set(model[key]) | set(crd[key])
            for name in sorted(names):
                if name not in crd[key]:
                    problems.append(f"{path}.{name}: in the models, missing from the CRD")
                elif name not in model[key]:
                    problems.append(f"{path}.{name}: in the CRD, missing from the models")
                else:
                    problems.extend(differences(model[key][name], crd[key][name], f"{path}.{name}"))
        elif key in ("items", "additionalProperties") and isinstance(model[key], dict):
            suffix = "[]" if key == "items" else "{}"
            problems.extend(differences(model[key], crd[key], f"{path}{suffix}"))
        elif model[key] != crd[key]:
            problems.append(f"{here}: the models say {model[key]!r}, the CRD says {crd[key]!r}")
    return problems


def compare(crd: Schema) -> list[str]:
    problems: list[str] = []
    root = openapi(crd)
    for name, model in (("spec", models.WebhookCertificateSpec), ("status", models.WebhookCertificateStatus)):
        crd_part = normalize(root["properties"][name], name, problems)
        problems.extend(differences(model_schema(model), crd_part, name))
    return problems


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key], f"{path}{suffix}")


# --- tests ------------------------------------------------------------------------------------------


def test_the_crd_and_the_models_agree() -> None:
    assert compare(load_crd()) == []


REPORT_CRD_PATH = CRD_PATH.parent / "presentationreports.webhookcerts.io.yaml"


def test_the_report_crd_and_its_model_agree() -> None:
    crd: Schema = yaml.safe_load(REPORT_CRD_PATH.read_text())
    problems: list[str] = []
    spec = normalize(openapi(crd)["properties"]["spec"], "spec", problems)
    problems.extend(differences(model_schema(reports.PresentationReportSpec), spec, "spec"))
    assert problems == []
    assert crd["metadata"]["name"] == f"{reports.PLURAL}.{models.GROUP}"
    assert crd["spec"]["names"]["kind"] == reports.KIND
    (version,) = crd["spec"]["versions"]
    assert version["name"] == models.VERSION


def test_the_crd_names_the_resource_the_models_use() -> None:
    crd = load_crd()
    (version,) = crd["spec"]["versions"]
    assert crd["metadata"]["name"] == f"{models.PLURAL}.{models.GROUP}"
    assert crd["spec"]["group"] == models.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == models.KIND
    assert crd["spec"]["names"]["plural"] == models.PLURAL
    assert crd["spec"]["names"]["shortNames"] == ["whc"]
    assert version["name"] == models.VERSION
    assert version["served"] is True
    assert version["storage"] is True
    # Without the status subresource Kopf's status patches would go through the main resource.
    assert version["subresources"] == {"status": {}}


def test_the_printer_columns_are_the_ones_the_issue_asks_for() -> None:
    (version,) = load_crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0}
    assert list(columns) == ["Environment", "Ready", "Stage", "Expires", "Renewal", "Current-Seen", "Next-Seen", "Age"]
    assert columns["Environment"]["jsonPath"] == ".spec.environment"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Stage"]["jsonPath"] == ".status.stage"
    # Strings, not dates: kubectl prints a future date as "<invalid>", and both lie in the future.
    assert columns["Expires"] == {"name": "Expires", "type": "string", "jsonPath": ".status.current.notAfter"}
    assert columns["Renewal"] == {"name": "Renewal", "type": "string", "jsonPath": ".status.renewalTime"}
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    # Past times (issue 24): when the provider last presented each certificate, as an age.
    assert columns["Current-Seen"] == {
        "name": "Current-Seen",
        "type": "date",
        "jsonPath": ".status.current.lastPresented",
    }
    assert columns["Next-Seen"] == {"name": "Next-Seen", "type": "date", "jsonPath": ".status.next.lastPresented"}


def test_every_field_is_described() -> None:
    root = openapi(load_crd())
    undocumented = [
        path
        for part in ("spec", "status")
        for path, schema in walk(root["properties"][part], part)
        if not schema.get("description") and not path.endswith(("[]", "{}"))
    ]
    assert undocumented == []


def test_status_is_fully_specified_so_nothing_is_pruned_or_kept_blindly() -> None:
    status = openapi(load_crd())["properties"]["status"]
    loose = [path for path, schema in walk(status, "status") if "x-kubernetes-preserve-unknown-fields" in schema]
    assert loose == []


def test_every_cel_rule_has_a_message() -> None:
    root = openapi(load_crd())
    rules = [rule for _, schema in walk(root) for rule in schema.get("x-kubernetes-validations", [])]
    assert len(rules) >= 6
    assert all(rule.get("message") for rule in rules)


def _cel_regex_literals(rule: str) -> list[str]:
    return [re.sub(r"\\(.)", r"\1", m) for m in re.findall(r"matches\('((?:[^'\\]|\\.)*)'\)", rule)]


def test_the_patterns_inside_cel_rules_are_the_models_patterns() -> None:
    # The CEL rules repeat some patterns to give a friendlier message; they must not drift either.
    known = {models.DNS_LABEL, durations.PATTERN, models.SECRET_NAME, r"^[A-Z]{2}$"}
    root = openapi(load_crd())
    literals = [
        literal
        for _, schema in walk(root)
        for rule in schema.get("x-kubernetes-validations", [])
        for literal in _cel_regex_literals(rule["rule"])
    ]
    assert literals
    assert set(literals) <= known


def test_a_spec_with_only_the_required_fields_gets_the_crds_defaults() -> None:
    spec = models.WebhookCertificateSpec.model_validate(
        {"environment": "sandbox", "subject": {"commonName": "acme"}, "secretName": "c", "trust": {"secretName": "t"}}
    ).to_api()
    crd_spec = openapi(load_crd())["properties"]["spec"]["properties"]
    defaults = {name: schema["default"] for name, schema in crd_spec.items() if "default" in schema}
    assert defaults == {name: spec[name] for name in defaults}
    assert spec["duration"] == "8760h"
    assert spec["renewBefore"] == "2160h"


# --- the comparison itself fails when it should -----------------------------------------------------


def _spec(crd: Schema) -> Schema:
    result: Schema = openapi(crd)["properties"]["spec"]
    return result


def _status(crd: Schema) -> Schema:
    result: Schema = openapi(crd)["properties"]["status"]
    return result


MUTATIONS: dict[str, tuple[Callable[[Schema], None], str]] = {
    "property removed": (lambda c: _spec(c)["properties"].pop("renewBefore"), "spec.renewBefore"),
    "status property removed": (
        lambda c: _status(c)["properties"]["current"]["properties"].pop("fingerprint"),
        "status.current.fingerprint",
    ),
    "extra property": (
        lambda c: _spec(c)["properties"].__setitem__("color", {"type": "string"}),
        "spec.color",
    ),
    "default changed": (lambda c: _spec(c)["properties"]["duration"].__setitem__("default", "720h"), "default"),
    "required dropped": (lambda c: _spec(c)["required"].remove("trust"), "required"),
    "enum changed": (
        lambda c: _spec(c)["properties"]["emergencyPolicy"]["enum"].append("Ignore"),
        "spec.emergencyPolicy enum",
    ),
    "pattern changed": (
        lambda c: _spec(c)["properties"]["environment"].__setitem__("pattern", "^.*$"),
        "spec.environment pattern",
    ),
    "type changed": (
        lambda c: _spec(c)["properties"]["revisionHistoryLimit"].__setitem__("type", "string"),
        "spec.revisionHistoryLimit type",
    ),
    "format dropped": (
        lambda c: _status(c)["properties"]["renewalTime"].pop("format"),
        "status.renewalTime format",
    ),
    "maximum changed": (
        lambda c: _spec(c)["properties"]["revisionHistoryLimit"].__setitem__("maximum", 1000),
        "maximum",
    ),
    "max length changed": (
        lambda c: _spec(c)["properties"]["subject"]["properties"]["commonName"].__setitem__("maxLength", 65),
        "spec.subject.commonName maxLength",
    ),
    "constraint only in the CRD": (
        lambda c: _status(c)["properties"]["history"].__setitem__("maxItems", 100),
        "status.history",
    ),
    "list item type changed": (
        lambda c: _status(c)["properties"]["revokedFingerprints"]["items"].__setitem__("type", "integer"),
        "status.revokedFingerprints[] type",
    ),
    "nested required added": (
        lambda c: _status(c)["properties"]["conditions"]["items"]["required"].append("message"),
        "status.conditions[] required",
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_the_comparison_notices_a_crd_that_drifted(mutation: str) -> None:
    change, where = MUTATIONS[mutation]
    crd = copy.deepcopy(load_crd())
    change(crd)
    problems = compare(crd)
    assert problems, f"{mutation} went unnoticed"
    assert any(where in p for p in problems), problems


def test_the_comparison_notices_a_model_that_drifted() -> None:
    class Subject(models.Subject):
        locality: str | None = None

    crd_subject = normalize(_spec(load_crd())["properties"]["subject"], "subject", [])
    assert differences(model_schema(models.Subject), crd_subject, "subject") == []
    assert differences(model_schema(Subject), crd_subject, "subject") == [
        "subject.locality: in the models, missing from the CRD"
    ]

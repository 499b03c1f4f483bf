"""The view keeps each WebhookCertificate's spec and status as JSON and parses them again when read
(service/view.py, for memory): what a pass reads is what the first parse gave, whether or not that
parse is still kept, and a body written through from Python objects (datetimes) is kept as well."""

from __future__ import annotations

import datetime
from typing import Any

from tests.unit.test_rawbodies import certificate
from webhookcerts.service import trust_store, view


def body(i: int, **status: Any) -> dict[str, Any]:
    raw = certificate()
    raw["metadata"]["name"] = f"c-{i}"
    raw["metadata"]["uid"] = f"u-{i}"
    raw["status"].update(status)
    return raw


def test_an_entry_read_long_after_its_parse_gives_the_same_models() -> None:
    first = view.Certificate.parse(body(0))
    expected_spec, expected_status = first.spec, first.status
    assert expected_spec is not None and expected_status is not None
    # Enough other entries that the first one's parse is no longer kept.
    others = [view.Certificate.parse(body(i)) for i in range(1, 2 * view.PARSED_KEPT)]
    assert all(o.status is not None for o in others)

    again_spec, again_status = first.spec, first.status
    assert again_spec is not expected_spec, "parsed again, not kept"
    assert again_spec == expected_spec and again_status == expected_status
    assert again_status is not None and again_status.current is not None
    assert again_status.current.not_after == datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)


def test_a_body_holding_datetimes_is_kept_and_read_back() -> None:
    moment = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    entry = view.Certificate.parse(body(0, renewalTime=moment))
    for i in range(1, 2 * view.PARSED_KEPT):
        view.Certificate.parse(body(i))
    assert entry.problem is None and entry.status is not None
    assert entry.status.renewal_time == moment


def test_a_trust_write_reads_every_object_without_parsing_one(monkeypatch: Any) -> None:
    # A trust write looks at every object of the namespace (what each asked of this store): from what
    # the view keeps of each, never a parse per object (a thousand objects made that a minute-long
    # start-up pass).
    seen = view.View()
    for i in range(3 * view.PARSED_KEPT):
        store = {"secretName": "webhook-trust", "keys": [f"k-{i}.p12"], "configMaps": []}
        raw = body(i, trust={"secretName": "webhook-trust", "hash": "ab" * 32, "stores": [store]})
        if i == 1:
            raw["spec"]["trust"] = {"secretName": "other-trust", "configMap": {"name": "copied-elsewhere"}}
        seen.put_certificate(raw)
    parses: list[object] = []
    real = view._validate
    monkeypatch.setattr(view, "_validate", lambda parts: parses.append(parts) or real(parts))

    keys, config_maps, elsewhere = trust_store._recorded(seen, "ns", "webhook-trust", None)

    assert parses == []
    assert keys == {f"k-{i}.p12" for i in range(3 * view.PARSED_KEPT)}
    assert config_maps == set() and elsewhere == {"copied-elsewhere"}

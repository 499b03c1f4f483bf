"""Names derived from a WebhookCertificate's name stay valid for any name the API server accepts.

metadata.name is a DNS subdomain of up to 253 characters; a label value holds at most 63 and an Event
name, the object's name plus a suffix, at most 253.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from webhookcerts.domain import names
from webhookcerts.kube import events

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

LONG_NAME = ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 60, "e" * 9])
# Names whose cut (at 54 characters for a label, 236 for an Event) lands on a separator.
LABEL_CUT_ON_DOT = "a" * 53 + "." + "b" * 20
LABEL_CUT_ON_DASHES = "a" * 50 + "----" + "b" * 20
EVENT_CUT_ON_DOT = "a" * 235 + "." + "b" * 17
EVENT_CUT_ON_DASHES = "a" * 234 + "--" + "b" * 17
SUFFIX = "0123456789abcdef"


def _hash8(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


@pytest.mark.parametrize("name", ["a", "hooks", "payments.webhooks", "x" * 63, "a-b.c_d"])
def test_a_name_that_is_a_label_value_is_its_own_label_value(name: str) -> None:
    assert names.label_value(name) == name


@pytest.mark.parametrize("name", [LONG_NAME, "x" * 64, LABEL_CUT_ON_DOT, LABEL_CUT_ON_DASHES])
def test_a_long_name_is_cut_to_54_characters_and_hashed(name: str) -> None:
    value = names.label_value(name)
    assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, value
    assert value == f"{name[:54].rstrip('-_.')}-{_hash8(name)}"
    assert names.label_value(name) == value


def test_long_names_sharing_their_first_54_characters_keep_distinct_label_values() -> None:
    other = LONG_NAME[:54] + "z" * 199
    assert len(other) == len(LONG_NAME) == 253
    assert names.label_value(other) != names.label_value(LONG_NAME)
    assert names.label_value(other)[:54] == names.label_value(LONG_NAME)[:54]


@pytest.mark.parametrize("name", ["", "-", "a/b", "-leading", "trailing.", "x" * 54 + "/" * 20, "ü" * 70])
def test_any_string_gives_a_valid_label_value(name: str) -> None:
    value = names.label_value(name)
    assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, value


def test_a_short_name_keeps_its_event_name() -> None:
    assert events.event_name("hooks", SUFFIX) == f"hooks.{SUFFIX}"
    assert events.event_name("payments.hooks", SUFFIX) == f"payments.hooks.{SUFFIX}"


@pytest.mark.parametrize("name", [LONG_NAME, "x" * 253, EVENT_CUT_ON_DOT, EVENT_CUT_ON_DASHES])
def test_the_event_name_of_a_253_character_name_is_a_dns_subdomain(name: str) -> None:
    assert len(name) == 253 and DNS_SUBDOMAIN.fullmatch(name)
    event_name = events.event_name(name, SUFFIX)
    assert DNS_SUBDOMAIN.fullmatch(event_name) and len(event_name) <= 253, event_name
    assert event_name.endswith(f".{SUFFIX}")
    assert name.startswith(event_name.removesuffix(f".{SUFFIX}"))


def test_an_event_cut_drops_the_separator_it_lands_on() -> None:
    assert events.event_name(EVENT_CUT_ON_DOT, SUFFIX) == "a" * 235 + f".{SUFFIX}"
    assert events.event_name(EVENT_CUT_ON_DASHES, SUFFIX) == "a" * 234 + f".{SUFFIX}"

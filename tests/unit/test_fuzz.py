"""Fuzzing what the operator parses from users and from the cluster: PEM, durations, annotations.

Each parser either answers or raises its one documented error (with a message), never anything else:
garbage in a Secret, an annotation or a spec field becomes a condition, not a crashed pass.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from webhookcerts.domain import durations, models, pki, policy, trust

E = TypeVar("E", bound=BaseException)


def _raised(error: type[E], call: Callable[..., object], *args: object) -> E | None:
    """The documented error ``call`` raised, or None; any other exception fails the test."""
    try:
        call(*args)
    except error as exc:
        return exc
    return None


PEM_HEADERS = st.sampled_from(
    ["-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", ""]
)
PEMISH = st.builds(
    lambda head, body, tail: f"{head}\n{body}\n{tail}".encode(),
    PEM_HEADERS,
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n", max_size=400),
    st.sampled_from(["-----END CERTIFICATE-----", "-----END PRIVATE KEY-----", ""]),
) | st.binary(max_size=400)


@settings(max_examples=300, deadline=None)
@given(PEMISH, PEMISH)
def test_a_key_pair_check_answers_or_says_what_is_wrong(key: bytes, cert: bytes) -> None:
    error = _raised(pki.InvalidKeyMaterial, pki.check_key_pair, key, cert)
    if error is not None:
        assert error.reason in ("SecretCorrupted", "KeyMismatch") and str(error)
        # Whatever it was given, the message never repeats it.
        assert len(key) < 16 or key[:40] not in str(error).encode()


@settings(max_examples=300, deadline=None)
@given(PEMISH)
def test_a_store_of_garbage_reads_as_empty_and_a_status_certificate_as_an_error(data: bytes) -> None:
    assert isinstance(trust.certificates_by_fingerprint(data), dict)
    _raised(pki.InvalidKeyMaterial, trust.assemble, [data])


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40) | st.from_regex(durations.PATTERN, fullmatch=True))
def test_a_duration_parses_or_says_how_to_write_one(text: str) -> None:
    error = _raised(ValueError, durations.parse, text)
    if error is not None:
        assert "duration" in str(error) or "zero" in str(error)
    else:
        assert datetime.timedelta() < durations.parse(text) <= durations.MAXIMUM


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_the_sources_annotation_never_raises_whatever_it_holds(text: str) -> None:
    sources = trust.parse_sources(text)
    assert all(isinstance(s, trust.Source) for s in sources.values())


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    )
)
def test_sources_of_any_json_shape_read_as_sources_or_nothing(value: object) -> None:
    import json

    sources = trust.parse_sources(json.dumps(value))
    assert all(isinstance(s.fingerprints, tuple) for s in sources.values())


REFERENCE_STATUS = models.WebhookCertificateStatus()


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_emergency_annotation_is_acted_on_or_refused_with_a_reason(reference: str) -> None:
    problem = policy.validate_reference(reference)
    assert problem is None or problem.startswith("the emergency-rotation")
    assert isinstance(policy.emergency_pending(REFERENCE_STATUS, reference), bool)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_serials_from_annotations_compare_without_raising(a: str, b: str) -> None:
    assert policy._same_serial(a, a)
    assert isinstance(policy._same_serial(a, b), bool)

"""The key-pair check cache: one check per Secret version, and only the latest version of each kept."""

from __future__ import annotations

import datetime

import pytest

from webhookcerts.domain import models, pki
from webhookcerts.kube import secrets
from webhookcerts.service import state

NOW = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)


def secret(uid: str, version: str) -> secrets.SecretData:
    # No tls.key: the observation is made without cryptography, which is not what is tested here.
    return secrets.SecretData(f"s-{uid}", secrets.TLS, {"tls.crt": b"x"}, {}, {}, version, uid)


def test_an_unchanged_secret_is_checked_once() -> None:
    cache = state.CheckCache()
    first = cache.observe(secret("a", "1"))
    assert cache.observe(secret("a", "1")) is first
    assert cache.misses == 1 and first.problem == "SecretCorrupted"


def test_a_new_version_replaces_the_old_entry_rather_than_adding_one() -> None:
    cache = state.CheckCache()
    for version in range(1, 6):
        cache.observe(secret("a", str(version)))
    cache.observe(secret("b", "1"))
    # Positive control: each version was a miss, so each was seen; only the latest of each Secret is kept.
    assert cache.misses == 6
    assert len(cache) == 2
    cache.observe(secret("a", "5"))
    assert cache.misses == 6


def test_the_cache_stays_within_its_size() -> None:
    cache = state.CheckCache(size=3)
    for uid in "abcde":
        cache.observe(secret(uid, "1"))
    assert len(cache) == 3
    cache.observe(secret("e", "1"))
    assert cache.misses == 5
    cache.observe(secret("a", "1"))  # evicted: checked again
    assert cache.misses == 6


@pytest.fixture(scope="module")
def pair() -> pki.KeyPair:
    return pki.new_key_pair(models.Subject(common_name="cache"), NOW, datetime.timedelta(days=365))


def key_secret(pair: pki.KeyPair, cert_pem: bytes) -> secrets.SecretData:
    return secrets.SecretData("a-tls", secrets.TLS, {"tls.key": pair.key_pem, "tls.crt": cert_pem}, {}, {}, "1", "a")


def test_a_hit_gives_the_certificate_s_pem_without_the_cache_keeping_a_copy(pair: pki.KeyPair) -> None:
    cache = state.CheckCache()
    first = cache.observe(key_secret(pair, pair.cert_pem))
    again = cache.observe(key_secret(pair, pair.cert_pem))
    assert cache.misses == 1
    assert first.info is not None and again == first and again.info is not None
    assert again.info.pem == pair.cert_pem.decode()
    # What the cache holds: the public facts, not the PEM the Secret already holds.
    [(_, _, kept)] = cache._seen.values()
    assert kept.info is not None and kept.info.pem == "" and kept.info.fingerprint == first.info.fingerprint


def test_a_certificate_stored_in_another_form_keeps_its_normalised_pem(pair: pki.KeyPair) -> None:
    # Trailing text after the PEM block: the Secret's bytes are not the certificate's PEM, so the cache
    # keeps the PEM it made rather than hand the Secret's bytes back as if they were.
    stored = pair.cert_pem + b"\n# added by hand\n"
    cache = state.CheckCache()
    first = cache.observe(key_secret(pair, stored))
    again = cache.observe(key_secret(pair, stored))
    assert cache.misses == 1
    assert first.info is not None and again.info is not None
    assert again.info.pem == first.info.pem == pair.cert_pem.decode()


def test_the_same_version_with_other_bytes_is_checked_again(pair: pki.KeyPair) -> None:
    # etcd restored from a snapshot under a running operator: a Secret keeps its uid and a later write
    # takes a resourceVersion seen before, with other content. The cache must not answer for it.
    other = pki.new_key_pair(models.Subject(common_name="other"), NOW, datetime.timedelta(days=365))
    cache = state.CheckCache()
    first = cache.observe(key_secret(pair, pair.cert_pem))
    swapped = cache.observe(key_secret(pair, other.cert_pem))
    assert cache.misses == 2
    assert first.info is not None and first.problem is None
    assert swapped.problem == "KeyMismatch"
    gone = cache.observe(secrets.SecretData("a-tls", secrets.TLS, {"tls.key": pair.key_pem}, {}, {}, "1", "a"))
    assert cache.misses == 3 and gone.problem == "SecretCorrupted"

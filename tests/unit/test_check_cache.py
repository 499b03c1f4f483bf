"""The key-pair check cache: one check per Secret version, and only the latest version of each kept."""

from __future__ import annotations

from webhookcerts.kube import secrets
from webhookcerts.service import state


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

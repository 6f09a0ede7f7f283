"""Redis cache backend: JSON values, Redis-kept lifetimes, every key under the prefixes."""
from __future__ import annotations

import os
import time

import pytest

from tests.backends import emptied
from wsgicliquet.cache.redis import Cache
from wsgicliquet.cache.testing import CacheContract

pytestmark = pytest.mark.redis

KEY_PREFIX = f"wsgicliquet-test-{os.getpid()}:"


def make_cache(url: str, cache_prefix: str = "test_") -> Cache:
    return Cache.from_settings({"cache_url": url, "cache_prefix": cache_prefix, "cache_key_prefix": KEY_PREFIX})


@pytest.fixture
def cache(redis_url):
    yield from emptied(make_cache(redis_url))


class TestRedisCacheContract(CacheContract):
    pass


@pytest.mark.parametrize("value", [
    pytest.param({"token": "abc", "scopes": ["read", "write"], "n": 1.5}, id="object"),
    pytest.param([1, "two", None, True], id="array"),
    pytest.param("é€😀", id="unicode-string"),
    pytest.param(0, id="zero"),
    pytest.param(False, id="false"),
])
def test_json_values_round_trip(cache, value):
    cache.set("key", value)
    assert cache.get("key") == value
    assert cache.ttl("key") < 0  # no lifetime given
    assert cache.delete("key") == value
    assert cache.get("key") is None and cache.delete("key") is None


def test_keys_carry_both_prefixes_and_lifetimes_are_redis_expiry(cache):
    cache.set("token", "v", ttl=30)
    key = f"{KEY_PREFIX}cache:test_token"
    assert cache.client.get(key) == b'"v"'
    assert 29_000 < cache.client.pttl(key) <= 30_000
    assert 29 < cache.ttl("token") <= 30
    cache.expire("token", 2.5)
    assert 2 < cache.ttl("token") <= 2.5


def test_entries_expire(cache):
    cache.set("short", "v", ttl=0.05)
    cache.set("other", "v")
    cache.expire("other", 0.05)
    time.sleep(0.15)
    assert cache.get("short") is None and cache.get("other") is None
    assert cache.ttl("short") < 0


@pytest.mark.parametrize("ttl", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_non_positive_lifetime_means_already_expired(cache, ttl):
    cache.set("a", 1, ttl=ttl)
    assert cache.get("a") is None
    cache.set("b", 1)
    cache.expire("b", ttl)
    assert cache.get("b") is None


def test_flush_removes_only_this_cache(cache, redis_url):
    neighbour = make_cache(redis_url, cache_prefix="other_")
    neighbour.set("k", "kept")
    cache.set("k", "gone")
    cache.flush()
    assert cache.get("k") is None
    assert neighbour.get("k") == "kept"
    neighbour.flush()


def test_ping(cache):
    assert cache.ping() is True
    assert cache.get("__heartbeat__") is None

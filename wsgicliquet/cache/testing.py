"""The cache contract suite (PROTOCOL.md §17.3): every cache backend passes it unchanged.

Subclass :class:`CacheContract` with a fixture named ``cache`` returning a flushed backend::

    class TestMyCache(CacheContract):
        @pytest.fixture
        def cache(self):
            backend = Cache.from_settings({"cache_url": "...", "cache_prefix": "tests_"})
            backend.flush()
            return backend

Expiry is checked with short sleeps (about half a second in all).
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from wsgicliquet.storage.testing import run_concurrently

from . import Cache

__all__ = ["CacheContract"]

SHORT_TTL = 0.15   # seconds; the sleeps below wait a little longer
WAIT = 0.3

VALUES = [
    pytest.param("text ☕", id="string"),
    pytest.param(42, id="integer"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="boolean"),
    pytest.param([1, "a", None, {"b": False}], id="list"),
    pytest.param({"nested": {"list": [1, 2]}, "none": None}, id="object"),
    pytest.param("", id="empty-string"),
    pytest.param(0, id="zero"),
]


class CacheContract:
    """Tests of the cache contract.  Subclasses provide a ``cache`` fixture returning a flushed backend."""

    @pytest.mark.parametrize("value", VALUES)
    def test_set_then_get_returns_the_value(self, cache: Cache, value: Any) -> None:
        cache.set("key", value)
        assert cache.get("key") == value
        assert type(cache.get("key")) is type(value)

    def test_get_missing_is_none(self, cache: Cache) -> None:
        assert cache.get("never-set") is None

    def test_set_overwrites(self, cache: Cache) -> None:
        cache.set("key", "first")
        cache.set("key", {"second": 2})
        assert cache.get("key") == {"second": 2}

    def test_values_are_copies(self, cache: Cache) -> None:
        value = {"list": [1]}
        cache.set("key", value)
        value["list"].append(2)
        fetched = cache.get("key")
        assert fetched == {"list": [1]}
        fetched["list"].append(3)
        assert cache.get("key") == {"list": [1]}

    def test_delete_returns_the_value(self, cache: Cache) -> None:
        cache.set("key", [1, 2])
        assert cache.delete("key") == [1, 2]
        assert cache.get("key") is None
        assert cache.delete("key") is None
        assert cache.delete("never-set") is None

    def test_keys_are_independent(self, cache: Cache) -> None:
        cache.set("a", 1)
        cache.set("b", 2)
        cache.delete("a")
        assert (cache.get("a"), cache.get("b")) == (None, 2)

    def test_ttl_of_a_key_without_ttl_or_missing_is_negative(self, cache: Cache) -> None:
        cache.set("forever", 1)
        assert cache.ttl("forever") < 0
        assert cache.ttl("never-set") < 0

    def test_set_with_ttl(self, cache: Cache) -> None:
        cache.set("key", "value", ttl=10)
        assert 8 < cache.ttl("key") <= 10
        cache.set("float", "value", ttl=2.5)
        assert 1 < cache.ttl("float") <= 2.5

    def test_set_without_ttl_removes_the_ttl(self, cache: Cache) -> None:
        cache.set("key", "value", ttl=10)
        cache.set("key", "other")
        assert cache.ttl("key") < 0
        assert cache.get("key") == "other"

    def test_expire_gives_a_lifetime(self, cache: Cache) -> None:
        cache.set("key", "value")
        cache.expire("key", 10)
        assert 8 < cache.ttl("key") <= 10
        cache.expire("key", 100)
        assert 90 < cache.ttl("key") <= 100
        cache.expire("never-set", 10)
        assert cache.get("never-set") is None

    def test_expired_keys_disappear(self, cache: Cache) -> None:
        cache.set("short", "value", ttl=SHORT_TTL)
        cache.set("expired-later", "value")
        cache.expire("expired-later", SHORT_TTL)
        cache.set("long", "value", ttl=60)
        assert cache.get("short") == "value"
        time.sleep(WAIT)
        assert cache.get("short") is None
        assert cache.get("expired-later") is None
        assert cache.ttl("short") < 0
        assert cache.delete("short") is None
        assert cache.get("long") == "value"

    def test_flush(self, cache: Cache) -> None:
        cache.set("a", 1)
        cache.set("b", 2, ttl=60)
        cache.flush()
        assert (cache.get("a"), cache.get("b")) == (None, None)

    def test_concurrent_writers(self, cache: Cache) -> None:
        def writer(slot: int) -> None:
            for index in range(20):
                cache.set(f"key-{slot}-{index}", [slot, index], ttl=60)

        errors = [outcome for outcome in run_concurrently(8, writer) if isinstance(outcome, BaseException)]
        assert not errors, errors
        assert all(cache.get(f"key-{slot}-{index}") == [slot, index] for slot in range(8) for index in range(20))

    def test_ping(self, cache: Cache) -> None:
        assert cache.ping() is True
        assert cache.ping(readonly=True) is True
        assert cache.get("__heartbeat__") is None

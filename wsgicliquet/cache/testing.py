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

from . import MAX_TTL, Cache

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

    def test_ttl_is_a_float(self, cache: Cache) -> None:
        cache.set("key", "value", ttl=10)
        cache.set("forever", "value")
        assert all(type(cache.ttl(key)) is float for key in ("key", "forever", "never-set"))

    @pytest.mark.parametrize("ttl", [pytest.param(0, id="zero"), pytest.param(-1, id="negative"),
                                     pytest.param(-0.5, id="negative-fraction"),
                                     pytest.param(float("-inf"), id="minus-infinity")])
    def test_lifetime_not_positive_means_already_expired(self, cache: Cache, ttl: float) -> None:
        cache.set("set", 1, ttl=ttl)
        cache.set("expired", 1)
        cache.expire("expired", ttl)
        assert (cache.get("set"), cache.get("expired")) == (None, None)
        assert cache.ttl("set") < 0 and cache.ttl("expired") < 0

    @pytest.mark.parametrize("ttl", [pytest.param(1e10, id="three-centuries"), pytest.param(1e300, id="1e300"),
                                     pytest.param(float("inf"), id="infinity")])
    def test_huge_lifetimes_are_capped(self, cache: Cache, ttl: float) -> None:
        """A lifetime longer than any backend holds is the longest one (MAX_TTL), never a server error."""
        cache.set("set", 1, ttl=ttl)
        cache.set("expired", 1)
        cache.expire("expired", ttl)
        assert (cache.get("set"), cache.get("expired")) == (1, 1)
        assert all(MAX_TTL - 60 < cache.ttl(key) <= MAX_TTL for key in ("set", "expired"))

    def test_lifetime_given_as_text_or_boolean(self, cache: Cache) -> None:
        """Lifetimes read from settings may be strings: every backend takes what ``float()`` takes."""
        cache.set("text", 1, ttl="30")  # type: ignore[arg-type]
        cache.set("bool", 1)
        cache.expire("bool", True)
        assert 28 < cache.ttl("text") <= 30 and 0 < cache.ttl("bool") <= 1

    @pytest.mark.parametrize("ttl", [pytest.param(float("nan"), id="nan"), pytest.param("soon", id="text")])
    def test_lifetime_that_is_not_a_number_is_a_value_error(self, cache: Cache, ttl: Any) -> None:
        cache.set("key", 1)
        with pytest.raises(ValueError):
            cache.set("key", 2, ttl=ttl)
        with pytest.raises(ValueError):
            cache.expire("key", ttl)
        assert (cache.get("key"), cache.ttl("key") < 0) == (1, True)

    @pytest.mark.parametrize("key", [
        pytest.param("", id="empty"), pytest.param("a b:c*d?[e]%f_g\\h", id="punctuation"),
        pytest.param("é€😀", id="unicode"), pytest.param("a\x00b", id="nul"), pytest.param("a\x01b", id="soh"),
        pytest.param("a\x01\x02b", id="soh-stx"), pytest.param("a\udc80b", id="lone-surrogate"),
        pytest.param("k" * 3000, id="long"),
    ])
    def test_any_text_is_a_key(self, cache: Cache, key: str) -> None:
        """Keys are any text (an application may cache by a client-supplied string) and never collide."""
        neighbours = ["ab", "a", "a\x02b", "a\x01\x01b", "a\x00\x02b", "a?b"]
        for index, other in enumerate(neighbours):
            cache.set(other, index)
        cache.set(key, "value", ttl=60)
        assert cache.get(key) == "value"
        assert 50 < cache.ttl(key) <= 60
        cache.expire(key, 100)
        assert 90 < cache.ttl(key) <= 100
        assert [cache.get(other) for other in neighbours if other != key] == [
            index for index, other in enumerate(neighbours) if other != key]
        assert cache.delete(key) == "value"
        assert cache.get(key) is None

    @pytest.mark.parametrize("value", [pytest.param(b"bytes", id="bytes"), pytest.param({1, 2}, id="set"),
                                       pytest.param(object(), id="object")])
    def test_value_that_is_not_json_is_a_type_error(self, cache: Cache, value: Any) -> None:
        cache.set("key", "kept")
        with pytest.raises(TypeError):
            cache.set("key", value)
        assert cache.get("key") == "kept"

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

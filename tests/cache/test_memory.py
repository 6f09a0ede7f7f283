"""Memory cache backend."""
from __future__ import annotations

import pytest

from wsgicliquet.cache.memory import Cache


@pytest.fixture
def cache():
    return Cache.from_settings({"cache_url": "memory://", "cache_prefix": "test_"}, prefix="cache")


def test_set_get_delete_ttl(cache):
    cache.set("a", {"x": [1, 2]}, ttl=10)
    assert cache.get("a") == {"x": [1, 2]}
    assert 9 < cache.ttl("a") <= 10
    assert cache.delete("a") == {"x": [1, 2]}
    assert cache.get("a") is None and cache.ttl("a") < 0

"""The memory cache backend: the shared contract suite, plus its configuration."""
from __future__ import annotations

import pytest

from wsgicliquet.backends import clear_backends, load_backend
from wsgicliquet.cache.memory import Cache
from wsgicliquet.cache.testing import CacheContract


class TestMemoryCache(CacheContract):
    @pytest.fixture
    def cache(self):
        return Cache.from_settings({"cache_url": "memory://", "cache_prefix": "tests_"}, prefix="cache")


def test_prefix_from_settings():
    assert Cache.from_settings({"cache_url": "memory://", "cache_prefix": "app:"}).prefix == "app:"
    assert Cache.from_settings({"cache_url": "memory://"}).prefix == ""


def test_loaded_by_url_and_shared():
    settings = {"cache_url": "memory://", "cache_backend": "", "cache_pool_size": 25, "cache_prefix": "x"}
    try:
        first = load_backend("cache", settings)
        assert isinstance(first, Cache) and first is load_backend("cache", dict(settings))
        first.set("shared", 1)
        assert load_backend("cache", dict(settings)).get("shared") == 1
    finally:
        clear_backends()


def test_values_must_be_json():
    with pytest.raises(TypeError):
        Cache().set("key", object())

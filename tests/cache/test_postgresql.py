"""PostgreSQL cache backend: JSON values, database-clock lifetimes, prefixes, faults."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest

from tests.backends import database_url, emptied
from tests.storage.test_postgresql import admin_execute
from wsgicliquet import postgresql as pg
from wsgicliquet.cache.postgresql import Cache
from wsgicliquet.cache.testing import CacheContract
from wsgicliquet.storage.exceptions import BackendError

pytestmark = pytest.mark.postgresql


@pytest.fixture(scope="module")
def cache_url(postgresql_url: str) -> str:
    url = database_url(postgresql_url)
    Cache.from_settings({"cache_url": url}).initialize_schema()
    return url


def make_cache(url: str, cache_prefix: str = "test_") -> Cache:
    return Cache.from_settings({"cache_url": url, "cache_prefix": cache_prefix})


@pytest.fixture
def cache(cache_url: str) -> Iterator[Cache]:
    yield from emptied(make_cache(cache_url))


class TestPostgreSQLCache(CacheContract):
    """The shared contract suite, unchanged."""


@pytest.mark.parametrize("value", [
    pytest.param({"token": "abc", "scopes": ["read", "write"], "n": 1.5}, id="object"),
    pytest.param([1, "two", None, True], id="array"),
    pytest.param("é€😀", id="unicode-string"),
    pytest.param("nul\x00byte", id="nul-character"),
    pytest.param(0, id="zero"),
    pytest.param(False, id="false"),
    pytest.param(None, id="null"),
])
def test_json_values_round_trip(cache: Cache, value: Any) -> None:
    cache.set("key", value)
    assert cache.get("key") == value
    assert cache.ttl("key") < 0  # no lifetime given
    assert cache.delete("key") == value
    assert cache.get("key") is None and cache.delete("key") is None


def test_set_replaces_value_and_lifetime(cache: Cache) -> None:
    cache.set("k", 1, ttl=30)
    assert 29 < cache.ttl("k") <= 30
    cache.set("k", 2)
    assert cache.get("k") == 2 and cache.ttl("k") < 0
    cache.expire("k", 2.5)
    assert 2 < cache.ttl("k") <= 2.5


def test_entries_expire(cache: Cache) -> None:
    cache.set("short", "v", ttl=0.05)
    cache.set("other", "v")
    cache.expire("other", 0.05)
    time.sleep(0.15)
    assert cache.get("short") is None and cache.get("other") is None
    assert cache.ttl("short") < 0
    assert cache.delete("short") is None, "an expired value is gone, even before it is purged"


@pytest.mark.parametrize("ttl", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_non_positive_lifetime_means_already_expired(cache: Cache, ttl: float) -> None:
    cache.set("a", 1, ttl=ttl)
    assert cache.get("a") is None
    cache.set("b", 1)
    cache.expire("b", ttl)
    assert cache.get("b") is None


def test_expire_on_a_missing_key_does_nothing(cache: Cache) -> None:
    cache.expire("missing", 10)
    assert cache.get("missing") is None and cache.ttl("missing") < 0


def test_expired_rows_are_purged_by_writes_not_reads(cache: Cache, cache_url: str) -> None:
    cache.set("old", 1, ttl=0)
    cache.get("old")
    assert admin_execute(cache_url, "SELECT count(*) FROM cache WHERE key = 'test_old'") == [(1,)]
    cache.set("new", 1)
    assert admin_execute(cache_url, "SELECT count(*) FROM cache WHERE key = 'test_old'") == [(0,)]


def test_keys_carry_the_prefix_and_flush_removes_only_this_cache(cache: Cache, cache_url: str) -> None:
    neighbour = make_cache(cache_url, cache_prefix="other_")
    like_chars = make_cache(cache_url, cache_prefix="te%t_")
    neighbour.set("k", "kept")
    cache.set("k", "gone")
    like_chars.set("k", "wildcards in the prefix are literal")
    assert admin_execute(cache_url, "SELECT key FROM cache ORDER BY key") == [("other_k",), ("te%t_k",),
                                                                            ("test_k",)]
    like_chars.flush()
    assert cache.get("k") == "gone"
    cache.flush()
    assert cache.get("k") is None and neighbour.get("k") == "kept"
    neighbour.flush()


@pytest.mark.parametrize("key", ["'; DROP TABLE cache; --", "%", "a_b", "\\"])
def test_hostile_keys_are_plain_keys(cache: Cache, key: str) -> None:
    cache.set(key, "v")
    assert cache.get(key) == "v" and cache.get("x") is None
    assert cache.delete(key) == "v"


def test_ping(cache: Cache) -> None:
    assert cache.ping() is True and cache.get("__heartbeat__") is None


def test_unmigrated_and_unreachable(cache_url: str) -> None:
    unreachable = Cache(pg.Client("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", pool_size=1))
    for call in (lambda: unreachable.get("k"), lambda: unreachable.set("k", 1), unreachable.flush):
        with pytest.raises(BackendError):
            call()
    assert unreachable.ping() is False
    never = Cache(pg.Client(cache_url + "?options=-c%20search_path%3Dno_such_schema", pool_size=1))
    with pytest.raises(BackendError, match="wsgicliquet migrate --ini"):
        never.get("k")


def test_cache_writes_commit_outside_the_request_transaction(cache: Cache, cache_url: str) -> None:
    """A request holding a transaction does not make another request's cache writes wait for its end."""
    from wsgicliquet.storage.postgresql import Storage

    storage = Storage.from_settings({"storage_url": cache_url})
    storage.initialize_schema()
    assert storage.client is cache.client
    with pytest.raises(RuntimeError):
        with storage.transaction():
            storage.collection_timestamp("c", "p")  # the thread now holds a connection
            cache.set("token", "verified", ttl=60)
            seen = []
            other = threading.Thread(target=lambda: seen.append(cache.get("token")))
            other.start()
            other.join(5)
            assert seen == ["verified"], "committed at once, visible to other threads"
            raise RuntimeError("the request fails")
    assert cache.get("token") == "verified", "a failed request does not undo the cache"


def test_a_thread_in_a_transaction_never_waits_for_a_cache_connection(cache_url: str) -> None:
    client = pg.Client(cache_url, pool_size=1, pool_timeout=0.5)
    cache = Cache(client, prefix="test_")
    with client.transaction():
        client.execute("SELECT 1")  # the only pooled connection is taken by this transaction
        cache.set("k", 1)
        assert cache.get("k") == 1
    assert len(client._idle) == 1, "the extra connection is not kept beyond the pool size"
    cache.flush()
    client.close()

"""Redis storage backend: key layout, atomic writes, query paths, and concurrent writers in several processes."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest

from tests.backends import emptied
from wsgicliquet import redis_client
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.storage import COMPARISON, Filter, RecordNotFoundError, Sort, UnicityError
from wsgicliquet.storage.memory import Storage as MemoryStorage
from wsgicliquet.storage.query import keyset_rules
from wsgicliquet.storage.redis import Storage
from wsgicliquet.storage.testing import StorageContract

pytestmark = pytest.mark.redis

# A prefix of its own per test process, so that tests never touch other data of the shared database 5.
KEY_PREFIX = f"wsgicliquet-test-{os.getpid()}:"


def make_storage(url: str, key_prefix: str = KEY_PREFIX) -> Storage:
    return Storage.from_settings({"storage_url": url, "storage_pool_size": 10, "storage_key_prefix": key_prefix})


@pytest.fixture
def storage(redis_url):
    yield from emptied(make_storage(redis_url))


class TestRedisStorageContract(StorageContract):
    pass


@pytest.fixture
def memory():
    return MemoryStorage()


def test_keys_live_under_the_prefix_and_flush_keeps_other_keys(storage):
    client = storage.client
    client.set("outside-the-prefix", "kept")
    try:
        record = storage.create("bookmark", "basicauth:abc", {"title": "a"})
        storage.delete("bookmark", "basicauth:abc", storage.create("bookmark", "basicauth:abc", {})["id"])
        keys = sorted(key.decode() for key in client.scan_iter(match=KEY_PREFIX + "*"))
        partition = "bookmark:basicauth:abc"
        assert keys == [f"{KEY_PREFIX}storage:{kind}:{partition}"
                        for kind in ("deleted", "modified", "records", "timestamp")]
        assert client.zscore(f"{KEY_PREFIX}storage:modified:{partition}", record["id"]) == record["last_modified"]
        storage.flush()
        assert list(client.scan_iter(match=KEY_PREFIX + "*")) == []
        assert client.get("outside-the-prefix") == b"kept"
    finally:
        client.delete("outside-the-prefix")


def test_partitions_with_colons_do_not_collide(storage):
    storage.create("a:b", "c", {"id": "x", "where": "first"})
    storage.create("a", "b:c", {"id": "x", "where": "second"})
    assert storage.get("a:b", "c", "x")["where"] == "first"
    assert storage.get("a", "b:c", "x")["where"] == "second"


def test_collection_timestamp_never_writes(storage):
    assert storage.collection_timestamp("c", "p") == 0
    assert storage.collection_timestamp("c", "p") == 0
    assert list(storage.client.scan_iter(match=KEY_PREFIX + "*")) == []


@pytest.mark.parametrize("offset, kept", [
    pytest.param(-1_000_000, False, id="past-candidate-gets-counter-plus-one"),
    pytest.param(10_000_000, True, id="future-candidate-is-kept"),
])
def test_supplied_last_modified_on_create(storage, offset, kept):
    first = storage.create("c", "p", {})
    candidate = first["last_modified"] + offset
    record = storage.create("c", "p", {"last_modified": candidate})
    assert record["last_modified"] == (candidate if kept else first["last_modified"] + 1)
    assert storage.collection_timestamp("c", "p") == record["last_modified"]
    assert storage.get("c", "p", record["id"]) == record


def test_every_write_bumps_the_counter_and_stamps_the_record(storage):
    stamps = []
    record = storage.create("c", "p", {"n": 1})
    stamps.append(record["last_modified"])
    stamps.append(storage.update("c", "p", record["id"], {"n": 2, "last_modified": 1})["last_modified"])
    stamps.append(storage.delete("c", "p", record["id"], last_modified=5)["last_modified"])
    stamps.append(storage.create("c", "p", {"id": record["id"]})["last_modified"])
    assert stamps == sorted(set(stamps))
    assert storage.collection_timestamp("c", "p") == stamps[-1]
    # The re-creation removed the tombstone.
    assert storage.get_all("c", "p", include_deleted=True)[0] == [storage.get("c", "p", record["id"])]


def test_returned_records_are_copies(storage):
    given = {"tags": ["a"], "nested": {"x": 1}}
    record = storage.create("c", "p", given)
    record["tags"].append("b")
    assert given == {"tags": ["a"], "nested": {"x": 1}}
    assert storage.get("c", "p", record["id"])["tags"] == ["a"]


def test_values_beyond_64_bits_round_trip(storage):
    record = storage.create("c", "p", {"big": 2 ** 70, "small": -(2 ** 70), "float": 0.1})
    assert storage.get("c", "p", record["id"]) == record
    assert storage.get_all("c", "p", filters=[Filter("big", 2 ** 64, COMPARISON.GT)])[0] == [record]


@pytest.mark.parametrize("stored, candidate, conflict", [
    pytest.param("a@example.com", "a@example.com", True, id="same-string"),
    pytest.param("é€😀", "é€😀", True, id="same-unicode"),
    pytest.param("A", "a", False, id="case-differs"),
    pytest.param(1, 1.0, True, id="int-equals-float"),
    pytest.param(1, True, False, id="true-is-not-one"),
    pytest.param(None, None, False, id="null-never-conflicts"),
    pytest.param({"b": 1, "a": [1, "x"]}, {"a": [1, "x"], "b": 1}, True, id="object-key-order"),
    pytest.param({"a": [1, 2]}, {"a": [2, 1]}, False, id="array-order-matters"),
    pytest.param("1", 1, False, id="string-is-not-number"),
])
def test_unique_fields_use_json_equality(storage, memory, stored, candidate, conflict):
    for backend in (storage, memory):
        existing = backend.create("c", "p", {"email": stored})
        if conflict:
            with pytest.raises(UnicityError) as info:
                backend.create("c", "p", {"email": candidate}, unique_fields=["email"])
            assert info.value.field == "email" and info.value.record == existing
        else:
            backend.create("c", "p", {"email": candidate}, unique_fields=["email"])


def test_unique_fields_dotted_and_update_excludes_itself(storage):
    first = storage.create("c", "p", {"author": {"name": "x"}}, unique_fields=["author.name"])
    storage.update("c", "p", first["id"], {"author": {"name": "x"}, "v": 2}, unique_fields=["author.name"])
    second = storage.create("c", "p", {"author": {"name": "y"}})
    before = storage.collection_timestamp("c", "p")
    with pytest.raises(UnicityError) as info:
        storage.update("c", "p", second["id"], {"author": {"name": "x"}}, unique_fields=["author.name"])
    assert info.value.field == "author.name" and info.value.record["id"] == first["id"]
    assert storage.collection_timestamp("c", "p") == before  # nothing written
    with pytest.raises(UnicityError) as info:
        storage.create("c", "p", {"id": first["id"]})
    assert info.value.field == "id"


def test_delete_all_and_purge(storage):
    records = [storage.create("c", "p", {"n": i}) for i in range(7)]
    tombstones = storage.delete_all("c", "p", [Filter("n", 3, COMPARISON.LT)])
    assert sorted(t["id"] for t in tombstones) == sorted(r["id"] for r in records[:3])
    stamps = [t["last_modified"] for t in tombstones]
    assert stamps == sorted(stamps) and stamps[0] > records[-1]["last_modified"]
    assert storage.purge_deleted("c", "p", before=stamps[1]) == 1
    assert storage.purge_deleted("c", "p") == 2
    assert storage.delete_all("c", "p", with_deleted=False)[0]["deleted"] is True
    assert storage.get_all("c", "p", include_deleted=True) == ([], 0)
    with pytest.raises(RecordNotFoundError):
        storage.delete("c", "p", records[0]["id"])


def _populate(*backends):
    """The same history in each backend: 30 records, some updated, some deleted."""
    for backend in backends:
        ids = []
        for n in range(30):
            ids.append(backend.create("c", "p", {"id": f"r{n:02d}", "n": n % 7, "title": f"t{n}",
                                                 **({"extra": n} if n % 3 else {})})["id"])
        for object_id in ids[5:10]:
            backend.update("c", "p", object_id, {"n": 100, "title": "updated"})
        for object_id in ids[20:26]:
            backend.delete("c", "p", object_id)


def _lm_filter(backend, position, operator):
    """A last_modified filter at the timestamp of the ``position``-th write of ``backend``'s history."""
    stamps = sorted(r["last_modified"] for r in backend.get_all("c", "p", include_deleted=True)[0])
    return [Filter("last_modified", stamps[position], operator)]


QUERIES = [
    pytest.param({}, id="default-order"),
    pytest.param({"limit": 4}, id="default-order-limit"),
    pytest.param({"limit": 4, "include_deleted": True}, id="with-tombstones"),
    pytest.param({"sorting": [Sort("last_modified", 1)], "limit": 6, "include_deleted": True}, id="ascending"),
    pytest.param({"since": (10, COMPARISON.GT), "include_deleted": True}, id="since"),
    pytest.param({"since": (10, COMPARISON.GT), "limit": 3, "sorting": [Sort("last_modified", 1)]},
                 id="since-ascending-limit"),
    pytest.param({"since": (12, COMPARISON.LT), "include_deleted": True}, id="before"),
    pytest.param({"since": (12, COMPARISON.MAX)}, id="to"),
    pytest.param({"pagination_rules": [[Filter("n", 3, COMPARISON.EQ)], [Filter("id", "r27", COMPARISON.MIN)]],
                  "limit": 3, "include_deleted": True}, id="sparse-rules-walk-several-windows"),
    pytest.param({"since": (3, COMPARISON.GT), "pagination_rules": [[Filter("n", 100, COMPARISON.EQ)]], "limit": 2,
                  "sorting": [Sort("last_modified", 1)]}, id="since-with-sparse-rules-ascending"),
    pytest.param({"filters": [Filter("n", 3, COMPARISON.MIN)], "limit": 5}, id="field-filter"),
    pytest.param({"since": (8, COMPARISON.GT), "also": [Filter("n", 100, COMPARISON.NOT)], "include_deleted": True,
                  "sorting": [Sort("title", 1), Sort("id", -1)]}, id="since-and-field-filter-read-a-range"),
    pytest.param({"since": (20, COMPARISON.MAX), "also": [Filter("extra", True, COMPARISON.HAS)], "limit": 4},
                 id="to-and-field-filter"),
    pytest.param({"filters": [Filter("extra", True, COMPARISON.HAS)], "sorting": [Sort("title", -1)]},
                 id="has-and-sort"),
    pytest.param({"sorting": [Sort("n", 1), Sort("id", -1)], "limit": 8, "include_deleted": True},
                 id="sort-field-with-tombstones"),
]


@pytest.mark.parametrize("query", QUERIES)
def test_get_all_answers_like_the_memory_backend(storage, memory, query):
    """Sorted-set path and whole-partition path both agree with the reference backend."""
    _populate(storage, memory)
    answers = []
    for backend in (storage, memory):
        kwargs = dict(query)
        since = kwargs.pop("since", None)
        if since is not None:
            kwargs["filters"] = _lm_filter(backend, *since) + kwargs.pop("also", [])
        records, total = backend.get_all("c", "p", **kwargs)
        answers.append(([(r["id"], r.get("n"), r.get("deleted", False)) for r in records], total))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("sorting, include_deleted", [
    pytest.param([Sort("last_modified", -1)], True, id="newest-first"),
    pytest.param([Sort("last_modified", 1), Sort("id", 1)], True, id="oldest-first"),
    pytest.param([Sort("n", 1), Sort("last_modified", -1)], False, id="by-field"),
])
def test_keyset_pagination_returns_every_record_once(storage, sorting, include_deleted):
    _populate(storage)
    expected, total = storage.get_all("c", "p", sorting=sorting, include_deleted=include_deleted)
    pages, rules = [], []
    while True:
        page, page_total = storage.get_all("c", "p", sorting=sorting, pagination_rules=rules, limit=4 + 1,
                                           include_deleted=include_deleted)
        assert page_total == total == 24
        pages.extend(page[:4])
        if len(page) <= 4:
            break
        rules = keyset_rules(page[3], sorting)
    assert pages == expected


class _CountingScans(Storage):
    """Counts the reads of a whole partition."""

    scans = 0

    def _scan(self, *args: Any, **kwargs: Any):
        self.scans += 1
        return super()._scan(*args, **kwargs)


@pytest.mark.parametrize("query", [
    pytest.param({"filters": [Filter("id", ["r03", "r22", "r09", "nope", 3, "r03"], COMPARISON.IN)]}, id="in"),
    pytest.param({"filters": [Filter("id", ["r03", "r22", "r09", "r24"], COMPARISON.IN)], "include_deleted": True,
                  "limit": 3}, id="in-with-tombstones"),
    pytest.param({"filters": [Filter("id", ["r01", "r05", "r07", "r08"], COMPARISON.IN),
                              Filter("n", 100, COMPARISON.EQ)], "sorting": [Sort("title", 1), Sort("id", 1)]},
                 id="in-and-field-filter-sorted"),
    pytest.param({"filters": [Filter("id", ["r01", "r05", "r07"], COMPARISON.IN),
                              Filter("id", ["r05", "r07", "r11"], COMPARISON.IN)]}, id="two-in-filters"),
    pytest.param({"filters": [Filter("id", "r07", COMPARISON.EQ)]}, id="equal"),
    pytest.param({"filters": [Filter("id", [], COMPARISON.IN)]}, id="empty-list"),
    pytest.param({"filters": [Filter("id", ["x\udcff", 7, None], COMPARISON.IN)], "include_deleted": True},
                 id="values-no-id-has"),
])
def test_listing_by_ids_reads_those_ids_only(redis_url, memory, query):
    """An ``in_id`` listing (what a shareable resource adds for a user who reads shared records) fetches the named
    records, not the whole partition, which may hold everybody's records; answers as the reference backend."""
    storage = _CountingScans.from_settings({"storage_url": redis_url, "storage_key_prefix": KEY_PREFIX})
    storage.flush()
    try:
        _populate(storage, memory)
        answers = []
        for backend in (storage, memory):
            records, total = backend.get_all("c", "p", **query)
            answers.append(([(r["id"], r.get("n"), r.get("deleted", False)) for r in records], total))
        assert answers[0] == answers[1]
        assert storage.scans == 0
        doomed = [Filter("id", ["r04", "r05", "r22", "nope"], COMPARISON.IN)]
        assert [t["id"] for t in storage.delete_all("c", "p", doomed)] == ["r04", "r05"]
        assert storage.scans == 0
    finally:
        storage.flush()


def test_settings(redis_url):
    settings = {"storage_url": redis_url, "storage_pool_size": 3}
    backend = Storage.from_settings(settings)
    assert backend.namespace == "wsgicliquet:storage:"
    assert backend.client is redis_client.get_client(redis_url)  # one pool per URL, shared
    assert Storage.from_settings(dict(settings, redis_key_prefix="app:")).namespace == "app:storage:"
    with pytest.raises(ConfigurationError):
        Storage.from_settings({"storage_url": "memory://"})
    with pytest.raises(ConfigurationError):
        Storage.from_settings({"storage_url": "redis://host:notaport/0"})
    with pytest.raises(ConfigurationError):
        Storage.from_settings(dict(settings, storage_key_prefix=""))


def test_loaded_by_url_scheme_sharing_one_pool(redis_url):
    from wsgicliquet.backends import clear_backends, load_backend
    from wsgicliquet.cache.redis import Cache
    from wsgicliquet.permission.redis import Permission
    from wsgicliquet.settings import load_settings

    settings = load_settings({"storage_url": redis_url, "cache_url": redis_url, "permission_url": redis_url},
                             environ={})
    clear_backends()
    try:
        backends = [load_backend(kind, settings) for kind in ("storage", "cache", "permission")]
    finally:
        clear_backends()
    assert [type(backend) for backend in backends] == [Storage, Cache, Permission]
    assert len({id(backend.client) for backend in backends}) == 1
    assert [backend.namespace for backend in backends] == [
        "wsgicliquet:storage:", "wsgicliquet:cache:", "wsgicliquet:permission:"]


# Concurrent writers in several processes, and pollers syncing with `_since`.

PROCESSES, THREADS, DURATION = 4, 4, 2.0
Ack = Tuple[str, str, int]  # (kind, record id, last_modified)


def _writer_process(url: str, key_prefix: str, pools: List[Dict[str, List[str]]], barrier: Any, queue: Any
                    ) -> None:
    """Run THREADS writers for DURATION once every process is ready; send each thread's acknowledged writes."""
    storage = make_storage(url, key_prefix)
    results: List[List[Ack]] = [[] for _ in pools]
    barrier.wait(timeout=60)
    start = time.time()

    def write(index: int) -> None:
        pool, acks, step = pools[index], results[index], 0
        while time.time() < start + DURATION:
            step += 1
            if step % 3 == 1 and pool["update"]:
                object_id = pool["update"].pop()
                acks.append(("update", object_id,
                             storage.update("c", "p", object_id, {"step": step})["last_modified"]))
            elif step % 3 == 2 and pool["delete"]:
                object_id = pool["delete"].pop()
                acks.append(("delete", object_id, storage.delete("c", "p", object_id)["last_modified"]))
            else:
                record = storage.create("c", "p", {"step": step})
                acks.append(("create", record["id"], record["last_modified"]))

    threads = [threading.Thread(target=write, args=(index,)) for index in range(len(pools))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(results)


class Poller(threading.Thread):
    """Syncs like a client: everything modified after the newest timestamp it has seen, tombstones included."""

    def __init__(self, storage: Storage, since: int, limit: Any = None) -> None:
        super().__init__()
        self.storage, self.since, self.limit = storage, since, limit
        self.seen: List[Ack] = []
        self.stop = threading.Event()
        self.errors: List[str] = []

    def poll(self) -> None:
        while True:
            records, _ = self.storage.get_all(
                "c", "p", filters=[Filter("last_modified", self.since, COMPARISON.GT)],
                sorting=[Sort("last_modified", 1)] if self.limit else (), limit=self.limit, include_deleted=True)
            records.sort(key=lambda record: record["last_modified"])
            for record in records:
                if record["last_modified"] <= self.since:
                    self.errors.append(f"{record} is not after {self.since}")
                self.since = record["last_modified"]
                self.seen.append(("delete" if record.get("deleted") else "live", record["id"],
                                  record["last_modified"]))
            if not self.limit or len(records) < self.limit:
                return

    def run(self) -> None:
        while not self.stop.is_set():
            self.poll()
        self.poll()


@pytest.mark.slow
def test_concurrent_writers_in_processes_and_pollers_see_every_write_once(storage, redis_url):
    per_thread = 60
    seeds = [storage.create("c", "p", {"seed": n})["id"] for n in range(PROCESSES * THREADS * per_thread * 2)]
    pools = [[{"update": seeds[(p * THREADS + t) * 2 * per_thread:][:per_thread],
               "delete": seeds[(p * THREADS + t) * 2 * per_thread + per_thread:][:per_thread]}
              for t in range(THREADS)] for p in range(PROCESSES)]
    start_since = storage.collection_timestamp("c", "p")
    pollers = [Poller(make_storage(redis_url), start_since), Poller(make_storage(redis_url), start_since, limit=25)]
    for poller in pollers:
        poller.start()
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(PROCESSES + 1), context.Queue()
    processes = [context.Process(target=_writer_process, args=(redis_url, KEY_PREFIX, pools[p], barrier, queue))
                 for p in range(PROCESSES)]
    for process in processes:
        process.start()
    barrier.wait(timeout=60)  # every interpreter started and connected: the writers run together
    per_process = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join()
        assert process.exitcode == 0
    for poller in pollers:
        poller.stop.set()
        poller.join()

    acks = [ack for threads in per_process for acks in threads for ack in acks]
    assert len(acks) > 300, "the writers barely ran"
    assert {kind for kind, _, _ in acks} == {"create", "update", "delete"}
    stamps = [stamp for _, _, stamp in acks]
    assert len(set(stamps)) == len(stamps), "two writes got the same timestamp"
    for threads in per_process:
        for thread_acks in threads:  # a thread's writes are sequential: their timestamps increase
            assert [s for _, _, s in thread_acks] == sorted(s for _, _, s in thread_acks)
    # Every record was written at most once during the run, so every acknowledged write must be seen once.
    expected = sorted(("delete" if kind == "delete" else "live", object_id, stamp) for kind, object_id, stamp in acks)
    for poller in pollers:
        assert poller.errors == []
        assert sorted(poller.seen) == expected
        assert [s for _, _, s in poller.seen] == sorted(stamp for _, _, stamp in poller.seen)
    assert storage.collection_timestamp("c", "p") == max(stamps)

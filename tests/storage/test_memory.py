"""The memory storage backend: the shared contract suite, plus what only memory promises."""
from __future__ import annotations

import random

import pytest

from wsgicliquet.backends import clear_backends, load_backend
from wsgicliquet.storage import COMPARISON, Filter, Sort, UnicityError, query
from wsgicliquet.storage import memory
from wsgicliquet.storage.memory import Storage
from wsgicliquet.storage.query import keyset_rules
from wsgicliquet.storage.testing import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self):
        return Storage.from_settings({"storage_url": "memory://"}, prefix="storage")


def test_loaded_by_url():
    settings = {"storage_url": "memory://", "storage_backend": "", "storage_pool_size": 25, "cache_prefix": ""}
    try:
        assert isinstance(load_backend("storage", settings), Storage)
    finally:
        clear_backends()


def test_default_order_after_updates_and_forced_timestamps():
    storage = Storage()
    first = storage.create("c", "p", {"id": "a"})
    storage.create("c", "p", {"id": "b", "last_modified": first["last_modified"] + 10_000})
    storage.update("c", "p", "a", {})
    storage.create("c", "p", {"id": "c"})
    for sorting in ([], [Sort("last_modified", -1)]):
        records, total = storage.get_all("c", "p", sorting=sorting, limit=2)
        assert [record["id"] for record in records] == ["c", "a"] and total == 3
    records, _ = storage.get_all("c", "p", sorting=[Sort("last_modified", 1)])
    assert [record["id"] for record in records] == ["b", "a", "c"]


@pytest.fixture(scope="module")
def busy():
    """A partition with updates, deletions and a forced timestamp, and everything it holds (tombstones too)."""
    storage = Storage()
    for index in range(60):
        storage.create("c", "p", {"id": f"r{index:02}", "n": index % 7, "s": "abc"[index % 3]})
    for index in range(0, 60, 4):
        storage.update("c", "p", f"r{index:02}", {"n": index % 5})
    for index in range(1, 60, 6):
        storage.delete("c", "p", f"r{index:02}")
    storage.create("c", "p", {"id": "late", "n": 3, "last_modified": storage.collection_timestamp("c", "p") + 50})
    everything, _ = storage.get_all("c", "p", include_deleted=True)
    return storage, everything


def _stamp(everything, position):
    return sorted(record["last_modified"] for record in everything)[position]


@pytest.mark.parametrize("direction", [1, -1], ids=["oldest-first", "newest-first"])
@pytest.mark.parametrize("include_deleted", [False, True], ids=["live", "with-tombstones"])
@pytest.mark.parametrize("make_filters, make_rules", [
    pytest.param(lambda e: [], lambda e: [], id="all"),
    pytest.param(lambda e: [Filter("last_modified", _stamp(e, 20), COMPARISON.GT)], lambda e: [], id="since"),
    pytest.param(lambda e: [Filter("last_modified", _stamp(e, 40), COMPARISON.LT)], lambda e: [], id="before"),
    pytest.param(lambda e: [Filter("last_modified", _stamp(e, 10), COMPARISON.MIN),
                            Filter("last_modified", _stamp(e, 50), COMPARISON.MAX),
                            Filter("n", 3, COMPARISON.NOT)], lambda e: [], id="window-and-field"),
    pytest.param(lambda e: [Filter("last_modified", _stamp(e, 10), COMPARISON.GT),
                            Filter("last_modified", _stamp(e, 30), COMPARISON.LT)], lambda e: [], id="since-before"),
    pytest.param(lambda e: [Filter("last_modified", _stamp(e, 30), COMPARISON.GT),
                            Filter("last_modified", _stamp(e, 10), COMPARISON.LT)], lambda e: [], id="empty-window"),
    pytest.param(lambda e: [Filter("last_modified", _stamp(e, 33), COMPARISON.EQ)], lambda e: [], id="exact"),
    pytest.param(lambda e: [Filter("last_modified", float(_stamp(e, 20)), COMPARISON.GT),
                            Filter("s", "a", COMPARISON.EQ)], lambda e: [], id="float-bound-and-field"),
    pytest.param(lambda e: [], lambda e: [[Filter("last_modified", _stamp(e, 30), COMPARISON.LT)],
                                          [Filter("last_modified", _stamp(e, 30), COMPARISON.EQ),
                                           Filter("id", "r30", COMPARISON.GT)]], id="keyset-rules"),
    pytest.param(lambda e: [Filter("last_modified", _stamp(e, 5), COMPARISON.GT)],
                 lambda e: [[Filter("last_modified", _stamp(e, 25), COMPARISON.GT)],
                            [Filter("n", 0, COMPARISON.EQ)]], id="rule-without-bound"),
])
def test_timestamp_walk_answers_like_a_full_scan(busy, direction, include_deleted, make_filters, make_rules):
    storage, everything = busy
    candidates = everything if include_deleted else [record for record in everything if not record.get("deleted")]
    filters, rules = make_filters(everything), make_rules(everything)
    for sorting in ([Sort("last_modified", direction)], [Sort("s", 1), Sort("last_modified", direction)]):
        for limit in (None, 7):
            expected = query.apply(candidates, filters=filters, sorting=sorting, pagination_rules=rules, limit=limit,
                                   count=lambda record: not record.get("deleted"))
            got = storage.get_all("c", "p", filters=filters, sorting=sorting, pagination_rules=rules, limit=limit,
                                  include_deleted=include_deleted)
            assert got == expected


@pytest.mark.parametrize("direction", [1, -1], ids=["oldest-first", "newest-first"])
@pytest.mark.parametrize("include_deleted", [False, True], ids=["live", "with-tombstones"])
@pytest.mark.parametrize("filters", [
    pytest.param([Filter("id", ["r30", "r07", "r04", "late", "nope", 4, "r30"], COMPARISON.IN)], id="in"),
    pytest.param([Filter("id", ["r04", "r08", "r12", "r13", "r20"], COMPARISON.IN), Filter("n", 3, COMPARISON.NOT)],
                 id="in-and-field"),
    pytest.param([Filter("id", "r13", COMPARISON.EQ)], id="equal-tombstone"),
    pytest.param([Filter("id", ["r01", "r02", "r03"], COMPARISON.IN), Filter("id", ["r02", "r03", "r09"],
                                                                             COMPARISON.IN)], id="two-lists"),
    pytest.param([Filter("id", [], COMPARISON.IN)], id="empty"),
])
def test_listing_by_ids_looks_them_up(busy, monkeypatch, direction, include_deleted, filters):
    """An ``in_id`` listing (what a shareable resource adds for a user reading shared records) visits the named
    records only, not the partition, which may hold everybody's; it answers like a full scan."""
    storage, everything = busy
    candidates = everything if include_deleted else [record for record in everything if not record.get("deleted")]
    walks = []
    monkeypatch.setattr(memory._Partition, "ordered", lambda *args: walks.append(args) or iter(()))
    for sorting in ([Sort("last_modified", direction)], [Sort("s", 1), Sort("last_modified", direction)]):
        for limit, rules in ((None, []), (2, keyset_rules(candidates[0], sorting))):
            expected = query.apply(candidates, filters=filters, sorting=sorting, pagination_rules=rules,
                                   limit=limit, count=lambda record: not record.get("deleted"))
            got = storage.get_all("c", "p", filters=filters, sorting=sorting, pagination_rules=rules, limit=limit,
                                  include_deleted=include_deleted)
            assert got == expected
    assert walks == []


def test_bulk_delete_by_ids_buries_them_oldest_first():
    storage = Storage()
    for index in range(6):
        storage.create("c", "p", {"id": f"r{index}"})
    storage.update("c", "p", "r1", {})
    tombstones = storage.delete_all("c", "p", [Filter("id", ["r4", "r1", "r0", "nope"], COMPARISON.IN)])
    assert [tombstone["id"] for tombstone in tombstones] == ["r0", "r4", "r1"]
    assert [record["id"] for record in storage.get_all("c", "p", sorting=[Sort("last_modified", 1)])[0]] == [
        "r2", "r3", "r5"]


def _expected_conflict(storage, record, unique_fields, exclude=None):
    """The brute-force answer: the oldest other live record holding a JSON-equal value of a unique field."""
    live, _ = storage.get_all("c", "p", sorting=[Sort("last_modified", 1)])
    for field in unique_fields:
        value = query.resolve(record, field)
        if value is query.MISSING or value is None:
            continue
        for other in live:
            if other["id"] != exclude and query.json_equal(query.resolve(other, field), value):
                return field, other
    return None


def test_unique_index_answers_like_a_full_scan():
    rnd = random.Random(7)
    values = [None, 1, 1.0, True, "a", "b", [1], {"x": 1}, {"x": True}]
    storage = Storage()
    storage.create("c", "p", {"id": "early", "email": "a", "author": {"name": 1}})  # indexed later, on first use
    ids = ["early"]
    for step in range(600):
        unique_fields = rnd.choice([["email"], ["author.name"], ["email", "author.name"], []])
        record = {"email": rnd.choice(values), "author": {"name": rnd.choice(values)}}
        action = rnd.choice(["create", "update", "delete", "delete_all"] if ids else ["create"])
        if action == "delete":
            ids.remove(victim := rnd.choice(ids))
            storage.delete("c", "p", victim)
            continue
        if action == "delete_all":
            doomed = storage.delete_all("c", "p", [Filter("email", rnd.choice(values[1:]), COMPARISON.EQ)])
            ids = [object_id for object_id in ids if object_id not in {tomb["id"] for tomb in doomed}]
            continue
        object_id = rnd.choice(ids) if action == "update" else f"r{step}"
        expected = _expected_conflict(storage, record, unique_fields, exclude=object_id)
        try:
            if action == "update":
                storage.update("c", "p", object_id, record, unique_fields=unique_fields)
            else:
                storage.create("c", "p", dict(record, id=object_id), unique_fields=unique_fields)
                ids.append(object_id)
            got = None
        except UnicityError as error:
            got = (error.field, error.record)
        assert got == expected, (step, action, record, unique_fields)


def test_copies_follow_the_shape_of_each_version():
    """Only nested values are copied deeply: which fields are nested is tracked per version of a record."""
    storage = Storage()
    storage.create("c", "p", {"id": "a", "v": 1, "w": {"x": [1]}})
    storage.update("c", "p", "a", {"v": [1], "w": 2})
    for record in (storage.get("c", "p", "a"), storage.get_all("c", "p")[0][0]):
        assert record == {"id": "a", "v": [1], "w": 2, "last_modified": record["last_modified"]}
        record["v"].append(2)
    storage.delete("c", "p", "a")
    storage.create("c", "p", {"id": "a", "v": {"deep": [1]}, "flat": {"k": 1}, "rows": [{"k": 1}]})
    listed, _ = storage.get_all("c", "p", include_deleted=True)
    listed[0]["v"]["deep"].append(2)
    listed[0]["flat"]["k"] = 2
    listed[0]["rows"][0]["k"] = 2
    stored = storage.get("c", "p", "a")
    assert (stored["v"], stored["flat"], stored["rows"]) == ({"deep": [1]}, {"k": 1}, [{"k": 1}])

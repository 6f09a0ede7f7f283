"""The storage contract suite: every backend (bundled or third-party) must pass it unchanged.

Use it from a test module::

    import pytest
    from wsgicliquet.storage.testing import StorageContract
    from mypackage.storage import Storage

    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage(self):
            backend = Storage.from_settings({"storage_url": "my://..."})
            backend.flush()
            yield backend
            backend.flush()

The suite only uses the public contract of :class:`wsgicliquet.storage.Storage`.  It ends with a Hypothesis state
machine (:class:`StorageMachine`, run by :func:`run_storage_machine`) that replays random sequences of writes and
listings against the backend and against a plain-dict model, and compares the two.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from . import COMPARISON, Filter, PreconditionFailed, RecordNotFoundError, Sort, Storage, UnicityError
from .query import keyset_rules

__all__ = ["StorageContract", "StorageMachine", "run_storage_machine", "run_concurrently"]

C, P = "test-collection", "test-parent"   # the partition most tests use
OTHER_P = "other-parent"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ids(records: Sequence[Dict[str, Any]]) -> List[str]:
    return [record["id"] for record in records]


def page_through(storage: Storage, sorting: Sequence[Sort], limit: int, *, filters: Sequence[Filter] = (),
                 include_deleted: bool = False, collection_id: str = C, parent_id: str = P
                 ) -> Tuple[List[Dict[str, Any]], List[int]]:
    """Every record of a listing, fetched ``limit`` at a time with keyset rules; returns (records, totals).

    Checks that every page but the last is full: clients stop at the first short page.
    """
    seen: List[Dict[str, Any]] = []
    totals: List[int] = []
    rules: List[List[Filter]] = []
    short = False
    for _ in range(10_000):
        page, total = storage.get_all(collection_id, parent_id, filters=filters, sorting=sorting,
                                      pagination_rules=rules, limit=limit, include_deleted=include_deleted)
        assert len(page) <= limit
        totals.append(total)
        if not page:
            return seen, totals
        assert not short, f"after {len(seen)} records, a page shorter than the limit {limit} was not the last one"
        short = len(page) < limit
        seen.extend(page)
        rules = keyset_rules(page[-1], sorting)
    raise AssertionError("pagination does not end")


def _types(value: Any) -> Any:
    """The structure of ``value`` with each number replaced by its type."""
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value)


def run_concurrently(count: int, task: Callable[[int], Any]) -> List[Any]:
    """Run ``task(slot)`` in ``count`` threads started together; each slot's result, or the exception it raised."""
    outcomes: List[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(slot: int) -> None:
        barrier.wait()
        try:
            outcomes[slot] = task(slot)
        except BaseException as exc:  # returned, for the test thread to look at
            outcomes[slot] = exc

    workers = [threading.Thread(target=run, args=(slot,)) for slot in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


# Records of the filter matrix: every operator against numbers, strings, booleans, null, missing, nested values
# and mixed types.  Strings compared by range are lowercase ASCII so that every collation agrees.
FILTER_DATA: List[Dict[str, Any]] = [
    {"id": "one", "n": 1, "s": "alpha", "b": True, "tags": ["a", "b"], "author": {"name": "Ann", "age": 30},
     "title": "Wikipedia"},
    {"id": "two", "n": 2, "s": "beta", "b": False, "tags": ["b", "c"], "author": {"name": "Bob"},
     "title": "100% pure"},
    {"id": "ten", "n": 10, "s": "gamma", "tags": [], "author": "anonymous", "title": "1000 pure"},
    {"id": "frac", "n": 2.5, "s": "2", "tags": [1, 2], "title": "a_c"},
    {"id": "null", "n": None, "s": None, "b": None, "tags": None, "author": None, "title": None},
    {"id": "empty"},
    {"id": "mixed", "n": "3", "s": 3, "b": 1, "tags": "a", "author": {"name": ["Ann"]}, "title": "abc"},
]


def _filter_case(expected: str, *filters: Tuple[str, Any, COMPARISON]) -> Any:
    label = " & ".join(f"{field} {op.value} {value!r}" for field, value, op in filters)
    return pytest.param([Filter(*item) for item in filters], set(expected.split()), id=label)


EQ, NOT, LT, MAX, GT, MIN = COMPARISON.EQ, COMPARISON.NOT, COMPARISON.LT, COMPARISON.MAX, COMPARISON.GT, COMPARISON.MIN
IN, EXCLUDE, HAS, LIKE = COMPARISON.IN, COMPARISON.EXCLUDE, COMPARISON.HAS, COMPARISON.LIKE
CONTAINS, CONTAINS_ANY = COMPARISON.CONTAINS, COMPARISON.CONTAINS_ANY

FILTER_CASES = [
    _filter_case("two", ("n", 2, EQ)),
    _filter_case("mixed", ("n", "3", EQ)),
    _filter_case("", ("n", 3, EQ)),
    _filter_case("frac", ("n", 2.5, EQ)),
    _filter_case("null", ("n", None, EQ)),
    _filter_case("one", ("b", True, EQ)),
    _filter_case("mixed", ("b", 1, EQ)),
    _filter_case("two", ("b", False, EQ)),
    _filter_case("one", ("tags", ["a", "b"], EQ)),
    _filter_case("one two ten frac null empty", ("n", "3", NOT)),
    _filter_case("one ten frac null empty mixed", ("n", 2, NOT)),
    _filter_case("one two ten frac empty mixed", ("n", None, NOT)),
    _filter_case("one two", ("n", 2.5, LT)),
    _filter_case("one two frac", ("n", 2.5, MAX)),
    _filter_case("ten", ("n", 2.5, GT)),
    _filter_case("frac ten", ("n", 2.5, MIN)),
    _filter_case("one two frac ten", ("n", -100, GT)),
    _filter_case("mixed", ("n", "0", GT)),
    _filter_case("one frac", ("s", "beta", LT)),
    _filter_case("two ten", ("s", "alpha", GT)),
    _filter_case("frac one two", ("s", "beta", MAX)),
    _filter_case("mixed", ("s", 0, GT)),
    _filter_case("one", ("b", False, GT)),
    _filter_case("two", ("b", True, LT)),
    _filter_case("", ("n", None, LT)),
    _filter_case("one", ("author.age", 18, MIN)),
    _filter_case("one two", ("n", [1, 2, 99], IN)),
    _filter_case("null mixed", ("n", [None, "3"], IN)),
    _filter_case("one frac", ("n", [1, 2.5], IN)),
    _filter_case("ten frac null empty mixed", ("n", [1, 2], EXCLUDE)),
    _filter_case("one two ten frac empty mixed", ("n", [None], EXCLUDE)),
    _filter_case("one ten", ("id", ["one", "ten", "nope"], IN)),
    _filter_case("one two ten frac mixed", ("n", True, HAS)),
    _filter_case("null empty", ("n", False, HAS)),
    _filter_case("one two mixed", ("author.name", True, HAS)),
    _filter_case("ten frac null empty", ("author.name", False, HAS)),
    _filter_case("one two ten frac null empty mixed", ("id", True, HAS)),
    _filter_case("one", ("title", "wiki", LIKE)),
    _filter_case("one", ("title", "WIKI*", LIKE)),
    _filter_case("", ("title", "pedia*", LIKE)),
    _filter_case("one", ("title", "*PEDIA", LIKE)),
    _filter_case("one", ("title", "w*k*a", LIKE)),
    _filter_case("two ten", ("title", "*pure", LIKE)),
    _filter_case("two", ("title", "0%", LIKE)),
    _filter_case("frac", ("title", "a_c", LIKE)),
    _filter_case("one two ten", ("s", "a", LIKE)),
    _filter_case("", ("n", "1", LIKE)),
    _filter_case("one", ("author.name", "ann", LIKE)),
    _filter_case("one two", ("tags", ["b"], CONTAINS)),
    _filter_case("one", ("tags", ["b", "a"], CONTAINS)),
    _filter_case("frac", ("tags", [2], CONTAINS)),
    _filter_case("", ("tags", ["2"], CONTAINS)),
    _filter_case("one two ten frac", ("tags", [], CONTAINS)),
    _filter_case("one two", ("tags", ["a", "c"], CONTAINS_ANY)),
    _filter_case("frac", ("tags", [1, "z"], CONTAINS_ANY)),
    _filter_case("", ("tags", ["z"], CONTAINS_ANY)),
    _filter_case("one", ("author.name", "Ann", EQ)),
    _filter_case("mixed", ("author.name", ["Ann"], EQ)),
    _filter_case("two ten frac null empty mixed", ("author.name", "Ann", NOT)),
    _filter_case("two frac", ("n", 1, GT), ("n", 10, LT)),
    _filter_case("", ("n", 1, EQ), ("n", 2, EQ)),
]

# Sort matrix: one value of each JSON type, plus null and missing (ties broken by id).
SORT_DATA: List[Dict[str, Any]] = [
    {"id": "false", "v": False}, {"id": "true", "v": True}, {"id": "int", "v": 1}, {"id": "float", "v": 2.5},
    {"id": "big", "v": 10}, {"id": "neg", "v": -3}, {"id": "str3", "v": "3"}, {"id": "strb", "v": "b"},
    {"id": "array", "v": [1]}, {"id": "object", "v": {"a": 1}}, {"id": "null", "v": None}, {"id": "missing"},
]
SORT_ASCENDING = ["false", "true", "neg", "int", "float", "big", "str3", "strb", "array", "object", "missing",
                  "null"]


# Arrays and objects among themselves, in the order of PostgreSQL's jsonb: arrays by length, then item by item with
# null < string < number < boolean < array < object; objects by number of keys, then key, value, key, value... with
# the keys taken shortest first (then bytewise); strings in code point order.
CONTAINERS_ASCENDING: List[Tuple[str, Any]] = [
    ("a-empty", []), ("a-null", [None]), ("a-str", ["y"]), ("a-num", [2]), ("a-true", [True]), ("a-array", [[1]]),
    ("a-object", [{"a": 1}]), ("a-str-str", ["x", "y"]), ("a-str-num", ["x", 1]), ("a-num-str", [1, "x"]),
    ("o-empty", {}), ("o-a", {"a": 2}), ("o-aa", {"aa": 0}), ("o-b", {"b": 1}), ("o-a-b", {"a": 1, "b": 0}),
    ("o-b-ab", {"b": 0, "ab": 0}), ("o-z-aa", {"z": 0, "aa": 0}),
]


class StorageContract:
    """Tests of the storage contract.  Subclasses provide a ``storage`` fixture returning a flushed backend."""

    # --- timestamps (PROTOCOL.md Part A, D1 and D2) -------------------------------------------------------------

    def test_empty_collection_timestamp_is_zero_and_read_only(self, storage: Storage) -> None:
        assert storage.collection_timestamp(C, P) == 0
        assert storage.get_all(C, P) == ([], 0)
        assert storage.collection_timestamp(C, P) == 0
        assert storage.get_all(C, P, include_deleted=True) == ([], 0)

    def test_every_write_gets_a_greater_timestamp(self, storage: Storage) -> None:
        before = now_ms()
        stamps = []
        for index in range(5):
            stamps.append(storage.create(C, P, {"index": index})["last_modified"])
            assert storage.collection_timestamp(C, P) == stamps[-1]
        stamps.append(storage.update(C, P, "x", {"new": True})["last_modified"])
        stamps.append(storage.delete(C, P, "x")["last_modified"])
        stamps.append(storage.update(C, P, "y", {})["last_modified"])
        stamps.append(storage.delete(C, P, "y", with_deleted=False)["last_modified"])
        assert all(isinstance(stamp, int) and not isinstance(stamp, bool) for stamp in stamps)
        assert stamps == sorted(set(stamps))
        assert storage.collection_timestamp(C, P) == stamps[-1]
        assert before - 60_000 < stamps[0] < now_ms() + 60_000, "timestamps are epoch milliseconds"

    def test_timestamps_are_per_partition(self, storage: Storage) -> None:
        storage.create(C, P, {})
        assert storage.collection_timestamp(C, OTHER_P) == 0
        assert storage.collection_timestamp("other-collection", P) == 0
        stamp = storage.create(C, OTHER_P, {})["last_modified"]
        assert storage.collection_timestamp(C, OTHER_P) == stamp

    def test_concurrent_writes_get_distinct_increasing_timestamps(self, storage: Storage) -> None:
        threads, writes = 8, 50

        def writer(slot: int) -> List[int]:
            return [storage.create(C, P, {"thread": slot, "index": index})["last_modified"] for index in range(writes)]

        results = run_concurrently(threads, writer)
        errors = [outcome for outcome in results if isinstance(outcome, BaseException)]
        assert not errors, errors
        every = [stamp for stamps in results for stamp in stamps]
        assert len(set(every)) == threads * writes
        for stamps in results:
            assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert storage.collection_timestamp(C, P) == max(every)
        records, total = storage.get_all(C, P)
        assert total == threads * writes
        assert sorted(record["last_modified"] for record in records) == sorted(every)

    def test_create_keeps_a_supplied_timestamp_above_the_counter(self, storage: Storage) -> None:
        current = storage.create(C, P, {})["last_modified"]
        future = current + 3_600_000
        record = storage.create(C, P, {"last_modified": future})
        assert record["last_modified"] == future
        assert storage.get(C, P, record["id"])["last_modified"] == future
        assert storage.collection_timestamp(C, P) == future
        assert storage.create(C, P, {})["last_modified"] == future + 1

    def test_create_replaces_a_supplied_timestamp_at_or_below_the_counter(self, storage: Storage) -> None:
        current = storage.create(C, P, {})["last_modified"]
        for supplied in (current - 86_400_000, current, 1):
            record = storage.create(C, P, {"last_modified": supplied})
            assert record["last_modified"] > current
            assert storage.collection_timestamp(C, P) == record["last_modified"]
            current = record["last_modified"]

    def test_create_on_an_empty_partition_keeps_a_past_timestamp(self, storage: Storage) -> None:
        past = now_ms() - 86_400_000
        assert storage.create(C, P, {"last_modified": past})["last_modified"] == past
        assert storage.collection_timestamp(C, P) == past

    def test_update_always_gets_a_fresh_timestamp(self, storage: Storage) -> None:
        record = storage.create(C, P, {})
        for supplied in (1, record["last_modified"], record["last_modified"] + 3_600_000):
            updated = storage.update(C, P, record["id"], {"last_modified": supplied})
            assert record["last_modified"] < updated["last_modified"] < record["last_modified"] + 3_600_000
            assert storage.collection_timestamp(C, P) == updated["last_modified"]
            record = updated

    def test_delete_uses_the_supplied_timestamp_as_candidate(self, storage: Storage) -> None:
        first, second = storage.create(C, P, {}), storage.create(C, P, {})
        future = second["last_modified"] + 3_600_000
        assert storage.delete(C, P, first["id"], last_modified=future)["last_modified"] == future
        assert storage.collection_timestamp(C, P) == future
        assert storage.delete(C, P, second["id"], last_modified=1)["last_modified"] == future + 1
        assert storage.get(C, P, first["id"], include_deleted=True)["last_modified"] == future

    def test_delete_all_gives_each_tombstone_its_own_timestamp(self, storage: Storage) -> None:
        created = [storage.create(C, P, {"n": index}) for index in range(6)]
        tombstones = storage.delete_all(C, P)
        stamps = [tombstone["last_modified"] for tombstone in tombstones]
        assert sorted(ids(tombstones)) == sorted(ids(created))
        assert stamps == sorted(set(stamps))
        assert stamps[0] > created[-1]["last_modified"]
        assert storage.collection_timestamp(C, P) == stamps[-1]
        assert all(tombstone["deleted"] is True for tombstone in tombstones)

    def test_delete_all_buries_the_oldest_first(self, storage: Storage) -> None:
        """A bulk DELETE answers its tombstones in the same order on every backend: that of the records' ages."""
        for index in range(8):
            storage.create(C, P, {"id": f"r{index}", "n": index})
        for index in (5, 0, 6, 2):
            storage.update(C, P, f"r{index}", {"n": -index})
        oldest_first = ["r1", "r3", "r4", "r7", "r5", "r0", "r6", "r2"]
        filtered = storage.delete_all(C, P, [Filter("id", ["r0", "r1", "r2", "r3"], COMPARISON.IN)])
        assert ids(filtered) == ["r1", "r3", "r0", "r2"]
        assert ids(storage.delete_all(C, P)) == [object_id for object_id in oldest_first
                                                  if object_id not in ("r0", "r1", "r2", "r3")]

        storage.create(C, P, {})
        storage.flush()
        assert storage.collection_timestamp(C, P) == 0
        assert storage.get_all(C, P, include_deleted=True) == ([], 0)

    # --- create, get, update, delete ----------------------------------------------------------------------------

    def test_create_returns_the_stored_record(self, storage: Storage) -> None:
        data = {"title": "café ☕", "n": 1.5, "flag": False, "none": None, "nested": {"list": [1, {"a": "b"}]}}
        record = storage.create(C, P, data)
        assert record == {**data, "id": record["id"], "last_modified": record["last_modified"]}
        assert storage.get(C, P, record["id"]) == record
        assert "id" not in data and "last_modified" not in data, "the argument is not modified"

    def test_a_dotted_field_never_indexes_an_array(self, storage: Storage) -> None:
        """``x.a.0`` is key "0" of object ``x.a``; through an array it is missing (filters and sorts alike)."""
        in_array = storage.create(C, P, {"x": {"a": [5, {"b": 5}]}})
        in_object = storage.create(C, P, {"x": {"a": {"0": 5, "1": {"b": 5}}}})
        for field in ("x.a.0", "x.a.1.b"):
            assert ids(storage.get_all(C, P, filters=[Filter(field, 5, COMPARISON.EQ)])[0]) == [in_object["id"]]
            assert ids(storage.get_all(C, P, filters=[Filter(field, False, COMPARISON.HAS)])[0]) == [
                in_array["id"]]
            for direction in (1, -1):  # missing values last ascending, first descending
                order = ids(storage.get_all(C, P, sorting=[Sort(field, direction)])[0])
                assert order == ([in_object["id"], in_array["id"]] if direction > 0
                                 else [in_array["id"], in_object["id"]])

    def test_numbers_read_back_with_their_type(self, storage: Storage) -> None:
        """A whole float beyond 64 bits stays a float (PostgreSQL prints 1e20 as 100000000000000000000), and the
        64-bit integers at both ends stay integers."""
        data = {"big": 1e20, "huge": 1.5e300, "tiny": -2.5e-300, "whole": 2.0, "top": 2 ** 63 - 1,
                "bottom": -(2 ** 63), "list": [1e19, 10 ** 18, -1e25], "nested": {"n": 4e21}}
        record = storage.create(C, P, data)
        for fetched in (storage.get(C, P, record["id"]), storage.get_all(C, P)[0][0]):
            for key, value in data.items():
                assert fetched[key] == value and _types(fetched[key]) == _types(value), key

    def test_returned_records_are_copies(self, storage: Storage) -> None:
        record = storage.create(C, P, {"nested": {"list": [1]}})
        record["nested"]["list"].append(2)
        fetched = storage.get(C, P, record["id"])
        assert fetched["nested"] == {"list": [1]}
        fetched["nested"]["list"].append(3)
        listed = storage.get_all(C, P)[0][0]
        assert listed["nested"] == {"list": [1]}
        listed["nested"]["list"].append(4)
        assert storage.get(C, P, record["id"])["nested"] == {"list": [1]}

    def test_create_ids(self, storage: Storage) -> None:
        assert storage.create(C, P, {"id": "chosen"})["id"] == "chosen"
        assert storage.create(C, P, {}, id_generator=lambda: "generated")["id"] == "generated"
        generated = storage.create(C, P, {})["id"]
        assert isinstance(generated, str) and len(generated) == 36 and generated.count("-") == 4

    def test_create_refuses_an_existing_id(self, storage: Storage) -> None:
        existing = storage.create(C, P, {"id": "same", "v": 1})
        stamp = storage.collection_timestamp(C, P)
        with pytest.raises(UnicityError) as info:
            storage.create(C, P, {"id": "same", "v": 2})
        assert info.value.field == "id"
        assert info.value.record == existing
        assert storage.get(C, P, "same") == existing
        assert storage.collection_timestamp(C, P) == stamp

    def test_create_refuses_a_duplicated_unique_field(self, storage: Storage) -> None:
        existing = storage.create(C, P, {"email": "a@example.com", "nick": "a"})
        stamp = storage.collection_timestamp(C, P)
        with pytest.raises(UnicityError) as info:
            storage.create(C, P, {"email": "b@example.com", "nick": "a"}, unique_fields=["email", "nick"])
        assert (info.value.field, info.value.record) == ("nick", existing)
        assert storage.get_all(C, P)[1] == 1
        assert storage.collection_timestamp(C, P) == stamp
        # Same value in another partition, or without asking for unicity: accepted.
        storage.create(C, OTHER_P, {"nick": "a"}, unique_fields=["nick"])
        storage.create(C, P, {"nick": "a"})

    def test_unique_fields_ignore_null_missing_and_tombstones(self, storage: Storage) -> None:
        storage.create(C, P, {"email": None})
        storage.create(C, P, {"other": 1})
        storage.create(C, P, {"email": None}, unique_fields=["email"])
        storage.create(C, P, {}, unique_fields=["email"])
        gone = storage.create(C, P, {"email": "x"})
        storage.delete(C, P, gone["id"])
        storage.create(C, P, {"email": "x"}, unique_fields=["email"])
        with pytest.raises(UnicityError):
            storage.create(C, P, {"email": "x"}, unique_fields=["email"])
        storage.create(C, P, {"email": 1}, unique_fields=["email"])  # JSON types differ: not the same value

    def test_unique_nested_field(self, storage: Storage) -> None:
        existing = storage.create(C, P, {"author": {"email": "a"}})
        with pytest.raises(UnicityError) as info:
            storage.create(C, P, {"author": {"email": "a"}}, unique_fields=["author.email"])
        assert info.value.record == existing

    def test_create_removes_a_tombstone_with_the_same_id(self, storage: Storage) -> None:
        storage.create(C, P, {"id": "a"})
        storage.delete(C, P, "a")
        again = storage.create(C, P, {"id": "a", "back": True})
        assert storage.get(C, P, "a", include_deleted=True) == again
        records, total = storage.get_all(C, P, include_deleted=True)
        assert (records, total) == ([again], 1)

    def test_get_missing(self, storage: Storage) -> None:
        with pytest.raises(RecordNotFoundError):
            storage.get(C, P, "nope")
        with pytest.raises(RecordNotFoundError):
            storage.get(C, P, "nope", include_deleted=True)

    def test_record_not_found_names_the_id(self, storage: Storage) -> None:
        """The same exception on every backend: callers may show or log it."""
        storage.delete(C, P, storage.create(C, P, {"id": "gone"})["id"])
        calls = [lambda: storage.get(C, P, "nope"), lambda: storage.get(C, P, "gone"),
                 lambda: storage.delete(C, P, "nope"), lambda: storage.delete(C, P, "gone")]
        for call in calls:
            with pytest.raises(RecordNotFoundError) as caught:
                call()
            assert caught.value.object_id in ("nope", "gone")
            assert str(caught.value) == f"Record {caught.value.object_id!r} not found"

    def test_partitions_are_independent(self, storage: Storage) -> None:
        storage.create(C, P, {"id": "a", "where": "here"})
        storage.create(C, OTHER_P, {"id": "a", "where": "there"})
        storage.create("other-collection", P, {"id": "a", "where": "elsewhere"})
        assert storage.get(C, OTHER_P, "a")["where"] == "there"
        storage.delete(C, P, "a")
        assert storage.get(C, OTHER_P, "a")["where"] == "there"
        assert storage.get("other-collection", P, "a")["where"] == "elsewhere"
        assert storage.delete_all(C, OTHER_P)[0]["id"] == "a"
        assert storage.get_all("other-collection", P)[1] == 1

    def test_update_replaces_the_whole_record(self, storage: Storage) -> None:
        record = storage.create(C, P, {"a": 1, "b": 2})
        updated = storage.update(C, P, record["id"], {"b": 3, "id": "ignored"})
        assert updated == {"b": 3, "id": record["id"], "last_modified": updated["last_modified"]}
        assert storage.get(C, P, record["id"]) == updated
        assert storage.get_all(C, P)[1] == 1

    def test_update_creates_a_missing_record(self, storage: Storage) -> None:
        record = storage.update(C, P, "new", {"v": 1})
        assert record["id"] == "new" and storage.get(C, P, "new") == record

    def test_update_removes_a_tombstone(self, storage: Storage) -> None:
        storage.create(C, P, {"id": "a"})
        storage.delete(C, P, "a")
        record = storage.update(C, P, "a", {"v": 2})
        assert storage.get(C, P, "a", include_deleted=True) == record
        assert storage.get_all(C, P, include_deleted=True)[0] == [record]

    def test_update_unique_fields(self, storage: Storage) -> None:
        first = storage.create(C, P, {"email": "a"})
        second = storage.create(C, P, {"email": "b"})
        storage.update(C, P, first["id"], {"email": "a", "v": 2}, unique_fields=["email"])  # itself: fine
        stamp = storage.collection_timestamp(C, P)
        with pytest.raises(UnicityError) as info:
            storage.update(C, P, second["id"], {"email": "a"}, unique_fields=["email"])
        assert info.value.field == "email" and info.value.record["id"] == first["id"]
        assert storage.get(C, P, second["id"]) == second
        assert storage.collection_timestamp(C, P) == stamp

    def test_delete_returns_the_tombstone(self, storage: Storage) -> None:
        record = storage.create(C, P, {"secret": 1})
        tombstone = storage.delete(C, P, record["id"])
        assert tombstone == {"id": record["id"], "last_modified": tombstone["last_modified"], "deleted": True}
        with pytest.raises(RecordNotFoundError):
            storage.get(C, P, record["id"])
        assert storage.get(C, P, record["id"], include_deleted=True) == tombstone
        with pytest.raises(RecordNotFoundError):
            storage.delete(C, P, record["id"])
        with pytest.raises(RecordNotFoundError):
            storage.delete(C, P, "never-existed")

    def test_delete_without_tombstone(self, storage: Storage) -> None:
        record = storage.create(C, P, {})
        tombstone = storage.delete(C, P, record["id"], with_deleted=False)
        assert tombstone["id"] == record["id"] and tombstone["deleted"] is True
        with pytest.raises(RecordNotFoundError):
            storage.get(C, P, record["id"], include_deleted=True)
        assert storage.get_all(C, P, include_deleted=True) == ([], 0)
        assert storage.collection_timestamp(C, P) == tombstone["last_modified"]

    def test_delete_all_with_filters(self, storage: Storage) -> None:
        for index in range(6):
            storage.create(C, P, {"id": f"r{index}", "n": index})
        storage.create(C, OTHER_P, {"n": 0})
        tombstones = storage.delete_all(C, P, [Filter("n", 3, COMPARISON.LT)])
        assert sorted(ids(tombstones)) == ["r0", "r1", "r2"]
        assert sorted(ids(storage.get_all(C, P)[0])) == ["r3", "r4", "r5"]
        assert storage.get_all(C, OTHER_P)[1] == 1
        assert storage.delete_all(C, P, [Filter("n", 99, COMPARISON.EQ)]) == []
        assert storage.delete_all("never", "written") == []
        assert storage.collection_timestamp("never", "written") == 0

    def test_delete_all_without_tombstones(self, storage: Storage) -> None:
        storage.create(C, P, {})
        assert len(storage.delete_all(C, P, with_deleted=False)) == 1
        assert storage.get_all(C, P, include_deleted=True) == ([], 0)

    def test_purge_deleted(self, storage: Storage) -> None:
        for index in range(4):
            storage.create(C, P, {"id": f"r{index}"})
        tombstones = [storage.delete(C, P, f"r{index}") for index in range(3)]
        stamp = storage.collection_timestamp(C, P)
        assert storage.purge_deleted(C, P, before=tombstones[1]["last_modified"]) == 1
        assert sorted(ids(storage.get_all(C, P, include_deleted=True)[0])) == ["r1", "r2", "r3"]
        assert storage.purge_deleted(C, P) == 2
        assert ids(storage.get_all(C, P, include_deleted=True)[0]) == ["r3"]
        assert storage.purge_deleted(C, P) == 0
        assert storage.purge_deleted("never", "written") == 0
        assert storage.collection_timestamp(C, P) == stamp

    # --- conditional writes (PROTOCOL.md Part A D4, §6) -------------------------------------------------------

    def test_update_if_match(self, storage: Storage) -> None:
        record = storage.create(C, P, {"v": 1, "email": "a"})
        other = storage.create(C, P, {"email": "b"})
        updated = storage.update(C, P, record["id"], {"v": 2, "email": "a"}, if_match=record["last_modified"])
        assert updated["v"] == 2 and updated["last_modified"] > other["last_modified"]
        stamp = storage.collection_timestamp(C, P)
        for stale in (record["last_modified"], updated["last_modified"] + 1, 0):
            with pytest.raises(PreconditionFailed) as info:  # checked before unicity
                storage.update(C, P, record["id"], {"email": "b"}, if_match=stale, unique_fields=["email"])
            assert info.value.existing == updated
        assert storage.get(C, P, record["id"]) == updated
        assert storage.collection_timestamp(C, P) == stamp, "a failed condition writes nothing"

    def test_update_if_match_needs_a_live_record(self, storage: Storage) -> None:
        with pytest.raises(PreconditionFailed) as info:
            storage.update(C, P, "never-existed", {}, if_match=1)
        assert info.value.existing is None
        record = storage.create(C, P, {"id": "a"})
        tombstone = storage.delete(C, P, "a")
        for stamp in (record["last_modified"], tombstone["last_modified"]):
            with pytest.raises(PreconditionFailed) as info:
                storage.update(C, P, "a", {}, if_match=stamp)
            assert info.value.existing == tombstone
        assert storage.get(C, P, "a", include_deleted=True) == tombstone
        assert storage.collection_timestamp(C, P) == tombstone["last_modified"]
        with pytest.raises(RecordNotFoundError):
            storage.get(C, P, "never-existed", include_deleted=True)

    def test_update_if_absent(self, storage: Storage) -> None:
        created = storage.update(C, P, "a", {"v": 1}, if_absent=True)
        assert storage.get(C, P, "a") == created
        stamp = storage.collection_timestamp(C, P)
        with pytest.raises(PreconditionFailed) as info:
            storage.update(C, P, "a", {"v": 2}, if_absent=True)
        assert info.value.existing == created
        assert storage.get(C, P, "a") == created and storage.collection_timestamp(C, P) == stamp
        storage.delete(C, P, "a")
        recreated = storage.update(C, P, "a", {"v": 3}, if_absent=True)  # a tombstone does not count
        assert storage.get(C, P, "a") == recreated

    def test_update_with_both_conditions_never_writes(self, storage: Storage) -> None:
        record = storage.create(C, P, {})
        for object_id, stamp in ((record["id"], record["last_modified"]), ("missing", 1)):
            with pytest.raises(PreconditionFailed):
                storage.update(C, P, object_id, {}, if_match=stamp, if_absent=True)
        assert storage.get_all(C, P) == ([record], 1)

    def test_delete_if_match(self, storage: Storage) -> None:
        record = storage.create(C, P, {"v": 1})
        with pytest.raises(PreconditionFailed) as info:
            storage.delete(C, P, record["id"], if_match=record["last_modified"] - 1)
        assert info.value.existing == record
        assert storage.get(C, P, record["id"]) == record
        tombstone = storage.delete(C, P, record["id"], if_match=record["last_modified"])
        assert tombstone["deleted"] is True and tombstone["last_modified"] > record["last_modified"]
        with pytest.raises(PreconditionFailed) as info:
            storage.delete(C, P, record["id"], if_match=record["last_modified"])
        assert info.value.existing == tombstone
        with pytest.raises(PreconditionFailed) as info:
            storage.delete(C, P, "never-existed", if_match=1)
        assert info.value.existing is None
        with pytest.raises(PreconditionFailed) as info:
            storage.delete("never", "written", "x", if_match=1)
        assert info.value.existing is None
        assert storage.collection_timestamp(C, P) == tombstone["last_modified"]

    def test_delete_all_if_match(self, storage: Storage) -> None:
        created = [storage.create(C, P, {"n": index}) for index in range(3)]
        stamp = storage.collection_timestamp(C, P)
        for stale in (stamp - 1, stamp + 1, 0):
            with pytest.raises(PreconditionFailed) as info:
                storage.delete_all(C, P, if_match=stale)
            assert info.value.existing is None
        assert storage.get_all(C, P) == (created[::-1], 3), "a failed condition deletes nothing"
        assert storage.collection_timestamp(C, P) == stamp
        tombstones = storage.delete_all(C, P, if_match=stamp)
        assert sorted(ids(tombstones)) == sorted(ids(created)) and tombstones[0]["last_modified"] > stamp
        assert storage.collection_timestamp(C, P) == tombstones[-1]["last_modified"]
        with pytest.raises(PreconditionFailed):
            storage.delete_all(C, P, if_match=stamp)
        assert storage.delete_all(C, P, with_deleted=False, if_match=tombstones[-1]["last_modified"]) == []

    def test_delete_all_if_match_with_filters(self, storage: Storage) -> None:
        for index in range(6):
            storage.create(C, P, {"id": f"r{index}", "n": index})
        storage.create(C, OTHER_P, {"n": 0})
        stamp = storage.collection_timestamp(C, P)
        below_three = [Filter("n", 3, COMPARISON.LT)]
        with pytest.raises(PreconditionFailed):
            storage.delete_all(C, P, below_three, if_match=stamp - 1)
        assert storage.get_all(C, P)[1] == 6
        assert storage.delete_all(C, P, [Filter("n", 99, COMPARISON.EQ)], if_match=stamp) == []
        assert storage.collection_timestamp(C, P) == stamp, "deleting nothing is no write"
        tombstones = storage.delete_all(C, P, below_three, if_match=stamp)
        assert sorted(ids(tombstones)) == ["r0", "r1", "r2"]
        assert sorted(ids(storage.get_all(C, P)[0])) == ["r3", "r4", "r5"]
        assert storage.get_all(C, OTHER_P)[1] == 1
        with pytest.raises(PreconditionFailed):
            storage.delete_all(C, P, [Filter("n", 3, COMPARISON.MIN)], if_match=stamp)
        assert storage.get_all(C, P)[1] == 3

    def test_delete_all_if_match_on_a_never_written_partition(self, storage: Storage) -> None:
        assert storage.delete_all("never", "written", if_match=0) == []
        assert storage.delete_all("never", "written", [Filter("n", 1, COMPARISON.EQ)], if_match=0) == []
        with pytest.raises(PreconditionFailed) as info:
            storage.delete_all("never", "written", if_match=1)
        assert info.value.existing is None
        assert storage.collection_timestamp("never", "written") == 0
        storage.create("never", "written", {})
        with pytest.raises(PreconditionFailed):
            storage.delete_all("never", "written", if_match=0)
        assert storage.get_all("never", "written")[1] == 1

    def test_concurrent_delete_alls_with_the_same_if_match_one_wins(self, storage: Storage) -> None:
        threads = 8
        for round_ in range(10):
            created = [storage.create(C, P, {"round": round_}) for _ in range(3)]
            stamp = storage.collection_timestamp(C, P)
            outcomes = run_concurrently(threads, lambda slot: storage.delete_all(C, P, if_match=stamp))
            winners = [outcome for outcome in outcomes if isinstance(outcome, list)]
            losers = [outcome for outcome in outcomes if isinstance(outcome, PreconditionFailed)]
            assert len(winners) == 1 and len(losers) == threads - 1, outcomes
            assert sorted(ids(winners[0])) == sorted(ids(created))
            assert storage.get_all(C, P) == ([], 0)
            assert storage.collection_timestamp(C, P) == winners[0][-1]["last_modified"]

    def test_delete_all_if_match_never_deletes_a_concurrent_creation(self, storage: Storage) -> None:
        """Either the deletion comes first and the creations survive it, or it fails and deletes nothing."""
        creators = 4
        for round_ in range(10):
            existing = [storage.create(C, P, {"round": round_}) for _ in range(3)]
            stamp = storage.collection_timestamp(C, P)

            def delete_or_create(slot: int) -> Any:
                if slot == 0:
                    return storage.delete_all(C, P, if_match=stamp)
                return storage.create(C, P, {"round": round_, "creator": slot})

            outcomes = run_concurrently(creators + 1, delete_or_create)
            deletion, creations = outcomes[0], outcomes[1:]
            assert all(isinstance(created, dict) for created in creations), outcomes
            live = storage.get_all(C, P)[0]
            if isinstance(deletion, PreconditionFailed):
                assert sorted(ids(live)) == sorted(ids(existing + creations))
            else:
                assert isinstance(deletion, list), deletion
                assert sorted(ids(deletion)) == sorted(ids(existing))
                assert sorted(ids(live)) == sorted(ids(creations))
                assert all(created["last_modified"] > deletion[-1]["last_modified"] for created in creations)
            storage.delete_all(C, P)

    def test_concurrent_updates_with_the_same_if_match_one_wins(self, storage: Storage) -> None:
        threads = 8
        for round_ in range(10):
            record = storage.create(C, P, {"round": round_})
            outcomes = run_concurrently(threads, lambda slot: storage.update(
                C, P, record["id"], {"round": round_, "writer": slot}, if_match=record["last_modified"]))
            winners = [outcome for outcome in outcomes if isinstance(outcome, dict)]
            losers = [outcome for outcome in outcomes if isinstance(outcome, PreconditionFailed)]
            assert len(winners) == 1 and len(losers) == threads - 1, outcomes
            assert all(loser.existing == winners[0] for loser in losers)
            assert storage.get(C, P, record["id"]) == winners[0]

    def test_concurrent_deletes_with_the_same_if_match_one_wins(self, storage: Storage) -> None:
        threads = 8
        for _ in range(10):
            record = storage.create(C, P, {})
            outcomes = run_concurrently(threads, lambda slot: storage.delete(
                C, P, record["id"], if_match=record["last_modified"]))
            winners = [outcome for outcome in outcomes if isinstance(outcome, dict)]
            losers = [outcome for outcome in outcomes if isinstance(outcome, PreconditionFailed)]
            assert len(winners) == 1 and len(losers) == threads - 1, outcomes
            assert all(loser.existing == winners[0] for loser in losers)
            assert storage.get(C, P, record["id"], include_deleted=True) == winners[0]

    def test_read_modify_write_with_if_match_loses_no_update(self, storage: Storage) -> None:
        """Each thread adds its own field, re-reading after every failed attempt: every field lands."""
        threads, fields = 8, 5
        record = storage.create(C, P, {"id": "shared"})

        def add_fields(slot: int) -> int:
            attempts = 0
            for index in range(fields):
                while True:
                    attempts += 1
                    current = storage.get(C, P, "shared")
                    try:
                        storage.update(C, P, "shared", {**current, f"f{slot}-{index}": True},
                                       if_match=current["last_modified"])
                        break
                    except PreconditionFailed:
                        continue
            return attempts

        outcomes = run_concurrently(threads, add_fields)
        assert all(isinstance(outcome, int) for outcome in outcomes), outcomes
        final = storage.get(C, P, "shared")
        assert {key for key in final if key not in ("id", "last_modified")} == {
            f"f{slot}-{index}" for slot in range(threads) for index in range(fields)}
        assert final["last_modified"] > record["last_modified"]

    # --- listing -------------------------------------------------------------------------------------------------

    def test_get_all_defaults(self, storage: Storage) -> None:
        created = [storage.create(C, P, {"n": index}) for index in range(5)]
        storage.delete(C, P, created[0]["id"])
        records, total = storage.get_all(C, P, sorting=[Sort("last_modified", -1)])
        assert records == created[:0:-1] and total == 4
        records, total = storage.get_all(C, P, sorting=[Sort("last_modified", 1)], limit=2)
        assert records == created[1:3] and total == 4
        assert storage.get_all(C, P, limit=0) == ([], 4)

    @pytest.mark.parametrize("filters, expected", FILTER_CASES)
    def test_filters(self, storage: Storage, filters: List[Filter], expected: set) -> None:
        for record in FILTER_DATA:
            storage.create(C, P, record)
        records, total = storage.get_all(C, P, filters=filters)
        assert set(ids(records)) == expected
        assert total == len(expected)

    def test_filters_on_id_and_last_modified(self, storage: Storage) -> None:
        created = [storage.create(C, P, {"id": f"r{index}"}) for index in range(4)]
        middle = created[1]["last_modified"]
        records, total = storage.get_all(C, P, filters=[Filter("last_modified", middle, COMPARISON.GT)])
        assert sorted(ids(records)) == ["r2", "r3"] and total == 2
        records, _ = storage.get_all(C, P, filters=[Filter("last_modified", middle, COMPARISON.MAX)])
        assert sorted(ids(records)) == ["r0", "r1"]
        records, _ = storage.get_all(C, P, filters=[Filter("id", "r2", COMPARISON.EQ)])
        assert ids(records) == ["r2"]

    def test_include_deleted(self, storage: Storage) -> None:
        created = [storage.create(C, P, {"id": f"r{index}", "n": index}) for index in range(4)]
        since = created[-1]["last_modified"]
        tombstone = storage.delete(C, P, "r1")
        updated = storage.update(C, P, "r2", {"n": 20})
        records, total = storage.get_all(C, P, filters=[Filter("last_modified", since, COMPARISON.GT)],
                                         sorting=[Sort("last_modified", 1)], include_deleted=True)
        assert records == [tombstone, updated]
        assert total == 1, "total counts live records only"
        records, total = storage.get_all(C, P, include_deleted=True)
        assert sorted(ids(records)) == ["r0", "r1", "r2", "r3"] and total == 3
        records, _ = storage.get_all(C, P, filters=[Filter("deleted", True, COMPARISON.EQ)], include_deleted=True)
        assert records == [tombstone]
        records, _ = storage.get_all(C, P, filters=[Filter("n", 0, COMPARISON.MIN)], include_deleted=True)
        assert sorted(ids(records)) == ["r0", "r2", "r3"], "tombstones have no other field"
        records, _ = storage.get_all(C, P, filters=[Filter("deleted", True, COMPARISON.EQ)])
        assert records == []

    @pytest.mark.parametrize("direction", [1, -1], ids=["ascending", "descending"])
    def test_sort_by_type_with_missing_values(self, storage: Storage, direction: int) -> None:
        for record in SORT_DATA:
            storage.create(C, P, record)
        records, total = storage.get_all(C, P, sorting=[Sort("v", direction), Sort("id", 1)])
        expected = SORT_ASCENDING if direction == 1 else _descending(SORT_ASCENDING)
        assert ids(records) == expected
        assert total == len(SORT_DATA)

    @pytest.mark.parametrize("direction", [1, -1], ids=["ascending", "descending"])
    def test_sort_of_arrays_and_objects(self, storage: Storage, direction: int) -> None:
        """Every backend orders arrays and objects alike (PostgreSQL's jsonb order), and pages through them."""
        shuffled = CONTAINERS_ASCENDING[1::2] + CONTAINERS_ASCENDING[::2]
        for object_id, value in shuffled:
            storage.create(C, P, {"id": object_id, "v": value})
        sorting = [Sort("v", direction), Sort("id", 1)]
        expected = [object_id for object_id, _ in CONTAINERS_ASCENDING][::direction]
        assert ids(storage.get_all(C, P, sorting=sorting)[0]) == expected
        assert ids(page_through(storage, sorting, limit=3)[0]) == expected

    def test_sort_on_several_keys(self, storage: Storage) -> None:
        rows = [("a", 1, "x"), ("b", 1, None), ("c", 2, "y"), ("d", 1, "y"), ("e", None, "x"), ("f", 2, None),
                ("g", None, None), ("h", 2, "x")]
        for object_id, group, name in rows:
            record: Dict[str, Any] = {"id": object_id}
            if group is not None:
                record["meta"] = {"group": group}
            if name is not None:
                record["name"] = name
            storage.create(C, P, record)
        records, _ = storage.get_all(C, P, sorting=[Sort("meta.group", -1), Sort("name", 1),
                                                    Sort("last_modified", -1)])
        assert ids(records) == ["e", "g", "h", "c", "f", "a", "d", "b"]
        records, _ = storage.get_all(C, P, sorting=[Sort("name", -1), Sort("last_modified", 1)], limit=4)
        assert ids(records) == ["b", "f", "g", "c"]

    def test_limit_and_total_ignore_pagination(self, storage: Storage) -> None:
        created = [storage.create(C, P, {"n": index % 3}) for index in range(9)]
        rules = [[Filter("last_modified", created[4]["last_modified"], COMPARISON.LT)]]
        records, total = storage.get_all(C, P, filters=[Filter("n", 0, COMPARISON.NOT)], pagination_rules=rules,
                                         sorting=[Sort("last_modified", -1)], limit=2)
        assert records == [created[2], created[1]]
        assert total == 6

    def test_pagination_rules_are_ors_of_ands(self, storage: Storage) -> None:
        for index in range(6):
            storage.create(C, P, {"id": f"r{index}", "n": index, "even": index % 2 == 0})
        rules = [[Filter("n", 1, COMPARISON.EQ)], [Filter("n", 3, COMPARISON.GT), Filter("even", True, COMPARISON.EQ)]]
        records, total = storage.get_all(C, P, pagination_rules=rules, sorting=[Sort("n", 1)])
        assert ids(records) == ["r1", "r4"] and total == 6

    @pytest.mark.parametrize("sorting", [
        pytest.param([Sort("last_modified", -1)], id="default"),
        pytest.param([Sort("last_modified", 1)], id="oldest-first"),
        pytest.param([Sort("rank", 1), Sort("last_modified", -1)], id="rank-with-missing"),
        pytest.param([Sort("rank", -1), Sort("last_modified", 1)], id="rank-descending"),
        pytest.param([Sort("group", 1), Sort("rank", -1), Sort("last_modified", -1)], id="two-keys"),
    ])
    def test_keyset_pagination_returns_every_record_once(self, storage: Storage, sorting: List[Sort]) -> None:
        for index in range(23):
            record: Dict[str, Any] = {"group": "abc"[index % 3]}
            if index % 4:
                record["rank"] = index % 5
            elif index % 8 == 0:
                record["rank"] = None
            storage.create(C, P, record)
        sorting = sorting + [Sort("id", 1)]
        expected, total = storage.get_all(C, P, sorting=sorting)
        assert total == 23
        seen, totals = page_through(storage, sorting, limit=4)
        assert seen == expected
        assert set(totals) == {23}

    @pytest.mark.parametrize("direction", [1, -1])
    @pytest.mark.parametrize("nested", [False, True])
    def test_keyset_pagination_over_mixed_types_returns_every_record_once(self, storage: Storage, direction: int,
                                                                         nested: bool) -> None:
        """Values of different JSON types sort by type: the records after a number include every string, array
        and object, whatever their value (and before it, in descending order, every boolean)."""
        values = [3, "b", True, [2, "x"], {"k": 1}, None, 1.5, "a", False, [1], {"k": 0, "j": 2}, -4, "", [],
                  {}, 3, "b", [2, "x"], 0]
        for index, value in enumerate(values):
            storage.create(C, P, {"v": {"w": value}} if nested else {"v": value, "i": index})
        storage.create(C, P, {"i": "missing"})
        field = "v.w" if nested else "v"
        sorting = [Sort(field, direction), Sort("last_modified", -1), Sort("id", 1)]
        expected, total = storage.get_all(C, P, sorting=sorting)
        assert total == len(values) + 1
        for limit in (1, 2, 3, 7):
            seen, _ = page_through(storage, sorting, limit=limit)
            assert seen == expected, f"limit {limit}"

    def test_paging_changes_with_tombstones(self, storage: Storage) -> None:
        created = [storage.create(C, P, {"n": index}) for index in range(7)]
        since = storage.collection_timestamp(C, P)
        for record in created[:5]:
            storage.delete(C, P, record["id"])
        storage.update(C, P, created[6]["id"], {"n": 60})
        sorting = [Sort("last_modified", -1), Sort("id", 1)]
        changes = [Filter("last_modified", since, COMPARISON.GT)]
        seen, totals = page_through(storage, sorting, limit=2, filters=changes, include_deleted=True)
        assert len(seen) == 6 and len(set(ids(seen))) == 6
        assert sum(1 for record in seen if record.get("deleted")) == 5
        assert set(totals) == {1}

    def test_get_all_never_truncates(self, storage: Storage) -> None:
        for index in range(120):
            storage.create(C, P, {"n": index})
        records, total = storage.get_all(C, P, sorting=[Sort("n", 1)])
        assert [record["n"] for record in records] == list(range(120)) and total == 120

    #: Records of :meth:`test_large_partition_is_listed_whole`: more than one Redis script call can unpack (about
    #: 8,000).  A slow backend may lower it.
    large_partition = 9_000

    def test_large_partition_is_listed_whole(self, storage: Storage) -> None:
        size = self.large_partition
        with storage.transaction():
            for index in range(size):
                storage.create(C, P, {"n": index})
        since = [Filter("last_modified", 0, COMPARISON.GT)]
        for options in ({}, {"limit": size + 1}, {"filters": since}, {"filters": since, "include_deleted": True}):
            records, total = storage.get_all(C, P, **options)  # type: ignore[arg-type]
            assert (len(records), total) == (size, size), options
        assert len(storage.delete_all(C, P)) == size
        records, total = storage.get_all(C, P, filters=since, include_deleted=True)
        assert (len(records), total) == (size, 0)

    # --- misc -----------------------------------------------------------------------------------------------------

    def test_transaction_commits_and_nests(self, storage: Storage) -> None:
        with storage.transaction():
            storage.create(C, P, {"id": "outer"})
            with storage.transaction():
                storage.create(C, P, {"id": "inner"})
        assert sorted(ids(storage.get_all(C, P)[0])) == ["inner", "outer"]

    def test_ping(self, storage: Storage) -> None:
        assert storage.ping() is True
        assert storage.ping(readonly=True) is True

    def test_random_operations_match_a_model(self, storage: Storage) -> None:
        run_storage_machine(storage)


def _descending(ascending: List[str]) -> List[str]:
    """Reverse an ascending order whose last two entries are a tie broken by id (ascending either way)."""
    return sorted(ascending[-2:]) + ascending[-3::-1]


# --- the state machine -----------------------------------------------------------------------------------------

_IDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"])
_NUMBERS = st.integers(min_value=0, max_value=4)
_STRINGS = st.sampled_from(["x", "y", "z"])
_DATA = st.fixed_dictionaries({}, optional={"n": st.one_of(st.none(), _NUMBERS), "s": _STRINGS})
_FIELD_VALUES = {"n": _NUMBERS, "s": _STRINGS}
_COMPARISONS = [COMPARISON.EQ, COMPARISON.NOT, COMPARISON.LT, COMPARISON.MAX, COMPARISON.GT, COMPARISON.MIN]


@st.composite
def _filters(draw: Any) -> Filter:
    field = draw(st.sampled_from(["n", "s"]))
    operator = draw(st.sampled_from(_COMPARISONS + [COMPARISON.IN, COMPARISON.EXCLUDE, COMPARISON.HAS]))
    if operator in (COMPARISON.IN, COMPARISON.EXCLUDE):
        value: Any = draw(st.lists(_FIELD_VALUES[field], min_size=1, max_size=3))
    elif operator == COMPARISON.HAS:
        value = draw(st.booleans())
    else:
        value = draw(_FIELD_VALUES[field])
    return Filter(field, value, operator)


_SORTINGS = st.lists(st.tuples(st.sampled_from(["n", "s"]), st.sampled_from([1, -1])), max_size=2,
                     unique_by=lambda item: item[0]).flatmap(
    lambda keys: st.sampled_from([1, -1]).map(
        lambda last: [Sort(field, direction) for field, direction in keys] + [Sort("last_modified", last),
                                                                             Sort("id", 1)]))


def _model_matches(record: Dict[str, Any], filter_: Filter) -> bool:
    """Deliberately naive: the machine's fields hold ints, strings or null only."""
    present = filter_.field in record and record[filter_.field] is not None
    value = record.get(filter_.field)
    operator = filter_.operator
    if operator == COMPARISON.HAS:
        return present == filter_.value
    if operator in (COMPARISON.IN, COMPARISON.EXCLUDE):
        hit = present and any(type(value) is type(item) and value == item for item in filter_.value)
        return hit if operator == COMPARISON.IN else not hit
    same = present and type(value) is type(filter_.value)
    if operator == COMPARISON.EQ:
        return same and value == filter_.value
    if operator == COMPARISON.NOT:
        return not (same and value == filter_.value)
    if not same:
        return False
    return {COMPARISON.LT: value < filter_.value, COMPARISON.MAX: value <= filter_.value,
            COMPARISON.GT: value > filter_.value, COMPARISON.MIN: value >= filter_.value}[operator]


def _model_sorted(records: List[Dict[str, Any]], sorting: Sequence[Sort]) -> List[Dict[str, Any]]:
    result = list(records)
    for sort in reversed(sorting):
        present = [record for record in result if record.get(sort.field) is not None]
        absent = [record for record in result if record.get(sort.field) is None]
        present.sort(key=lambda record: record[sort.field], reverse=sort.direction < 0)
        result = present + absent if sort.direction > 0 else absent + present
    return result


class StorageMachine(RuleBasedStateMachine):
    """Random writes and listings on one partition, checked against a dict of records and a dict of tombstones.

    Bind a backend with :func:`run_storage_machine`; the machine flushes it at the start of every example.
    """

    storage: Storage

    def __init__(self) -> None:
        super().__init__()
        self.storage.flush()
        self.records: Dict[str, Dict[str, Any]] = {}
        self.tombstones: Dict[str, Dict[str, Any]] = {}
        self.counter = 0

    def _stamped(self, record: Dict[str, Any]) -> None:
        assert record["last_modified"] > self.counter, "timestamps strictly increase"
        self.counter = record["last_modified"]

    def _conflicts(self, data: Dict[str, Any], unique: bool, exclude: Optional[str] = None) -> List[Dict[str, Any]]:
        """The live records a write of ``data`` collides with (any of them may be reported)."""
        if not unique or data.get("s") is None:
            return []
        return [record for object_id, record in self.records.items()
                if object_id != exclude and record.get("s") == data["s"]]

    @rule(object_id=st.one_of(st.none(), _IDS), data=_DATA, unique=st.booleans())
    def create(self, object_id: Optional[str], data: Dict[str, Any], unique: bool) -> None:
        payload = dict(data, id=object_id) if object_id else dict(data)
        conflicts = self._conflicts(data, unique)
        if object_id in self.records:
            conflicts.append(self.records[object_id])
        if conflicts:
            with pytest.raises(UnicityError) as info:
                self.storage.create(C, P, payload, unique_fields=["s"] if unique else ())
            assert info.value.record in conflicts
            return
        record = self.storage.create(C, P, payload, unique_fields=["s"] if unique else ())
        assert record == dict(data, id=record["id"], last_modified=record["last_modified"])
        self._stamped(record)
        self.tombstones.pop(record["id"], None)
        self.records[record["id"]] = record

    @rule(object_id=_IDS, data=_DATA, unique=st.booleans())
    def update(self, object_id: str, data: Dict[str, Any], unique: bool) -> None:
        conflicts = self._conflicts(data, unique, exclude=object_id)
        if conflicts:
            with pytest.raises(UnicityError) as info:
                self.storage.update(C, P, object_id, data, unique_fields=["s"])
            assert (info.value.field, info.value.record in conflicts) == ("s", True)
            return
        record = self.storage.update(C, P, object_id, data, unique_fields=["s"] if unique else ())
        assert record == dict(data, id=object_id, last_modified=record["last_modified"])
        self._stamped(record)
        self.tombstones.pop(object_id, None)
        self.records[object_id] = record

    @rule(object_id=_IDS, with_deleted=st.booleans())
    def delete(self, object_id: str, with_deleted: bool) -> None:
        if object_id not in self.records:
            with pytest.raises(RecordNotFoundError):
                self.storage.delete(C, P, object_id, with_deleted=with_deleted)
            return
        tombstone = self.storage.delete(C, P, object_id, with_deleted=with_deleted)
        assert tombstone == {"id": object_id, "deleted": True, "last_modified": tombstone["last_modified"]}
        self._stamped(tombstone)
        del self.records[object_id]
        if with_deleted:
            self.tombstones[object_id] = tombstone

    def _current(self, object_id: str) -> Optional[Dict[str, Any]]:
        record = self.records.get(object_id)
        return record if record is not None else self.tombstones.get(object_id)

    def _if_match(self, object_id: str, current: bool) -> int:
        """With ``current``, the timestamp of the record or tombstone ``object_id`` (a tombstone's never matches);
        else (or when there is neither) a timestamp that no record has."""
        found = self._current(object_id)
        if current and found is not None:
            return found["last_modified"]
        return self.counter + 1

    @rule(object_id=_IDS, data=_DATA, condition=st.sampled_from(["current", "stale", "absent"]))
    def update_conditionally(self, object_id: str, data: Dict[str, Any], condition: str) -> None:
        live = self.records.get(object_id)
        if condition == "absent":
            options: Dict[str, Any] = {"if_absent": True}
            met = live is None
        else:
            options = {"if_match": self._if_match(object_id, condition == "current")}
            met = live is not None and live["last_modified"] == options["if_match"]
        if not met:
            with pytest.raises(PreconditionFailed) as info:
                self.storage.update(C, P, object_id, data, **options)
            assert info.value.existing == self._current(object_id)
            return
        record = self.storage.update(C, P, object_id, data, **options)
        assert record == dict(data, id=object_id, last_modified=record["last_modified"])
        self._stamped(record)
        self.tombstones.pop(object_id, None)
        self.records[object_id] = record

    @rule(object_id=_IDS, current=st.booleans(), with_deleted=st.booleans())
    def delete_conditionally(self, object_id: str, current: bool, with_deleted: bool) -> None:
        stamp = self._if_match(object_id, current)
        live = self.records.get(object_id)
        if live is None or live["last_modified"] != stamp:
            with pytest.raises(PreconditionFailed) as info:
                self.storage.delete(C, P, object_id, with_deleted=with_deleted, if_match=stamp)
            assert info.value.existing == self._current(object_id)
            return
        tombstone = self.storage.delete(C, P, object_id, with_deleted=with_deleted, if_match=stamp)
        assert tombstone == {"id": object_id, "deleted": True, "last_modified": tombstone["last_modified"]}
        self._stamped(tombstone)
        del self.records[object_id]
        if with_deleted:
            self.tombstones[object_id] = tombstone

    @rule(datas=st.lists(_DATA, min_size=1, max_size=4))
    def create_several(self, datas: List[Dict[str, Any]]) -> None:
        for data in datas:
            self.create(None, data, False)

    @rule(filters=st.lists(_filters(), min_size=1, max_size=2))
    def delete_all(self, filters: List[Filter], if_match: Optional[int] = None) -> None:
        doomed = {object_id for object_id, record in self.records.items()
                  if all(_model_matches(record, filter_) for filter_ in filters)}
        tombstones = self.storage.delete_all(C, P, filters, if_match=if_match)
        assert set(ids(tombstones)) == doomed and len(tombstones) == len(doomed)
        for tombstone in tombstones:
            self._stamped(tombstone)
            del self.records[tombstone["id"]]
            self.tombstones[tombstone["id"]] = tombstone

    @rule(filters=st.lists(_filters(), max_size=2), offset=st.sampled_from([0, -1, 1]))
    def delete_all_conditionally(self, filters: List[Filter], offset: int) -> None:
        """``if_match`` is the partition timestamp (``offset`` 0) or another value."""
        if offset:
            with pytest.raises(PreconditionFailed):
                self.storage.delete_all(C, P, filters, if_match=self.counter + offset)
            return
        self.delete_all(filters, if_match=self.counter)

    @precondition(lambda self: self.tombstones)
    @rule(position=st.integers(min_value=0, max_value=8))
    def purge_deleted(self, position: int) -> None:
        stamps = sorted(tombstone["last_modified"] for tombstone in self.tombstones.values())
        if position >= len(stamps):
            assert self.storage.purge_deleted(C, P) == len(stamps)
            self.tombstones.clear()
            return
        before = stamps[position]
        assert self.storage.purge_deleted(C, P, before=before) == position
        self.tombstones = {key: tomb for key, tomb in self.tombstones.items() if tomb["last_modified"] >= before}

    @rule(object_id=_IDS, include_deleted=st.booleans())
    def get(self, object_id: str, include_deleted: bool) -> None:
        expected = self.records.get(object_id)
        if expected is None and include_deleted:
            expected = self.tombstones.get(object_id)
        if expected is None:
            with pytest.raises(RecordNotFoundError):
                self.storage.get(C, P, object_id, include_deleted=include_deleted)
        else:
            assert self.storage.get(C, P, object_id, include_deleted=include_deleted) == expected

    @rule(filters=st.lists(_filters(), max_size=2), sorting=_SORTINGS,
          limit=st.one_of(st.none(), st.integers(min_value=1, max_value=4)), include_deleted=st.booleans())
    def get_all(self, filters: List[Filter], sorting: List[Sort], limit: Optional[int],
                include_deleted: bool) -> None:
        candidates = list(self.records.values())
        if include_deleted:
            candidates += list(self.tombstones.values())
        matching = [record for record in candidates if all(_model_matches(record, f) for f in filters)]
        expected = _model_sorted(matching, sorting)
        total = sum(1 for record in matching if not record.get("deleted"))
        if limit is None:
            records, got_total = self.storage.get_all(C, P, filters=filters, sorting=sorting,
                                                      include_deleted=include_deleted)
            assert (records, got_total) == (expected, total)
        else:
            seen, totals = page_through(self.storage, sorting, limit, filters=filters,
                                        include_deleted=include_deleted)
            assert seen == expected
            assert set(totals) == {total}

    @invariant()
    def timestamp_is_the_last_write(self) -> None:
        assert self.storage.collection_timestamp(C, P) == self.counter


def run_storage_machine(storage: Storage, **overrides: Any) -> None:
    """Run :class:`StorageMachine` against ``storage`` (bounded: a network backend finishes in seconds)."""
    machine = type("BoundStorageMachine", (StorageMachine,), {"storage": storage})
    options: Dict[str, Any] = dict(max_examples=40, stateful_step_count=30, deadline=None, database=None,
                                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    options.update(overrides)
    run_state_machine_as_test(machine, settings=hypothesis_settings(**options))

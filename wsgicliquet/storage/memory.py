"""In-process storage: records in Python dicts, lost on restart.  For development, tests and single-process demos.

Each partition keeps its live records and its tombstones in two dicts whose insertion order is ``last_modified``
order: every write gets a timestamp above the partition counter and is (re-)inserted at the end.  Listing in
timestamp order (the default, ``-last_modified``) therefore walks the dicts from one end, skips to the range that
``last_modified`` filters and keyset rules allow (``_since``, ``_before``, the next page) with a cheap comparison,
and stops after ``limit`` records; the total of an unfiltered listing is a ``len()``, and the total of a
``last_modified`` range counts the records inside the range only (``_since`` polling visits the changes, not the
partition).  Other sorts filter the whole partition and sort it (:mod:`wsgicliquet.storage.query`), fed in
timestamp order so that the stable sort leaves ``last_modified`` as the tie-breaker for free.  A listing or bulk
delete whose filters name ids (``in_id``, as a shareable resource restricts a listing) looks those ids up instead.

Unique fields are checked against an index per field and partition (built on first use, kept by every write), so
a write costs the same in a partition of ten records or of a million.  Records handed out are copies (callers may
mutate them); each record remembers which of its fields are nested, so a copy only copies those.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from wsgicliquet.ids import uuid4

from . import (COMPARISON, Filter, PreconditionFailed, Record, RecordNotFoundError, Sort, Storage as StorageBase,
               UnicityError, check_conditions)
from .query import MISSING, apply, compile_filters, compile_rules, copy_record, json_key, named_ids, resolve

__all__ = ["Storage"]


_ATOMS = frozenset({str, int, float, bool, type(None)})


def _copier(value: Any) -> Callable[[Any], Any]:
    """How to copy a nested value: a shallow copy suffices when it holds scalars only."""
    if type(value) is list and all(type(item) in _ATOMS for item in value):
        return list
    if type(value) is dict and all(type(item) in _ATOMS for item in value.values()):
        return dict
    return copy_record


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _last_modified(record: Record) -> int:
    return record["last_modified"]


def _is_live(record: Record) -> bool:
    return not record.get("deleted")


class _Partition:
    """The records, tombstones and timestamp counter of one ``(collection_id, parent_id)``.

    ``unique`` indexes the live records by the value of each field that a write declared unique (built on first
    use, then kept up to date by every write): JSON key of the value -> ids of the records holding it.
    """

    __slots__ = ("records", "tombstones", "counter", "lock", "unique", "nested")

    def __init__(self) -> None:
        self.records: Dict[str, Record] = {}
        self.tombstones: Dict[str, Record] = {}
        self.counter = 0
        self.lock = threading.Lock()
        self.unique: Dict[str, Dict[Any, Set[str]]] = {}
        #: For each live record, its fields holding arrays or objects, the only ones a copy must copy, each with
        #: how: ``list``/``dict`` when its items are scalars (the common tags list), else a deep copy.
        self.nested: Dict[str, Tuple[Tuple[str, Callable[[Any], Any]], ...]] = {}

    def store(self, object_id: str, record: Record) -> None:
        """Put a live record at the end (the newest), replacing its previous version and tombstone."""
        self.tombstones.pop(object_id, None)
        self.remove(object_id)  # re-inserted at the end: dict order stays timestamp order
        self.records[object_id] = record
        self.nested[object_id] = tuple((key, _copier(value)) for key, value in record.items()
                                       if type(value) not in _ATOMS)
        for field, index in self.unique.items():
            key = _unique_key(record, field)
            if key is not None:
                index.setdefault(key, set()).add(object_id)

    def remove(self, object_id: str) -> None:
        """Take a live record out (no tombstone), if present."""
        record = self.records.pop(object_id, None)
        if record is None:
            return
        del self.nested[object_id]
        for field, index in self.unique.items():
            key = _unique_key(record, field)
            holders = index.get(key) if key is not None else None
            if holders is not None:
                holders.discard(object_id)
                if not holders:
                    del index[key]

    def copy(self, record: Record) -> Record:
        """A deep copy of a live record or tombstone of this partition, copying only its nested values."""
        object_id = record["id"]
        if self.records.get(object_id) is not record:  # a tombstone: flat
            return copy_record(record)
        copy = dict(record)
        for key, copier in self.nested[object_id]:
            copy[key] = copier(copy[key])
        return copy

    def _index(self, field: str) -> Dict[Any, Set[str]]:
        index = self.unique.get(field)
        if index is None:
            index = self.unique[field] = {}
            for object_id, record in self.records.items():
                key = _unique_key(record, field)
                if key is not None:
                    index.setdefault(key, set()).add(object_id)
        return index

    def next_timestamp(self, candidate: Optional[int] = None) -> int:
        """D1: ``max(candidate, counter + 1)``; the caller holds the lock and writes before releasing it."""
        if candidate is None:
            candidate = _now_ms()
        self.counter = max(candidate, self.counter + 1)
        return self.counter

    def ordered(self, descending: bool, include_deleted: bool) -> Iterator[Record]:
        """Records (and tombstones) in ``last_modified`` order, lazily."""
        records: Iterable[Record] = reversed(self.records.values()) if descending else self.records.values()
        if not include_deleted or not self.tombstones:
            return iter(records)
        tombstones = reversed(self.tombstones.values()) if descending else self.tombstones.values()
        return heapq.merge(records, tombstones, key=_last_modified, reverse=descending)

    def named(self, object_ids: Sequence[str], descending: bool, include_deleted: bool) -> List[Record]:
        """The records (and tombstones) of these ids, in ``last_modified`` order."""
        found = [self.records[object_id] for object_id in object_ids if object_id in self.records]
        if include_deleted:
            found += [self.tombstones[object_id] for object_id in object_ids if object_id in self.tombstones]
        found.sort(key=_last_modified, reverse=descending)
        return found

    def current(self, object_id: str) -> Optional[Record]:
        """A copy of the live record, else of its tombstone, else None (what a failed condition reports)."""
        found = self.records.get(object_id)
        if found is None:
            found = self.tombstones.get(object_id)
        return copy_record(found) if found is not None else None

    def check_unique(self, record: Record, unique_fields: Sequence[str], exclude: Optional[str] = None) -> None:
        """UnicityError naming the oldest other live record holding an equal value of a unique field."""
        for field in unique_fields:
            key = _unique_key(record, field)
            if key is None:
                continue
            others = [self.records[other_id] for other_id in self._index(field).get(key, ()) if other_id != exclude]
            if others:
                raise UnicityError(field, copy_record(min(others, key=_last_modified)))


def _unique_key(record: Record, field: str) -> Any:
    """The index key of a record's value of ``field``; None when absent or null (never in conflict)."""
    value = resolve(record, field)
    if value is MISSING or value is None:
        return None
    return json_key(value)


_UPPER = (COMPARISON.LT, COMPARISON.MAX, COMPARISON.EQ)
_LOWER = (COMPARISON.GT, COMPARISON.MIN, COMPARISON.EQ)


def _timestamp_bound(alternatives: Sequence[Sequence[Filter]], descending: bool) -> Optional[int]:
    """The ``last_modified`` before which (in walking order) no record can match any of the ANDed alternatives.

    Walking newest first, that is the largest upper bound over the alternatives (None when one has no bound);
    oldest first, the smallest lower bound.  Called with the opposite direction, it gives where the walk can stop.
    """
    bounds = []
    for alternative in alternatives:
        limits = [f.value for f in alternative
                  if f.field == "last_modified" and COMPARISON(f.operator) in (_UPPER if descending else _LOWER)
                  and isinstance(f.value, int) and not isinstance(f.value, bool)]
        if not limits:
            return None
        bounds.append(min(limits) if descending else max(limits))
    if not bounds:
        return None
    return max(bounds) if descending else min(bounds)


def _timestamp_range(filters: Sequence[Filter]) -> Tuple[Optional[int], Optional[int], List[Filter]]:
    """The inclusive ``last_modified`` range ``(low, high)`` that integer bounds of ``filters`` imply, and the
    filters left to test.  Timestamps are integers, so ``> T`` is ``>= T + 1`` and ``< T`` is ``<= T - 1``."""
    low: Optional[int] = None
    high: Optional[int] = None
    rest: List[Filter] = []
    for filter_ in filters:
        value = filter_.value
        if filter_.field == "last_modified" and type(value) is int:
            operator = COMPARISON(filter_.operator)
            if operator in _LOWER:
                bound = value + 1 if operator == COMPARISON.GT else value
                low = bound if low is None else max(low, bound)
            if operator in _UPPER:
                bound = value - 1 if operator == COMPARISON.LT else value
                high = bound if high is None else min(high, bound)
            if operator in _LOWER or operator in _UPPER:
                continue
        rest.append(filter_)
    return low, high, rest


def _count_live(partition: _Partition, filters: Sequence[Filter]) -> int:
    """How many live records match ``filters``: only the records inside the ``last_modified`` range are visited
    (from the newest end when there is a lower bound, as with ``_since`` polling), and none when nothing filters."""
    low, high, rest = _timestamp_range(filters)
    keep = compile_filters(rest)
    records: Iterable[Record] = partition.records.values()
    if low is not None:
        records = reversed(partition.records.values())
        if high is not None:
            records = itertools.dropwhile(lambda record: record["last_modified"] > high, records)
        records = itertools.takewhile(lambda record: record["last_modified"] >= low, records)
    elif high is not None:
        records = itertools.takewhile(lambda record: record["last_modified"] <= high, records)
    elif keep is None:
        return len(partition.records)
    if keep is not None:
        records = filter(keep, records)
    return sum(1 for _ in records)


class Storage(StorageBase):
    """Memory backend; see the module docstring.  Thread-safe: one lock per partition, one for the partition map."""

    name = "memory"

    def __init__(self) -> None:
        self._partitions: Dict[Tuple[str, str], _Partition] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "storage") -> "Storage":
        return cls()

    def flush(self) -> None:
        with self._lock:
            self._partitions = {}

    def _partition(self, collection_id: str, parent_id: str, create: bool = True) -> Optional[_Partition]:
        key = (collection_id, parent_id)
        partition = self._partitions.get(key)
        if partition is None and create:
            with self._lock:
                partition = self._partitions.setdefault(key, _Partition())
        return partition

    def collection_timestamp(self, collection_id: str, parent_id: str) -> int:
        partition = self._partition(collection_id, parent_id, create=False)
        return partition.counter if partition is not None else 0

    def create(self, collection_id: str, parent_id: str, record: Record, *,
               id_generator: Optional[Callable[[], str]] = None,
               unique_fields: Sequence[str] = ()) -> Record:
        record = copy_record(record)
        object_id = record.get("id")
        if object_id is None:
            object_id = id_generator() if id_generator is not None else uuid4()
        record["id"] = object_id
        candidate = record.get("last_modified")
        if isinstance(candidate, bool) or not isinstance(candidate, (int, float)):
            candidate = None
        partition = self._partition(collection_id, parent_id)
        with partition.lock:
            existing = partition.records.get(object_id)
            if existing is not None:
                raise UnicityError("id", copy_record(existing))
            partition.check_unique(record, unique_fields)
            record["last_modified"] = partition.next_timestamp(None if candidate is None else int(candidate))
            partition.store(object_id, record)
            return partition.copy(record)

    def get(self, collection_id: str, parent_id: str, object_id: str, *,
            include_deleted: bool = False) -> Record:
        partition = self._partition(collection_id, parent_id, create=False)
        if partition is not None:
            with partition.lock:
                record = partition.records.get(object_id)
                if record is None and include_deleted:
                    record = partition.tombstones.get(object_id)
                if record is not None:
                    return partition.copy(record)
        raise RecordNotFoundError(object_id)

    def update(self, collection_id: str, parent_id: str, object_id: str, record: Record, *,
               unique_fields: Sequence[str] = (), if_match: Optional[int] = None,
               if_absent: bool = False) -> Record:
        record = copy_record(record)
        record["id"] = object_id
        partition = self._partition(collection_id, parent_id)
        with partition.lock:
            if if_match is not None or if_absent:
                check_conditions(partition.current(object_id), if_match, if_absent)
            partition.check_unique(record, unique_fields, exclude=object_id)
            record["last_modified"] = partition.next_timestamp()
            partition.store(object_id, record)
            return partition.copy(record)

    def delete(self, collection_id: str, parent_id: str, object_id: str, *, with_deleted: bool = True,
               last_modified: Optional[int] = None, if_match: Optional[int] = None) -> Record:
        partition = self._partition(collection_id, parent_id, create=False)
        if partition is not None:
            with partition.lock:
                if if_match is not None:
                    check_conditions(partition.current(object_id), if_match)
                if object_id in partition.records:
                    return dict(self._bury(partition, object_id, with_deleted, last_modified))
        if if_match is not None:
            raise PreconditionFailed(None)
        raise RecordNotFoundError(object_id)

    @staticmethod
    def _bury(partition: _Partition, object_id: str, with_deleted: bool,
              last_modified: Optional[int] = None) -> Record:
        partition.remove(object_id)
        tombstone = {"id": object_id, "last_modified": partition.next_timestamp(last_modified), "deleted": True}
        if with_deleted:
            partition.tombstones[object_id] = tombstone
        return tombstone

    def delete_all(self, collection_id: str, parent_id: str, filters: Sequence[Filter] = (), *,
                   with_deleted: bool = True, if_match: Optional[int] = None) -> List[Record]:
        partition = self._partition(collection_id, parent_id, create=False)
        if partition is None:
            if if_match not in (None, 0):
                raise PreconditionFailed(None)
            return []
        keep = compile_filters(filters)
        with partition.lock:
            if if_match is not None and partition.counter != if_match:
                raise PreconditionFailed(None)
            object_ids = named_ids(filters)
            candidates = (partition.records.values() if object_ids is None
                          else partition.named(object_ids, descending=False, include_deleted=False))
            doomed = [record["id"] for record in candidates if keep is None or keep(record)]
            return [dict(self._bury(partition, object_id, with_deleted)) for object_id in doomed]

    def purge_deleted(self, collection_id: str, parent_id: str, before: Optional[int] = None) -> int:
        partition = self._partition(collection_id, parent_id, create=False)
        if partition is None:
            return 0
        with partition.lock:
            if before is None:
                count = len(partition.tombstones)
                partition.tombstones.clear()
                return count
            doomed = [key for key, tomb in partition.tombstones.items() if tomb["last_modified"] < before]
            for key in doomed:
                del partition.tombstones[key]
            return len(doomed)

    def get_all(self, collection_id: str, parent_id: str, *, filters: Sequence[Filter] = (),
                sorting: Sequence[Sort] = (), pagination_rules: Sequence[Sequence[Filter]] = (),
                limit: Optional[int] = None, include_deleted: bool = False) -> Tuple[List[Record], int]:
        partition = self._partition(collection_id, parent_id, create=False)
        if partition is None:
            return [], 0
        # last_modified is unique within a partition: the keys after it cannot change the order, and feeding the
        # records in its order lets a (stable) sort on the keys before it do the rest.
        keys = list(itertools.takewhile(lambda sort: sort.field != "last_modified", sorting))
        descending = len(keys) == len(sorting) or sorting[len(keys)].direction < 0
        object_ids = named_ids(filters)
        candidates: Iterable[Record]
        with partition.lock:
            if object_ids is not None:  # an ``in_id`` listing (a shareable resource's): those records only
                candidates = partition.named(object_ids, descending, include_deleted)
            elif not keys:
                page, total = self._walk(partition, filters, pagination_rules, limit, include_deleted, descending)
                return [partition.copy(record) for record in page], total
            else:
                candidates = partition.ordered(descending, include_deleted)
            page, total = apply(candidates, filters=filters, sorting=keys, pagination_rules=pagination_rules,
                                limit=limit, count=_is_live if include_deleted else None)
            return [partition.copy(record) for record in page], total

    @staticmethod
    def _walk(partition: _Partition, filters: Sequence[Filter], pagination_rules: Sequence[Sequence[Filter]],
              limit: Optional[int], include_deleted: bool, descending: bool) -> Tuple[List[Record], int]:
        """Page in timestamp order: stops after ``limit`` matches; counts with ``len()`` when nothing filters."""
        keep = compile_filters(filters)
        page_filter = compile_rules(pagination_rules)
        selected = partition.ordered(descending, include_deleted)
        alternatives = [list(filters) + list(rule) for rule in pagination_rules or [()]]
        start, stop = _timestamp_bound(alternatives, descending), _timestamp_bound(alternatives, not descending)
        if start is not None:  # skip, with a cheap test, the records before the page (keyset pagination)
            selected = itertools.dropwhile(
                (lambda record: record["last_modified"] > start) if descending
                else (lambda record: record["last_modified"] < start), selected)
        if stop is not None:  # and stop at the end of the range (``_since`` polling)
            selected = itertools.takewhile(
                (lambda record: record["last_modified"] >= stop) if descending
                else (lambda record: record["last_modified"] <= stop), selected)
        if keep is not None:
            selected = filter(keep, selected)
        if page_filter is not None:
            selected = filter(page_filter, selected)
        page = list(itertools.islice(selected, max(limit, 0)) if limit is not None else selected)
        return page, _count_live(partition, filters)

"""Filtering, sorting and keyset pagination of records in pure Python.

Backends that cannot query on the server (memory, Redis) hand their records to these functions; the semantics are
those of the storage contract (:mod:`wsgicliquet.storage`), so every backend answers a query the same way:

* Fields may be dotted (``author.name``) to reach into nested objects.  A field that is absent (or whose path
  crosses a non-object) is *missing*; a missing field never matches a comparison, except ``!=``, ``exclude`` and
  ``has=False``.
* Comparisons follow JSON semantics: ``==``/``!=``/``in``/``exclude`` use JSON equality (``true`` is not ``1``,
  ``1`` equals ``1.0``); ``<``, ``<=``, ``>``, ``>=`` compare numbers with numbers, strings with strings (by code
  point) and booleans with booleans (false < true); values of different types, and null, arrays or objects on
  either side, simply do not match: they never raise.
* ``like`` matches strings only, case-insensitively; ``*`` stands for any run of characters.  A pattern without
  ``*`` matches anywhere in the value (``like=wiki`` is ``like=*wiki*``); a pattern with ``*`` must match the whole
  value (``like=wiki*`` is "starts with wiki").
* ``contains`` / ``contains_any``: the field is an array holding every / at least one item of the value (a list;
  a scalar counts as a list of one item).
* Sorting places missing and null values after every present value in ascending order (before them in
  descending order), and orders values of different types by type: boolean < number < string < array < object.

Typical use, over any iterable of records::

    records, total = query.apply(partition.values(), filters=filters, sorting=sorting,
                                 pagination_rules=rules, limit=limit)

:func:`keyset_rules` builds the ``pagination_rules`` that select the records after a given one, missing values
included, for a sort that ends with a unique tie-breaker (``last_modified`` then ``id``).
"""
from __future__ import annotations

import functools
import heapq
import json
from operator import ge, gt, le, lt
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from . import COMPARISON, Filter, Record, Sort

__all__ = ["MISSING", "resolve", "json_equal", "json_key", "sort_value", "compile_filter", "compile_filters",
           "compile_rules", "matches", "matches_rules", "sort_records", "apply", "keyset_rules", "copy_record",
           "named_ids"]

Predicate = Callable[[Record], bool]


class _Missing:
    """Marker of an absent field (distinct from JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

# JSON type ranks, in the sort order of the contract.
_NULL, _BOOL, _NUMBER, _STRING, _ARRAY, _OBJECT = range(6)


def resolve(record: Record, field: str) -> Any:
    """The value of a (possibly dotted) field, or :data:`MISSING`."""
    value = record.get(field, MISSING)
    if value is not MISSING or "." not in field:
        return value
    value = record
    for part in field.split("."):
        if not isinstance(value, dict):
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value


def _rank(value: Any) -> int:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, (list, tuple)):
        return _ARRAY
    return _OBJECT


def _canonical(value: Any) -> Any:
    """A hashable form in which two values are equal exactly when they are equal JSON values."""
    kind = _rank(value)
    if kind == _ARRAY:
        return (kind, tuple(_canonical(item) for item in value))
    if kind == _OBJECT:
        return (kind, frozenset((key, _canonical(item)) for key, item in value.items()))
    return (kind, value)


def json_key(value: Any) -> Any:
    """A hashable key of a present JSON value: two values have equal keys exactly when :func:`json_equal` holds
    (so a dict keyed by it finds JSON-equal values, e.g. for unique-field indexes)."""
    return _canonical(value)


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: no bool/number confusion, deep for arrays and objects; :data:`MISSING` equals nothing."""
    if left is MISSING or right is MISSING:
        return False
    if type(left) is type(right) and type(left) in (str, int):
        return left == right
    return _equal(left, right)


_SAME_TYPE_SCALARS = frozenset({str, int, float, bool, type(None)})


def _equal(left: Any, right: Any) -> bool:
    """:func:`json_equal` of present values, walking both without building canonical forms."""
    kind = type(left)
    if kind is type(right) and kind in _SAME_TYPE_SCALARS:
        return left is right or left == right
    if kind is dict and type(right) is dict:
        if left.keys() != right.keys():
            return False
        for key, item in left.items():
            if not _equal(item, right[key]):
                return False
        return True
    kind = _rank(left)
    if kind != _rank(right):
        return False
    if kind == _ARRAY:
        return len(left) == len(right) and all(map(_equal, left, right))
    if kind == _OBJECT:
        return left.keys() == right.keys() and all(_equal(item, right[key]) for key, item in left.items())
    return left is right or left == right  # as tuples of canonical forms compare: identity first


def _order(value: Any) -> Tuple[Any, ...]:
    """A total-order key of a present JSON value: by type first, then by value; arrays and objects in the order
    of PostgreSQL's jsonb (:func:`_container_order`), so that every backend sorts them alike."""
    kind = _rank(value)
    if kind in (_ARRAY, _OBJECT):
        return (kind, _container_order(value))
    if kind == _NULL:
        return (kind, 0)
    return (kind, value)


# Ranks of the items of arrays and objects in jsonb's order: null < string < number < boolean < array < object.
_ITEM_RANKS = {_NULL: 0, _STRING: 1, _NUMBER: 2, _BOOL: 3, _ARRAY: 4, _OBJECT: 5}


def _container_order(value: Any) -> Tuple[Any, ...]:
    """jsonb's order of an array or object: arrays by length, then item by item; objects by number of keys, then
    key, value, key, value... with the keys in jsonb's storage order (shortest UTF-8 first, then bytewise).
    Strings compare in code point order (PostgreSQL compares them in the database collation: ``C`` or ``C.UTF-8``
    give this order)."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (len(key.encode("utf-8")), key))
        return (len(keys), tuple(part for key in keys for part in (key, _item_order(value[key]))))
    return (len(value), tuple(_item_order(item) for item in value))


def _item_order(value: Any) -> Tuple[Any, ...]:
    kind = _rank(value)
    if kind in (_ARRAY, _OBJECT):
        return (_ITEM_RANKS[kind], _container_order(value))
    return (_ITEM_RANKS[kind], 0 if kind == _NULL else value)


# Ranks of the scalar types, by exact type: the common sort keys skip the isinstance() chain of _rank.
_SCALAR_RANKS: Dict[type, int] = {bool: _BOOL, int: _NUMBER, float: _NUMBER, str: _STRING}


def sort_value(value: Any) -> Tuple[Any, ...]:
    """Ascending sort key of a field value: present values by type then value, then null and missing together."""
    kind = _SCALAR_RANKS.get(type(value))
    if kind is not None:
        return (0, (kind, value))
    if value is MISSING or value is None:
        return (1,)
    return (0, _order(value))


# Comparison operators: which ranks they apply to, and the test on two values of the same rank.
_RANGE_RANKS = (_BOOL, _NUMBER, _STRING)
_RANGE_TESTS: Dict[COMPARISON, Callable[[Any, Any], bool]] = {
    COMPARISON.LT: lt,
    COMPARISON.MAX: le,
    COMPARISON.GT: gt,
    COMPARISON.MIN: ge,
}


@functools.lru_cache(maxsize=256)
def _like_matcher(pattern: str) -> Callable[[str], bool]:
    """A case-insensitive ``*`` glob test in linear time: the literal pieces between the stars are found left to
    right, each at its leftmost place, which is enough for a glob whose only wildcard is ``*``.  A regular
    expression (``a.*a.*a.*b``) backtracks: a pattern of a few stars against a stored text of a few thousand
    characters kept a worker busy for minutes."""
    if "*" not in pattern:
        needle = pattern.lower()
        return lambda text: needle in text.lower()
    first, *middle, last = pattern.lower().split("*")
    middle = [part for part in middle if part]
    fixed = len(first) + len(last)

    def match(text: str) -> bool:
        text = text.lower()
        if len(text) < fixed or not text.startswith(first) or not text.endswith(last):
            return False
        position, end = len(first), len(text) - len(last)
        for part in middle:
            found = text.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True
    return match


def _as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


def compile_filter(filter_: Filter) -> Predicate:
    """A predicate ``record -> bool`` for one filter (values are prepared once, not per record)."""
    field, value, operator = filter_.field, filter_.value, COMPARISON(filter_.operator)
    get = _getter(field)

    if operator in _RANGE_TESTS:
        test, kind = _RANGE_TESTS[operator], _rank(value)
        if kind not in _RANGE_RANKS:
            return lambda record: False

        ranks = _SCALAR_RANKS

        def compare(record: Record) -> bool:
            left = get(record)
            rank = ranks.get(type(left))
            if rank is None:
                rank = _rank(left) if left is not MISSING else None
            return rank == kind and test(left, value)
        return compare

    if operator in (COMPARISON.SORTS_BEFORE, COMPARISON.SORTS_AFTER):
        if value is None or value is MISSING:
            return lambda record: False
        bound, after = sort_value(value), operator == COMPARISON.SORTS_AFTER

        def sorts(record: Record) -> bool:
            left = get(record)
            if left is MISSING or left is None:
                return False
            key = sort_value(left)
            return key > bound if after else key < bound
        return sorts

    if operator in (COMPARISON.EQ, COMPARISON.NOT):
        wanted = _canonical(value)
        equal = operator == COMPARISON.EQ
        kind = _rank(value)
        if kind in (_BOOL, _NULL):  # singletons: identity is JSON equality (and MISSING is neither)
            if "." not in field:  # inlined getter: this test runs once per record of a partition
                if equal:
                    return lambda record: record.get(field, MISSING) is value
                return lambda record: record.get(field, MISSING) is not value
            if equal:
                return lambda record: get(record) is value
            return lambda record: get(record) is not value
        if kind in (_STRING, _NUMBER):  # the common case, without building canonical forms per record
            types = (str,) if kind == _STRING else (int, float)

            def scalar_equality(record: Record) -> bool:
                left = get(record)
                if left is MISSING:
                    return not equal
                return (type(left) in types and left == value) == equal
            return scalar_equality

        def equality(record: Record) -> bool:
            left = get(record)
            if left is MISSING:
                return not equal
            return (_canonical(left) == wanted) == equal
        return equality

    if operator in (COMPARISON.IN, COMPARISON.EXCLUDE):
        wanted_set = {_canonical(item) for item in _as_list(value)}
        inside = operator == COMPARISON.IN

        def membership(record: Record) -> bool:
            left = get(record)
            if left is MISSING:
                return not inside
            return (_canonical(left) in wanted_set) == inside
        return membership

    if operator == COMPARISON.HAS:
        present = value not in (False, 0, None, "false", "0", "")

        def has(record: Record) -> bool:
            left = get(record)
            return (left is not MISSING and left is not None) == present
        return has

    if operator == COMPARISON.LIKE:
        matches = _like_matcher(value if isinstance(value, str) else json.dumps(value))

        def like(record: Record) -> bool:
            left = get(record)
            return isinstance(left, str) and matches(left)
        return like

    # CONTAINS / CONTAINS_ANY
    items = [_canonical(item) for item in _as_list(value)]
    combine = all if operator == COMPARISON.CONTAINS else any

    def contains(record: Record) -> bool:
        left = get(record)
        if not isinstance(left, list):
            return False
        present = {_canonical(item) for item in left}
        return combine(item in present for item in items)
    return contains


def _getter(field: str) -> Callable[[Record], Any]:
    """A fast field reader: a plain ``dict.get`` for undotted fields."""
    if "." not in field:
        return lambda record: record.get(field, MISSING)
    return functools.partial(resolve, field=field)


def compile_filters(filters: Sequence[Filter]) -> Optional[Predicate]:
    """One predicate ANDing ``filters``; None when there is nothing to test."""
    predicates = [compile_filter(filter_) for filter_ in filters]
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]
    return lambda record: all(predicate(record) for predicate in predicates)


def compile_rules(pagination_rules: Sequence[Sequence[Filter]]) -> Optional[Predicate]:
    """One predicate ORing the ANDed filter lists of ``pagination_rules``; None when there are no rules."""
    predicates = [compile_filters(rule) or (lambda record: True) for rule in pagination_rules]
    if not predicates:
        return None
    return lambda record: any(predicate(record) for predicate in predicates)


def matches(record: Record, filters: Sequence[Filter]) -> bool:
    """True when ``record`` matches every filter."""
    predicate = compile_filters(filters)
    return predicate is None or predicate(record)


def matches_rules(record: Record, pagination_rules: Sequence[Sequence[Filter]]) -> bool:
    """True when ``record`` matches every filter of at least one rule (or there are no rules)."""
    predicate = compile_rules(pagination_rules)
    return predicate is None or predicate(record)


def sort_records(records: List[Record], sorting: Sequence[Sort]) -> List[Record]:
    """Sort ``records`` in place by the keys of ``sorting`` (first key most significant) and return it."""
    for sort in reversed(sorting):
        records.sort(key=_records_key(records, sort.field), reverse=sort.direction < 0)
    return records


#: Sets of value types that order like their sort keys (one JSON type, compared by value).
_PLAIN_ORDERS = (frozenset({int}), frozenset({float}), frozenset({int, float}), frozenset({str}), frozenset({bool}))


def _records_key(records: List[Record], field: str) -> Callable[[Record], Any]:
    """The sort key of ``field`` for these records: the value itself when every record holds a value of one JSON
    scalar type (the common case: ordering is then the same, and the key costs no Python call), else
    the general :func:`sort_value` key."""
    get = _getter(field)
    if "." in field:
        types = frozenset(type(get(record)) for record in records)
    else:
        types = frozenset({type(record.get(field, MISSING)) for record in records})
    if types in _PLAIN_ORDERS:
        return get
    return _sort_key(field)


def _sort_key(field: str) -> Callable[[Record], Tuple[Any, ...]]:
    get = _getter(field)
    ranks = _SCALAR_RANKS

    def key(record: Record) -> Tuple[Any, ...]:
        value = get(record)
        kind = ranks.get(type(value))
        return (0, (kind, value)) if kind is not None else sort_value(value)
    return key


def apply(records: Iterable[Record], *, filters: Sequence[Filter] = (), sorting: Sequence[Sort] = (),
          pagination_rules: Sequence[Sequence[Filter]] = (), limit: Optional[int] = None,
          count: Optional[Callable[[Record], bool]] = None) -> Tuple[List[Record], int]:
    """Filter, paginate, sort and limit ``records``; return ``(page, total)``.

    ``total`` counts the records matching ``filters`` for which ``count`` (default: every record) is true: pass
    ``lambda r: not r.get("deleted")`` to count live records only when tombstones are mixed in.  The page holds
    the given objects themselves; copy them (:func:`copy_record`) before handing them out.
    """
    keep = compile_filters(filters)
    page_filter = compile_rules(pagination_rules)
    selected: List[Record]
    bulks = [_bulk_filter(filter_) for filter_ in filters]
    if count is None and page_filter is None and bulks and all(bulks):  # the page is every match
        for bulk in bulks:
            records = bulk(records)  # type: ignore[misc]
        selected = records  # type: ignore[assignment]
        total = len(selected)
    elif count is None and page_filter is None:  # the page is every match: no per-record loop in Python
        selected = list(records if keep is None else filter(keep, records))
        total = len(selected)
    else:
        selected, total = _select(records, keep, page_filter, count)
    if limit is not None and len(sorting) == 1 and limit < len(selected):
        # A partial sort; heapq.nsmallest/nlargest are documented to equal sorted(...)[:limit], ties included.
        pick = heapq.nlargest if sorting[0].direction < 0 else heapq.nsmallest
        return pick(max(limit, 0), selected, key=_records_key(selected, sorting[0].field)), total
    sort_records(selected, sorting)
    if limit is not None:
        del selected[max(limit, 0):]
    return selected, total


def _bulk_filter(filter_: Filter) -> Optional[Callable[[Iterable[Record]], List[Record]]]:
    """A list comprehension (no call per record) for the common filters it decides exactly: ``==``/``!=`` on an
    undotted field with true, false or null (identity) or a string (a string equals nothing but an equal string);
    None for the others."""
    operator = COMPARISON(filter_.operator)
    field, value = filter_.field, filter_.value
    if "." in field or operator not in (COMPARISON.EQ, COMPARISON.NOT):
        return None
    if value is None or type(value) is bool:
        if operator == COMPARISON.EQ:
            return lambda records: [record for record in records if record.get(field, MISSING) is value]
        return lambda records: [record for record in records if record.get(field, MISSING) is not value]
    if type(value) is str:
        if operator == COMPARISON.EQ:
            return lambda records: [record for record in records if record.get(field, MISSING) == value]
        return lambda records: [record for record in records if record.get(field, MISSING) != value]
    return None


def _select(records: Iterable[Record], keep: Optional[Predicate], page_filter: Optional[Predicate],
            count: Optional[Predicate]) -> Tuple[List[Record], int]:
    """The records matching ``keep`` and ``page_filter``, and how many match ``keep`` and ``count``."""
    selected: List[Record] = []
    total = 0
    for record in records:
        if keep is not None and not keep(record):
            continue
        if count is None or count(record):
            total += 1
        if page_filter is None or page_filter(record):
            selected.append(record)
    return selected, total


def named_ids(filters: Sequence[Filter]) -> Optional[List[str]]:
    """The only ids ``filters`` can match when one of them is ``id == x`` or ``id in [...]`` (sorted, without
    duplicates; empty when nothing can match), else None.  Ids are strings (encodable in UTF-8, as every stored id
    is): other values match no record."""
    named: Optional[Set[str]] = None
    for filter_ in filters:
        operator = COMPARISON(filter_.operator)
        if filter_.field != "id" or operator not in (COMPARISON.EQ, COMPARISON.IN):
            continue
        value = filter_.value
        items = value if operator == COMPARISON.IN and isinstance(value, (list, tuple, set, frozenset)) else [value]
        ids = {item for item in items if isinstance(item, str) and _encodable(item)}
        named = ids if named is None else named & ids
    return None if named is None else sorted(named)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_COLUMNS = ("last_modified", "id")  # fields of one type in every record


def keyset_rules(last_record: Record, sorting: Sequence[Sort]) -> List[List[Filter]]:
    """The ``pagination_rules`` selecting the records that sort after ``last_record``.

    For keys k1..kn the next records satisfy, for some i: k1..k(i-1) equal the last record's values and ki is
    "after" its value.  Null and missing values are handled as the sort places them: after an ascending present
    value come greater values *and* missing ones; after a missing value (ascending) nothing of that key comes, and
    in descending order every present value comes after a missing one.  "Greater" is the sort's own order
    (``SORTS_AFTER``/``SORTS_BEFORE``: by type, then by value), so that a field mixing numbers, strings or arrays
    loses no record; ``last_modified`` and ``id`` (one type each) keep plain comparisons, which backends turn into
    index ranges.  ``sorting`` should end with a unique key (``last_modified``, then ``id``) so that each record is
    returned exactly once.
    """
    rules: List[List[Filter]] = []
    equal_so_far: List[Filter] = []
    for sort in sorting:
        value = resolve(last_record, sort.field)
        absent = value is MISSING or value is None
        if absent:
            if sort.direction < 0:
                rules.append(equal_so_far + [Filter(sort.field, True, COMPARISON.HAS)])
            equal_so_far = equal_so_far + [Filter(sort.field, False, COMPARISON.HAS)]
        else:
            typed = sort.field in _COLUMNS
            if sort.direction < 0:
                rules.append(equal_so_far + [Filter(sort.field, value, COMPARISON.LT if typed
                                                    else COMPARISON.SORTS_BEFORE)])
            else:
                rules.append(equal_so_far + [Filter(sort.field, value, COMPARISON.GT if typed
                                                    else COMPARISON.SORTS_AFTER)])
                rules.append(equal_so_far + [Filter(sort.field, False, COMPARISON.HAS)])
            equal_so_far = equal_so_far + [Filter(sort.field, value, COMPARISON.EQ)]
    return rules


def copy_record(value: Any) -> Any:
    """A deep copy of a JSON value (much faster than :func:`copy.deepcopy` for plain dicts and lists)."""
    if isinstance(value, dict):
        copy = dict(value)  # in C; then only the nested values are replaced (same keys: iteration stays valid)
        for key, item in copy.items():
            if type(item) not in _ATOMS:
                copy[key] = copy_record(item)
        return copy
    if isinstance(value, list):
        return [item if type(item) in _ATOMS else copy_record(item) for item in value]
    return value


_ATOMS = frozenset({str, int, float, bool, type(None)})

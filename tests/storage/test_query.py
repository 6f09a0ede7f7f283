"""The pure-Python query engine shared by the memory and Redis storage backends."""
from __future__ import annotations

import random
import time

import pytest

from wsgicliquet.storage import COMPARISON, Filter, Sort
from wsgicliquet.storage import query

RECORD = {"id": "a", "last_modified": 10, "n": 2, "f": 1.5, "s": "Wikipedia", "b": True, "z": None,
          "tags": ["x", "y", 3], "author": {"name": "Ann", "age": 30}, "arr": [1, 2], "obj": {"k": 1}}


@pytest.mark.parametrize("field, operator, value, expected", [
    pytest.param("n", COMPARISON.EQ, 2, True, id="eq-number"),
    pytest.param("n", COMPARISON.EQ, 2.0, True, id="eq-int-float"),
    pytest.param("n", COMPARISON.EQ, "2", False, id="eq-number-vs-string"),
    pytest.param("b", COMPARISON.EQ, 1, False, id="eq-bool-is-not-1"),
    pytest.param("b", COMPARISON.EQ, True, True, id="eq-bool"),
    pytest.param("z", COMPARISON.EQ, None, True, id="eq-null"),
    pytest.param("missing", COMPARISON.EQ, None, False, id="eq-null-missing"),
    pytest.param("arr", COMPARISON.EQ, [1, 2], True, id="eq-array"),
    pytest.param("arr", COMPARISON.EQ, [True, 2], False, id="eq-array-strict"),
    pytest.param("obj", COMPARISON.EQ, {"k": 1}, True, id="eq-object"),
    pytest.param("n", COMPARISON.NOT, 3, True, id="not"),
    pytest.param("n", COMPARISON.NOT, 2, False, id="not-equal"),
    pytest.param("missing", COMPARISON.NOT, 2, True, id="not-missing"),
    pytest.param("n", COMPARISON.LT, 3, True, id="lt"),
    pytest.param("n", COMPARISON.LT, 2, False, id="lt-equal"),
    pytest.param("n", COMPARISON.MAX, 2, True, id="max"),
    pytest.param("n", COMPARISON.GT, 1, True, id="gt"),
    pytest.param("n", COMPARISON.MIN, 2, True, id="min"),
    pytest.param("f", COMPARISON.GT, 1, True, id="gt-float"),
    pytest.param("n", COMPARISON.LT, "z", False, id="lt-number-vs-string"),
    pytest.param("s", COMPARISON.GT, 1, False, id="gt-string-vs-number"),
    pytest.param("s", COMPARISON.GT, "A", True, id="gt-string"),
    pytest.param("b", COMPARISON.GT, 0, False, id="gt-bool-vs-number"),
    pytest.param("b", COMPARISON.GT, False, True, id="gt-bool"),
    pytest.param("missing", COMPARISON.LT, 100, False, id="lt-missing"),
    pytest.param("z", COMPARISON.LT, 100, False, id="lt-null"),
    pytest.param("arr", COMPARISON.LT, [5], False, id="lt-array-never"),
    pytest.param("n", COMPARISON.IN, [1, 2], True, id="in"),
    pytest.param("n", COMPARISON.IN, ["2"], False, id="in-typed"),
    pytest.param("missing", COMPARISON.IN, [None], False, id="in-missing"),
    pytest.param("n", COMPARISON.EXCLUDE, [1, 3], True, id="exclude"),
    pytest.param("n", COMPARISON.EXCLUDE, [2], False, id="exclude-hit"),
    pytest.param("missing", COMPARISON.EXCLUDE, [2], True, id="exclude-missing"),
    pytest.param("n", COMPARISON.HAS, True, True, id="has"),
    pytest.param("z", COMPARISON.HAS, True, False, id="has-null"),
    pytest.param("z", COMPARISON.HAS, False, True, id="has-not-null"),
    pytest.param("missing", COMPARISON.HAS, False, True, id="has-not-missing"),
    pytest.param("s", COMPARISON.LIKE, "wiki", True, id="like-substring-case"),
    pytest.param("s", COMPARISON.LIKE, "pedia", True, id="like-substring-end"),
    pytest.param("s", COMPARISON.LIKE, "wiki*", True, id="like-prefix"),
    pytest.param("s", COMPARISON.LIKE, "pedia*", False, id="like-anchored"),
    pytest.param("s", COMPARISON.LIKE, "*ped*", True, id="like-wildcards"),
    pytest.param("s", COMPARISON.LIKE, "w.k", False, id="like-dot-literal"),
    pytest.param("n", COMPARISON.LIKE, "2", False, id="like-number-never"),
    pytest.param("tags", COMPARISON.CONTAINS, ["x", 3], True, id="contains"),
    pytest.param("tags", COMPARISON.CONTAINS, ["x", "3"], False, id="contains-typed"),
    pytest.param("tags", COMPARISON.CONTAINS, "y", True, id="contains-scalar"),
    pytest.param("s", COMPARISON.CONTAINS, ["W"], False, id="contains-not-a-list"),
    pytest.param("tags", COMPARISON.CONTAINS_ANY, ["q", 3], True, id="contains-any"),
    pytest.param("tags", COMPARISON.CONTAINS_ANY, ["q"], False, id="contains-any-none"),
    pytest.param("author.name", COMPARISON.EQ, "Ann", True, id="dotted-eq"),
    pytest.param("author.age", COMPARISON.MIN, 30, True, id="dotted-min"),
    pytest.param("author.nope", COMPARISON.NOT, "x", True, id="dotted-missing-not"),
    pytest.param("s.x", COMPARISON.EQ, "x", False, id="dotted-through-string"),
    pytest.param("n", "==", 2, True, id="operator-as-string"),
    pytest.param("b", COMPARISON.EQ, False, False, id="eq-bool-other"),
    pytest.param("n", COMPARISON.EQ, True, False, id="eq-true-vs-number"),
    pytest.param("missing", COMPARISON.EQ, False, False, id="eq-bool-missing"),
    pytest.param("missing", COMPARISON.NOT, True, True, id="not-bool-missing"),
    pytest.param("b", COMPARISON.NOT, True, False, id="not-bool-equal"),
    pytest.param("z", COMPARISON.NOT, None, False, id="not-null-equal"),
    pytest.param("missing", COMPARISON.NOT, None, True, id="not-null-missing"),
    pytest.param("n", COMPARISON.NOT, None, True, id="not-null-present"),
    pytest.param("author.nope", COMPARISON.EQ, None, False, id="dotted-eq-null-missing"),
    pytest.param("author.name", COMPARISON.NOT, False, True, id="dotted-not-bool"),
    pytest.param("obj", COMPARISON.GT, 0, False, id="gt-object-never"),
    pytest.param("n", COMPARISON.GT, 1.5, True, id="gt-int-vs-float"),
])
def test_filter_semantics(field, operator, value, expected):
    assert query.matches(RECORD, [Filter(field, value, operator)]) is expected


@pytest.mark.parametrize("pattern, text, expected", [
    ("ab*ba", "aba", False),  # the prefix and the suffix may not share characters
    ("ab*ba", "abba", True),
    ("a*a", "a", False),
    ("*", "", True),
    ("**", "anything", True),
    ("a**b", "ab", True),
    ("*b*b*", "abcb", True),
    ("*b*b*", "abc", False),
    ("x*y*z", "xzyz", True),
    ("x*y*z", "xzzy", False),
    ("", "", True),  # no star: anywhere, so the empty pattern matches everything
    ("ÉTÉ", "un été", True),
    ("a.c", "abc", False),
])
def test_like_glob_semantics(pattern, text, expected):
    assert query.matches({"s": text}, [Filter("s", pattern, COMPARISON.LIKE)]) is expected


def test_like_takes_linear_time_on_many_stars():
    """A regular expression backtracked on ``a*a*a*a*b`` against a run of ``a`` (seconds for these 400
    characters, hours for a few thousand): one listing kept a worker busy for good on memory and Redis."""
    record = {"s": "a" * 400}
    started = time.perf_counter()
    assert not query.matches(record, [Filter("s", "a*" * 4 + "b", COMPARISON.LIKE)])
    assert query.matches(record, [Filter("s", "a*" * 4 + "a", COMPARISON.LIKE)])
    assert time.perf_counter() - started < 0.5
    assert query.matches({"s": "a" * 100_000}, [Filter("s", "a*" * 50 + "a", COMPARISON.LIKE)])


def test_rules_are_ors_of_ands():
    rules = [[Filter("n", 1, COMPARISON.EQ)], [Filter("n", 2, COMPARISON.EQ), Filter("s", "x", COMPARISON.EQ)]]
    assert not query.matches_rules(RECORD, rules)
    rules.append([Filter("n", 2, COMPARISON.EQ), Filter("b", True, COMPARISON.EQ)])
    assert query.matches_rules(RECORD, rules)
    assert query.matches_rules(RECORD, [])


def _ids(records):
    return [record["id"] for record in records]


MIXED = [{"id": "null", "v": None}, {"id": "missing"}, {"id": "str", "v": "a"}, {"id": "num", "v": 10},
         {"id": "neg", "v": -1}, {"id": "bool", "v": False}, {"id": "arr", "v": [1]}, {"id": "obj", "v": {"a": 1}}]


def test_sort_orders_by_type_then_value_missing_last():
    ordered = query.sort_records(list(MIXED), [Sort("v", 1), Sort("id", 1)])
    assert _ids(ordered) == ["bool", "neg", "num", "str", "arr", "obj", "missing", "null"]
    ordered = query.sort_records(list(MIXED), [Sort("v", -1), Sort("id", 1)])
    assert _ids(ordered) == ["missing", "null", "obj", "arr", "str", "num", "neg", "bool"]


@pytest.mark.parametrize("direction", [1, -1], ids=["asc", "desc"])
def test_partial_sort_of_a_page_equals_the_full_sort(direction):
    records = [dict(record, n=index) for index, record in enumerate(MIXED * 3)]
    records += [{"id": "float", "v": 1.5, "n": 90}, {"id": "true", "v": True, "n": 91}, {"id": "int", "v": 1, "n": 92}]
    for limit in range(1, len(records) + 1):
        page, total = query.apply(records, filters=[Filter("n", 1, COMPARISON.NOT)], sorting=[Sort("v", direction)],
                                  limit=limit)
        expected = query.sort_records([r for r in records if r["n"] != 1], [Sort("v", direction)])[:limit]
        assert page == expected and total == len(records) - 1


def test_sort_several_keys_mixed_directions():
    records = [{"id": str(i), "a": i % 2, "b": i} for i in range(6)]
    ordered = query.sort_records(records, [Sort("a", 1), Sort("b", -1)])
    assert _ids(ordered) == ["4", "2", "0", "5", "3", "1"]


def test_apply_counts_filtered_and_ignores_pagination():
    records = [{"id": str(i), "last_modified": i, "n": i} for i in range(10)]
    page, total = query.apply(records, filters=[Filter("n", 2, COMPARISON.MIN)], sorting=[Sort("n", -1)],
                              pagination_rules=[[Filter("n", 8, COMPARISON.LT)]], limit=3)
    assert _ids(page) == ["7", "6", "5"]
    assert total == 8


@pytest.mark.parametrize("sorting", [
    pytest.param([Sort("v", 1)], id="asc"),
    pytest.param([Sort("v", -1)], id="desc"),
    pytest.param([Sort("w", 1), Sort("v", -1)], id="two-keys"),
])
def test_keyset_rules_page_through_everything_once(sorting):
    rng = random.Random(4)
    records = []
    for i in range(40):
        record = {"id": f"r{i:02}", "last_modified": 100 + i}
        choice = rng.random()
        if choice < 0.6:
            record["v"] = rng.randint(0, 4)
        elif choice < 0.8:
            record["v"] = None
        if rng.random() < 0.7:
            record["w"] = rng.choice("abc")
        records.append(record)
    sorting = sorting + [Sort("last_modified", -1), Sort("id", 1)]
    expected, _ = query.apply(records, sorting=sorting)
    seen, rules = [], []
    while True:
        page, total = query.apply(records, sorting=sorting, pagination_rules=rules, limit=7)
        assert total == 40
        if not page:
            break
        seen.extend(page)
        rules = query.keyset_rules(page[-1], sorting)
    assert _ids(seen) == _ids(expected)


def test_copy_record_is_deep():
    copy = query.copy_record(RECORD)
    assert copy == RECORD
    copy["tags"].append("new")
    copy["author"]["name"] = "Bob"
    assert RECORD["tags"] == ["x", "y", 3] and RECORD["author"]["name"] == "Ann"


def test_resolve_prefers_literal_key_then_path():
    assert query.resolve({"a.b": 1, "a": {"b": 2}}, "a.b") == 1
    assert query.resolve({"a": {"b": 2}}, "a.b") == 2
    assert query.resolve({"a": [1]}, "a.b") is query.MISSING


@pytest.mark.parametrize("operator", [COMPARISON.EQ, COMPARISON.NOT], ids=["eq", "not"])
@pytest.mark.parametrize("value", [True, False, None, "a", "", 1, 1.0, 0], ids=repr)
def test_listing_filters_agree_with_the_predicates(operator, value):
    """apply() decides the common ``==``/``!=`` filters in bulk: same answer as one predicate per record."""
    records = [{"id": str(index), "v": item} for index, item in
               enumerate([True, False, None, "a", "A", "", 0, 1, 1.0, [], {}, ["a"], {"a": 1}])]
    records.append({"id": "missing"})
    filters = [Filter("v", value, operator)]
    page, total = query.apply(records, filters=filters)
    expected = [record for record in records if query.matches(record, filters)]
    assert page == expected and total == len(expected)


@pytest.mark.parametrize("left, right, equal", [
    pytest.param(1, 1.0, True, id="int-float"),
    pytest.param(True, 1, False, id="bool-is-not-number"),
    pytest.param(None, None, True, id="null"),
    pytest.param(None, query.MISSING, False, id="missing"),
    pytest.param("a", "a", True, id="string"),
    pytest.param([1, {"a": [True]}], [1.0, {"a": [True]}], True, id="deep"),
    pytest.param([1, {"a": [True]}], [1, {"a": [1]}], False, id="deep-bool"),
    pytest.param({"a": 1, "b": 2}, {"b": 2, "a": 1}, True, id="key-order"),
    pytest.param({"a": 1}, {"a": 1, "b": None}, False, id="extra-key"),
    pytest.param([1, 2], [2, 1], False, id="array-order"),
    pytest.param([1], [1, 1], False, id="array-length"),
    pytest.param({"a": 1}, [("a", 1)], False, id="object-vs-array"),
    pytest.param("1", 1, False, id="string-vs-number"),
])
def test_json_equal(left, right, equal):
    assert query.json_equal(left, right) is equal and query.json_equal(right, left) is equal
    if left is not query.MISSING and right is not query.MISSING:
        assert (query.json_key(left) == query.json_key(right)) is equal

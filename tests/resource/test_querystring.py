"""Listing parameters: filters, operators, values, sort, limit, fields (PROTOCOL.md Part A, §4)."""
from __future__ import annotations

import pytest

from wsgicliquet.errors import HTTPError
from wsgicliquet.resource import querystring as qs
from wsgicliquet.storage import COMPARISON, Filter, Sort

KNOWN = {"title", "position", "author", "tags", "id", "last_modified", "deleted", "size", "min_size"}


def is_known(field: str) -> bool:
    return field.split(".", 1)[0] in KNOWN


def filters(query: str):
    return qs.parse_filters(qs.parse_query_string(query), is_known)


def error_of(call, *args) -> dict:
    with pytest.raises(HTTPError) as info:
        call(*args)
    assert info.value.code == 400 and info.value.errno == 107
    return info.value.body


@pytest.mark.parametrize("query, expected", [
    pytest.param("title=MoFo", Filter("title", "MoFo", COMPARISON.EQ), id="string"),
    pytest.param("position=2", Filter("position", 2, COMPARISON.EQ), id="json-number"),
    pytest.param("position=%222%22", Filter("position", "2", COMPARISON.EQ), id="json-string"),
    pytest.param("title=true", Filter("title", True, COMPARISON.EQ), id="json-true"),
    pytest.param("title=null", Filter("title", None, COMPARISON.EQ), id="json-null"),
    pytest.param("title=1.2.3", Filter("title", "1.2.3", COMPARISON.EQ), id="not-json"),
    pytest.param("title=NaN", Filter("title", "NaN", COMPARISON.EQ), id="nan-is-a-string"),
    pytest.param("position=1e400", Filter("position", "1e400", COMPARISON.EQ), id="infinity-is-a-string"),
    pytest.param("tags=[1,2]", Filter("tags", [1, 2], COMPARISON.EQ), id="json-array"),
    pytest.param("min_position=2", Filter("position", 2, COMPARISON.MIN), id="min"),
    pytest.param("max_position=2", Filter("position", 2, COMPARISON.MAX), id="max"),
    pytest.param("lt_position=2", Filter("position", 2, COMPARISON.LT), id="lt"),
    pytest.param("gt_position=2", Filter("position", 2, COMPARISON.GT), id="gt"),
    pytest.param("not_title=a", Filter("title", "a", COMPARISON.NOT), id="not"),
    pytest.param("eq_title=a", Filter("title", "a", COMPARISON.EQ), id="eq"),
    pytest.param("in_position=1,2,a", Filter("position", [1, 2, "a"], COMPARISON.IN), id="in"),
    pytest.param("exclude_title=a,b", Filter("title", ["a", "b"], COMPARISON.EXCLUDE), id="exclude"),
    pytest.param("has_title=true", Filter("title", True, COMPARISON.HAS), id="has-true"),
    pytest.param("has_title=0", Filter("title", False, COMPARISON.HAS), id="has-0"),
    pytest.param("like_title=wiki*", Filter("title", "wiki*", COMPARISON.LIKE), id="like"),
    pytest.param("like_title=12", Filter("title", "12", COMPARISON.LIKE), id="like-keeps-raw"),
    pytest.param("contains_tags=a", Filter("tags", ["a"], COMPARISON.CONTAINS), id="contains-scalar"),
    pytest.param("contains_tags=[%22a%22,1]", Filter("tags", ["a", 1], COMPARISON.CONTAINS), id="contains-list"),
    pytest.param("contains_any_tags=[1,2]", Filter("tags", [1, 2], COMPARISON.CONTAINS_ANY), id="contains-any"),
    pytest.param("author.name=Ada", Filter("author.name", "Ada", COMPARISON.EQ), id="dotted"),
    pytest.param("gt_author.age=3", Filter("author.age", 3, COMPARISON.GT), id="dotted-operator"),
    pytest.param("id=123", Filter("id", "123", COMPARISON.EQ), id="id-stays-a-string"),
    pytest.param("in_id=1,b", Filter("id", ["1", "b"], COMPARISON.IN), id="in-id-strings"),
    pytest.param("in_last_modified=1,%222%22", Filter("last_modified", [1, 2], COMPARISON.IN), id="in-lm"),
    pytest.param("min_size=3", Filter("size", 3, COMPARISON.MIN), id="operator-wins-when-field-known"),
    pytest.param("title=caf%C3%A9", Filter("title", "café", COMPARISON.EQ), id="utf8-value"),
])
def test_filter(query, expected):
    found, _, _ = filters(query)
    assert found == [expected]


@pytest.mark.parametrize("query, include_deleted, deprecated", [
    pytest.param("_since=12", True, False, id="since"),
    pytest.param("_before=%2212%22", True, False, id="before-quoted"),
    pytest.param("_to=12", True, True, id="to-deprecated"),
    pytest.param("gt_last_modified=12", True, False, id="explicit"),
    pytest.param("title=a", False, False, id="other-field"),
    pytest.param("_since=null", False, False, id="since-null-ignored"),
    pytest.param("_foo=1&_=123", False, False, id="other-underscore-ignored"),
])
def test_tombstones_and_alias(query, include_deleted, deprecated):
    found, include, deprecated_to = filters(query)
    assert (include, deprecated_to) == (include_deleted, deprecated)


def test_since_before_operators():
    found, _, _ = filters("_since=10&_before=20&_to=30")
    assert found == [Filter("last_modified", 10, COMPARISON.GT), Filter("last_modified", 20, COMPARISON.LT),
                     Filter("last_modified", 30, COMPARISON.LT)]


def test_repeated_parameter_gives_several_filters():
    found, _, _ = filters("title=a&title=b")
    assert found == [Filter("title", "a", COMPARISON.EQ), Filter("title", "b", COMPARISON.EQ)]


@pytest.mark.parametrize("query, name, description", [
    pytest.param("foo=1", "foo", "Unknown filter field 'foo'", id="unknown"),
    pytest.param("has_foo=1", "has_foo", "Unknown filter field 'has_foo'", id="unknown-with-operator"),
    pytest.param("%22title%22=1", '"title"', "Unknown filter field '\"title\"'", id="quotes"),
    pytest.param("title%3D=1", "title=", "Unknown filter field 'title='", id="operator-char"),
    pytest.param("t%C3%AFtle=1", "tïtle", "Unknown filter field 'tïtle'", id="unicode"),
    pytest.param("title.=1", "title.", "Unknown filter field 'title.'", id="empty-segment"),
    pytest.param("=1", "", "Unknown filter field ''", id="empty-name"),
    pytest.param("_since=abc", "_since", "Invalid value for _since", id="since-text"),
    pytest.param("_since=1.2", "_since", "Invalid value for _since", id="since-float"),
    pytest.param("_since=%2212", "_since", "Invalid value for _since", id="since-unbalanced-quote"),
    pytest.param("_before=-1", "_before", "Invalid value for _before", id="before-negative"),
    pytest.param("last_modified=abc", "last_modified", "Invalid value for last_modified", id="lm-text"),
    pytest.param("in_last_modified=1,a", "in_last_modified", "Invalid value for in_last_modified", id="in-lm"),
    pytest.param("has_title=maybe", "has_title", "Invalid value for has_title", id="has-not-bool"),
])
def test_filter_errors(query, name, description):
    body = error_of(filters, query)
    assert body["details"] == [{"location": "querystring", "name": name, "description": description}]
    assert body["message"] == description


def test_invalid_encoding_is_a_400():
    body = error_of(qs.parse_query_string, "title=%ff")
    assert body["details"][0]["location"] == "querystring"


@pytest.mark.parametrize("raw, expected", [
    pytest.param(None, [Sort("last_modified", -1), Sort("id", -1)], id="default"),
    pytest.param("", [Sort("last_modified", -1), Sort("id", -1)], id="empty"),
    pytest.param("title", [Sort("title", 1), Sort("last_modified", -1), Sort("id", -1)], id="one"),
    pytest.param("-title,+position", [Sort("title", -1), Sort("position", 1), Sort("last_modified", -1),
                                       Sort("id", -1)], id="several"),
    pytest.param("last_modified", [Sort("last_modified", 1), Sort("id", 1)], id="ascending-lm"),
    pytest.param("id", [Sort("id", 1), Sort("last_modified", -1)], id="id-given"),
    pytest.param("author.name", [Sort("author.name", 1), Sort("last_modified", -1), Sort("id", -1)],
                 id="dotted"),
    pytest.param("title,,title", [Sort("title", 1), Sort("last_modified", -1), Sort("id", -1)], id="duplicates"),
])
def test_sort(raw, expected):
    assert qs.parse_sort(raw, is_known) == expected


@pytest.mark.parametrize("raw, item", [
    pytest.param("foo", "foo", id="unknown"),
    pytest.param("title;drop", "title;drop", id="semicolon"),
    pytest.param("'title'", "'title'", id="quotes"),
    pytest.param("--title", "--title", id="double-sign"),
    pytest.param("+", "+", id="sign-only"),
    pytest.param("tïtle", "tïtle", id="unicode"),
])
def test_sort_errors(raw, item):
    body = error_of(qs.parse_sort, raw, is_known)
    assert body["details"] == [{"location": "querystring", "name": None,
                                "description": f"Unknown sort field '{item}'"}]
    assert body["message"] == f"querystring: Unknown sort field '{item}'"


@pytest.mark.parametrize("raw, paginate_by, expected", [
    pytest.param(None, None, None, id="none"),
    pytest.param("5", None, 5, id="limit"),
    pytest.param(None, 10, 10, id="paginate-by"),
    pytest.param("50", 10, 10, id="paginate-by-caps"),
    pytest.param("5", 10, 5, id="smaller-wins"),
    pytest.param("999999999999", None, qs.MAX_LIMIT, id="clamped"),
])
def test_limit(raw, paginate_by, expected):
    assert qs.parse_limit(raw, paginate_by) == expected


@pytest.mark.parametrize("raw, description", [
    pytest.param("abc", "_limit should be an integer", id="text"),
    pytest.param("1.5", "_limit should be an integer", id="float"),
    pytest.param("-1", "_limit should be an integer", id="negative"),
    pytest.param("1_000", "_limit should be an integer", id="underscore"),
    pytest.param("", "_limit should be an integer", id="empty"),
    pytest.param("0", "_limit should be a positive integer", id="zero"),
])
def test_limit_errors(raw, description):
    body = error_of(qs.parse_limit, raw, None)
    assert body["details"] == [{"location": "querystring", "name": "_limit", "description": description}]
    assert body["message"] == description


def test_fields():
    assert qs.parse_fields("title,author.name", is_known) == ["title", "author.name"]
    assert qs.parse_fields(None, is_known) is None
    body = error_of(qs.parse_fields, "title,foo,bar", is_known)
    assert body["details"] == [{"location": "querystring", "name": "Invalid _fields parameter",
                                "description": "Fields foo,bar do not exist"}]


def test_parse_list_combines_everything():
    query = qs.parse_list(qs.parse_query_string("title=a&_sort=-title&_limit=3&_fields=title&_token=x"),
                          is_known, paginate_by=2)
    assert query.filters == [Filter("title", "a", COMPARISON.EQ)]
    assert query.sorting[0] == Sort("title", -1)
    assert (query.limit, query.token, query.fields, query.include_deleted) == (2, "x", ["title"], False)


@pytest.mark.parametrize("record, fields, expected", [
    pytest.param({"id": "a", "last_modified": 1, "title": "t", "x": 2}, ["title"],
                 {"id": "a", "last_modified": 1, "title": "t"}, id="top-level"),
    pytest.param({"id": "a", "last_modified": 1, "author": {"name": "n", "age": 3}}, ["author.name"],
                 {"id": "a", "last_modified": 1, "author": {"name": "n"}}, id="nested"),
    pytest.param({"id": "a", "last_modified": 1, "deleted": True}, ["title"],
                 {"id": "a", "last_modified": 1, "deleted": True}, id="tombstone"),
    pytest.param({"id": "a", "last_modified": 1, "author": "x"}, ["author.name", "missing"],
                 {"id": "a", "last_modified": 1}, id="absent-paths"),
])
def test_project(record, fields, expected):
    assert qs.project(record, fields) == expected

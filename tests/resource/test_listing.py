"""Collection listings over HTTP: filters, sort, _fields, _since/_before/_to, pagination (§4, Part A D3)."""
from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.resource.conftest import unique_user

NOTES = [
    {"title": "alpha", "position": 1, "tags": ["a", "b"], "author": {"name": "Ada", "age": 36}, "flag": True},
    {"title": "beta", "position": 2, "tags": ["b"], "author": {"name": "Bob", "age": 20}},
    {"title": "Gamma wiki", "position": "2", "tags": [], "author": {"name": "Ada", "age": 50}, "flag": None},
    {"title": "delta", "position": 3.5, "flag": False},
]


@pytest.fixture
def app(make_app, any_storage):
    """The resource app on each backend, as a user of its own: filters, sorts and walks are compiled per backend."""
    return make_app(userid=unique_user(), backend=any_storage)


@pytest.fixture
def notes(app):
    """Create NOTES in order; return {title: record}."""
    return {note["title"]: app.post_json("/notes", {"data": note}).json["data"] for note in NOTES}


def titles(response):
    return [record.get("title") for record in response.json["data"]]


@pytest.mark.parametrize("query, expected", [
    pytest.param("title=beta", ["beta"], id="eq"),
    pytest.param("position=2", ["beta"], id="number-is-not-string"),
    pytest.param("position=%222%22", ["Gamma wiki"], id="json-string"),
    pytest.param("min_position=2", ["delta", "beta"], id="min"),
    pytest.param("max_position=2", ["beta", "alpha"], id="max"),
    pytest.param("gt_position=1", ["delta", "beta"], id="gt"),
    pytest.param("lt_position=3", ["beta", "alpha"], id="lt"),
    pytest.param("not_title=beta", ["delta", "Gamma wiki", "alpha"], id="not"),
    pytest.param("in_position=1,3.5", ["delta", "alpha"], id="in"),
    pytest.param("exclude_title=alpha,beta", ["delta", "Gamma wiki"], id="exclude"),
    pytest.param("has_flag=true", ["alpha", "delta"][::-1], id="has"),
    pytest.param("has_flag=false", ["Gamma wiki", "beta"], id="has-false-null-or-missing"),
    pytest.param("flag=true", ["alpha"], id="bool"),
    pytest.param("flag=null", ["Gamma wiki"], id="null"),
    pytest.param("like_title=WIKI", ["Gamma wiki"], id="like-anywhere"),
    pytest.param("like_title=*ta", ["delta", "beta"], id="like-wildcard"),
    pytest.param("contains_tags=b", ["beta", "alpha"], id="contains"),
    pytest.param("contains_tags=[%22a%22,%22b%22]", ["alpha"], id="contains-all"),
    pytest.param("contains_any_tags=[%22a%22,%22z%22]", ["alpha"], id="contains-any"),
    pytest.param("author.name=Ada", ["Gamma wiki", "alpha"], id="dotted"),
    pytest.param("gt_author.age=30&author.name=Ada", ["Gamma wiki", "alpha"], id="dotted-and"),
    pytest.param("title=alpha&title=beta", [], id="repeated-and"),
    pytest.param("_foo=1", ["delta", "Gamma wiki", "beta", "alpha"], id="ignored-underscore"),
])
def test_filters(app, notes, query, expected):
    response = app.get(f"/notes?{query}")
    assert titles(response) == expected
    assert response.headers["Total-Records"] == str(len(expected))


@pytest.mark.parametrize("query, expected", [
    pytest.param("_sort=title", ["Gamma wiki", "alpha", "beta", "delta"], id="asc"),
    pytest.param("_sort=-position", ["Gamma wiki", "delta", "beta", "alpha"], id="desc-mixed-types"),
    pytest.param("_sort=author.name,-title", ["alpha", "Gamma wiki", "beta", "delta"], id="several-dotted"),
    pytest.param("_sort=last_modified", ["alpha", "beta", "Gamma wiki", "delta"], id="oldest-first"),
    pytest.param("", ["delta", "Gamma wiki", "beta", "alpha"], id="default-newest-first"),
])
def test_sort(app, notes, query, expected):
    assert titles(app.get(f"/notes?{query}")) == expected


def test_fields(app, notes):
    response = app.get("/notes?_fields=title,author.name&title=alpha")
    record = response.json["data"][0]
    assert record == {"id": notes["alpha"]["id"], "last_modified": notes["alpha"]["last_modified"],
                      "title": "alpha", "author": {"name": "Ada"}}
    single = app.get(f"/notes/{record['id']}?_fields=position").json["data"]
    assert single == {"id": record["id"], "last_modified": record["last_modified"], "position": 1}


@pytest.mark.parametrize("url, status, message", [
    pytest.param("/bookmarks?foo=1", 400, "Unknown filter field 'foo'", id="strict-filter"),
    pytest.param("/bookmarks?_sort=foo", 400, "querystring: Unknown sort field 'foo'", id="strict-sort"),
    pytest.param("/bookmarks?_fields=foo", 400, "Invalid _fields parameter in querystring: Fields foo do not exist",
                 id="strict-fields"),
    pytest.param("/notes?foo=1&_sort=-bar&_fields=baz", 200, None, id="preserve-unknown-allows-all"),
    pytest.param("/bookmarks?title=a&_sort=-title&_fields=url", 200, None, id="declared"),
])
def test_fields_outside_the_schema(app, url, status, message):
    response = app.get(url, status=status)
    if message:
        assert response.json["message"] == message and response.json["errno"] == 107


def test_since_before_and_tombstones(app):
    first = app.post_json("/notes", {"data": {"n": 1}}).json["data"]
    second = app.post_json("/notes", {"data": {"n": 2}}).json["data"]
    tombstone = app.delete(f"/notes/{first['id']}").json["data"]
    since = app.get(f"/notes?_since={first['last_modified']}")
    assert since.json["data"] == [tombstone, second]
    assert since.headers["Total-Records"] == "1"  # live records only
    quoted = app.get(f'/notes?_since="{first["last_modified"]}"')
    assert quoted.json == since.json
    before = app.get(f"/notes?_before={tombstone['last_modified']}").json["data"]
    assert before == [second]
    assert app.get("/notes").json["data"] == [second]  # no tombstones without a last_modified filter
    assert app.get(f"/notes?_since={tombstone['last_modified']}").json["data"] == []
    deleted = app.get("/notes?_since=0&deleted=true").json["data"]
    assert deleted == [tombstone]


def test_to_is_a_deprecated_alias(app):
    record = app.post_json("/notes", {"data": {}}).json["data"]
    response = app.get(f"/notes?_to={record['last_modified'] + 1}")
    assert response.json["data"] == [record]
    alert = json.loads(response.headers["Alert"])
    assert alert["code"] == "soft-eol" and alert["message"] == "_to is now deprecated, you should use _before instead"


def test_invalid_timestamp_filters(app):
    response = app.get("/notes?_since=abc", status=400)
    assert response.json["message"] == "Invalid value for _since"
    assert response.json["details"] == [{"location": "querystring", "name": "_since",
                                         "description": "Invalid value for _since"}]
    assert app.get("/notes?_limit=x", status=400).json["message"] == "_limit should be an integer"


# -- pagination ------------------------------------------------------------------------------------------------------

def walk(app, url, **kwargs):
    """Follow Next-Page links; return (records, pages)."""
    records, pages = [], 0
    while url:
        response = app.get(url, **kwargs)
        records += response.json["data"]
        pages += 1
        url = response.headers.get("Next-Page")
    return records, pages


def test_next_page_walk(make_app):
    app = make_app(extra_environ={"SCRIPT_NAME": "/v1", "HTTP_HOST": "api.example.com:8080"})
    created = [app.post_json("/v1/notes", {"data": {"i": i}}).json["data"] for i in range(10)]
    first = app.get("/v1/notes?_limit=3&has_i=true&not_i=99")
    next_page = urlsplit(first.headers["Next-Page"])
    assert (next_page.scheme, next_page.netloc, next_page.path) == ("http", "api.example.com:8080", "/v1/notes")
    assert [name for name, _ in parse_qsl(next_page.query)] == ["has_i", "not_i", "_limit", "_token"]
    assert first.headers["Total-Records"] == "10"
    records, pages = walk(app, "/v1/notes?_limit=3")
    assert records == created[::-1] and pages == 4


def test_exactly_one_full_page_has_no_next_page(app):
    for i in range(3):
        app.post_json("/notes", {"data": {"i": i}})
    response = app.get("/notes?_limit=3")
    assert len(response.json["data"]) == 3 and "Next-Page" not in response.headers


def test_paginate_by_and_forced_host(make_app):
    app = make_app(paginate_by="2", http_host="public.example.org", http_scheme="https")
    for i in range(5):
        app.post_json("/notes", {"data": {"i": i}})
    response = app.get("/notes?_limit=50")
    assert len(response.json["data"]) == 2
    assert response.headers["Next-Page"].startswith("https://public.example.org/notes?_limit=2&_token=")
    records, pages = walk(app, "/notes")
    assert len(records) == 5 and pages == 3


@pytest.mark.parametrize("sort", ["title", "-title", "-position,title", "last_modified", "position"])
def test_walk_sorted_with_missing_values_and_ties(app, sort):
    for i in range(23):
        data = {"position": i % 3}
        if i % 4:
            data["title"] = f"t{i % 5}"
        app.post_json("/notes", {"data": data})
    full = app.get(f"/notes?_sort={sort}").json["data"]
    records, _ = walk(app, f"/notes?_sort={sort}&_limit=4")
    assert records == full and len({r["id"] for r in records}) == 23


def test_tombstones_do_not_stop_a_since_walk(app):
    """§21.1: 5 records, 4 deleted; _since with _limit=2 must still reach every change."""
    start = int(app.get("/notes").headers["ETag"].strip('"'))
    ids = [app.post_json("/notes", {"data": {"i": i}}).json["data"]["id"] for i in range(5)]
    for object_id in ids[:4]:
        app.delete(f"/notes/{object_id}")
    records, pages = walk(app, f"/notes?_since={start}&_limit=2")
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert sum(1 for r in records if r.get("deleted")) == 4 and pages == 3


def token(payload) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def test_token_validation(app):
    for i in range(3):
        app.post_json("/notes", {"data": {"title": f"t{i}"}})
    next_page = app.get("/notes?_limit=1&_sort=title").headers["Next-Page"]
    good = dict(parse_qsl(urlsplit(next_page).query))["_token"]
    assert app.get(f"/notes?_limit=1&_sort=title&_token={good}").json["data"][0]["title"] == "t1"
    for bad_query in (f"_sort=-title&_token={good}", f"_token={good}", "_token=garbage",
                      "_token=" + token({"last_record": {}, "offset": 0, "sort": "-last_modified,-id"})):
        response = app.get(f"/notes?_limit=1&{bad_query}", status=400)
        assert response.json["message"] == "_token has invalid content"


def test_concurrent_deletion_of_the_token_record(app):
    ids = [app.post_json("/notes", {"data": {"i": i}}).json["data"]["id"] for i in range(4)]
    first = app.get("/notes?_limit=2")
    app.delete(f"/notes/{first.json['data'][-1]['id']}")
    second = app.get(first.headers["Next-Page"])
    assert [r["id"] for r in second.json["data"]] == ids[:2][::-1]


@pytest.mark.parametrize("sort", ["value", "-value", "value.k,-position"])
def test_next_page_walk_over_a_field_of_mixed_types(make_app, any_storage, sort):
    """Numbers, strings, booleans, arrays, objects, null and missing in one sort field: every record once (D3)."""
    app = make_app(userid=unique_user(), backend=any_storage)  # alice's notes pile up in the shared databases
    values = [3, "b", True, [2, "x"], {"k": 1}, None, 1.5, "a", False, [1], {"k": "z"}, -4, "", [], {}, 3]
    for position, value in enumerate(values + ["missing"]):
        data = {"position": position} if value == "missing" else {"position": position, "value": value}
        app.post_json("/notes", {"data": data})
    full = app.get(f"/notes?_sort={sort}").json["data"]
    for limit in (1, 2, 5):
        records, _ = walk(app, f"/notes?_sort={sort}&_limit={limit}")
        assert records == full, f"limit {limit}"


@pytest.mark.parametrize("query", ["_sort=title&_fields=position", "_sort=-author.name,position&_fields=title",
                                   "_since=0&_sort=author.name&_fields=author.age"])
def test_next_page_walk_when_fields_leave_out_the_sort_keys(app, notes, query):
    """The token holds the sort values of the last record, which ``_fields`` may have projected away (§4.7, §4.8)."""
    app.delete(f"/notes/{notes['beta']['id']}")
    full = app.get(f"/notes?{query}").json["data"]
    records, pages = walk(app, f"/notes?{query}&_limit=1")
    assert records == full and pages == len(full)
    assert len({record["id"] for record in records}) == len(full) >= 3

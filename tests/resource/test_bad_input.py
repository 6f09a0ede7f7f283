"""Hostile or broken requests: each is a clear 400 (or 404/413), never a 500, and the stored data is unchanged."""
from __future__ import annotations

import pytest

from wsgicliquet.resource.body import MAX_DEPTH
from wsgicliquet.resource.generators import MAX_ID_LENGTH, Generator
from wsgicliquet.resource.resource import Resource

from .conftest import as_user, unique_user

RECORD_ID = "8c42b0ad-7a1c-4b53-9c30-1c5e6e7ba9d5"
DEEP = "[" * 100 + "]" * 100
VERY_DEEP = "[" * 100000 + "]" * 100000

BODIES = [
    pytest.param(b'{"data": ', "Invalid JSON request body", id="truncated-json"),
    pytest.param(b"{'data': {}}", "Invalid JSON request body", id="single-quotes"),
    pytest.param(b"[1, 2]", "The request body must be a JSON object", id="array-body"),
    pytest.param(b'"text"', "The request body must be a JSON object", id="string-body"),
    pytest.param(b"null", "The request body must be a JSON object", id="null-body"),
    pytest.param(b"-0.0", "The request body must be a JSON object", id="negative-zero-body"),
    pytest.param(b'{"data": [1]}', "data should be an object", id="array-data"),
    pytest.param(b'{"data": "x"}', "data should be an object", id="string-data"),
    pytest.param(b'{"data": {"url": "http://a.org"}, "foo": 1}', "foo is not allowed", id="unknown-key"),
    pytest.param(b'{"data": {"url": "http://a.org"}, "permissions": {"read": ["x"]}}',
                 "permissions is not allowed", id="permissions"),
    pytest.param(b'{"data": {"url": 12}}', "data.url in body", id="wrong-type"),
    pytest.param(b'{"data": {"url": "http://a.org", "favorite": "yes"}}', "data.favorite in body", id="wrong-bool"),
    pytest.param(b'{"data": {"url": "javascript alert(1)"}}', "data.url in body", id="not-a-uri"),
    pytest.param(b'{"data": {"url": ""}}', "data.url in body", id="empty-url"),
    pytest.param(b'{"data": {"url": "http://a.org", "position": 1.5}}', "data.position in body", id="float-int"),
    pytest.param(b'{"data": {"url": NaN}}', "Invalid JSON request body", id="nan"),
    pytest.param(b'{"data": {"url": Infinity}}', "Invalid JSON request body", id="infinity"),
    pytest.param(b'{"data": {"position": 1e400}}', "Invalid JSON request body", id="overflowing-float"),
    pytest.param(b'{"data": {"position": 123456789012345678901234567890}}', "Invalid JSON request body",
                 id="huge-integer"),
    pytest.param(b'{"data": {"title": "\\ud800"}}', "Invalid JSON request body", id="lone-surrogate"),
    pytest.param(b'{"data": {"\\udfff": 1}}', "Invalid JSON request body", id="lone-surrogate-key"),
    pytest.param(b'{"data": {"title": "a\\u0000b"}}', "Invalid JSON request body", id="nul-character"),
    pytest.param(b'{"data": {"title": "\xff\xfe"}}', "Invalid JSON request body", id="invalid-utf8"),
    pytest.param(b'\xef\xbb\xbf{"data": {}}', "Invalid JSON request body", id="bom"),
    pytest.param(('{"data": {"url": "http://a.org", "x": %s}}' % DEEP).encode(), "Invalid JSON request body",
                 id="deep-nesting"),
    pytest.param(('{"data": {"x": %s}}' % VERY_DEEP).encode(), "Invalid JSON request body", id="very-deep-nesting"),
]


def snapshot(app):
    response = app.get("/bookmarks?_since=0")
    return response.headers["ETag"], response.json["data"]


def seed(app):
    app.put_json(f"/bookmarks/{RECORD_ID}", {"data": {"url": "http://seed.org", "title": "seed"}})
    return app


@pytest.fixture
def seeded(make_app):
    return seed(make_app(userid=unique_user()))


@pytest.fixture
def seeded_backend(make_app, any_storage):
    """On every backend: for inputs that reach the storage (bodies, filter values)."""
    return seed(make_app(userid=unique_user(), backend=any_storage))


@pytest.mark.parametrize("body, message", BODIES)
@pytest.mark.parametrize("method, url", [
    pytest.param("POST", "/bookmarks", id="post"),
    pytest.param("PUT", f"/bookmarks/{RECORD_ID}", id="put"),
    pytest.param("PATCH", f"/bookmarks/{RECORD_ID}", id="patch"),
])
def test_bad_bodies(seeded, method, url, body, message):
    """Refused before any storage access, so one backend is enough (filter values below reach every backend)."""
    before = snapshot(seeded)
    response = seeded.request(url, method=method, body=body, headers={"Content-Type": "application/json"},
                              expect_errors=True)
    if method == "PATCH" and message.startswith("data.url"):
        message = "data.url"  # PATCH validates the merged record too
    assert response.status_int == 400, response.body
    assert response.json["errno"] == 107 and response.json["error"] == "Invalid parameters"
    assert message in response.json["message"]
    assert snapshot(seeded) == before


@pytest.mark.parametrize("method, url, details", [
    pytest.param("POST", "/bookmarks", [
        {"location": "body", "name": "zoo", "description": "zoo is not allowed"},
        {"location": "body", "name": "data.title", "description": "5 is not of type 'string'"},
        {"location": "body", "name": "data.url", "description": "Required"}], id="post"),
    pytest.param("PUT", f"/bookmarks/{RECORD_ID}", [
        {"location": "body", "name": "zoo", "description": "zoo is not allowed"},
        {"location": "body", "name": "data.title", "description": "5 is not of type 'string'"},
        {"location": "body", "name": "data.url", "description": "Required"}], id="put"),
    pytest.param("PATCH", f"/bookmarks/{RECORD_ID}", [  # the stored record has the url
        {"location": "body", "name": "zoo", "description": "zoo is not allowed"},
        {"location": "body", "name": "data.title", "description": "5 is not of type 'string'"}], id="patch"),
])
def test_unknown_key_lists_the_problems_of_data_too(seeded, method, url, details):
    """PROTOCOL.md §7.4: the full list of problems; the message is that of the first one sorted by name."""
    before = snapshot(seeded)
    response = seeded.request(url, method=method, body=b'{"data": {"title": 5}, "zoo": 1}',
                              headers={"Content-Type": "application/json"}, expect_errors=True)
    assert response.status_int == 400 and response.json["errno"] == 107
    assert response.json["details"] == details
    assert response.json["message"] == "data.title in body: 5 is not of type 'string'"
    assert snapshot(seeded) == before


def test_unknown_key_with_a_missing_data(seeded):
    response = seeded.post("/bookmarks", b'{"zoo": 1}', headers={"Content-Type": "application/json"}, status=400)
    assert response.json["details"] == [{"location": "body", "name": "zoo", "description": "zoo is not allowed"},
                                        {"location": "body", "name": "data", "description": "data is missing"}]
    assert response.json["message"] == "data is missing"


def test_invalid_json_details(seeded):
    response = seeded.post("/bookmarks", b"{oops", headers={"Content-Type": "application/json"}, status=400)
    details = response.json["details"]
    assert details[0]["location"] == "body" and details[0]["name"] is None
    assert details[0]["description"].startswith("Invalid JSON request body: ")
    assert details[1] == {"location": "body", "name": "data", "description": "data is missing"}
    assert response.json["message"] == "body: " + details[0]["description"]


def test_escaped_surrogate_pairs_are_fine(seeded):
    record = seeded.post("/notes", b'{"data": {"t": "\\ud83d\\ude00"}}',
                         headers={"Content-Type": "application/json"}, status=201).json["data"]
    assert record["t"] == "\U0001F600"


def test_negative_zero_is_stored_as_zero(seeded_backend):
    """PostgreSQL's numbers have no negative zero: every backend stores -0.0 as 0.0, so that they answer alike."""
    body = b'{"data": {"z": -0.0, "e": -0e3, "l": [-0.0, {"k": -0.00}], "s": "-0.0", "n": -0.5}}'
    created = seeded_backend.post("/notes", body, headers={"Content-Type": "application/json"}, status=201)
    read = seeded_backend.get(f"/notes/{created.json['data']['id']}")
    for response in (created, read):
        data = response.json["data"]
        assert [data["z"], data["e"], data["l"], data["s"], data["n"]] == [0.0, 0.0, [0.0, {"k": 0.0}], "-0.0", -0.5]
        assert b"-0.0," not in response.body and b"-0.0]" not in response.body and b"-0.0}" not in response.body


def test_big_integral_floats_are_stored_as_integers(seeded_backend):
    """PostgreSQL's jsonb writes the float 1e16 as ``10000000000000000``, read back as an integer: every backend
    stores a float from 1e16 to the 64-bit limit as that integer, so that they answer alike (PUT, PATCH, filters)."""
    body = (b'{"data": {"a": 1e16, "b": -2.5e17, "l": [9.2e18, {"k": -9.223372036854775808e18}], "s": "1e16", '
            b'"below": 9007199254740993.0, "beyond": 1e19, "small": 1.5, "i": 10000000000000000}}')
    created = seeded_backend.post("/notes", body, headers={"Content-Type": "application/json"}, status=201)
    url = f"/notes/{created.json['data']['id']}"
    expected = {"a": 10 ** 16, "b": -25 * 10 ** 16, "l": [9200000000000000000, {"k": -(2 ** 63)}], "s": "1e16",
                "below": 9007199254740992.0, "beyond": 1e19, "small": 1.5, "i": 10 ** 16}
    for response in (created, seeded_backend.get(url)):
        data = {key: value for key, value in response.json["data"].items() if key not in ("id", "last_modified")}
        assert data == expected
        assert [type(data[key]) for key in ("a", "b", "below", "beyond")] == [int, int, float, float]
        assert type(data["l"][0]) is int and type(data["l"][1]["k"]) is int
    patched = seeded_backend.patch(url, b'{"data": {"c": 3e17}}', headers={"Content-Type": "application/json"})
    assert type(patched.json["data"]["c"]) is int and seeded_backend.get(url).json["data"]["c"] == 3 * 10 ** 17
    listed = seeded_backend.get("/notes?a=1e16").json["data"]
    assert [record["id"] for record in listed] == [created.json["data"]["id"]] and type(listed[0]["a"]) is int


@pytest.mark.parametrize("path", [
    "/bookmarks/abc%20def", "/bookmarks/%C3%A9", "/bookmarks/..", "/bookmarks/%00", "/bookmarks/'%20OR%201=1",
    "/bookmarks/" + "a" * 300, f"/bookmarks/{RECORD_ID.upper()}", "/bookmarks/%3Cscript%3E",
])
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_odd_record_ids(seeded, path, method):
    before = snapshot(seeded)
    response = seeded.request(path, method=method, body=b'{"data": {"url": "http://x.org"}}',
                              headers={"Content-Type": "application/json"}, expect_errors=True)
    assert response.status_int == 400
    assert response.json["message"] == "path: Invalid record id"
    assert snapshot(seeded) == before


class Word(Resource):
    """Ids of any length the base generator's pattern allows, nested under a board."""

    collection_path = "/boards/{board_id}/words"
    id_generator = Generator


@pytest.mark.parametrize("board, word, name, status", [
    pytest.param("b" * MAX_ID_LENGTH, "w" * MAX_ID_LENGTH, None, 201, id="longest"),
    pytest.param("b", "w" * (MAX_ID_LENGTH + 1), None, 400, id="record-id-too-long"),
    pytest.param("b" * (MAX_ID_LENGTH + 1), "w", "board_id", 400, id="placeholder-too-long"),
])
def test_long_url_values_are_refused_on_every_backend(make_app, any_storage, board, word, name, status):
    """PostgreSQL's index refused a 3,000 character id with a 503 that memory and Redis stored; all now say 400."""
    app = make_app(userid=unique_user(), resources=[Word], backend=any_storage)
    response = app.put_json(f"/boards/{board}/words/{word}", {"data": {}}, status=status)
    if status == 400:
        assert response.json["details"] == [{"location": "path", "name": name,
                                             "description": f"Invalid {name or 'record id'}"}]
    if name is None and status == 400:  # an id in a POST body is checked as in the URL
        app.post_json("/boards/b/words", {"data": {"id": word}}, status=400)


def test_path_that_is_not_utf8(seeded):
    response = seeded.get("/bookmarks", extra_environ={"PATH_INFO": "/bookmarks/\xff"}, expect_errors=True)
    assert response.status_int == 404 and response.json["errno"] == 111


@pytest.mark.parametrize("query", [
    "%22title%22=1", "title%27=1", "title%3E=1", "ti%20tle=1", "%C3%A9=1", "title;drop=1", "a..b=1", "-title=1",
    "_sort=title;DROP", "_sort=%22title%22", "_sort=%C3%A9", "_sort=title%20desc", "_fields=%22url%22",
    "_limit=%C2%B2", "_limit=1e3", "_since=%C3%A9", "_token=%00", "title=%ff", "title=%00", "in_id=%00",
])
@pytest.mark.parametrize("url", ["/bookmarks", "/notes"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_odd_querystrings(seeded, url, query, method):
    before = snapshot(seeded)
    response = seeded.request(f"{url}?{query}", method=method, expect_errors=True)
    assert response.status_int == 400, response.body  # a typo never turns a bulk delete into "delete all"
    assert response.json["errno"] == 107
    assert snapshot(seeded) == before


@pytest.mark.parametrize("value", ["'; DROP TABLE records; --", "%27%29%29", "%C3%A9%E2%82%AC", "%5C", "*",
                                   "%25", "[", "{\"a\":1}", "1e999", "-0", "%E2%80%AE", "9" * 40])
def test_filter_values_are_data(seeded_backend, value):
    for operator in ("", "not_", "min_", "lt_", "in_", "like_", "contains_", "contains_any_", "author."):
        response = seeded_backend.get(f"/notes?{operator}title={value}", expect_errors=True)
        assert response.status_int == 200, (operator, response.body)
        response = seeded_backend.delete(f"/notes?{operator}title={value}", expect_errors=True)
        assert response.status_int == 200, (operator, response.body)


@pytest.mark.parametrize("query", ["{}=1", "has_{}=1", "_sort=-{}", "_fields={}"])
def test_fields_deeper_than_a_body_are_refused_on_every_backend(seeded_backend, query):
    """PostgreSQL nests one ``->`` per part of a dotted field: a field of 1,000 parts overflowed the stack (a
    500); no stored record can be deeper than a body (``MAX_DEPTH``), so such a field is a 400 everywhere."""
    for depth, status in ((MAX_DEPTH - 1, 200), (MAX_DEPTH, 400), (1000, 400)):
        field = "title" + ".a" * depth
        for method in ("GET", "DELETE"):
            if method == "DELETE" and query.startswith("_"):
                continue
            response = seeded_backend.request("/notes?" + query.format(field), method=method, expect_errors=True)
            assert response.status_int == status, (depth, method, response.body[:200])


def test_anonymous_bad_input_is_still_401(make_app):
    app = make_app(userid=None)
    assert app.get("/bookmarks?_sort=%22x", expect_errors=True).status_int == 401
    assert as_user(None) == {"wsgicliquet.principals": ["system.Everyone"]}

"""Keyset tokens: round trip, validation against the request's sort, Next-Page URLs (Part A D3, §4.7)."""
from __future__ import annotations

import base64
import json

import pytest

from wsgicliquet.errors import HTTPError
from wsgicliquet.resource import pagination
from wsgicliquet.storage import COMPARISON, Filter, Sort
from wsgicliquet.storage.query import apply, sort_records

SORT = [Sort("title", 1), Sort("last_modified", -1), Sort("id", -1)]


def raw_token(payload) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def test_round_trip():
    record = {"id": "a", "last_modified": 10, "title": "t", "other": 1}
    token = pagination.encode_token(record, SORT, 7)
    values, offset = pagination.decode_token(token, SORT)
    assert values == {"title": "t", "last_modified": 10, "id": "a"}
    assert offset == 7


def test_missing_sort_value_is_null():
    token = pagination.encode_token({"id": "a", "last_modified": 10}, SORT, 1)
    assert pagination.decode_token(token, SORT)[0]["title"] is None


GOOD = {"last_record": {"title": "t", "last_modified": 10, "id": "a"}, "offset": 1, "sort": "title,-last_modified,-id"}


@pytest.mark.parametrize("token", [
    pytest.param("not base64!", id="not-base64"),
    pytest.param(base64.b64encode(b"\xff\xfe").decode(), id="not-utf8"),
    pytest.param(base64.b64encode(b"{oops").decode(), id="not-json"),
    pytest.param(raw_token([1, 2]), id="not-object"),
    pytest.param(raw_token({**GOOD, "extra": 1}), id="extra-key"),
    pytest.param(raw_token({k: v for k, v in GOOD.items() if k != "sort"}), id="no-sort"),
    pytest.param(raw_token({**GOOD, "sort": "-title,-last_modified,-id"}), id="other-direction"),
    pytest.param(raw_token({**GOOD, "sort": "-last_modified,-id"}), id="other-sort"),
    pytest.param(raw_token({**GOOD, "last_record": {"last_modified": 10, "id": "a"}}), id="keys-mismatch"),
    pytest.param(raw_token({**GOOD, "last_record": {**GOOD["last_record"], "last_modified": "10"}}),
                 id="lm-not-int"),
    pytest.param(raw_token({**GOOD, "last_record": {**GOOD["last_record"], "id": None}}), id="id-null"),
    pytest.param(raw_token({**GOOD, "offset": -1}), id="negative-offset"),
    pytest.param(raw_token({**GOOD, "offset": True}), id="bool-offset"),
    pytest.param("x" * 20000, id="too-long"),
    # Values no record can hold: JSON the request bodies refuse is refused in tokens too (PostgreSQL answered
    # another page than memory and Redis for a lone surrogate).
    pytest.param(raw_token({**GOOD, "last_record": {**GOOD["last_record"], "title": "\ud800"}}),
                 id="lone-surrogate"),
    pytest.param(raw_token({**GOOD, "last_record": {**GOOD["last_record"], "title": "a\x00"}}), id="nul"),
    pytest.param(raw_token({**GOOD, "last_record": {**GOOD["last_record"], "title": float("nan")}}), id="nan"),
    pytest.param(raw_token({**GOOD, "last_record": {**GOOD["last_record"], "last_modified": 10 ** 30}}),
                 id="lm-beyond-64-bits"),
    pytest.param(raw_token({**GOOD, "last_record": {**GOOD["last_record"], "title": json.loads("[" * 70 + "]" * 70)}}),
                 id="too-deep"),
])
def test_invalid_tokens(token):
    with pytest.raises(HTTPError) as info:
        pagination.decode_token(token, SORT)
    assert info.value.code == 400
    assert info.value.body["details"] == [{"location": "querystring", "name": "_token",
                                           "description": "_token has invalid content"}]
    assert info.value.body["message"] == "_token has invalid content"


def test_valid_handmade_token():
    assert pagination.decode_token(raw_token(GOOD), SORT)[1] == 1


@pytest.mark.parametrize("sorting", [
    pytest.param(SORT, id="title-asc"),
    pytest.param([Sort("title", -1), Sort("last_modified", -1), Sort("id", -1)], id="title-desc"),
    pytest.param([Sort("last_modified", 1), Sort("id", 1)], id="lm-asc"),
])
def test_walk_with_nulls_and_ties_returns_each_record_once(sorting):
    records = [{"id": f"r{i}", "last_modified": 100 + i, **({"title": f"t{i % 3}"} if i % 4 else {})}
               for i in range(40)]
    records[5]["title"] = None
    expected = [r["id"] for r in sort_records(list(records), sorting)]
    seen, rules = [], []
    while True:
        page, _ = apply(records, sorting=sorting, pagination_rules=rules, limit=4)
        seen += [r["id"] for r in page]
        if len(page) < 4:
            break
        values, _ = pagination.decode_token(pagination.encode_token(page[-1], sorting, len(seen)), sorting)
        rules = pagination.pagination_rules(values, sorting)
    assert seen == expected


def test_pagination_rules_shape():
    rules = pagination.pagination_rules({"last_modified": 10, "id": "a"}, [Sort("last_modified", -1),
                                                                           Sort("id", -1)])
    assert rules[0] == [Filter("last_modified", 10, COMPARISON.LT)]


def test_next_page_url_keeps_parameters():
    url = pagination.next_page_url("https://api.example.com", "/v1/bookmarks",
                                   [("title", "a b"), ("_limit", "9"), ("_token", "old"), ("_sort", "-title")],
                                   5, "abc=")
    assert url == "https://api.example.com/v1/bookmarks?title=a+b&_sort=-title&_limit=5&_token=abc%3D"


@pytest.mark.parametrize("environ, scheme, host, expected", [
    pytest.param({"wsgi.url_scheme": "http", "HTTP_HOST": "h:8080"}, None, None, "http://h:8080", id="request"),
    pytest.param({"wsgi.url_scheme": "http", "SERVER_NAME": "s", "SERVER_PORT": "80"}, None, None, "http://s",
                 id="server-name"),
    pytest.param({"wsgi.url_scheme": "http", "SERVER_NAME": "s", "SERVER_PORT": "81"}, None, None, "http://s:81",
                 id="server-port"),
    pytest.param({"wsgi.url_scheme": "http", "HTTP_HOST": "h"}, "https", "api.org", "https://api.org",
                 id="forced"),
    pytest.param({"wsgi.url_scheme": "http", "HTTP_HOST": "a b", "SERVER_NAME": "s", "SERVER_PORT": "81"}, None,
                 None, "http://s:81", id="invalid-host"),
    pytest.param({"wsgi.url_scheme": "http", "HTTP_HOST": "evil.example/x?y", "SERVER_NAME": "s",
                  "SERVER_PORT": "80"}, None, None, "http://s", id="host-with-a-path"),
])
def test_base_url(environ, scheme, host, expected):
    assert pagination.base_url(environ, scheme, host) == expected

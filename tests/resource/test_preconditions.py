"""If-Match / If-None-Match parsing and strict-equality checks (Part A D4, §5.6, §6)."""
from __future__ import annotations

import pytest

from wsgicliquet.errors import HTTPError
from wsgicliquet.resource import preconditions as pc


@pytest.mark.parametrize("headers, expected", [
    pytest.param({}, pc.Preconditions(None, None), id="none"),
    pytest.param({"HTTP_IF_MATCH": '"12"'}, pc.Preconditions(12, None), id="if-match"),
    pytest.param({"HTTP_IF_NONE_MATCH": '"12"'}, pc.Preconditions(None, 12), id="if-none-match"),
    pytest.param({"HTTP_IF_NONE_MATCH": "*"}, pc.Preconditions(None, "*"), id="star"),
])
def test_parse(headers, expected):
    assert pc.parse(headers) == expected


@pytest.mark.parametrize("header, value, description", [
    pytest.param("HTTP_IF_MATCH", "12", "Invalid value for If-Match. The value should be integer between double "
                 "quotes.", id="unquoted"),
    pytest.param("HTTP_IF_MATCH", '""', "Invalid value for If-Match. The value should be integer between double "
                 "quotes.", id="empty"),
    pytest.param("HTTP_IF_MATCH", '"abc"', "Invalid value for If-Match. The value should be integer between "
                 "double quotes.", id="text"),
    pytest.param("HTTP_IF_MATCH", "*", "Invalid value for If-Match. The value should be integer between double "
                 "quotes.", id="star"),
    pytest.param("HTTP_IF_MATCH", 'W/"12"', "Invalid value for If-Match. The value should be integer between "
                 "double quotes.", id="weak"),
    pytest.param("HTTP_IF_NONE_MATCH", '"1", "2"', "Invalid value for If-None-Match", id="list"),
    pytest.param("HTTP_IF_NONE_MATCH", '" 1"', "Invalid value for If-None-Match", id="space"),
])
def test_parse_errors(header, value, description):
    with pytest.raises(HTTPError) as info:
        pc.parse({header: value})
    name = "If-Match" if header == "HTTP_IF_MATCH" else "If-None-Match"
    assert info.value.code == 400
    assert info.value.body["details"] == [{"location": "headers", "name": name, "description": description}]


def test_not_modified_is_strict_equality():
    pre = pc.Preconditions(None, 12)
    assert pre.not_modified(12)
    assert not pre.not_modified(11) and not pre.not_modified(13)
    assert not pc.Preconditions(None, "*").not_modified(12)


@pytest.mark.parametrize("pre, timestamp, existing, exists, fails", [
    pytest.param(pc.Preconditions(12, None), 12, None, True, False, id="if-match-equal"),
    pytest.param(pc.Preconditions(12, None), 13, None, True, True, id="if-match-newer"),
    pytest.param(pc.Preconditions(12, None), 11, None, True, True, id="if-match-older-fails-too"),
    pytest.param(pc.Preconditions(12, None), None, None, False, True, id="if-match-missing-target"),
    pytest.param(pc.Preconditions(None, "*"), 5, {"id": "a"}, True, True, id="star-exists"),
    pytest.param(pc.Preconditions(None, "*"), None, None, False, False, id="star-missing"),
    pytest.param(pc.Preconditions(None, 12), 13, None, True, False, id="quoted-none-match-ignored-on-check"),
])
def test_check(pre, timestamp, existing, exists, fails):
    if not fails:
        pre.check(timestamp, existing, exists=exists)
        return
    with pytest.raises(HTTPError) as info:
        pre.check(timestamp, existing, exists=exists)
    error = info.value
    assert (error.code, error.errno, error.body["message"]) == (412, 114, "Resource was modified meanwhile")
    assert error.body["details"] == ({"existing": existing} if existing else {})
    if timestamp is not None:
        assert (dict(error.headers)["ETag"]) == f'"{timestamp}"'


def test_etag_headers():
    assert pc.etag_headers(1795879827348) == [("ETag", '"1795879827348"'),
                                              ("Last-Modified", "Sat, 28 Nov 2026 15:30:27 GMT")]

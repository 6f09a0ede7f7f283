"""CORS preflights through the whole pipeline (PROTOCOL.md §12, §1.2, §1.3)."""
import pytest
import webtest

from wsgicliquet import Resource, ResourceApp, build_pipeline
from wsgicliquet.backends import clear_backends


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string"}}}


SETTINGS = {"project_name": "myapp", "project_version": "1.4.2", "userid_hmac_secret": "abc"}
PREFLIGHT = {"Origin": "http://app.example.org", "Access-Control-Request-Method": "PUT"}


@pytest.fixture
def api():
    clear_backends()
    yield webtest.TestApp(build_pipeline(ResourceApp([Bookmark], SETTINGS), SETTINGS))
    clear_backends()


@pytest.mark.parametrize("path, location", [
    ("/", "http://localhost/v1/"),
    ("/bookmarks?_limit=2", "http://localhost/v1/bookmarks?_limit=2"),
    ("/v1", "http://localhost/v1/"),
    ("/v1/bookmarks/?_since=1", "http://localhost/v1/bookmarks?_since=1"),
])
def test_preflight_of_a_redirected_url_is_the_redirect(api, path, location):
    """Any method is redirected (§1.2, §1.3): no endpoint there, so no methods may be announced for it."""
    response = api.options(path, headers=PREFLIGHT, status=307)
    assert response.headers["Location"] == location
    assert "Access-Control-Allow-Methods" not in response.headers
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_of_an_endpoint_still_lists_its_methods(api):
    response = api.options("/v1/bookmarks/abc", headers=PREFLIGHT, status=200)
    assert response.headers["Access-Control-Allow-Methods"] == "GET,HEAD,PUT,PATCH,DELETE,OPTIONS"
    collection = dict(PREFLIGHT, **{"Access-Control-Request-Method": "PUT"})
    assert api.options("/v1/bookmarks", headers=collection, status=400).json["errno"] == 107


def test_preflight_answers_carry_backoff_and_the_end_of_service_headers():
    """``Backoff`` and ``Alert`` go on every response (§9.1, §10), preflight answers included."""
    clear_backends()
    settings = dict(SETTINGS, backoff="10", eos="2999-01-01", eos_message="moving")
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    allowed = api.options("/v1/bookmarks", headers=dict(PREFLIGHT, **{"Access-Control-Request-Method": "POST"}))
    refused = api.options("/v1/bookmarks", headers=PREFLIGHT, status=400)
    for response in (allowed, refused):
        assert response.headers["Backoff"] == "10"
        assert '"soft-eol"' in response.headers["Alert"]
        assert "Sunset" in response.headers and "Deprecation" in response.headers
        assert "Allow" not in response.headers
    assert allowed.headers["Access-Control-Allow-Methods"] == "GET,HEAD,POST,DELETE,OPTIONS"
    assert allowed.json == {}
    clear_backends()


@pytest.mark.parametrize("origins, origin", [
    pytest.param("*", "http://app.example.org", id="any-origin"),
    pytest.param("http://app.example.org", "http://app.example.org", id="allowed-origin"),
    pytest.param("http://app.example.org", "http://evil.example.org", id="disallowed-origin"),
])
def test_preflight_of_a_retired_version_is_the_410(origins, origin):
    """After the end of service every request is a 410 (§10): a preflight announces no methods of a gone API."""
    clear_backends()
    settings = dict(SETTINGS, eos="2001-01-01", backoff="10", cors_origins=origins)
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    response = api.options("/v1/bookmarks", headers=dict(PREFLIGHT, Origin=origin), status=410)
    assert (response.json["errno"], response.headers["Backoff"]) == (202, "10")
    assert '"hard-eol"' in response.headers["Alert"]
    assert "Access-Control-Allow-Methods" not in response.headers
    clear_backends()


def test_preflight_of_a_disallowed_origin_carries_backoff_and_the_end_of_service_headers():
    """The 400 of an origin not allowed is a response like any other: ``Backoff`` and ``Alert`` on it (§9.1, §10)."""
    clear_backends()
    settings = dict(SETTINGS, backoff="10", eos="2999-01-01", cors_origins="http://app.example.org")
    api = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    response = api.options("/v1/bookmarks", headers=dict(PREFLIGHT, Origin="http://evil.example.org"), status=400)
    assert response.json["message"] == "Origin in header: http://evil.example.org not allowed"
    assert response.headers["Backoff"] == "10"
    assert '"soft-eol"' in response.headers["Alert"]
    assert "Access-Control-Allow-Origin" not in response.headers and "Allow" not in response.headers
    clear_backends()

"""Read-only mode through the whole pipeline (PROTOCOL.md §9.3): writes are not offered, not even to preflights."""
import pytest
import webtest

from wsgicliquet import Resource, ResourceApp, build_pipeline
from wsgicliquet.backends import clear_backends
from wsgicliquet.middleware.readonly import ReadOnly


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string"}}}


SETTINGS = {"project_name": "myapp", "project_version": "1.4.2", "userid_hmac_secret": "abc", "readonly": "true"}
ORIGIN = {"Origin": "http://app.example.org"}


@pytest.fixture
def api():
    clear_backends()
    yield webtest.TestApp(build_pipeline(ResourceApp([Bookmark], SETTINGS), SETTINGS))
    clear_backends()


@pytest.mark.parametrize("path", ["/v1/bookmarks", "/v1/bookmarks/abc"])
def test_options_announces_the_reads_only(api, path):
    assert api.options(path).headers["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("path, method", [("/v1/bookmarks", "POST"), ("/v1/bookmarks", "DELETE"),
                                          ("/v1/bookmarks/abc", "PUT"), ("/v1/bookmarks/abc", "PATCH")])
def test_preflight_of_a_write_is_refused_like_the_write(api, path, method):
    preflight = api.options(path, headers={**ORIGIN, "Access-Control-Request-Method": method}, status=400)
    assert preflight.json["errno"] == 107
    assert api.request(path, method=method, status=405).json["errno"] == 115


def test_preflight_of_a_read_lists_the_reads(api):
    preflight = api.options("/v1/bookmarks", headers={**ORIGIN, "Access-Control-Request-Method": "GET"})
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET,HEAD,OPTIONS"


def test_batch_is_still_offered(api):
    preflight = api.options("/v1/batch", headers={**ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST,OPTIONS"


def test_an_endpoint_without_reads_is_left_with_options():
    def post_only(environ, start_response):
        start_response("200 OK", [("Allow", "POST"), ("Content-Length", "0")])
        return [b""]

    assert webtest.TestApp(ReadOnly(post_only, readonly=True)).options("/").headers["Allow"] == "OPTIONS"
    assert webtest.TestApp(ReadOnly(post_only, readonly=False)).options("/").headers["Allow"] == "POST"

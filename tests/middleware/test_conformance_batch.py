"""Conformance of ``POST /v1/batch`` (PROTOCOL.md §8) through the whole pipeline around a Flask app, as README.md
builds it."""
from __future__ import annotations

import base64
import io

import flask
import pytest
import webtest

from wsgicliquet import Resource, ResourceApp, build_pipeline

SETTINGS = {"project_name": "myapp", "project_version": "1.0.0", "userid_hmac_secret": "abc",
            "storage_url": "memory://", "cache_url": "memory://", "permission_url": "memory://"}
BATCH_BODY = b'{"requests": [{"path": "/bookmarks"}]}'


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}, "required": ["url"]}
    preserve_unknown = True


@pytest.fixture
def app() -> webtest.TestApp:
    site = flask.Flask("conformance_batch")
    api = ResourceApp([Bookmark], SETTINGS, fallback=site.wsgi_app)
    site.wsgi_app = build_pipeline(site.wsgi_app, SETTINGS, versions={"/v1": api})
    test_app = webtest.TestApp(site, lint=False)  # the linter itself chokes on the malformed lengths sent here
    test_app.authorization = ("Basic", ("alice", "secret"))
    return test_app


def _post_batch(app: webtest.TestApp, content_length: str) -> webtest.TestResponse:
    request = webtest.TestRequest.blank("/v1/batch", environ={
        "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": content_length,
        "wsgi.input": io.BytesIO(BATCH_BODY),
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"alice:secret").decode()})
    return app.do_request(request, status="*", expect_errors=True)


@pytest.mark.parametrize("content_length", ["\u00b2", "\u00b9\u00b2", "-1", "+38", "3_8", " 38x"])
def test_a_content_length_that_is_not_ascii_digits_is_a_400(app, content_length):
    """``"²".isdigit()`` is true in Python but ``int("²")`` fails: such a header (latin-1, so a client can send it)
    must be a 400 like any other malformed length, never a 500."""
    response = _post_batch(app, content_length)
    assert response.status_int == 400
    assert response.json["errno"] == 107
    assert response.json["details"] == [
        {"location": "headers", "name": "Content-Length", "description": "Invalid Content-Length"}]


def test_a_valid_content_length_is_read(app):
    response = _post_batch(app, str(len(BATCH_BODY)))
    assert response.status_int == 200
    assert response.json["responses"][0]["status"] == 200


def _post_raw(app: webtest.TestApp, body: bytes) -> webtest.TestResponse:
    return app.post("/v1/batch", body, content_type="application/json", expect_errors=True)


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1" + b"0" * 400 + b".0"])
def test_a_number_out_of_range_is_refused_not_stored_as_null(app, number):
    """Sent alone, such a body is a 400; in a batch it was re-serialized as ``null`` and silently stored."""
    body = b'{"requests": [{"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "http://a.org", "n": ' \
        + number + b'}}}]}'
    response = _post_raw(app, body)
    assert response.status_int == 400
    assert response.json["details"][0] == {"location": "body", "name": None,
                                           "description": "Invalid JSON request body: number out of range"}
    assert app.get("/v1/bookmarks").json["data"] == []


@pytest.mark.parametrize("request_", [
    rb'{"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "http://a.org", "s": "\ud800"}}}',
    rb'{"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "http://a.org", "\udfff": 1}}}',
    rb'{"path": "/bookmarks/\ud800"}',
    rb'{"path": "/bookmarks?s=\ud800"}',
    rb'{"path": "/bookmarks", "headers": {"X-Note": "\ud800"}}',
], ids=["body value", "body key", "path", "query", "header"])
def test_a_lone_surrogate_is_a_400_not_a_500(app, request_):
    """A lone surrogate escape has no UTF-8 form, so no sub-request can carry it: the batch is refused as the resource
    app refuses such a body sent alone."""
    response = _post_raw(app, b'{"requests": [' + request_ + b"]}")
    assert response.status_int == 400
    assert response.json["details"][0] == {
        "location": "body", "name": None,
        "description": "Invalid JSON request body: invalid unicode escape (lone surrogate)"}
    assert app.get("/v1/bookmarks").json["data"] == []


def test_a_sub_response_with_a_lone_surrogate_is_embedded_as_text():
    """A view may answer JSON that escapes a lone surrogate; the batch answer embeds it as text instead of failing."""
    site = flask.Flask("conformance_batch_surrogate")

    @site.get("/echo")
    def echo():
        return flask.Response(b'{"s": "\\ud800"}', content_type="application/json")

    api = ResourceApp([Bookmark], SETTINGS, fallback=site.wsgi_app)
    site.wsgi_app = build_pipeline(site.wsgi_app, SETTINGS, versions={"/v1": api})
    app = webtest.TestApp(site)
    app.authorization = ("Basic", ("alice", "secret"))
    responses = app.post_json("/v1/batch", {"requests": [{"path": "/echo"}, {"path": "/bookmarks"}]}).json["responses"]
    assert responses[0]["status"] == 200
    assert responses[0]["body"] == '{"s": "\\ud800"}'
    assert responses[1]["body"] == {"data": []}

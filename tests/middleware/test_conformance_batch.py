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

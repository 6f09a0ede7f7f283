"""ReadOnly: writes get 405 errno 115 with ``Allow: GET, HEAD, OPTIONS``; reads pass untouched."""
from __future__ import annotations

import json

import bottle
import flask
import pytest
import webtest
from webob import Request

from wsgicliquet.middleware.readonly import ReadOnly, filter_factory
from wsgicliquet.settings import load_settings

REFUSAL = {"code": 405, "errno": 115, "error": "Method Not Allowed", "message": "Method not allowed on this endpoint."}
METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]


def bare_app(environ, start_response):
    body = json.dumps({"method": environ["REQUEST_METHOD"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def flask_app():
    app = flask.Flask(__name__)

    @app.route("/bookmarks", methods=METHODS)
    def bookmarks():
        return flask.jsonify(method=flask.request.method)

    return app


def bottle_app():
    app = bottle.Bottle()

    @app.route("/bookmarks", method=METHODS)
    def bookmarks():
        return {"method": bottle.request.method}

    return app


@pytest.fixture(params=[pytest.param(lambda: bare_app, id="bare"), pytest.param(flask_app, id="flask"),
                        pytest.param(bottle_app, id="bottle")])
def inner(request):
    return request.param()


def _request(app, method):
    return app.request("/bookmarks", method=method, expect_errors=True,
                       body=b'{"data": {}}' if method in ("POST", "PUT", "PATCH") else b"",
                       content_type="application/json" if method in ("POST", "PUT", "PATCH") else None)


@pytest.mark.parametrize("method,refused", [
    pytest.param("GET", False, id="GET"),
    pytest.param("HEAD", False, id="HEAD"),
    pytest.param("OPTIONS", False, id="OPTIONS"),
    pytest.param("POST", True, id="POST"),
    pytest.param("PUT", True, id="PUT"),
    pytest.param("PATCH", True, id="PATCH"),
    pytest.param("DELETE", True, id="DELETE"),
])
def test_readonly_refuses_writes(inner, method, refused):
    app = webtest.TestApp(ReadOnly(inner, readonly=True), lint=True)
    response = _request(app, method)
    if refused:
        assert response.status == "405 Method Not Allowed"
        assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
        assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
        assert response.json == REFUSAL
    else:
        assert response.status_int == 200
        if method != "HEAD":
            assert response.json == {"method": method}


@pytest.mark.parametrize("method", METHODS)
def test_writable_mode_lets_everything_through(inner, method):
    app = webtest.TestApp(ReadOnly(inner, readonly=False), lint=True)
    response = _request(app, method)
    assert response.status_int == 200
    if method != "HEAD":
        assert response.json == {"method": method}


def test_refused_write_never_reaches_the_app():
    calls = []

    def app(environ, start_response):
        calls.append(environ["REQUEST_METHOD"])
        return bare_app(environ, start_response)

    client = webtest.TestApp(ReadOnly(app, readonly=True), lint=True)
    client.post_json("/bookmarks", {"data": {}}, status=405)
    client.get("/bookmarks")
    assert calls == ["GET"]


def test_only_the_request_it_receives_counts():
    """Below the batch middleware it sees each sub-request alone: a read sub-request passes, a write one is 405."""
    environ = Request.blank("/bookmarks", method="GET").environ
    environ["wsgicliquet.parent"] = Request.blank("/batch", method="POST").environ
    seen = []
    result = ReadOnly(bare_app, readonly=True)(environ, lambda status, headers, exc_info=None: seen.append(status))
    assert seen == ["200 OK"] and json.loads(b"".join(result)) == {"method": "GET"}


def test_from_settings_and_filter_factory():
    settings = load_settings({"readonly": "true"}, environ={})
    webtest.TestApp(ReadOnly.from_settings(bare_app, settings), lint=True).delete("/bookmarks", status=405)
    webtest.TestApp(filter_factory({}, readonly="false")(bare_app), lint=True).delete("/bookmarks", status=200)


def test_switched_off_changes_nothing():
    body = [b"untouched"]
    seen = []

    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain")])
        return body

    result = ReadOnly(app, readonly=False)(Request.blank("/", method="POST").environ,
                                           lambda status, headers, exc_info=None: seen.append((status, headers)))
    assert result is body
    assert seen == [("201 Created", [("Content-Type", "text/plain")])]


def test_reads_stream_and_close_passes_through():
    produced = []

    class Body:
        closed = False

        def __iter__(self):
            for chunk in (b"one", b"two"):
                produced.append(chunk)
                yield chunk

        def close(self):
            self.closed = True

    body = Body()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    result = ReadOnly(app, readonly=True)(Request.blank("/").environ, lambda *args: None)
    assert produced == []
    iterator = iter(result)
    assert next(iterator) == b"one" and produced == [b"one"]
    result.close()
    assert body.closed

"""Backoff: ``Backoff`` on every (or a percentage of) response, ``Retry-After`` on 503 and 429."""
from __future__ import annotations

import json

import bottle
import flask
import pytest
import webtest
from webob import Request

from wsgicliquet.middleware import backoff as backoff_module
from wsgicliquet.middleware.backoff import Backoff, filter_factory
from wsgicliquet.settings import ConfigurationError, load_settings

# path -> (status, extra headers); every framework below answers the same way.
ROUTES = {
    "/ok": ("200 OK", []),
    "/unavailable": ("503 Service Unavailable", []),
    "/limited": ("429 Too Many Requests", []),
    "/already": ("503 Service Unavailable", [("Retry-After", "5")]),
    "/not-modified": ("304 Not Modified", []),
}


def bare_app(environ, start_response):
    status, headers = ROUTES.get(environ["PATH_INFO"], ("404 Not Found", []))
    if status.startswith("304"):
        start_response(status, headers)
        return []
    body = json.dumps({"status": int(status[:3])}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + headers)
    return [body]


def flask_app():
    app = flask.Flask(__name__)

    @app.route("/<name>")
    def view(name):
        status, headers = ROUTES.get("/" + name, ("404 Not Found", []))
        if status.startswith("304"):
            return flask.Response(status=304)
        if status.startswith("404"):
            flask.abort(404)
        return flask.jsonify(status=int(status[:3])), int(status[:3]), headers

    return app


def bottle_app():
    app = bottle.Bottle()

    @app.route("/<name>")
    def view(name):
        status, headers = ROUTES.get("/" + name, ("404 Not Found", []))
        if status.startswith("404"):
            bottle.abort(404)
        if status.startswith("304"):
            return bottle.HTTPResponse(status=304)
        return bottle.HTTPResponse(json.dumps({"status": int(status[:3])}), status=int(status[:3]),
                                   headers=[("Content-Type", "application/json")] + headers)

    return app


@pytest.fixture(params=[pytest.param(lambda: bare_app, id="bare"), pytest.param(flask_app, id="flask"),
                        pytest.param(bottle_app, id="bottle")])
def inner(request):
    return request.param()


MATRIX = [
    pytest.param("/ok", 200, None, id="200-no-retry-after"),
    pytest.param("/missing", 404, None, id="404-no-retry-after"),
    pytest.param("/unavailable", 503, "30", id="503-retry-after"),
    pytest.param("/limited", 429, "30", id="429-retry-after"),
    pytest.param("/already", 503, "5", id="503-keeps-its-own-retry-after"),
    pytest.param("/not-modified", 304, None, id="304"),
]


@pytest.mark.parametrize("path,status,retry_after", MATRIX)
def test_backoff_on_every_response_and_retry_after_on_503_and_429(inner, path, status, retry_after):
    app = webtest.TestApp(Backoff(inner, backoff=10), lint=True)
    response = app.get(path, status=status)
    assert response.headers.getall("Backoff") == ["10"]
    assert response.headers.getall("Retry-After") == ([retry_after] if retry_after else [])
    if status not in (304, 404):
        assert response.json == {"status": status}


@pytest.mark.parametrize("path,status,retry_after", MATRIX)
def test_without_backoff_only_retry_after(inner, path, status, retry_after):
    app = webtest.TestApp(Backoff(inner), lint=True)
    response = app.get(path, status=status)
    assert "Backoff" not in response.headers
    assert response.headers.getall("Retry-After") == ([retry_after] if retry_after else [])


def test_retry_after_value_is_configurable(inner):
    app = webtest.TestApp(Backoff(inner, retry_after_seconds=120), lint=True)
    assert app.get("/unavailable", status=503).headers["Retry-After"] == "120"


class _Draws:
    """Stands in for the ``random`` module: hands out the given draws in order."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)


def test_percentage_marks_that_share_of_responses(monkeypatch):
    monkeypatch.setattr(backoff_module, "random", _Draws(0.10, 0.29, 0.30, 0.95))
    app = webtest.TestApp(Backoff(bare_app, backoff=60, backoff_percentage=30), lint=True)
    seen = [app.get("/ok").headers.get("Backoff") for _ in range(4)]
    assert seen == ["60", "60", None, None]


@pytest.mark.parametrize("percentage,expected", [pytest.param(0, None, id="never"),
                                                 pytest.param(100, "7", id="always")])
def test_percentage_bounds(percentage, expected):
    app = webtest.TestApp(Backoff(bare_app, backoff=7, backoff_percentage=percentage), lint=True)
    assert {app.get("/ok").headers.get("Backoff") for _ in range(20)} == {expected}


def test_percentage_does_not_hide_retry_after(monkeypatch):
    monkeypatch.setattr(backoff_module, "random", _Draws(0.99))
    app = webtest.TestApp(Backoff(bare_app, backoff=60, backoff_percentage=1), lint=True)
    response = app.get("/unavailable", status=503)
    assert "Backoff" not in response.headers
    assert response.headers["Retry-After"] == "30"


@pytest.mark.parametrize("options", [
    pytest.param({"backoff": -1}, id="negative-backoff"),
    pytest.param({"backoff": 10, "backoff_percentage": 101}, id="percentage-above-100"),
    pytest.param({"backoff": 10, "backoff_percentage": -5}, id="negative-percentage"),
    pytest.param({"retry_after_seconds": -30}, id="negative-retry-after"),
])
def test_bad_configuration_fails_at_construction(options):
    with pytest.raises(ConfigurationError):
        Backoff(bare_app, **options)


def test_from_settings_reads_the_settings_table():
    settings = load_settings({"backoff": "15", "retry_after_seconds": "45"}, environ={})
    app = webtest.TestApp(Backoff.from_settings(bare_app, settings), lint=True)
    response = app.get("/limited", status=429)
    assert response.headers["Backoff"] == "15"
    assert response.headers["Retry-After"] == "45"


def test_bad_setting_names_the_setting():
    with pytest.raises(ConfigurationError, match="backoff"):
        load_settings({"backoff": "soon"}, environ={})


def test_paste_filter_factory():
    app = webtest.TestApp(filter_factory({"backoff": "3"}, backoff_percentage="100")(bare_app), lint=True)
    assert app.get("/ok").headers["Backoff"] == "3"


def test_switched_off_changes_nothing():
    body = [b"untouched"]
    seen = []

    def app(environ, start_response):
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return body

    middleware = Backoff(app, retry_after_seconds=None)
    result = middleware(Request.blank("/").environ, lambda status, headers, exc_info=None: seen.append(headers))
    assert result is body
    assert seen == [[("Content-Type", "text/plain")]]


def test_body_is_streamed_not_buffered():
    produced = []
    started = []

    def app(environ, start_response):
        def chunks():
            start_response("200 OK", [("Content-Type", "text/plain")])
            for chunk in (b"one", b"two"):
                produced.append(chunk)
                yield chunk
        return chunks()

    result = Backoff(app, backoff=5)(Request.blank("/").environ,
                                     lambda status, headers, exc_info=None: started.append(headers))
    assert produced == [] and started == []
    iterator = iter(result)
    assert next(iterator) == b"one"
    assert produced == [b"one"]
    assert ("Backoff", "5") in started[0]
    assert next(iterator) == b"two"


def test_close_is_passed_through():
    class Body:
        closed = False

        def __iter__(self):
            yield b"data"

        def close(self):
            self.closed = True

    body = Body()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    result = Backoff(app, backoff=5)(Request.blank("/").environ, lambda *args: None)
    assert list(result) == [b"data"]
    result.close()
    assert body.closed

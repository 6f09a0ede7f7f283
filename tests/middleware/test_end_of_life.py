"""EndOfLife: ``Alert``/``Deprecation``/``Sunset`` before the date, 410 errno 202 from the date on (§10)."""
from __future__ import annotations

import datetime
import json
import time

import bottle
import flask
import pytest
import webtest
from webob import Request

from wsgicliquet.middleware import end_of_life as end_of_life_module
from wsgicliquet.middleware.end_of_life import EndOfLife, filter_factory
from wsgicliquet.middleware.version_prefix import VersionPrefix
from wsgicliquet.settings import ConfigurationError, load_settings

EOS = datetime.date(2099, 1, 5)
GONE = {"code": 410, "errno": 202, "error": "Gone",
        "message": "The service you are trying to connect no longer exists at this location."}


def bare_app(environ, start_response):
    if environ["PATH_INFO"] != "/bookmarks":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    body = b'{"data": []}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def flask_app():
    app = flask.Flask(__name__)
    app.add_url_rule("/bookmarks", "bookmarks", lambda: flask.jsonify(data=[]), methods=["GET", "POST"])
    return app


def bottle_app():
    app = bottle.Bottle()
    app.route("/bookmarks", ["GET", "POST"], lambda: {"data": []})
    return app


@pytest.fixture(params=[pytest.param(lambda: bare_app, id="bare"), pytest.param(flask_app, id="flask"),
                        pytest.param(bottle_app, id="bottle")])
def inner(request):
    return request.param()


@pytest.fixture
def utc(monkeypatch):
    """Run with the server clock in UTC (the end of service is local midnight)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def today(monkeypatch):
    """Set the server's local date."""
    def set_today(day):
        noon = datetime.datetime.combine(day, datetime.time(12)).timestamp()
        monkeypatch.setattr(end_of_life_module, "_now", lambda: noon)
    return set_today


@pytest.mark.parametrize("path,status", [pytest.param("/bookmarks", 200, id="success"),
                                         pytest.param("/unknown", 404, id="error")])
def test_soft_eol_headers_on_every_response(inner, utc, path, status):
    app = webtest.TestApp(EndOfLife(inner, eos=EOS, eos_message="Upgrade to v2",
                                    eos_url="https://example.org/v2"), lint=True)
    response = app.get(path, status=status)
    assert json.loads(response.headers["Alert"]) == {
        "code": "soft-eol", "message": "Upgrade to v2", "url": "https://example.org/v2"}
    assert response.headers["Deprecation"] == "@4071254400"
    assert response.headers["Sunset"] == "Mon, 05 Jan 2099 00:00:00 GMT"
    if status == 200:
        assert response.json == {"data": []}


@pytest.mark.parametrize("options,alert", [
    pytest.param({}, {"code": "soft-eol", "message": None, "url": ""}, id="defaults"),
    pytest.param({"project_docs": "https://docs"}, {"code": "soft-eol", "message": None, "url": "https://docs"},
                 id="url-defaults-to-project-docs"),
    pytest.param({"project_docs": "https://docs", "eos_url": "https://eos"},
                 {"code": "soft-eol", "message": None, "url": "https://eos"}, id="eos-url-wins"),
    pytest.param({"eos_message": "Bientôt fermé"}, {"code": "soft-eol", "message": "Bientôt fermé", "url": ""},
                 id="non-ascii-message"),
])
def test_alert_fields(options, alert):
    response = webtest.TestApp(EndOfLife(bare_app, eos=EOS, **options), lint=True).get("/bookmarks")
    assert response.headers["Alert"].isascii()
    assert json.loads(response.headers["Alert"]) == alert


def test_sunset_is_local_midnight(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        response = webtest.TestApp(EndOfLife(bare_app, eos=EOS), lint=True).get("/bookmarks")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert response.headers["Sunset"] == "Sun, 04 Jan 2099 23:00:00 GMT"
    assert response.headers["Deprecation"] == "@4071250800"


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/bookmarks", "/unknown", "/"])
def test_hard_eol_answers_every_request_with_410(inner, utc, today, method, path):
    today(EOS)
    app = webtest.TestApp(EndOfLife(inner, eos=EOS, eos_message="Gone for good", project_docs="https://docs"),
                          lint=True)
    response = app.request(path, method=method, status=410)
    assert response.status == "410 Gone"
    assert json.loads(response.headers["Alert"]) == {
        "code": "hard-eol", "message": "Gone for good", "url": "https://docs"}
    assert response.headers["Sunset"] == "Mon, 05 Jan 2099 00:00:00 GMT"
    if method != "HEAD":
        assert response.json == GONE


@pytest.mark.parametrize("day,status", [
    pytest.param(EOS - datetime.timedelta(days=1), 200, id="day-before"),
    pytest.param(EOS, 410, id="the-day"),
    pytest.param(EOS + datetime.timedelta(days=400), 410, id="long-after"),
])
def test_the_date_is_the_boundary(today, day, status):
    today(day)
    code = json.loads(webtest.TestApp(EndOfLife(bare_app, eos=EOS), lint=True)
                      .get("/bookmarks", status=status).headers["Alert"])["code"]
    assert code == ("soft-eol" if status == 200 else "hard-eol")


def test_real_clock_past_date_is_gone():
    app = webtest.TestApp(EndOfLife(bare_app, eos=datetime.date(2000, 1, 1)), lint=True)
    assert app.get("/bookmarks", status=410).json == GONE


def test_gone_never_reaches_the_app(today):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return bare_app(environ, start_response)

    today(EOS)
    webtest.TestApp(EndOfLife(app, eos=EOS), lint=True).get("/bookmarks", status=410)
    assert calls == []


@pytest.mark.parametrize("value,expected", [
    pytest.param("2099-01-05", EOS, id="iso-string"),
    pytest.param(EOS, EOS, id="date"),
    pytest.param(datetime.datetime(2099, 1, 5, 12, 30), EOS, id="datetime"),
    pytest.param(None, None, id="unset"),
    pytest.param("", None, id="empty-string"),
])
def test_eos_values(value, expected):
    assert EndOfLife(bare_app, eos=value).eos == expected
    assert EndOfLife.from_settings(bare_app, {"eos": value}).eos == expected


@pytest.mark.parametrize("value", ["2099-13-45", "next year", "05/01/2099", 20990105])
def test_bad_date_stops_start_up(value):
    with pytest.raises(ConfigurationError, match="'eos'"):
        EndOfLife.from_settings(bare_app, {"eos": value})
    with pytest.raises(ConfigurationError, match="'eos'"):
        EndOfLife(bare_app, eos=value)


def test_bad_date_in_settings_stops_start_up():
    with pytest.raises(ConfigurationError, match="'eos'"):
        load_settings({"eos": "2099-02-30"}, environ={})


def test_from_settings_and_filter_factory(today):
    settings = load_settings({"eos": "2099-01-05", "eos_message": "Bye", "project_docs": "https://docs"},
                             environ={})
    alert = json.loads(webtest.TestApp(EndOfLife.from_settings(bare_app, settings), lint=True)
                       .get("/bookmarks").headers["Alert"])
    assert alert == {"code": "soft-eol", "message": "Bye", "url": "https://docs"}
    today(EOS)
    app = webtest.TestApp(filter_factory({"project_docs": "https://docs"}, eos="2099-01-05")(bare_app), lint=True)
    assert app.get("/bookmarks", status=410).json == GONE


@pytest.mark.parametrize("v1_day,v1_status", [pytest.param(EOS - datetime.timedelta(days=1), 200, id="v1-deprecated"),
                                              pytest.param(EOS, 410, id="v1-gone")])
def test_deprecated_v1_beside_current_v2(inner, today, v1_day, v1_status):
    today(v1_day)
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": EndOfLife(inner, eos=EOS, eos_message="Use v2"),
                                                        "/v2": inner}), lint=True)
    old = app.get("/v1/bookmarks", status=v1_status)
    assert json.loads(old.headers["Alert"])["code"] == ("soft-eol" if v1_status == 200 else "hard-eol")
    assert "Sunset" in old.headers and "Deprecation" in old.headers
    current = app.get("/v2/bookmarks", status=200)
    assert current.json == {"data": []}
    assert not {"Alert", "Sunset", "Deprecation"} & set(current.headers)
    assert app.get("/bookmarks", status=307).headers["Location"] == "http://localhost/v2/bookmarks"


def test_switched_off_changes_nothing():
    body = [b"untouched"]
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    result = EndOfLife(app, eos=None)(Request.blank("/").environ,
                                      lambda status, headers, exc_info=None: seen.append(headers))
    assert result is body
    assert seen == [[("Content-Type", "text/plain")]]


def test_body_is_streamed_and_close_passes_through():
    produced, started = [], []

    class Body:
        closed = False

        def __init__(self, start_response):
            self.start_response = start_response

        def __iter__(self):
            self.start_response("200 OK", [("Content-Type", "text/plain")])
            for chunk in (b"one", b"two"):
                produced.append(chunk)
                yield chunk

        def close(self):
            self.closed = True

    bodies = []

    def app(environ, start_response):
        bodies.append(Body(start_response))
        return bodies[0]

    result = EndOfLife(app, eos=EOS)(Request.blank("/").environ,
                                     lambda status, headers, exc_info=None: started.append(headers))
    assert produced == [] and started == []
    iterator = iter(result)
    assert next(iterator) == b"one" and produced == [b"one"]
    assert [name for name, _ in started[0]] == ["Content-Type", "Alert", "Deprecation", "Sunset"]
    result.close()
    assert bodies[0].closed

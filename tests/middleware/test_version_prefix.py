"""VersionPrefix: ``/vN`` routing, redirects of unprefixed URLs and trailing slashes, errno 116 (§1.1-§1.3)."""
from __future__ import annotations

import json

import bottle
import flask
import pytest
import webtest
from webob import Request

from wsgicliquet import environ as keys
from wsgicliquet.errors import HTTPError
from wsgicliquet.middleware.version_prefix import VersionPrefix, absolute_url, filter_factory
from wsgicliquet.pipeline import describe
from wsgicliquet.settings import ConfigurationError, load_settings

VERSION_NOT_AVAILABLE = {"code": 404, "errno": 116, "error": "Not Found",
                         "message": "The requested protocol version is not available on this server."}
MISSING = {"code": 404, "errno": 111, "error": "Not Found",
           "message": "The resource you are looking for could not be found."}
ROUTES = ("/", "/bookmarks", "/__heartbeat__", "/__lbheartbeat__", "/__version__")


def _seen(environ, name):
    """What the API app saw of the request."""
    return {"app": name, "script_name": environ["SCRIPT_NAME"], "path_info": environ["PATH_INFO"],
            "prefix": environ.get(keys.API_PREFIX), "query": environ.get("QUERY_STRING", "")}


def bare_api(name="bare"):
    def app(environ, start_response):
        if environ["PATH_INFO"] not in ROUTES:
            return HTTPError(404)(environ, start_response)
        body = json.dumps(_seen(environ, name)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return app


def flask_api(name="flask"):
    app = flask.Flask(__name__)
    for index, route in enumerate(ROUTES):
        app.add_url_rule(route, f"view{index}", lambda: flask.jsonify(_seen(flask.request.environ, name)),
                         methods=["GET", "POST", "PUT", "DELETE"])
    return app


def bottle_api(name="bottle"):
    app = bottle.Bottle()
    for route in ROUTES:
        app.route(route, ["GET", "POST", "PUT", "DELETE"], lambda: _seen(bottle.request.environ, name))
    return app


API = [pytest.param(bare_api, id="bare"), pytest.param(flask_api, id="flask"), pytest.param(bottle_api, id="bottle")]


@pytest.fixture(params=API)
def api(request):
    return request.param


def seen(path, script_name="/v1", prefix="/v1", query=""):
    return {"script_name": script_name, "path_info": path, "prefix": prefix, "query": query}


# (method, path, status, Location or what the app saw, or an error body)
MATRIX = [
    pytest.param("GET", "/", 307, "http://localhost/v1/", id="root-redirects"),
    pytest.param("GET", "/bookmarks", 307, "http://localhost/v1/bookmarks", id="unprefixed-redirects"),
    pytest.param("GET", "/bookmarks/?_since=1&_limit=2", 307, "http://localhost/v1/bookmarks/?_since=1&_limit=2",
                 id="unprefixed-keeps-query-and-slash"),
    pytest.param("POST", "/bookmarks", 307, "http://localhost/v1/bookmarks", id="any-method-redirects"),
    pytest.param("DELETE", "/caf%C3%A9", 307, "http://localhost/v1/caf%C3%A9", id="quoted-path"),
    pytest.param("GET", "/v1x", 307, "http://localhost/v1/v1x", id="not-a-version"),
    pytest.param("GET", "/v1", 307, "http://localhost/v1/", id="version-without-slash"),
    pytest.param("GET", "/v1?a=1", 307, "http://localhost/v1/?a=1", id="version-without-slash-keeps-query"),
    pytest.param("GET", "/v1/", 200, seen("/"), id="version-root"),
    pytest.param("GET", "/v1/bookmarks?a=b", 200, seen("/bookmarks", query="a=b"), id="shifted-path"),
    pytest.param("POST", "/v1/bookmarks", 200, seen("/bookmarks"), id="shifted-post"),
    pytest.param("GET", "/v1/bookmarks/?_since=1", 307, "http://localhost/v1/bookmarks?_since=1",
                 id="trailing-slash-on-404"),
    pytest.param("PUT", "/v1/bookmarks///", 307, "http://localhost/v1/bookmarks", id="all-trailing-slashes"),
    pytest.param("GET", "/v1/unknown/", 307, "http://localhost/v1/unknown", id="trailing-slash-unknown-too"),
    pytest.param("GET", "/v2/", 404, VERSION_NOT_AVAILABLE, id="other-version-root"),
    pytest.param("GET", "/v2/bookmarks", 404, VERSION_NOT_AVAILABLE, id="other-version"),
    pytest.param("GET", "/v10", 404, VERSION_NOT_AVAILABLE, id="other-version-without-slash"),
    pytest.param("GET", "/__heartbeat__", 200, seen("/__heartbeat__", script_name=""), id="dockerflow-heartbeat"),
    pytest.param("GET", "/__lbheartbeat__", 200, seen("/__lbheartbeat__", script_name=""), id="dockerflow-lb"),
    pytest.param("GET", "/__version__", 200, seen("/__version__", script_name=""), id="dockerflow-version"),
    pytest.param("GET", "/v1/__heartbeat__", 200, seen("/__heartbeat__"), id="prefixed-heartbeat"),
]


def _check(response, status, expected, name):
    assert response.status_int == status
    if status == 307:
        assert response.headers["Location"] == expected
        assert response.content_type == "text/plain"
    elif status == 200:
        assert response.json == {**expected, "app": name}
    else:
        assert response.json == expected
        assert response.headers["Content-Type"] == "application/json; charset=UTF-8"


@pytest.mark.parametrize("method,path,status,expected", MATRIX)
def test_single_version(api, method, path, status, expected):
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": api()}), lint=True)
    _check(app.request(path, method=method, expect_errors=True), status, expected, api.__name__.split("_")[0])


def test_the_app_own_404_without_trailing_slash(api):
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": api()}), lint=True)
    response = app.get("/v1/unknown", status=404)
    if api is bare_api:
        assert response.json == MISSING


@pytest.mark.parametrize("path,status,expected", [
    pytest.param("/", 404, VERSION_NOT_AVAILABLE, id="root"),
    pytest.param("/bookmarks?a=1", 404, VERSION_NOT_AVAILABLE, id="unprefixed"),
    pytest.param("/__heartbeat__", 200, seen("/__heartbeat__", script_name=""), id="dockerflow-still-served"),
    pytest.param("/v1/bookmarks/", 307, "http://localhost/v1/bookmarks", id="trailing-slash-still-on"),
])
def test_redirect_disabled(path, status, expected):
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": bare_api()}, redirect=False), lint=True)
    _check(app.get(path, expect_errors=True), status, expected, "bare")


@pytest.mark.parametrize("path,status,expected", [
    pytest.param("/v1", 404, MISSING, id="version-without-slash"),
    pytest.param("/v1/bookmarks/", 404, MISSING, id="the-404-as-is"),
    pytest.param("/bookmarks/", 307, "http://localhost/v1/bookmarks/", id="unprefixed-still-redirects"),
])
def test_trailing_slash_redirect_disabled(path, status, expected):
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": bare_api()}, trailing_slash_redirect=False),
                          lint=True)
    _check(app.get(path, expect_errors=True), status, expected, "bare")


@pytest.mark.parametrize("options,environ,location", [
    pytest.param({"http_scheme": "https", "http_host": "api.example.org"}, {},
                 "https://api.example.org/v1/bookmarks?x=1", id="settings"),
    pytest.param({}, {"HTTP_HOST": "example.org:8080"}, "http://example.org:8080/v1/bookmarks?x=1", id="host"),
    pytest.param({}, {"wsgi.url_scheme": "https", "HTTP_HOST": "example.org:443"},
                 "https://example.org/v1/bookmarks?x=1", id="default-port-dropped"),
    pytest.param({"http_host": "public:81"}, {"SCRIPT_NAME": "/api"}, "http://public:81/api/v1/bookmarks?x=1",
                 id="mounted"),
])
def test_redirect_urls(options, environ, location):
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": bare_api()}, **options), lint=True)
    assert app.get("/bookmarks?x=1", extra_environ=environ, status=307).headers["Location"] == location


def test_trailing_slash_redirect_url_under_a_mount():
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": bare_api()}), lint=True)
    response = app.get("/v1/unknown/?q=1", extra_environ={"SCRIPT_NAME": "/api"}, status=307)
    assert response.headers["Location"] == "http://localhost/api/v1/unknown?q=1"
    assert app.get("/v1/bookmarks", extra_environ={"SCRIPT_NAME": "/api"}).json["script_name"] == "/api/v1"


def test_head_redirect_has_no_body():
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": bare_api()}), lint=True)
    response = app.head("/bookmarks", status=307)
    assert response.headers["Location"] == "http://localhost/v1/bookmarks" and response.body == b""


VERSIONS = [
    pytest.param("GET", "/", 307, "http://localhost/v2/", id="root-to-current"),
    pytest.param("GET", "/bookmarks", 307, "http://localhost/v2/bookmarks", id="unprefixed-to-current"),
    pytest.param("GET", "/v1/bookmarks", 200, {**seen("/bookmarks"), "app": "one"}, id="v1"),
    pytest.param("GET", "/v2/bookmarks", 200, {**seen("/bookmarks", "/v2", "/v2"), "app": "two"}, id="v2"),
    pytest.param("GET", "/v1", 307, "http://localhost/v1/", id="v1-slash"),
    pytest.param("GET", "/v2/bookmarks/", 307, "http://localhost/v2/bookmarks", id="v2-trailing"),
    pytest.param("GET", "/v3/", 404, VERSION_NOT_AVAILABLE, id="v3"),
    pytest.param("GET", "/__heartbeat__", 200, {**seen("/__heartbeat__", "", "/v2"), "app": "two"},
                 id="dockerflow-by-current"),
]


@pytest.mark.parametrize("method,path,status,expected", VERSIONS)
@pytest.mark.parametrize("one,two", [pytest.param(bare_api, flask_api, id="bare-flask"),
                                     pytest.param(bottle_api, bare_api, id="bottle-bare"),
                                     pytest.param(flask_api, bottle_api, id="flask-bottle")])
def test_versions_side_by_side(one, two, method, path, status, expected):
    app = webtest.TestApp(VersionPrefix(None, versions={"/v1": one("one"), "/v2": two("two")}), lint=True)
    response = app.request(path, method=method, expect_errors=True)
    assert response.status_int == status
    if status == 307:
        assert response.headers["Location"] == expected
    else:
        assert response.json == expected


@pytest.mark.parametrize("current", ["/v1", "v1", "1", 1, "1.3"])
def test_explicit_current_version(current):
    middleware = VersionPrefix(None, versions={"/v1": bare_api("one"), "/v2": bare_api("two")}, current=current)
    app = webtest.TestApp(middleware, lint=True)
    assert app.get("/", status=307).headers["Location"] == "http://localhost/v1/"
    assert app.get("/__heartbeat__").json["app"] == "one"


@pytest.mark.parametrize("http_api_version,location", [
    pytest.param("1.0", "http://localhost/v1/", id="configured-version-served"),
    pytest.param("7.1", "http://localhost/v10/", id="not-served-so-highest"),
])
def test_from_settings_current_version(http_api_version, location):
    settings = load_settings({"http_api_version": http_api_version}, environ={})
    middleware = VersionPrefix.from_settings(None, settings, versions={"/v1": bare_api(), "/v2": bare_api(),
                                                                       "/v10": bare_api()})
    assert webtest.TestApp(middleware, lint=True).get("/", status=307).headers["Location"] == location


def test_from_settings_without_versions_serves_the_app_under_http_api_version():
    settings = load_settings({"project_version": "3.2.1", "version_prefix_redirect_enabled": "false",
                              "trailing_slash_redirect_enabled": "false", "http_host": "h"}, environ={})
    middleware = VersionPrefix.from_settings(bare_api(), settings)
    assert middleware.app is None and list(middleware.versions) == ["/v3"]
    app = webtest.TestApp(middleware, lint=True)
    assert app.get("/v3/bookmarks").json["script_name"] == "/v3"
    assert app.get("/bookmarks", status=404).json == VERSION_NOT_AVAILABLE
    assert app.get("/v3", status=404).json == MISSING


def test_wrapped_app_is_the_api_by_default():
    app = webtest.TestApp(VersionPrefix(bare_api()), lint=True)
    assert app.get("/v1/bookmarks").json["prefix"] == "/v1"
    assert app.get("/x", status=307).headers["Location"] == "http://localhost/v1/x"


def test_filter_factory():
    app = webtest.TestApp(filter_factory({"http_api_version": "2.0"}, http_scheme="https")(bare_api()), lint=True)
    assert app.get("/bookmarks", status=307).headers["Location"] == "https://localhost/v2/bookmarks"


def site():
    """An existing web site that gains an API under /v1."""
    app = flask.Flask("site")
    app.add_url_rule("/", "home", lambda: "home page")
    app.add_url_rule("/about/", "about", lambda: "about page")
    return app


@pytest.mark.parametrize("path,status,expected", [
    pytest.param("/", 200, "home page", id="site-home"),
    pytest.param("/about/", 200, "about page", id="site-page"),
    pytest.param("/missing/", 404, None, id="site-404-not-redirected"),
    pytest.param("/bookmarks", 404, None, id="no-redirect-with-a-site"),
    pytest.param("/v1/bookmarks", 200, {**seen("/bookmarks"), "app": "bare"}, id="api"),
    pytest.param("/v1/bookmarks/", 307, "http://localhost/v1/bookmarks", id="api-trailing-slash"),
    pytest.param("/v2/", 404, VERSION_NOT_AVAILABLE, id="unknown-version"),
    pytest.param("/__heartbeat__", 200, {**seen("/__heartbeat__", script_name=""), "app": "bare"},
                 id="dockerflow-by-the-api"),
])
def test_fallback_site_keeps_its_pages(path, status, expected):
    app = webtest.TestApp(VersionPrefix(site(), versions={"/v1": bare_api()}), lint=True)
    response = app.get(path, expect_errors=True)
    assert response.status_int == status
    if status == 307:
        assert response.headers["Location"] == expected
    elif isinstance(expected, dict):
        assert response.json == expected
    elif expected is not None:
        assert response.text == expected
    else:
        assert response.content_type == "text/html"


def test_from_settings_with_a_fallback_and_describe():
    fallback = site()
    settings = load_settings({}, environ={})
    middleware = VersionPrefix.from_settings(fallback, settings, versions={"/v1": bare_api(), "/v2": bare_api()})
    assert middleware.app is fallback and list(middleware.versions) == ["/v1", "/v2"]
    lines = describe(middleware)
    assert lines[0].startswith("VersionPrefix") and "  /v1:" in lines and "  /v2:" in lines
    assert webtest.TestApp(middleware, lint=True).get("/").text == "home page"


@pytest.mark.parametrize("args,options", [
    pytest.param((None,), {"versions": {"v1": bare_api()}}, id="prefix-without-slash"),
    pytest.param((None,), {"versions": {"/api": bare_api()}}, id="not-a-version"),
    pytest.param((None,), {"versions": {"/v1": bare_api()}, "current": "/v2"}, id="current-not-served"),
    pytest.param((None,), {"versions": {"/v1": bare_api()}, "current": "latest"}, id="current-not-a-version"),
    pytest.param((None,), {"versions": {}}, id="no-version"),
    pytest.param((None,), {}, id="nothing-to-serve"),
])
def test_bad_configuration(args, options):
    with pytest.raises(ConfigurationError):
        VersionPrefix(*args, **options)


def test_raised_404_on_trailing_slash_redirects_and_other_errors_propagate():
    def app(environ, start_response):
        raise HTTPError(404 if environ["PATH_INFO"] == "/gone/" else 403)

    client = webtest.TestApp(VersionPrefix(None, versions={"/v1": app}), lint=True)
    assert client.get("/v1/gone/", status=307).headers["Location"] == "http://localhost/v1/gone"
    with pytest.raises(HTTPError):
        client.get("/v1/denied/")


class Body:
    """An app iterable that records what was produced and whether it was closed."""

    def __init__(self, start_response, status, chunks):
        self.start_response, self.status, self.chunks = start_response, status, chunks
        self.produced, self.closed = [], False

    def __iter__(self):
        self.start_response(self.status, [("Content-Type", "text/plain")])  # deferred, like a generator app
        for chunk in self.chunks:
            self.produced.append(chunk)
            yield chunk

    def close(self):
        self.closed = True


def lazy_app(status, bodies):
    def app(environ, start_response):
        bodies.append(Body(start_response, status, [b"one", b"two", b"three"]))
        return bodies[-1]
    return app


@pytest.mark.parametrize("path", ["/v1/bookmarks", "/v1/bookmarks/", "/__heartbeat__"])
def test_streams_lazily_and_passes_close(path):
    bodies, started = [], []
    middleware = VersionPrefix(None, versions={"/v1": lazy_app("200 OK", bodies)})
    result = middleware(Request.blank(path).environ, lambda status, headers, exc_info=None: started.append(status))
    body = bodies[0]
    # With a trailing slash the middleware looks at the first chunk to learn the status; never further.
    assert body.produced == ([b"one"] if path.endswith("/") else [])
    iterator = iter(result)
    assert next(iterator) == b"one"
    assert started == ["200 OK"]
    assert body.produced == [b"one"]
    assert list(iterator) == [b"two", b"three"]
    result.close()
    assert body.closed


def test_lazy_404_with_trailing_slash_is_closed_and_redirected():
    bodies, started = [], []
    middleware = VersionPrefix(None, versions={"/v1": lazy_app("404 Not Found", bodies)})
    environ = Request.blank("/v1/bookmarks/").environ
    result = middleware(environ, lambda status, headers, exc_info=None: started.append((status, dict(headers))))
    assert started[0][0] == "307 Temporary Redirect"
    assert started[0][1]["Location"] == "http://localhost/v1/bookmarks"
    assert bodies[0].closed and bodies[0].produced == [b"one"]
    assert b"".join(result).startswith(b"307 Temporary Redirect")


def test_plain_paths_return_the_app_iterable_itself():
    body = [b"untouched"]

    def app(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return body

    middleware = VersionPrefix(app, versions={"/v1": app})
    for path in ("/v1/bookmarks", "/v1/", "/page", "/__heartbeat__"):
        assert middleware(Request.blank(path).environ, lambda *args: None) is body


def test_absolute_url_quotes_the_decoded_path():
    environ = Request.blank("/").environ
    assert absolute_url(environ, "/a b/caf\xc3\xa9%", "x=%20") == "http://localhost/a%20b/caf%C3%A9%25?x=%20"


def test_trailing_slash_redirect_keeps_the_headers_of_the_version():
    """The 307 replaces the version's 404, not its headers: ``Backoff`` and ``Alert`` are on every response (§9.1, §10)."""
    def app(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", "2"),
                                         ("Backoff", "10"), ("Alert", '{"code": "soft-eol"}'), ("Vary", "Origin")])
        return [b"{}"]

    client = webtest.TestApp(VersionPrefix(None, versions={"/v1": app}), lint=True)
    response = client.get("/v1/bookmarks/?a=1", status=307)
    assert response.headers["Location"] == "http://localhost/v1/bookmarks?a=1"
    assert (response.headers["Backoff"], response.headers["Alert"]) == ("10", '{"code": "soft-eol"}')
    assert response.headers["Vary"] == "Origin"
    assert response.content_type == "text/plain" and b"307" in response.body


def test_trailing_slash_redirect_in_the_pipeline_carries_backoff_and_the_end_of_service_headers():
    from wsgicliquet import Resource, ResourceApp, build_pipeline
    from wsgicliquet.backends import clear_backends

    class Bookmark(Resource):
        schema = {"type": "object"}

    clear_backends()
    settings = {"project_version": "1.0", "userid_hmac_secret": "s", "backoff": "10", "eos": "2999-01-01"}
    client = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    for path in ("/v1/bookmarks/", "/v1/nowhere/"):
        response = client.get(path, status=307)
        assert response.headers["Backoff"] == "10"
        assert '"soft-eol"' in response.headers["Alert"] and "Sunset" in response.headers
    clear_backends()


@pytest.mark.parametrize("path, location", [
    pytest.param("/v1/caf%C3%A9/?q=%C3%A9", "http://localhost/v1/caf%C3%A9?q=%C3%A9", id="utf-8"),
    pytest.param("/v1/%FF/", "http://localhost/v1/%FF", id="not-utf-8"),
])
def test_trailing_slash_redirect_of_a_non_ascii_path_is_the_path_as_requested(api, path, location):
    """Bottle rewrites ``PATH_INFO`` (decoded, unencodable characters dropped or replaced) while it answers the
    404: the redirect is built from the path as it arrived, never a mangled one, and never a 500."""
    client = webtest.TestApp(VersionPrefix(None, versions={"/v1": api()}))
    assert client.get(path, status=307).headers["Location"] == location


@pytest.mark.parametrize("host", ["a b", "evil.example/x?y", "x:notaport", ""])
def test_redirect_with_an_invalid_host_header_names_the_server(host):
    """A Host header no host could have is ignored: the Location is an absolute URL all the same (§1.2)."""
    client = webtest.TestApp(VersionPrefix(bare_api()))
    response = client.get("/bookmarks?a=1", headers={"Host": host}, extra_environ={"SERVER_NAME": "api.example",
                                                                                    "SERVER_PORT": "8080"}, status=307)
    assert response.headers["Location"] == "http://api.example:8080/v1/bookmarks?a=1"


def test_redirects_into_a_version_go_through_its_layers():
    """``version_layers``: the 307s into a version get that version's headers (its Backoff, its Alert), and the
    404 of a version not served the current version's."""
    def tagging(tag):
        def wrap(inner):
            def app(environ, start_response):
                return inner(environ, lambda status, headers, exc_info=None:
                             start_response(status, headers + [("X-Version", tag)], exc_info))
            return app
        return wrap

    api = webtest.TestApp(VersionPrefix(None, versions={"/v1": bare_api("v1"), "/v2": bare_api("v2")},
                                        version_layers={"/v1": tagging("v1"), "/v2": tagging("v2")}), lint=True)
    assert api.get("/v1", status=307).headers["X-Version"] == "v1"
    moved = api.get("/bookmarks?a=1", status=307)
    assert (moved.headers["Location"], moved.headers["X-Version"]) == ("http://localhost/v2/bookmarks?a=1", "v2")
    # A version not served is answered by the current version's layers.
    assert api.get("/v3/", status=404).headers["X-Version"] == "v2"


def test_layers_of_a_version_not_served_are_refused():
    with pytest.raises(ConfigurationError, match="'/v2'"):
        VersionPrefix(None, versions={"/v1": bare_api()}, version_layers={"/v2": lambda app: app})

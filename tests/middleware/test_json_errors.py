import json
import logging

import bottle
import flask
import pytest
import webtest

from wsgicliquet import environ as keys
from wsgicliquet.errors import HTTPError
from wsgicliquet.middleware import json_errors
from wsgicliquet.middleware.json_errors import JsonErrors
from wsgicliquet.settings import ConfigurationError, load_settings
from wsgicliquet.storage.exceptions import BackendError

INFO = "https://github.com/mozilla-services/cliquet/issues/"
HTML = "text/html; charset=utf-8"
JSON = "application/json; charset=UTF-8"
NOT_FOUND = {"code": 404, "errno": 111, "error": "Not Found",
             "message": "The resource you are looking for could not be found."}
INTERNAL = {"code": 500, "errno": 999, "error": "Internal Server Error",
            "message": "A programmatic error occured, developers have been informed.", "info": INFO}
UNAVAILABLE = {"code": 503, "errno": 201, "error": "Service Unavailable",
               "message": "Service temporary unavailable due to overloading or maintenance, please retry later."}
CUSTOM_403 = {"code": 403, "errno": 121, "error": "Forbidden", "message": "Only the owner may read this."}
SEEN = {}  # environ of the last request, as the app saw it


def _fail(kind):
    if kind == "backend":
        raise BackendError(ConnectionError("connection refused"))
    if kind == "http":
        raise HTTPError(412, 114, headers=[("ETag", '"12"')])
    raise RuntimeError("secret-token-in-traceback")


# --- three apps with the same routes -------------------------------------------------------------------------

def bare_app(environ, start_response):
    SEEN.clear()
    SEEN.update(environ)
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]

    def send(status, body, content_type=HTML, extra=()):
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra])
        return [body]

    if path in ("/v1/items", "/site/items"):
        if method not in ("GET", "HEAD"):
            return send("405 Method Not Allowed", b"<h1>Method Not Allowed</h1>", extra=[("Allow", "GET, HEAD")])
        return send("200 OK", b'{"data": []}', JSON)
    if path.endswith("/boom"):
        _fail(environ.get("QUERY_STRING") or "runtime")
    if path == "/v1/unavailable":
        return send("503 Service Unavailable", b"<h1>Down</h1>")
    if path == "/v1/denied":
        return send("401 Unauthorized", b"<h1>Who?</h1>", extra=[("WWW-Authenticate", 'Basic realm="Realm"')])
    if path == "/v1/mine":
        return send("403 Forbidden", json.dumps(CUSTOM_403).encode(), JSON)
    if path == "/v1/game":
        return send("404 Not Found", b'{"message": "Game not found"}', "application/json")
    if path == "/v1/teapot":
        return send("418 I'm a Teapot", b"short and stout")
    return send("404 Not Found", b"<h1>Not Found</h1>")


def flask_app(propagate=False):
    app = flask.Flask("json_errors_flask")
    app.config["PROPAGATE_EXCEPTIONS"] = propagate
    app.logger.disabled = True

    @app.get("/v1/items")
    @app.get("/site/items")
    def items():
        return {"data": []}

    @app.get("/v1/boom")
    @app.get("/site/boom")
    def boom():
        _fail(flask.request.query_string.decode() or "runtime")

    @app.get("/v1/unavailable")
    def unavailable():
        flask.abort(503)

    @app.get("/v1/denied")
    def denied():
        return "<h1>Who?</h1>", 401, {"WWW-Authenticate": 'Basic realm="Realm"'}

    @app.get("/v1/mine")
    def mine():
        return flask.Response(json.dumps(CUSTOM_403), 403, content_type=JSON)

    @app.get("/v1/game")
    def game():
        return {"message": "Game not found"}, 404

    @app.get("/v1/teapot")
    def teapot():
        flask.abort(418)

    return app


def bottle_app(propagate=False):
    app = bottle.Bottle()
    app.config["catchall"] = not propagate

    @app.get("/v1/items")
    @app.get("/site/items")
    def items():
        return {"data": []}

    @app.get("/v1/boom")
    @app.get("/site/boom")
    def boom():
        _fail(bottle.request.query_string or "runtime")

    @app.get("/v1/unavailable")
    def unavailable():
        bottle.abort(503, "Down")

    @app.get("/v1/denied")
    def denied():
        bottle.response.status = 401
        bottle.response.set_header("WWW-Authenticate", 'Basic realm="Realm"')
        return "<h1>Who?</h1>"

    @app.get("/v1/mine")
    def mine():
        bottle.response.status = 403
        bottle.response.content_type = JSON
        return json.dumps(CUSTOM_403)

    @app.get("/v1/game")
    def game():
        bottle.response.status = 404
        return {"message": "Game not found"}

    @app.get("/v1/teapot")
    def teapot():
        bottle.abort(418, "short and stout")

    return app


APPS = {
    "bare": lambda: bare_app,
    "flask": flask_app,
    "flask-propagating": lambda: flask_app(propagate=True),
    "bottle": bottle_app,
    "bottle-propagating": lambda: bottle_app(propagate=True),
}
# Apps that let exceptions escape to the middleware (the others render their own HTML 500).
PROPAGATING = {"bare", "flask-propagating", "bottle-propagating"}


def client(app, **options):
    options.setdefault("paths", ["/v1", *json_errors.DOCKERFLOW_PATHS])
    return webtest.TestApp(JsonErrors(app, **options), lint=True)


@pytest.fixture(params=sorted(APPS))
def kind(request):
    return request.param


@pytest.fixture
def app(kind):
    return client(APPS[kind]())


# --- the matrix of error rewrites ----------------------------------------------------------------------------

REWRITES = [
    pytest.param("GET", "/v1/nowhere", 404, NOT_FOUND, {}, id="unknown-url-404"),
    pytest.param("GET", "/__heartbeat__", 404, NOT_FOUND, {}, id="dockerflow-root-governed"),
    pytest.param("POST", "/v1/items", 405,
                 {"code": 405, "errno": 115, "error": "Method Not Allowed",
                  "message": "Method not allowed on this endpoint."}, {"Allow": "GET"}, id="405-keeps-allow"),
    pytest.param("GET", "/v1/unavailable", 503, UNAVAILABLE, {"Retry-After": "30"}, id="html-503-retry-after"),
    pytest.param("GET", "/v1/denied", 401,
                 {"code": 401, "errno": 104, "error": "Unauthorized",
                  "message": "Please authenticate yourself to use this endpoint."},
                 {"WWW-Authenticate": 'Basic realm="Realm"'}, id="401-keeps-www-authenticate"),
    pytest.param("GET", "/v1/mine", 403, CUSTOM_403, {}, id="uniform-json-untouched"),
    pytest.param("GET", "/v1/game", 404, dict(NOT_FOUND, message="Game not found"), {},
                 id="other-json-keeps-message"),
    pytest.param("GET", "/v1/teapot", 418,
                 {"code": 418, "errno": 999, "error": "I'm a Teapot", "message": "I'm a Teapot"}, {},
                 id="unmapped-status-999"),
    pytest.param("GET", "/v1/boom", 500, INTERNAL, {}, id="exception-or-html-500"),
]


@pytest.mark.parametrize("method, path, status, body, headers", REWRITES)
def test_errors_become_the_uniform_body(app, method, path, status, body, headers):
    response = app.request(path, method=method, expect_errors=True)
    assert response.status_int == status
    assert response.content_type == "application/json"
    assert response.json == body
    for name, value in headers.items():
        assert value in response.headers[name]
    assert "Retry-After" in response.headers if status == 503 else "Retry-After" not in response.headers
    assert int(response.headers["Content-Length"]) == len(response.body)


def test_errno_recorded_in_environ():
    wrapped = JsonErrors(bare_app, paths=["/v1"])
    for path, errno in [("/v1/nowhere", 111), ("/v1/mine", 121), ("/v1/unavailable", 201)]:
        request = webtest.TestRequest.blank(path)
        assert request.get_response(wrapped).json["errno"] == errno
        assert request.environ[keys.ERRNO] == errno


@pytest.mark.parametrize("method, path, status", [
    pytest.param("GET", "/v1/items", 200, id="200"),
    pytest.param("HEAD", "/v1/items", 200, id="head-200"),
    pytest.param("GET", "/site/items", 200, id="200-ungoverned"),
])
def test_success_passes_untouched(app, method, path, status):
    response = app.request(path, method=method)
    assert response.status_int == status
    assert response.content_type == "application/json"
    if method == "GET":
        assert response.json == {"data": []}


def test_head_error_has_no_body(app):
    response = app.head("/v1/nowhere", status=404)
    assert response.body == b""
    assert response.content_type == "application/json"


def test_head_of_an_http_error_keeps_its_headers():
    """The HEAD of an HTTPError with details keeps the Content-Length of the GET's body, through both converters of
    the pipeline (it was rewritten into a generic error of another length); an app's own HEAD error still is."""
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/v1/flask":
            start_response("404 Not Found", [("Content-Type", "text/html"), ("Content-Length", "0")])
            return [b""]
        error = HTTPError(404, 110, details={"id": "x", "resource_name": "bookmark"}, headers=[("ETag", '"1"')])
        return error(environ, start_response)

    wrapped = client(JsonErrors(JsonErrors(app)))
    got, head = wrapped.get("/v1/x", status=404), wrapped.head("/v1/x", status=404)
    assert head.body == b"" and head.headers == got.headers
    assert int(head.headers["Content-Length"]) == len(got.body) and got.json["details"]["id"] == "x"
    got, head = wrapped.get("/v1/flask", status=404), wrapped.head("/v1/flask", status=404)
    assert head.headers == got.headers and got.json["errno"] == 111


@pytest.mark.parametrize("method, path, status", [
    pytest.param("GET", "/site/nowhere", 404, id="404"),
    pytest.param("GET", "/v10/nowhere", 404, id="not-a-prefix-match"),
    pytest.param("POST", "/site/items", 405, id="405"),
])
def test_ungoverned_paths_keep_html_errors(app, method, path, status):
    response = app.request(path, method=method, expect_errors=True)
    assert response.status_int == status
    assert response.content_type == "text/html"


def test_ungoverned_exception_reaches_the_server(kind):
    app = client(APPS[kind]())
    if kind in PROPAGATING:
        with pytest.raises(RuntimeError, match="secret-token"):
            app.get("/site/boom")
    else:  # the framework rendered its own page: left as it is
        response = app.get("/site/boom", status=500, expect_errors=True)
        assert response.content_type == "text/html"


def test_version_prefix_routed_requests_are_governed():
    def versioned(environ, start_response):
        environ[keys.API_PREFIX] = "/v2"
        return bare_app(environ, start_response)

    app = webtest.TestApp(JsonErrors(versioned, paths=["/v1"]), lint=True)
    assert app.get("/v2/nowhere", status=404).json == NOT_FOUND
    assert app.get("/v2/boom", status=500).json == INTERNAL
    assert app.get("/v2/boom?backend", status=503).json == UNAVAILABLE


def test_every_path_governed_without_paths():
    app = webtest.TestApp(JsonErrors(bare_app), lint=True)
    assert app.get("/site/nowhere", status=404).json == NOT_FOUND


# --- exceptions ----------------------------------------------------------------------------------------------

EXCEPTIONS = [
    pytest.param("runtime", 500, INTERNAL, {}, logging.ERROR, id="unexpected-500"),
    pytest.param("backend", 503, UNAVAILABLE, {"Retry-After": "30"}, logging.CRITICAL, id="backend-503"),
    pytest.param("http", 412, {"code": 412, "errno": 114, "error": "Precondition Failed",
                               "message": "Resource was modified meanwhile"}, {"ETag": '"12"'}, None,
                 id="http-error-own-response"),
]


@pytest.mark.parametrize("kind", sorted(PROPAGATING))
@pytest.mark.parametrize("failure, status, body, headers, level", EXCEPTIONS)
def test_exceptions_become_responses(kind, failure, status, body, headers, level, caplog):
    app = client(APPS[kind]())
    with caplog.at_level(logging.DEBUG, logger="wsgicliquet"):
        response = app.get(f"/v1/boom?{failure}", status=status)
    assert response.json == body
    for name, value in headers.items():
        assert response.headers[name] == value
    records = [record for record in caplog.records if record.name == "wsgicliquet.middleware.json_errors"]
    if level is None:
        assert records == []
    else:
        assert [record.levelno for record in records] == [level]
        assert records[0].exc_info is not None  # the traceback is logged...
    assert b"secret-token" not in response.body and b"Traceback" not in response.body  # ...never sent


def test_http_error_is_a_response_on_any_path():
    app = client(bare_app)
    assert app.get("/site/boom?http", status=412).json["errno"] == 114


def test_retry_after_setting_and_custom_link():
    app = client(bare_app, retry_after_seconds=120, error_info_link="https://example.com/bugs")
    assert app.get("/v1/boom?backend", status=503).headers["Retry-After"] == "120"
    assert app.get("/v1/boom", status=500).json["info"] == "https://example.com/bugs"


def test_raised_503_gets_retry_after_without_changing_the_error():
    error = HTTPError(503, message="Maintenance until noon")

    def app(environ, start_response):
        raise error

    response = client(app).get("/v1/x", status=503)
    assert response.headers["Retry-After"] == "30"
    assert response.json["message"] == "Maintenance until noon"
    assert error.headers == []


def test_json_429_gets_retry_after():
    def app(environ, start_response):
        return HTTPError(429)(environ, start_response)

    response = client(app).get("/v1/x", status=429)
    assert response.headers["Retry-After"] == "30"
    assert response.json["errno"] == 117


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/problem+json"])
def test_uniform_error_of_the_app_gets_the_json_content_type_as_its_head(content_type):
    """An app's own uniform error (Bottle's ``application/json``) says ``charset=UTF-8`` like every JSON body (§3.1),
    and like its HEAD, whose empty body is rewritten."""
    def app(environ, start_response):
        body = json.dumps(HTTPError(401).to_dict()).encode()
        start_response("401 Unauthorized", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                             ("WWW-Authenticate", 'Basic realm="Realm"')])
        return [body]

    got = client(app).get("/v1/x", status=401)
    head = client(app).head("/v1/x", status=401)
    assert got.headers["Content-Type"] == head.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert got.json["errno"] == 104 and got.headers["WWW-Authenticate"] == head.headers["WWW-Authenticate"]


class Body:
    """A body that records how far it was read and whether it was closed."""

    def __init__(self, chunks, fail_at=None, start=None):
        self.chunks, self.fail_at, self.start = chunks, fail_at, start
        self.produced = 0
        self.closed = False

    def __iter__(self):
        for index, chunk in enumerate(self.chunks):
            if index == 0 and self.start:
                self.start()
            if index == self.fail_at:
                raise RuntimeError("failed while streaming")
            self.produced += 1
            yield chunk

    def close(self):
        self.closed = True


def test_exception_when_the_body_starts_is_a_500():
    body = Body([b"a", b"b"], fail_at=0)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    response = client(app).get("/v1/stream", status=500)
    assert response.json == INTERNAL
    assert body.closed


def test_lazy_start_response_with_failure_is_a_500():
    def app(environ, start_response):
        return Body([b"a"], fail_at=0, start=lambda: start_response("200 OK", [("Content-Type", "text/plain")]))

    assert client(app).get("/v1/stream", status=500).json == INTERNAL


def test_success_bodies_stream_with_one_chunk_read_ahead():
    body = Body([b"one", b"two", b"three"])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    wrapped = JsonErrors(app, paths=["/v1"])
    result = wrapped(webtest.TestRequest.blank("/v1/stream").environ, lambda status, headers, exc_info=None: None)
    assert body.produced == 1  # only the first chunk, to catch a failure at the start
    assert b"".join(result) == b"onetwothree"
    result.close()
    assert body.closed


def test_file_wrapper_bodies_are_left_to_the_server():
    class FileWrapper:
        def __init__(self, chunks):
            self.chunks = chunks

        def __iter__(self):
            raise AssertionError("read by the middleware")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"]([b"file"])

    environ = webtest.TestRequest.blank("/v1/file", environ={"wsgi.file_wrapper": FileWrapper}).environ
    result = JsonErrors(app)(environ, lambda status, headers, exc_info=None: None)
    assert isinstance(result, FileWrapper)


def test_error_bodies_are_read_and_closed():
    body = Body([b"<h1>", b"Not Found", b"</h1>"])

    def app(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "text/html")])
        return body

    assert client(app).get("/v1/x", status=404).json == NOT_FOUND
    assert body.produced == 3 and body.closed


def test_error_written_through_write_is_rewritten():
    def app(environ, start_response):
        write = start_response("404 Not Found", [("Content-Type", "text/html")])
        write(b"<h1>Not")
        return [b" Found</h1>"]

    assert client(app).get("/v1/x", status=404).json == NOT_FOUND


def test_switched_off_is_a_pass_through(kind):
    app = webtest.TestApp(JsonErrors(APPS[kind](), enabled=False), lint=True)
    assert app.get("/v1/nowhere", status=404).content_type == "text/html"


# --- configuration -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, governed, ungoverned", [
    pytest.param({"project_version": "3.2.0"}, ["/v3/x", "/__heartbeat__", "/__version__"], ["/site", "/v1/x"],
                 id="api-prefix-from-project-version"),
    pytest.param({"http_api_version": "2.3"}, ["/v2", "/v2/x", "/__lbheartbeat__"], ["/v1/x", "/v20/x"],
                 id="api-version"),
    pytest.param({"json_errors_paths": "/api /v1/"}, ["/api/x", "/v1/x"], ["/__heartbeat__", "/site"],
                 id="explicit-paths"),
    pytest.param({"json_errors_paths": "/"}, ["/", "/site/x"], [], id="everything"),
])
def test_paths_from_settings(raw, governed, ungoverned):
    middleware = JsonErrors.from_settings(bare_app, load_settings(raw, environ={}))
    for path in governed:
        assert middleware.governs({"PATH_INFO": path}), path
    for path in ungoverned:
        assert not middleware.governs({"PATH_INFO": path}), path


def test_bad_path_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="json_errors_paths"):
        JsonErrors(bare_app, paths=["v1"])


def test_filter_factory_reads_the_ini_settings():
    wrap = json_errors.filter_factory({"http_api_version": "1.0"}, retry_after_seconds="7")
    app = webtest.TestApp(wrap(bare_app), lint=True)
    assert app.get("/v1/boom?backend", status=503).headers["Retry-After"] == "7"
    assert app.get("/site/nowhere", status=404).content_type == "text/html"

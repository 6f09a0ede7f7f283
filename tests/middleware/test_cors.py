import bottle
import flask
import pytest
import webtest

from wsgicliquet.middleware import cors
from wsgicliquet.middleware.cors import Cors
from wsgicliquet.middleware.json_errors import JsonErrors
from wsgicliquet.settings import load_settings

from .probes import Body

ALWAYS = ["Backoff", "Retry-After", "Alert", "Content-Length", "Content-Type", "Vary"]
RECORD_HEADERS = [("ETag", '"42"'), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Cache-Control", "no-cache")]


# --- three apps with the same routes: /v1/items (GET, POST), /v1/record (GET, with record headers) ---------------

def bare_app(environ, start_response):
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    if path == "/v1/items" and method in ("GET", "HEAD", "POST"):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    if path == "/v1/items":
        start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET, HEAD, POST"),
                                                  ("Content-Length", "0")])
        return [b""]
    if path == "/v1/record":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2"), *RECORD_HEADERS])
        return [b"{}"]
    if path == "/v1/boom":
        raise RuntimeError("boom")
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"Not Found"]


def flask_app():
    app = flask.Flask("cors_flask")
    app.logger.disabled = True

    @app.route("/v1/items", methods=["GET", "POST"])
    def items():
        return {}

    @app.get("/v1/record")
    def record():
        return {}, 200, RECORD_HEADERS

    @app.get("/v1/boom")
    def boom():
        raise RuntimeError("boom")

    return app


def bottle_app():
    app = bottle.Bottle()

    @app.route("/v1/items", method=["GET", "POST"])
    def items():
        return {}

    @app.get("/v1/record")
    def record():
        for name, value in RECORD_HEADERS:
            bottle.response.set_header(name, value)
        return {}

    @app.get("/v1/boom")
    def boom():
        raise RuntimeError("boom")

    return app


APPS = {"bare": lambda: bare_app, "flask": flask_app, "bottle": bottle_app}


@pytest.fixture(params=sorted(APPS))
def make(request):
    def build(**options):
        app = JsonErrors(APPS[request.param](), paths=["/v1"])
        return webtest.TestApp(Cors(app, **options), lint=True)

    return build


def exposed(response):
    return [item.strip() for item in response.headers["Access-Control-Expose-Headers"].split(",")]


# --- Access-Control-Allow-Origin -------------------------------------------------------------------------------

@pytest.mark.parametrize("origins, origin, expected", [
    pytest.param(["*"], "https://a.example", "*", id="star"),
    pytest.param(["https://a.example"], "https://a.example", "https://a.example", id="exact-echo"),
    pytest.param(["https://a.example"], "https://b.example", None, id="exact-mismatch-omitted"),
    pytest.param(["*.daybed.io"], "https://demo.daybed.io", "https://demo.daybed.io", id="wildcard"),
    pytest.param(["https://*.example.com"], "https://example.com", None, id="wildcard-mismatch"),
    pytest.param(["https://a.example", "https://*.b.example"], "https://x.b.example", "https://x.b.example",
                 id="second-pattern"),
    pytest.param(["https://a.example", "*"], "https://z.example", "*", id="star-in-list"),
    pytest.param(["https://a.example"], None, None, id="no-origin"),
])
@pytest.mark.parametrize("path, status", [
    pytest.param("/v1/items", 200, id="success"),
    pytest.param("/v1/nowhere", 404, id="404"),
    pytest.param("/v1/boom", 500, id="500"),
])
def test_allow_origin_on_success_and_errors(make, origins, origin, expected, path, status):
    headers = {"Origin": origin} if origin else {}
    response = make(origins=origins).get(path, headers=headers, status=status, expect_errors=True)
    assert response.headers.get("Access-Control-Allow-Origin") == expected
    assert ("Access-Control-Expose-Headers" in response.headers) == (expected is not None)
    assert "Authorization" in response.headers["Vary"]


# --- Access-Control-Expose-Headers -------------------------------------------------------------------------------

@pytest.mark.parametrize("path, status, extra", [
    pytest.param("/v1/items", 200, [], id="plain"),
    pytest.param("/v1/record", 200, ["ETag", "Last-Modified", "Cache-Control", "Expires", "Pragma"],
                 id="record-headers-exposed"),
    pytest.param("/v1/nowhere", 404, [], id="error"),
])
def test_expose_headers(make, path, status, extra):
    response = make().get(path, headers={"Origin": "https://a.example"}, status=status)
    assert sorted(exposed(response)) == sorted(ALWAYS + extra)


@pytest.mark.parametrize("header", cors.EXPOSED_IF_PRESENT)
def test_every_conditional_header_is_exposed_when_present(header):
    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "application/json"), (header.lower(), "1")])
        return [b"{}"]

    response = webtest.TestApp(Cors(app), lint=True).post("/", headers={"Origin": "https://a.example"})
    assert header in exposed(response)


@pytest.mark.parametrize("headers, expected", [
    pytest.param([("Total-Records", "3"), ("ETag", '"1"')], cors.LISTING_EXPOSED, id="listing"),
    pytest.param([("ETag", '"1"'), ("Cache-Control", "no-cache")], cors.READ_EXPOSED, id="record-read"),
])
def test_listings_and_reads_expose_the_whole_protocol_list(headers, expected):
    """§12: a browser client reads ``Next-Page`` of any listing and ``Expires`` of any read, as with Cliquet,
    even when this response (a last page, no cache expiry) lacks them."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), *headers])
        return [b"{}"]

    response = webtest.TestApp(Cors(app), lint=True).get("/", headers={"Origin": "https://a.example"})
    assert sorted(exposed(response)) == sorted(set(ALWAYS) | set(expected))


def test_a_write_exposes_only_what_it_carries():
    """A PATCH answer has an ``ETag`` but no ``Cache-Control``: nothing of a read is added to it."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("ETag", '"1"'), ("Last-Modified", "x")])
        return [b"{}"]

    response = webtest.TestApp(Cors(app), lint=True).patch("/", headers={"Origin": "https://a.example"})
    assert sorted(exposed(response)) == sorted(ALWAYS + ["ETag", "Last-Modified"])


def test_each_list_of_header_names_gets_its_own_decoration():
    """What is added depends on the names of the response's headers, and is remembered by those names: the same app
    answering with many different lists (more than are remembered), with and without an origin, is decorated as each
    list requires."""
    def app(environ, start_response):
        number = int(environ["PATH_INFO"].strip("/"))
        headers = [("Content-Type", "text/plain"), (f"X-Number-{number}", "1")]
        if number % 3 == 1:
            headers.append(("ETag", '"1"'))
        if number % 3 == 2:
            headers.append(("Vary", "Accept"))
        start_response("200 OK", headers)
        return [b"ok"]

    client = webtest.TestApp(Cors(app), lint=True)
    for number in [*range(600), *range(10)]:
        origin = {"Origin": "https://a.example"} if number % 2 else {}
        response = client.get(f"/{number}", headers=origin)
        assert response.headers[f"X-Number-{number}"] == "1"
        assert response.headers.getall("Vary") == ["Accept, Authorization" if number % 3 == 2 else "Authorization"]
        if origin:
            assert exposed(response) == ALWAYS + (["ETag"] if number % 3 == 1 else [])
        else:
            assert "Access-Control-Allow-Origin" not in response.headers
            assert "Access-Control-Expose-Headers" not in response.headers


def test_app_expose_headers_are_merged():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Access-Control-Expose-Headers", "X-Score, ETag"),
                                  ("Access-Control-Allow-Origin", "https://ignored.example")])
        return [b"ok"]

    response = webtest.TestApp(Cors(app), lint=True).get("/", headers={"Origin": "https://a.example"})
    assert exposed(response) == ALWAYS + ["X-Score", "ETag"]
    assert response.headers.getall("Access-Control-Allow-Origin") == ["*"]


# --- Vary ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("app_vary, options, origin, expected", [
    pytest.param(None, {}, None, "Authorization", id="default"),
    pytest.param(None, {}, "https://a.example", "Authorization", id="default-with-origin"),
    pytest.param("Accept-Encoding", {}, None, "Accept-Encoding, Authorization", id="merged"),
    pytest.param("accept, authorization", {}, None, "accept, authorization", id="no-duplicate"),
    pytest.param("*", {}, None, "*", id="star-kept"),
    pytest.param(None, {"vary": ["Authorization", "Accept"]}, None, "Authorization, Accept", id="setting"),
    pytest.param(None, {"origins": ["https://a.example"]}, None, "Authorization, Origin", id="origin-list"),
    pytest.param(None, {"vary": []}, "https://a.example", None, id="no-vary"),
])
def test_vary(app_vary, options, origin, expected):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")] + ([("Vary", app_vary)] if app_vary else []))
        return [b"ok"]

    response = webtest.TestApp(Cors(app, **options), lint=True).get(
        "/", headers={"Origin": origin} if origin else {})
    assert response.headers.getall("Vary") == ([expected] if expected else [])


def test_request_without_origin_only_gets_vary(make):
    response = make().get("/v1/record")
    assert [name for name in response.headers if name.startswith("Access-Control")] == []
    assert response.headers["Vary"] == "Authorization"


# --- preflight -------------------------------------------------------------------------------------------------

# What each app announces for /v1/items (Flask's automatic OPTIONS, Bottle's 405 "GET,POST", the bare app's 405),
# in the standard order, with HEAD for GET and OPTIONS for the preflight itself.
ANNOUNCED = "GET,HEAD,POST,OPTIONS"


def preflight(client, path="/v1/items", method="GET", origin="https://a.example", request_headers=None, **kw):
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if request_headers:
        headers["Access-Control-Request-Headers"] = request_headers
    return client.options(path, headers=headers, **kw)


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "get"])
def test_preflight_allowed_method(make, method):
    response = preflight(make(), method=method)
    assert response.status_int == 200
    assert response.json == {}
    assert response.content_type == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == ANNOUNCED
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type, If-Match, If-None-Match"
    assert response.headers["Access-Control-Max-Age"] == "3600"
    assert response.headers["Vary"] == "Authorization"


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "PUT"])
def test_preflight_method_the_endpoint_lacks(make, method):
    response = preflight(make(), method=method, status=400)
    assert response.json == {
        "code": 400, "errno": 107, "error": "Invalid parameters",
        "message": "Access-Control-Request-Method in header: Method not allowed",
        "details": [{"location": "header", "name": "Access-Control-Request-Method",
                     "description": "Method not allowed"}]}
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_unknown_endpoint_is_the_app_404(make):
    response = preflight(make(), path="/v1/nowhere", status=404)
    assert response.json["errno"] == 111
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_disallowed_origin(make):
    response = preflight(make(origins=["https://a.example"]), origin="https://evil.example", status=400)
    assert response.json["message"] == "Origin in header: https://evil.example not allowed"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Authorization, Origin"


@pytest.mark.parametrize("asked, expected", [
    pytest.param(None, "Authorization, Content-Type, If-Match, If-None-Match", id="none-asked"),
    pytest.param("X-Custom, if-match", "Authorization, Content-Type, If-Match, If-None-Match, X-Custom",
                 id="asked-added-deduplicated"),
    pytest.param(" , Prefer ", "Authorization, Content-Type, If-Match, If-None-Match, Prefer", id="blanks"),
])
def test_preflight_allow_headers(make, asked, expected):
    response = preflight(make(), request_headers=asked)
    assert response.headers["Access-Control-Allow-Headers"] == expected


@pytest.mark.parametrize("max_age, expected", [(3600, "3600"), (60, "60"), (0, None), (None, None)])
def test_preflight_max_age(max_age, expected):
    response = preflight(webtest.TestApp(Cors(bare_app, max_age=max_age), lint=True))
    assert response.headers.get("Access-Control-Max-Age") == expected


def test_preflight_falls_back_to_standard_methods_when_the_app_does_not_tell():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"anything"]

    client = webtest.TestApp(Cors(app), lint=True)
    response = preflight(client, method="PATCH")
    assert response.headers["Access-Control-Allow-Methods"] == "GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS"
    preflight(client, method="TRACE", status=400)
    restricted = webtest.TestApp(Cors(app, methods=["PURGE", "GET"]), lint=True)
    preflight(restricted, method="POST", status=400)
    assert preflight(restricted).headers["Access-Control-Allow-Methods"] == "GET,HEAD,OPTIONS,PURGE"


def test_preflight_probe_is_a_plain_options_request():
    seen = []

    def app(environ, start_response):
        seen.append({key: environ.get(key) for key in ("REQUEST_METHOD", "PATH_INFO", "HTTP_ORIGIN",
                                                       "HTTP_ACCESS_CONTROL_REQUEST_METHOD")})
        environ["PATH_INFO"] = "/rewritten"  # an inner dispatcher must not change the outer request
        start_response("200 OK", [("Content-Type", "text/plain"), ("Allow", "GET")])
        return [b""]

    client = webtest.TestApp(Cors(app), lint=True)
    preflight(client, path="/v1/items")
    assert seen == [{"REQUEST_METHOD": "OPTIONS", "PATH_INFO": "/v1/items", "HTTP_ORIGIN": None,
                     "HTTP_ACCESS_CONTROL_REQUEST_METHOD": None}]


def test_options_without_request_method_is_not_a_preflight(make):
    response = make().options("/v1/items", headers={"Origin": "https://a.example"}, expect_errors=True)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Methods" not in response.headers


# --- streaming, close, switch ---------------------------------------------------------------------------------

def test_body_is_never_buffered_and_close_passes_through():
    body = Body()
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    environ = webtest.TestRequest.blank("/", headers={"Origin": "https://a.example"}).environ
    result = Cors(app)(environ, lambda status, headers, exc_info=None: seen.append(dict(headers)))
    assert body.produced == 0  # nothing read: headers only
    assert seen[0]["Access-Control-Allow-Origin"] == "*"
    assert next(iter(result)) == b"one" and body.produced == 1
    result.close()
    assert body.closed


def test_switched_off_changes_nothing():
    body = Body()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    middleware = Cors(app, origins=[], vary=[])
    assert not middleware.enabled
    seen = []
    environ = webtest.TestRequest.blank("/", headers={"Origin": "https://a.example"}).environ
    assert middleware(environ, lambda status, headers, exc_info=None: seen.append(headers)) is body
    assert seen == [[("Content-Type", "text/plain")]]


def test_no_origins_keeps_vary_only():
    client = webtest.TestApp(Cors(bare_app, origins=[]), lint=True)
    response = client.get("/v1/items", headers={"Origin": "https://a.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Authorization"
    response = preflight(client, status=405)  # not answered here: the app's own OPTIONS
    assert "Access-Control-Allow-Methods" not in response.headers


# --- configuration ---------------------------------------------------------------------------------------------

def test_from_settings():
    settings = load_settings({"cors_origins": "https://a.example  https://*.b.example", "cors_max_age_seconds": "",
                              "vary": "Authorization Accept-Language"}, environ={})
    client = webtest.TestApp(Cors.from_settings(bare_app, settings), lint=True)
    response = preflight(client, origin="https://x.b.example")
    assert response.headers["Access-Control-Allow-Origin"] == "https://x.b.example"
    assert "Access-Control-Max-Age" not in response.headers
    assert response.headers["Vary"] == "Authorization, Accept-Language, Origin"


def test_filter_factory():
    wrap = cors.filter_factory({}, cors_origins="https://a.example", cors_max_age_seconds="10")
    client = webtest.TestApp(wrap(bare_app), lint=True)
    assert preflight(client, origin="https://a.example").headers["Access-Control-Max-Age"] == "10"
    assert "Access-Control-Allow-Origin" not in client.get("/v1/items", headers={"Origin": "https://b.example"}).headers

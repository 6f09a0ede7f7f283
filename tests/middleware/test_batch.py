"""The batch middleware (PROTOCOL.md §8) around a bare WSGI app, a Flask app, a Bottle app, and all mixed."""
from __future__ import annotations

import base64
import io
import json
import logging
import threading
import uuid
from typing import Any, Callable, Dict, List

import bottle
import flask
import pytest
import webtest
import webtest.lint

from wsgicliquet import environ as keys
from wsgicliquet.errors import ERRORS, HTTPError
from wsgicliquet.logs import EVENT_ATTR, FIELDS_ATTR
from wsgicliquet.middleware.auth import Authentication, RemoteUser
from wsgicliquet.middleware.batch import Batch, filter_factory
from wsgicliquet.middleware.readonly import ReadOnly
from wsgicliquet.pipeline import build_pipeline, mount
from wsgicliquet.resource.app import ResourceApp
from wsgicliquet.resource.resource import Resource
from wsgicliquet.settings import ConfigurationError, load_settings
from wsgicliquet.storage.memory import Storage as MemoryStorage

# --- Tiny apps and stand-ins for the layers below the batch -------------------------------------------------------


def _json(start_response: Callable, status: str, data: Any, headers: List = ()) -> List[bytes]:
    body = json.dumps(data).encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                   + list(headers))
    return [body]


class EchoApp:
    """Answers what it received; a few paths misbehave on purpose.  Counts its calls."""

    def __init__(self) -> None:
        self.calls: List[str] = []

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> List[bytes]:
        path = environ["PATH_INFO"]
        self.calls.append(path)
        if path == "/boom":
            return _json(start_response, "500 Internal Server Error", {"code": 500, "errno": 999, "error": "x"})
        if path == "/unavailable":
            environ[keys.ERRNO] = 201
            return _json(start_response, "503 Service Unavailable", {"code": 503, "errno": 201, "error": "down"},
                         [("Retry-After", "30")])
        if path == "/crash":
            raise RuntimeError("crash")
        if path == "/forbidden":
            raise HTTPError(403, ERRORS.FORBIDDEN)
        if path == "/missing":
            return _json(start_response, "404 Not Found", {"code": 404, "errno": 111, "error": "Not Found"})
        if path == "/moved":
            start_response("307 Temporary Redirect", [("Location", "http://localhost/v1/echo?from=moved"),
                                                      ("Content-Length", "0")])
            return [b""]
        if path == "/loop":
            start_response("302 Found", [("Location", "/v1/loop"), ("Content-Length", "0")])
            return [b""]
        if path == "/elsewhere":
            start_response("302 Found", [("Location", "https://example.com/v1/echo"), ("Content-Length", "0")])
            return [b""]
        if path == "/text":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return [b"hello"]
        if path == "/nan":
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "13")])
            return [b'{"n": NaN}   ']
        if path == "/empty":
            start_response("204 No Content", [])
            return []
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        return _json(start_response, "200 OK", {
            "method": environ["REQUEST_METHOD"],
            "script_name": environ.get("SCRIPT_NAME"),
            "path_info": path,
            "query": environ.get("QUERY_STRING"),
            "content_type": environ.get("CONTENT_TYPE"),
            "authorization": environ.get("HTTP_AUTHORIZATION"),
            "x_custom": environ.get("HTTP_X_CUSTOM"),
            "host": environ.get("HTTP_HOST"),
            "scheme": environ["wsgi.url_scheme"],
            "userid": environ.get(keys.USERID),
            "body": json.loads(raw) if raw else None,
        }, [("ETag", '"42"')])


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()


class StandInAuth:
    """Sets the user id from a Basic Authorization header, as the authentication middleware does."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Any:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.startswith("Basic "):
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
            environ[keys.USERID] = f"basicauth:{user}"
        return self.app(environ, start_response)


class StandInReadOnly:
    """Refuses writes with 405 errno 115, as the read-only middleware does."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Any:
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD", "OPTIONS"):
            return HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, headers=[("Allow", "GET, HEAD, OPTIONS")])(
                environ, start_response)
        return self.app(environ, start_response)


class Recorder:
    """Outermost layer: keeps the batch request's environ, as the request log would read it."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.environ: Dict[str, Any] = {}

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Any:
        self.environ = environ
        return self.app(environ, start_response)


def client(app: Callable, **options: Any) -> webtest.TestApp:
    """The batch under a ``/v1`` mount: ``SCRIPT_NAME=/v1``, ``PATH_INFO=/batch`` as behind the version prefix.

    The app below is checked by the WSGI validator too, so every sub-request must be a valid WSGI call.
    """
    return webtest.TestApp(mount({"/v1": Batch(webtest.lint.middleware(app), **options)}), lint=True)


@pytest.fixture
def echo() -> EchoApp:
    return EchoApp()


@pytest.fixture
def api(echo: EchoApp) -> webtest.TestApp:
    return client(echo)


def batch(api: webtest.TestApp, payload: Any, status: int = 200, **kwargs: Any) -> Any:
    return api.post_json("/v1/batch", payload, status=status, **kwargs).json


# --- Routing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/echo", "/v1/batch/", "/v1/things/batch", "/v1/batchx"])
def test_other_paths_pass_through_untouched(api, echo, path):
    response = api.post_json(path, {"requests": []}, extra_environ={"HTTP_X_CUSTOM": "kept"})
    assert echo.calls == [path[3:]]
    assert response.json["body"] == {"requests": []}
    assert response.json["x_custom"] == "kept"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD"])
def test_only_post_on_batch(api, echo, method):
    response = api.request("/v1/batch", method=method, expect_errors=True)
    assert response.status_int == 405
    assert response.headers["Allow"] == "POST, OPTIONS"
    if method != "HEAD":
        assert response.json["errno"] == ERRORS.METHOD_NOT_ALLOWED
    assert echo.calls == []


def test_options_on_batch_tells_its_methods(api, echo):
    response = api.request("/v1/batch", method="OPTIONS", status=200)
    assert response.headers["Allow"] == "POST, OPTIONS" and response.body == b""
    assert echo.calls == []


# --- Request format and response ----------------------------------------------------------------------------------


def test_responses_in_request_order_with_status_path_headers_body(api, echo):
    result = batch(api, {"requests": [
        {"path": "/echo"},
        {"method": "PUT", "path": "/v1/records/1", "body": {"data": {"a": 1}}},
        {"method": "DELETE", "path": "/records/2"},
    ]})
    first, second, third = result["responses"]
    assert [entry["path"] for entry in result["responses"]] == ["/v1/echo", "/v1/records/1", "/v1/records/2"]
    assert [entry["status"] for entry in result["responses"]] == [200, 200, 200]
    assert first["headers"]["ETag"] == '"42"'
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["body"]["method"] == "GET" and first["body"]["body"] is None
    assert second["body"]["method"] == "PUT" and second["body"]["body"] == {"data": {"a": 1}}
    assert second["body"]["content_type"] == "application/json; charset=utf-8"
    assert third["body"]["method"] == "DELETE"
    assert echo.calls == ["/echo", "/records/1", "/records/2"]


def test_empty_batch(api, echo):
    assert batch(api, {"requests": []}) == {"responses": []}
    assert echo.calls == []


@pytest.mark.parametrize("path, script_name, path_info, served", [
    pytest.param("/echo", "/v1", "/echo", "/v1/echo", id="without-prefix"),
    pytest.param("/v1/echo", "/v1", "/echo", "/v1/echo", id="with-prefix"),
    pytest.param("/v1", "/v1", "", "/v1", id="prefix-alone"),
    pytest.param("/v1/", "/v1", "/", "/v1/", id="prefix-slash"),
    pytest.param("/v10/echo", "/v1", "/v10/echo", "/v1/v10/echo", id="other-prefix-is-a-path"),
    pytest.param("/caf%C3%A9", "/v1", "/caf\xc3\xa9", "/v1/café", id="percent-encoded"),
    pytest.param("/café/ü", "/v1", "/caf\xc3\xa9/\xc3\xbc", "/v1/café/ü", id="non-ascii"),
    pytest.param("/a%20b", "/v1", "/a b", "/v1/a b", id="space"),
])
def test_paths(api, path, script_name, path_info, served):
    entry = batch(api, {"requests": [{"path": path}]})["responses"][0]
    assert entry["path"] == served
    assert entry["body"]["script_name"] == script_name
    assert entry["body"]["path_info"] == path_info


@pytest.mark.parametrize("path, query", [
    pytest.param("/echo?_limit=2&_sort=-title", "_limit=2&_sort=-title", id="kept"),
    pytest.param("/echo?title=a b", "title=a%20b", id="space-encoded"),
    pytest.param("/echo?title=café", "title=caf%C3%A9", id="non-ascii-encoded"),
    pytest.param("/echo?title=caf%C3%A9", "title=caf%C3%A9", id="already-encoded"),
    pytest.param("/echo?", "", id="empty"),
])
def test_query_string_kept_and_not_in_the_path(api, path, query):
    entry = batch(api, {"requests": [{"path": path}]})["responses"][0]
    assert entry["body"]["query"] == query
    assert entry["path"] == "/v1/echo"


def test_query_string_reaches_a_framework():
    app = flask.Flask(__name__)

    @app.get("/search")
    def search():
        return {"title": flask.request.args["title"], "limit": flask.request.args.get("_limit", type=int)}

    entry = batch(client(app), {"requests": [{"path": "/search?title=café&_limit=2"}]})["responses"][0]
    assert entry["body"] == {"title": "café", "limit": 2}


@pytest.mark.parametrize("defaults, request_, method, headers, body", [
    pytest.param({"method": "POST"}, {"path": "/echo"}, "POST", {}, None, id="method-added"),
    pytest.param({"method": "POST"}, {"path": "/echo", "method": "PUT"}, "PUT", {}, None, id="method-kept"),
    pytest.param({"path": "/echo"}, {}, "GET", {}, None, id="path-from-defaults"),
    pytest.param({"headers": {"X-Custom": "default"}}, {"path": "/echo"}, "GET", {"x_custom": "default"}, None,
                 id="header-added"),
    pytest.param({"headers": {"X-Custom": "default"}}, {"path": "/echo", "headers": {"X-Custom": "mine"}}, "GET",
                 {"x_custom": "mine"}, None, id="header-kept"),
    pytest.param({"headers": {"X-Custom": "default"}},
                 {"path": "/echo", "headers": {"Authorization": "Basic x"}}, "GET",
                 {"x_custom": "default", "authorization": "Basic x"}, None, id="headers-merged-key-by-key"),
    pytest.param({"headers": {"Authorization": "Basic default", "x-custom": "default"}},
                 {"path": "/echo", "headers": {"authorization": "Basic mine", "X-CUSTOM": "mine"}}, "GET",
                 {"authorization": "Basic mine", "x_custom": "mine"}, None, id="header-names-without-case"),
    pytest.param({"body": {"headers": {"A": 1}}}, {"path": "/echo", "body": {"headers": {"a": 2}}}, "GET", {},
                 {"headers": {"A": 1, "a": 2}}, id="body-keys-with-case"),
    pytest.param({"body": {"data": {"a": 1, "b": 2}}}, {"path": "/echo", "body": {"data": {"b": 3, "c": 4}}},
                 "GET", {}, {"data": {"a": 1, "b": 3, "c": 4}}, id="body-merged-deeply"),
    pytest.param({"body": {"data": {"a": 1}, "permissions": {"read": ["x"]}}}, {"path": "/echo"}, "GET", {},
                 {"data": {"a": 1}, "permissions": {"read": ["x"]}}, id="body-added"),
    pytest.param({"body": {"data": {"tags": ["a"]}}}, {"path": "/echo", "body": {"data": {"tags": ["b"]}}},
                 "GET", {}, {"data": {"tags": ["b"]}}, id="lists-not-merged"),
    pytest.param({"path": "/other", "unknown": 1}, {"path": "/echo", "other": 2}, "GET", {}, None,
                 id="unknown-attributes-dropped"),
])
def test_defaults_merged_deeply_without_overriding(api, defaults, request_, method, headers, body):
    entry = batch(api, {"defaults": defaults, "requests": [request_], "extra": True})["responses"][0]
    assert entry["path"] == "/v1/echo"
    assert entry["body"]["method"] == method
    for name, value in headers.items():
        assert entry["body"][name] == value
    assert entry["body"]["body"] == body


def test_defaults_apply_to_every_request(api, echo):
    result = batch(api, {"defaults": {"method": "PATCH", "path": "/echo", "body": {"data": {"x": 1}}},
                         "requests": [{}, {"path": "/other"}, {"body": {"data": {"y": 2}}}]})
    assert echo.calls == ["/echo", "/other", "/echo"]
    assert [entry["body"]["body"] for entry in result["responses"]] == [
        {"data": {"x": 1}}, {"data": {"x": 1}}, {"data": {"x": 1, "y": 2}}]
    assert {entry["body"]["method"] for entry in result["responses"]} == {"PATCH"}


# --- Validation: 400 errno 107 and nothing runs -------------------------------------------------------------------

NOT_MAPPING = "is not a mapping type: Does not implement dict-like functionality."
ALLOWED = "GET, HEAD, DELETE, TRACE, POST, PUT, PATCH"

VALIDATION = [
    pytest.param({}, "requests is missing", [("requests", "requests is missing")], id="requests-missing"),
    pytest.param({"requests": None}, "requests is missing", [("requests", "requests is missing")],
                 id="requests-null"),
    pytest.param({"requests": "abc"}, 'requests in body: "abc" is not iterable',
                 [("requests", '"abc" is not iterable')], id="requests-string"),
    pytest.param({"requests": {"path": "/x"}}, "requests in body: \"{'path': '/x'}\" is not iterable",
                 [("requests", "\"{'path': '/x'}\" is not iterable")], id="requests-object"),
    pytest.param([], f'body: "[]" {NOT_MAPPING}', [(None, f'"[]" {NOT_MAPPING}')], id="body-list"),
    pytest.param("requests", f'body: "requests" {NOT_MAPPING}', [(None, f'"requests" {NOT_MAPPING}')],
                 id="body-string"),
    pytest.param(3, f'body: "3" {NOT_MAPPING}', [(None, f'"3" {NOT_MAPPING}')], id="body-number"),
    pytest.param({"requests": ["abc"]}, f'requests.0 in body: "abc" {NOT_MAPPING}',
                 [("requests.0", f'"abc" {NOT_MAPPING}')], id="request-string"),
    pytest.param({"requests": [{"path": "/ok"}, 7]}, f'requests.1 in body: "7" {NOT_MAPPING}',
                 [("requests.1", f'"7" {NOT_MAPPING}')], id="second-request-number"),
    pytest.param({"requests": [{}]}, "requests.0.path is missing", [("requests.0.path", "requests.0.path is missing")],
                 id="path-missing"),
    pytest.param({"requests": [{"path": "bookmarks"}]},
                 "requests.0.path in body: String does not match expected pattern",
                 [("requests.0.path", "String does not match expected pattern")], id="path-relative"),
    pytest.param({"requests": [{"path": ""}]}, "requests.0.path in body: String does not match expected pattern",
                 [("requests.0.path", "String does not match expected pattern")], id="path-empty"),
    pytest.param({"requests": [{"path": 12}]}, 'requests.0.path in body: "12" is not a string',
                 [("requests.0.path", '"12" is not a string')], id="path-number"),
    pytest.param({"requests": [{"path": "/x", "method": "get"}]},
                 f'requests.0.method in body: "get" is not one of {ALLOWED}',
                 [("requests.0.method", f'"get" is not one of {ALLOWED}')], id="method-lower-case"),
    pytest.param({"requests": [{"path": "/x", "method": "OPTIONS"}]},
                 f'requests.0.method in body: "OPTIONS" is not one of {ALLOWED}',
                 [("requests.0.method", f'"OPTIONS" is not one of {ALLOWED}')], id="method-unknown"),
    pytest.param({"requests": [{"path": "/x", "method": 1}]},
                 f'requests.0.method in body: "1" is not one of {ALLOWED}',
                 [("requests.0.method", f'"1" is not one of {ALLOWED}')], id="method-number"),
    pytest.param({"requests": [{"path": "/x", "headers": {"A": 1}}]},
                 "requests.0.headers in body: {'A': 1} contains non string value",
                 [("requests.0.headers", "{'A': 1} contains non string value")], id="header-value-number"),
    pytest.param({"requests": [{"path": "/x", "headers": {"A": None}}]},
                 "requests.0.headers in body: {'A': None} contains non string value",
                 [("requests.0.headers", "{'A': None} contains non string value")], id="header-value-null"),
    pytest.param({"requests": [{"path": "/x", "headers": ["A"]}]},
                 f"requests.0.headers in body: \"['A']\" {NOT_MAPPING}",
                 [("requests.0.headers", f"\"['A']\" {NOT_MAPPING}")], id="headers-list"),
    pytest.param({"requests": [{"path": "/x", "body": "text"}]},
                 f'requests.0.body in body: "text" {NOT_MAPPING}',
                 [("requests.0.body", f'"text" {NOT_MAPPING}')], id="body-string-in-request"),
    pytest.param({"requests": [{"path": "/x", "body": [1]}]}, f'requests.0.body in body: "[1]" {NOT_MAPPING}',
                 [("requests.0.body", f'"[1]" {NOT_MAPPING}')], id="body-list-in-request"),
    pytest.param({"defaults": "x", "requests": [{"path": "/x"}]}, f'defaults in body: "x" {NOT_MAPPING}',
                 [("defaults", f'"x" {NOT_MAPPING}')], id="defaults-string"),
    pytest.param({"defaults": {"method": "put"}, "requests": [{"path": "/x", "method": "GET"}]},
                 f'defaults.method in body: "put" is not one of {ALLOWED}',
                 [("defaults.method", f'"put" is not one of {ALLOWED}')], id="defaults-method"),
    pytest.param({"defaults": {"path": "x"}, "requests": [{"path": "/x"}]},
                 "defaults.path in body: String does not match expected pattern",
                 [("defaults.path", "String does not match expected pattern")], id="defaults-path"),
    pytest.param({"defaults": {"method": "post"}, "requests": [{"path": "/x"}]},
                 f'defaults.method in body: "post" is not one of {ALLOWED}',
                 [("defaults.method", f'"post" is not one of {ALLOWED}'),
                  ("requests.0.method", f'"post" is not one of {ALLOWED}')], id="bad-default-merged-in"),
    pytest.param({"requests": [{"path": "x", "method": "get"}, {"path": "/x", "body": 1}]},
                 f'requests.0.method in body: "get" is not one of {ALLOWED}',
                 [("requests.0.path", "String does not match expected pattern"),
                  ("requests.0.method", f'"get" is not one of {ALLOWED}'),
                  ("requests.1.body", f'"1" {NOT_MAPPING}')], id="every-problem-listed"),
    pytest.param({"requests": [{"path": "/batch"}]},
                 "requests in body: Recursive call on /batch endpoint is forbidden.",
                 [("requests", "Recursive call on /batch endpoint is forbidden.")], id="recursion"),
    pytest.param({"requests": [{"path": "/echo"}, {"path": "/v1/batch?x=1"}]},
                 "requests in body: Recursive call on /batch endpoint is forbidden.",
                 [("requests", "Recursive call on /batch endpoint is forbidden.")], id="recursion-with-prefix"),
    pytest.param({"defaults": {"path": "/things/batch"}, "requests": [{}]},
                 "requests in body: Recursive call on /batch endpoint is forbidden.",
                 [("requests", "Recursive call on /batch endpoint is forbidden.")], id="recursion-anywhere"),
    pytest.param({"requests": [{"path": "/x"}] * 26}, "Number of requests is limited to 25",
                 [("requests", "Number of requests is limited to 25")], id="too-many"),
    pytest.param({"requests": [{"path": "/x"}] * 10_000}, "Number of requests is limited to 25",
                 [("requests", "Number of requests is limited to 25")], id="ten-thousand"),
]


@pytest.mark.parametrize("payload, message, details", VALIDATION)
def test_validation_errors(api, echo, payload, message, details):
    error = batch(api, payload, status=400)
    assert error["code"] == 400
    assert error["errno"] == ERRORS.INVALID_PARAMETERS
    assert error["error"] == "Invalid parameters"
    assert error["message"] == message
    assert [(item["name"], item["description"]) for item in error["details"]] == details
    assert {item["location"] for item in error["details"]} == {"body"}
    assert echo.calls == []


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"requests", id="word"),
    pytest.param(b'{"requests": [NaN]}', id="nan"),
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b"[" * 100_000, id="deeply-nested"),
])
def test_body_not_json(api, echo, body):
    error = api.post("/v1/batch", body, content_type="application/json", status=400).json
    assert error["errno"] == ERRORS.INVALID_PARAMETERS
    assert error["message"].startswith("body: Invalid JSON request body: ")
    assert error["details"][0]["name"] is None
    assert error["details"][1] == {"location": "body", "name": "requests", "description": "requests is missing"}
    assert echo.calls == []


def nested(depth: int) -> Dict[str, Any]:
    value: Dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_nested_bodies_merged_deeply(api):
    payload = {"defaults": {"body": nested(200)}, "requests": [{"path": "/echo", "body": nested(200)}]}
    assert batch(api, payload)["responses"][0]["body"]["body"] == nested(200)


@pytest.mark.parametrize("depth", [900, 990, 1100, 5000])
def test_bodies_nested_near_the_recursion_limit_never_crash(api, echo, depth):
    body = '{"a": ' * depth + "{}" + "}" * depth
    payload = f'{{"defaults": {{"body": {body}}}, "requests": [{{"path": "/echo", "body": {body}}}]}}'
    response = api.post("/v1/batch", payload, content_type="application/json", expect_errors=True)
    assert response.status_int in (200, 400)
    if response.status_int == 400:
        assert response.json["errno"] == ERRORS.INVALID_PARAMETERS
        assert echo.calls == []


def test_long_values_are_shortened_in_messages(api):
    error = batch(api, {"requests": "x" * 100_000}, status=400)
    assert len(error["message"]) < 200


@pytest.mark.parametrize("options, count, status", [
    pytest.param({}, 25, 200, id="default-25"),
    pytest.param({"max_requests": 2}, 2, 200, id="custom-limit"),
    pytest.param({"max_requests": 2}, 3, 400, id="over-custom-limit"),
    pytest.param({"max_requests": None}, 100, 200, id="unlimited"),
])
def test_max_requests(echo, options, count, status):
    result = batch(client(echo, **options), {"requests": [{"path": "/echo"}] * count}, status=status)
    if status == 200:
        assert len(result["responses"]) == count == len(echo.calls)
    else:
        assert result["message"] == f"Number of requests is limited to {options['max_requests']}"
        assert echo.calls == []


# --- Body size: 413 errno 113 -------------------------------------------------------------------------------------


class Unreadable(io.RawIOBase):
    """A request body that must not be read."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read")


class Endless(io.RawIOBase):
    """A chunked request body that never ends; counts what was read."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        size = 65536 if size is None or size < 0 else size
        self.read_bytes += size
        return b" " * size


def call(app: Callable, environ: Dict[str, Any]) -> Any:
    captured: List[Any] = []
    environ = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/v1", "PATH_INFO": "/batch", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "CONTENT_TYPE": "application/json", **environ}
    body = b"".join(app(environ, lambda status, headers, exc_info=None: captured.extend([status, headers])))
    return int(captured[0].split()[0]), dict(captured[1]), json.loads(body)


def test_content_length_over_the_limit_refused_before_reading(echo):
    status, _, error = call(Batch(echo), {"CONTENT_LENGTH": str(50 * 1024 * 1024), "wsgi.input": Unreadable()})
    assert status == 413
    assert error["errno"] == ERRORS.REQUEST_TOO_LARGE
    assert echo.calls == []


def test_chunked_body_over_the_limit_refused_while_reading(echo):
    stream = Endless()
    status, _, error = call(Batch(echo, max_body_size=1000),
                            {"wsgi.input": stream, "wsgi.input_terminated": True})
    assert (status, error["errno"]) == (413, ERRORS.REQUEST_TOO_LARGE)
    assert stream.read_bytes <= 1001
    assert echo.calls == []


def test_chunked_body_under_the_limit_is_read(echo):
    payload = json.dumps({"requests": [{"path": "/echo"}]}).encode()
    status, _, result = call(Batch(echo), {"wsgi.input": io.BytesIO(payload), "wsgi.input_terminated": True})
    assert status == 200 and result["responses"][0]["status"] == 200


def test_fifty_megabytes_body(api, echo):
    body = b'{"requests": [], "padding": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    error = api.post("/v1/batch", body, content_type="application/json", status=413).json
    assert error["errno"] == ERRORS.REQUEST_TOO_LARGE
    assert echo.calls == []


def test_body_at_the_limit_accepted(echo):
    payload = json.dumps({"requests": [{"path": "/echo"}]}).encode()
    api = client(echo, max_body_size=len(payload))
    assert batch(api, {"requests": [{"path": "/echo"}]})["responses"][0]["status"] == 200
    client(echo, max_body_size=len(payload) - 1).post_json("/v1/batch", {"requests": [{"path": "/echo"}]},
                                                           status=413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/jsonp", ""])
def test_body_not_declared_as_json_is_415_and_runs_nothing(echo, content_type):
    """A page on another site may POST ``text/plain`` or a form here without a preflight, and the browser adds
    the Basic credentials it remembers for this site: such a body must not run the writes it spells (CSRF)."""
    body = json.dumps({"requests": [{"method": "DELETE", "path": "/echo"}], "x": "="}).encode()
    environ = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    status, _, error = call(Batch(echo), environ)
    assert (status, error["errno"]) == (415, ERRORS.INVALID_PARAMETERS)
    assert error["details"] == [{"location": "header", "name": "Content-Type",
                                 "description": "Content-Type header should be one of ['application/json']"}]
    assert echo.calls == []


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8"])
def test_json_content_types_are_accepted(echo, content_type):
    body = json.dumps({"requests": [{"path": "/echo"}]}).encode()
    status, _, result = call(Batch(echo), {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
                                           "wsgi.input": io.BytesIO(body)})
    assert status == 200 and result["responses"][0]["status"] == 200


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_bad_content_length(echo, length):
    status, _, error = call(Batch(echo), {"CONTENT_LENGTH": length, "wsgi.input": Unreadable()})
    assert (status, error["errno"]) == (400, ERRORS.INVALID_PARAMETERS)
    assert error["details"][0]["name"] == "Content-Length"


# --- Sub-requests inherit the batch request -----------------------------------------------------------------------


def test_sub_requests_inherit_headers_host_scheme_and_script_name(api):
    result = batch(api, {"requests": [
        {"path": "/echo"},
        {"path": "/echo", "headers": {"Authorization": basic("bob"), "X-Custom": "mine"}},
    ]}, headers={"Authorization": basic("alice"), "X-Custom": "batch", "Host": "api.example.com"},
        extra_environ={"wsgi.url_scheme": "https"})
    inherited, overridden = (entry["body"] for entry in result["responses"])
    assert inherited["authorization"] == basic("alice")
    assert inherited["x_custom"] == "batch"
    assert inherited["host"] == "api.example.com"
    assert inherited["scheme"] == "https"
    assert inherited["script_name"] == "/v1"
    assert inherited["content_type"] is None  # the batch's own Content-Type belongs to its body
    assert overridden["authorization"] == basic("bob")
    assert overridden["x_custom"] == "mine"


def test_body_is_json_with_forced_content_type(api):
    entry = batch(api, {"requests": [{"method": "POST", "path": "/echo", "body": {"data": {"title": "é"}},
                                      "headers": {"Content-Type": "text/plain", "Content-Length": "1"}}]}
                  )["responses"][0]
    assert entry["body"]["content_type"] == "application/json; charset=utf-8"
    assert entry["body"]["body"] == {"data": {"title": "é"}}


def test_each_sub_request_authenticated_alone(echo):
    api = client(StandInAuth(echo))
    result = batch(api, {"requests": [
        {"path": "/echo"},
        {"path": "/echo", "headers": {"Authorization": basic("bob")}},
        {"path": "/echo", "headers": {"Authorization": basic("carol")}},
        {"path": "/echo", "headers": {"Authorization": ""}},
    ]}, headers={"Authorization": basic("alice")})
    assert [entry["body"]["userid"] for entry in result["responses"]] == [
        "basicauth:alice", "basicauth:bob", "basicauth:carol", None]


def test_sub_request_authorization_wins_over_defaults_whatever_its_case(echo):
    """Header names have no case: a sub-request's own ``authorization`` must not run as the defaults' user."""
    api = client(StandInAuth(echo))
    result = batch(api, {"defaults": {"headers": {"Authorization": basic("alice")}}, "requests": [
        {"path": "/echo"},
        {"path": "/echo", "headers": {"authorization": basic("bob")}},
        {"path": "/echo", "headers": {"AUTHORIZATION": basic("carol")}},
    ]})
    assert [entry["body"]["userid"] for entry in result["responses"]] == [
        "basicauth:alice", "basicauth:bob", "basicauth:carol"]


def test_batch_environ_user_not_inherited(echo):
    def upstream(environ, start_response):
        environ[keys.USERID] = "basicauth:outer"
        return Batch(echo)(environ, start_response)

    api = webtest.TestApp(mount({"/v1": upstream}), lint=True)
    entry = batch(api, {"requests": [{"path": "/echo"}]})["responses"][0]
    assert entry["body"]["userid"] is None


def test_read_only_mode_write_sub_requests_get_405(echo):
    api = client(StandInReadOnly(echo))
    result = batch(api, {"requests": [
        {"path": "/echo"},
        {"method": "POST", "path": "/echo", "body": {"data": {}}},
        {"method": "HEAD", "path": "/echo"},
        {"method": "DELETE", "path": "/echo"},
    ]})
    assert [entry["status"] for entry in result["responses"]] == [200, 405, 200, 405]
    assert result["responses"][1]["body"]["errno"] == ERRORS.METHOD_NOT_ALLOWED
    assert result["responses"][1]["headers"]["Allow"] == "GET, HEAD, OPTIONS"
    assert echo.calls == ["/echo", "/echo"]


# --- Redirects ----------------------------------------------------------------------------------------------------


def test_redirect_followed_once_resending_method_headers_and_body(api, echo):
    entry = batch(api, {"requests": [{"method": "PUT", "path": "/moved", "headers": {"X-Custom": "kept"},
                                      "body": {"data": {"a": 1}}}]})["responses"][0]
    assert entry["status"] == 200
    assert entry["path"] == "/v1/echo"
    assert entry["body"]["method"] == "PUT"
    assert entry["body"]["query"] == "from=moved"
    assert entry["body"]["x_custom"] == "kept"
    assert entry["body"]["body"] == {"data": {"a": 1}}
    assert echo.calls == ["/moved", "/echo"]


def test_redirect_loop_followed_only_once(api, echo):
    entry = batch(api, {"requests": [{"path": "/loop"}]})["responses"][0]
    assert entry["status"] == 302
    assert entry["headers"]["Location"] == "/v1/loop"
    assert echo.calls == ["/loop", "/loop"]


def test_redirect_to_another_host_not_followed(api, echo):
    entry = batch(api, {"requests": [{"path": "/elsewhere"}]})["responses"][0]
    assert entry["status"] == 302
    assert echo.calls == ["/elsewhere"]


def test_trailing_slash_redirect_of_a_framework_followed():
    app = flask.Flask(__name__)

    @app.post("/scores/")
    def create():
        return {"created": flask.request.get_json()}, 201

    entry = batch(client(app), {"requests": [{"method": "POST", "path": "/scores", "body": {"n": 1}}]}
                  )["responses"][0]
    assert entry["status"] == 201
    assert entry["path"] == "/v1/scores/"
    assert entry["body"] == {"created": {"n": 1}}


def strict_slashes(environ: Dict[str, Any], start_response: Callable) -> List[bytes]:
    """A 404 for any path ending with a slash, as the resource app does."""
    path = environ["PATH_INFO"]
    if path.endswith("/"):
        return _json(start_response, "404 Not Found", {"code": 404, "errno": 111, "error": "Not Found"})
    return _json(start_response, "200 OK", {"method": environ["REQUEST_METHOD"], "path_info": path,
                                            "query": environ["QUERY_STRING"]})


@pytest.mark.parametrize("path, served, path_info, query", [
    pytest.param("/records/", "/v1/records", "/records", "", id="slash"),
    pytest.param("/v1/records//?_limit=2", "/v1/records", "/records", "_limit=2", id="slashes-and-query"),
    pytest.param("/café/", "/v1/café", "/caf\xc3\xa9", "", id="non-ascii"),
    pytest.param("/a%25b/", "/v1/a%b", "/a%b", "", id="percent"),
])
def test_trailing_slash_404_retried_without_the_slash(path, served, path_info, query):
    api = client(strict_slashes, trailing_slash_redirect=True)
    entry = batch(api, {"requests": [{"method": "DELETE", "path": path}]})["responses"][0]
    assert entry["status"] == 200
    assert entry["path"] == served
    assert entry["body"] == {"method": "DELETE", "path_info": path_info, "query": query}


@pytest.mark.parametrize("options, path", [
    pytest.param({}, "/records/", id="off-by-default"),
    pytest.param({"trailing_slash_redirect": True}, "/", id="root"),
    pytest.param({"trailing_slash_redirect": True}, "/v1/", id="prefix-root"),
])
def test_trailing_slash_404_kept(options, path):
    entry = batch(client(strict_slashes, **options), {"requests": [{"path": path}]})["responses"][0]
    assert entry["status"] == 404


# --- Sub-response bodies and errors -------------------------------------------------------------------------------


def test_non_json_head_and_empty_bodies(api):
    result = batch(api, {"requests": [{"path": "/text"}, {"method": "HEAD", "path": "/echo"}, {"path": "/empty"}]})
    text, head, empty = result["responses"]
    assert (text["status"], text["body"]) == (200, "hello")
    assert (head["status"], head["body"]) == (200, "")
    assert head["headers"]["ETag"] == '"42"'
    assert (empty["status"], empty["body"]) == (204, "")


def test_invalid_json_constants_kept_as_text(api):
    entry = batch(api, {"requests": [{"path": "/nan"}]})["responses"][0]
    assert entry["body"] == '{"n": NaN}   '


def test_4xx_embedded_and_batch_continues(api, echo):
    result = batch(api, {"requests": [{"path": "/missing"}, {"path": "/forbidden"}, {"path": "/echo"}]})
    missing, forbidden, ok = result["responses"]
    assert (missing["status"], missing["body"]["errno"]) == (404, 111)
    assert (forbidden["status"], forbidden["body"]["errno"]) == (403, ERRORS.FORBIDDEN)
    assert forbidden["path"] == "/v1/forbidden"
    assert ok["status"] == 200
    assert echo.calls == ["/missing", "/forbidden", "/echo"]


@pytest.mark.parametrize("path, status, errno", [
    pytest.param("/boom", 500, 999, id="500"),
    pytest.param("/unavailable", 503, 201, id="503"),
])
def test_5xx_aborts_the_batch_with_that_error(echo, path, status, errno):
    recorder = Recorder(mount({"/v1": Batch(echo)}))
    api = webtest.TestApp(recorder, lint=True)
    response = api.post_json("/v1/batch", {"requests": [{"path": "/echo"}, {"path": path}, {"path": "/echo"}]},
                             status=status)
    assert response.json["errno"] == errno
    assert echo.calls == ["/echo", path]
    if status == 503:
        assert response.headers["Retry-After"] == "30"
        assert recorder.environ[keys.ERRNO] == 201
    assert [item["status"] for item in recorder.environ[keys.SUBREQUESTS]] == [200, status]


def test_exception_propagates_to_the_layers_above(echo):
    recorder = Recorder(mount({"/v1": Batch(echo)}))
    with pytest.raises(RuntimeError, match="crash"):
        webtest.TestApp(recorder).post_json("/v1/batch", {"requests": [{"path": "/echo"}, {"path": "/crash"},
                                                                       {"path": "/echo"}]})
    assert echo.calls == ["/echo", "/crash"]
    assert [item["status"] for item in recorder.environ[keys.SUBREQUESTS]] == [200, 500]


# --- Visible to logging -------------------------------------------------------------------------------------------


def test_sub_requests_listed_for_logging(echo):
    recorder = Recorder(mount({"/v1": Batch(echo)}))
    api = webtest.TestApp(recorder, lint=True)
    api.post_json("/v1/batch", {"requests": [{"path": "/echo?a=1"}, {"method": "DELETE", "path": "/missing"}]},
                  extra_environ={keys.LOG_CONTEXT: {"existing": True}, keys.REQUEST_ID: "abc"})
    environ = recorder.environ
    assert environ[keys.VIEW] == "batch"
    assert environ[keys.LOG_CONTEXT] == {"existing": True, "batch_size": 2}
    first, second = environ[keys.SUBREQUESTS]
    assert (first["status"], second["status"]) == (200, 404)
    assert first["environ"]["PATH_INFO"] == "/echo" and first["environ"]["QUERY_STRING"] == "a=1"
    assert second["environ"]["REQUEST_METHOD"] == "DELETE"
    for item in (first, second):
        assert isinstance(item["duration"], float) and item["duration"] >= 0
        sub = item["environ"]
        assert sub[keys.PARENT_REQUEST] is environ
        assert sub[keys.REQUEST_ID] == "abc"
        assert sub[keys.LOG_CONTEXT] is not environ[keys.LOG_CONTEXT]
        assert keys.SUBREQUESTS not in sub
        assert keys.VIEW not in sub


def test_log_context_created_when_missing(echo):
    recorder = Recorder(mount({"/v1": Batch(echo)}))
    webtest.TestApp(recorder, lint=True).post_json("/v1/batch", {"requests": [{"path": "/echo"}] * 3})
    assert recorder.environ[keys.LOG_CONTEXT] == {"batch_size": 3}
    assert len(recorder.environ[keys.SUBREQUESTS]) == 3


def test_sub_request_log_fields_stay_on_the_sub_request():
    def app(environ, start_response):
        environ[keys.LOG_CONTEXT]["collection_id"] = "bookmark"
        environ[keys.VIEW] = "bookmark-collection"
        return _json(start_response, "200 OK", {})

    recorder = Recorder(mount({"/v1": Batch(app)}))
    webtest.TestApp(recorder, lint=True).post_json("/v1/batch", {"requests": [{"path": "/bookmarks"}]})
    assert recorder.environ[keys.LOG_CONTEXT] == {"batch_size": 1}
    assert recorder.environ[keys.VIEW] == "batch"
    sub = recorder.environ[keys.SUBREQUESTS][0]["environ"]
    assert sub[keys.LOG_CONTEXT] == {"collection_id": "bookmark"}
    assert sub[keys.VIEW] == "bookmark-collection"


# --- Flask, Bottle, and a mix -------------------------------------------------------------------------------------


def flask_app() -> flask.Flask:
    app = flask.Flask(__name__)
    scores: List[Dict[str, Any]] = []

    @app.get("/scores")
    def list_scores():
        return {"data": scores, "user": flask.request.environ.get(keys.USERID)}

    @app.post("/scores")
    def create_score():
        scores.append(flask.request.get_json())
        return {"data": scores[-1], "url": flask.request.url}, 201

    return app


def bottle_app() -> bottle.Bottle:
    app = bottle.Bottle()
    games: List[Dict[str, Any]] = []

    @app.get("/games")
    def list_games():
        return {"data": games, "user": bottle.request.environ.get(keys.USERID)}

    @app.post("/games")
    def create_game():
        games.append(bottle.request.json)
        bottle.response.status = 201
        return {"data": games[-1], "url": bottle.request.url}

    return app


@pytest.mark.parametrize("make_app, collection", [
    pytest.param(flask_app, "/scores", id="flask"),
    pytest.param(bottle_app, "/games", id="bottle"),
])
def test_framework_json_views_and_html_404(make_app, collection):
    api = client(StandInAuth(make_app()))
    result = batch(api, {"requests": [
        {"method": "POST", "path": collection, "body": {"points": 3}},
        {"method": "POST", "path": f"/v1{collection}", "body": {"points": 5}},
        {"path": collection, "headers": {"Authorization": basic("bob")}},
        {"path": "/nowhere"},
        {"method": "PATCH", "path": collection, "body": {}},
    ]}, headers={"Host": "api.example.com"})
    created, created_again, listed, missing, not_allowed = result["responses"]
    assert created["status"] == created_again["status"] == 201
    assert created["body"]["url"] == f"http://api.example.com/v1{collection}"
    assert created["headers"]["Content-Type"].startswith("application/json")
    assert listed["status"] == 200
    assert listed["body"] == {"data": [{"points": 3}, {"points": 5}], "user": "basicauth:bob"}
    assert missing["status"] == 404
    assert isinstance(missing["body"], str) and "<" in missing["body"]  # the framework's own HTML page
    assert missing["path"] == "/v1/nowhere"
    assert not_allowed["status"] == 405


def test_batch_mixing_a_flask_view_and_a_bare_app_view(echo):
    api = client(StandInAuth(mount({"/site": flask_app()}, default=echo)))
    result = batch(api, {"requests": [
        {"method": "POST", "path": "/site/scores", "body": {"points": 7}},
        {"method": "PUT", "path": "/records/1", "body": {"data": {"a": 1}}},
        {"path": "/v1/site/scores"},
        {"path": "/records/1", "headers": {"Authorization": basic("bob")}},
    ]}, headers={"Authorization": basic("alice")})
    created, put, listed, got = result["responses"]
    assert (created["status"], created["path"]) == (201, "/v1/site/scores")
    assert (put["status"], put["body"]["body"]) == (200, {"data": {"a": 1}})
    assert listed["body"] == {"data": [{"points": 7}], "user": "basicauth:alice"}
    assert (got["path"], got["body"]["userid"]) == ("/v1/records/1", "basicauth:bob")
    assert echo.calls == ["/records/1", "/records/1"]


def test_concurrent_batches_keep_their_own_state(echo):
    """One instance serves every thread: nothing of a request may live on it."""
    api = client(StandInAuth(echo))
    results: Dict[str, Any] = {}

    def run(user: str) -> None:
        results[user] = batch(api, {"requests": [{"path": f"/echo?user={user}&n={n}"} for n in range(20)]},
                              headers={"Authorization": basic(user)})

    threads = [threading.Thread(target=run, args=(f"user{index}",)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    for user, result in results.items():
        assert [entry["body"]["query"] for entry in result["responses"]] == [f"user={user}&n={n}" for n in range(20)]
        assert {entry["body"]["userid"] for entry in result["responses"]} == {f"basicauth:{user}"}


# --- Configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    pytest.param({"max_requests": 0}, id="zero-requests"),
    pytest.param({"max_requests": -1}, id="negative-requests"),
    pytest.param({"max_requests": "25"}, id="string-requests"),
    pytest.param({"max_body_size": 0}, id="zero-size"),
    pytest.param({"max_body_size": None}, id="no-size"),
])
def test_bad_configuration_fails_at_construction(echo, options):
    with pytest.raises(ConfigurationError, match="batch_max_"):
        Batch(echo, **options)


@pytest.mark.parametrize("given, max_requests", [
    pytest.param({}, 25, id="default"),
    pytest.param({"batch_max_requests": "3"}, 3, id="three"),
    pytest.param({"batch_max_requests": ""}, None, id="empty-unlimited"),
    pytest.param({"batch_max_requests": "0"}, None, id="zero-unlimited"),
])
def test_from_settings(echo, given, max_requests):
    middleware = Batch.from_settings(echo, load_settings({**given, "batch_max_body_size": "2048"}))
    assert middleware.max_requests == max_requests
    assert middleware.max_body_size == 2048
    assert middleware.trailing_slash_redirect is True


def test_trailing_slash_setting(echo):
    settings = load_settings({"trailing_slash_redirect_enabled": "false"})
    assert Batch.from_settings(echo, settings).trailing_slash_redirect is False


def test_paste_filter_factory(echo):
    middleware = filter_factory({"batch_max_requests": "2"}, batch_max_body_size="100")(echo)
    assert isinstance(middleware, Batch)
    assert (middleware.max_requests, middleware.max_body_size) == (2, 100)
    assert middleware.app is echo


# --- With the real layers below: authentication, read-only mode, the resource app, the request log --------------


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string", "minLength": 1}, "title": {"type": "string"}},
              "required": ["url"]}


def resource_stack(*, readonly: bool = False, fallback: Any = None) -> Callable:
    """Authentication above read-only mode above the resource app, as ``build_pipeline`` stacks them."""
    resources = ResourceApp([Bookmark], load_settings({}, environ={}), storage=MemoryStorage(), fallback=fallback)
    return Authentication(ReadOnly(resources, readonly=readonly), policies=["basicauth"],
                          userid_hmac_secret="batch-test-secret")


def test_records_created_and_read_in_one_batch_against_the_resource_app():
    api = client(resource_stack(), trailing_slash_redirect=True)
    result = batch(api, {"defaults": {"method": "POST", "path": "/bookmarks"}, "requests": [
        {"body": {"data": {"url": "https://a.example", "title": "a"}}},
        {"body": {"data": {"url": "https://b.example"}}},
        {"body": {"data": {"title": "no url"}}},
        {"method": "GET", "path": "/bookmarks?_sort=url"},
        {"method": "GET", "path": "/v1/bookmarks/"},
        {"method": "GET", "path": "/bookmarks/00000000-0000-0000-0000-000000000000"},
    ]}, headers={"Authorization": basic("alice")})
    created_a, created_b, invalid_record, listed, slashed, missing = result["responses"]
    assert (created_a["status"], created_b["status"]) == (201, 201)
    assert created_a["path"] == "/v1/bookmarks"
    assert created_a["body"]["data"]["title"] == "a"
    assert created_a["headers"]["ETag"] == f'"{created_a["body"]["data"]["last_modified"]}"'
    assert (invalid_record["status"], invalid_record["body"]["errno"]) == (400, ERRORS.INVALID_PARAMETERS)
    assert listed["status"] == 200
    assert [record["url"] for record in listed["body"]["data"]] == ["https://a.example", "https://b.example"]
    assert (slashed["status"], slashed["path"]) == (200, "/v1/bookmarks")
    assert len(slashed["body"]["data"]) == 2
    assert (missing["status"], missing["body"]["errno"]) == (404, ERRORS.INVALID_RESOURCE_ID)


def test_each_sub_request_authenticated_by_the_authentication_middleware():
    recorder = Recorder(mount({"/v1": Batch(webtest.lint.middleware(resource_stack()))}))
    api = webtest.TestApp(recorder, lint=True)
    result = batch(api, {"requests": [
        {"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "https://alice.example"}}},
        {"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "https://bob.example"}},
         "headers": {"Authorization": basic("bob")}},
        {"path": "/bookmarks"},
        {"path": "/bookmarks", "headers": {"Authorization": basic("bob")}},
        {"path": "/bookmarks", "headers": {"Authorization": ""}},
    ]}, headers={"Authorization": basic("alice")})
    _, _, alice_list, bob_list, anonymous = result["responses"]
    assert [record["url"] for record in alice_list["body"]["data"]] == ["https://alice.example"]
    assert [record["url"] for record in bob_list["body"]["data"]] == ["https://bob.example"]
    assert (anonymous["status"], anonymous["body"]["errno"]) == (401, ERRORS.MISSING_AUTH_TOKEN)
    users = [item["environ"].get(keys.USERID) for item in recorder.environ[keys.SUBREQUESTS]]
    assert users[0] == users[2] and users[1] == users[3] and users[0] != users[1]
    assert users[0].startswith("basicauth:") and users[4] is None
    assert keys.USERID not in recorder.environ  # the batch request itself is not authenticated


def test_sub_request_headers_cannot_forge_the_user_a_trusted_front_server_sets():
    """The front server sets ``X-User`` on the request it forwards; it never sees the sub-requests' headers, so
    a sub-request naming another user there must still run as the batch's user, not read that user's records."""
    resources = ResourceApp([Bookmark], load_settings({}, environ={}), storage=MemoryStorage())
    api = client(Authentication(resources, policies=[("remoteuser", RemoteUser("HTTP_X_USER"))]))
    api.post_json("/v1/bookmarks", {"data": {"url": "https://bob.example"}}, headers={"X-User": "bob"})
    result = batch(api, {"requests": [
        {"path": "/bookmarks", "headers": {"X-User": "bob"}},
        {"method": "DELETE", "path": "/bookmarks", "headers": {"x-user": "bob"}},
        {"path": "/bookmarks"},
    ]}, headers={"X-User": "alice"})
    forged_read, forged_delete, own = result["responses"]
    assert forged_read["body"]["data"] == [] and forged_delete["body"]["data"] == []
    assert own["body"]["data"] == []
    assert [r["url"] for r in api.get("/v1/bookmarks", headers={"X-User": "bob"}).json["data"]] == [
        "https://bob.example"]


def test_read_only_mode_batch_works_and_writes_get_405():
    api = client(resource_stack(readonly=True))
    result = batch(api, {"requests": [
        {"path": "/bookmarks"},
        {"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "https://a.example"}}},
        {"method": "PUT", "path": "/bookmarks/00000000-0000-0000-0000-000000000000",
         "body": {"data": {"url": "https://a.example"}}},
        {"method": "PATCH", "path": "/bookmarks/00000000-0000-0000-0000-000000000000", "body": {"data": {}}},
        {"method": "DELETE", "path": "/bookmarks"},
        {"method": "HEAD", "path": "/bookmarks"},
    ]}, headers={"Authorization": basic("alice")})
    statuses = [entry["status"] for entry in result["responses"]]
    assert statuses == [200, 405, 405, 405, 405, 200]
    for entry in result["responses"][1:5]:
        assert entry["body"]["errno"] == ERRORS.METHOD_NOT_ALLOWED
        assert entry["headers"]["Allow"] == "GET, HEAD, OPTIONS"
    assert result["responses"][0]["body"] == {"data": []}


def test_batch_mixing_the_resource_app_and_a_flask_view():
    api = client(resource_stack(fallback=flask_app()))
    result = batch(api, {"requests": [
        {"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "https://a.example"}}},
        {"method": "POST", "path": "/scores", "body": {"points": 3}},
        {"path": "/scores"},
    ]}, headers={"Authorization": basic("alice")})
    bookmark, score, scores = result["responses"]
    assert (bookmark["status"], score["status"]) == (201, 201)
    assert scores["body"]["data"] == [{"points": 3}]
    assert scores["body"]["user"].startswith("basicauth:")


def test_sub_requests_logged_by_the_request_log(caplog):
    settings = {"storage_url": "memory://", "cache_url": "memory://", "permission_url": "memory://",
                "userid_hmac_secret": "batch-test-secret"}
    resources = ResourceApp([Bookmark], load_settings(settings, environ={}), storage=MemoryStorage())
    api = webtest.TestApp(build_pipeline(resources, settings), lint=True)
    with caplog.at_level(logging.INFO, logger="request.summary"):
        batch(api, {"requests": [
            {"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "https://a.example"}}},
            {"path": "/bookmarks?_limit=1"},
            {"path": "/nowhere"},
        ]}, headers={"Authorization": basic("alice")})
    events = [(getattr(record, EVENT_ATTR), getattr(record, FIELDS_ATTR)) for record in caplog.records
              if hasattr(record, FIELDS_ATTR)]
    assert [name for name, _ in events] == ["subrequest.summary"] * 3 + ["request.summary"]
    subs, summary = [fields for _, fields in events[:3]], events[3][1]
    assert [(fields["method"], fields["path"], fields["code"]) for fields in subs] == [
        ("POST", "/v1/bookmarks", 201), ("GET", "/v1/bookmarks", 200), ("GET", "/v1/nowhere", 404)]
    assert subs[1]["querystring"] == {"_limit": "1"}
    assert subs[0]["uid"] and subs[0]["authn_type"] == "basicauth"
    assert subs[2]["errno"] == ERRORS.MISSING_RESOURCE
    assert (summary["path"], summary["code"], summary["batch_size"]) == ("/v1/batch", 200, 3)
    assert summary["uid"] is None


@pytest.mark.postgresql
def test_batch_is_one_postgresql_transaction_rolled_back_on_5xx(postgresql_url):
    """With the transaction middleware above, a 5xx sub-response undoes the whole batch; a 4xx undoes nothing."""
    from wsgicliquet.middleware.transaction import Transaction
    from wsgicliquet.storage.postgresql import Storage as PostgreSQLStorage

    storage = PostgreSQLStorage.from_settings({"storage_url": postgresql_url, "storage_pool_size": 2})
    storage.initialize_schema()  # whichever test runs first, the shared database is at this release's schema
    resources = ResourceApp([Bookmark], load_settings({}, environ={}), storage=storage, fallback=EchoApp())
    stack = Authentication(resources, policies=["basicauth"], userid_hmac_secret="batch-test-secret")
    api = webtest.TestApp(mount({"/v1": Transaction(Batch(stack), storage=storage)}), lint=True)
    auth = {"Authorization": basic(f"user-{uuid.uuid4().hex}")}
    create = {"method": "POST", "path": "/bookmarks", "body": {"data": {"url": "https://a.example"}}}

    api.post_json("/v1/batch", {"requests": [create, {"path": "/boom"}]}, headers=auth, status=500)
    assert batch(api, {"requests": [{"path": "/bookmarks"}]}, headers=auth)["responses"][0]["body"]["data"] == []

    result = batch(api, {"requests": [create, {"path": "/missing"}]}, headers=auth)
    assert [entry["status"] for entry in result["responses"]] == [201, 404]
    listed = batch(api, {"requests": [{"path": "/bookmarks"}]}, headers=auth)["responses"][0]["body"]["data"]
    assert [record["url"] for record in listed] == ["https://a.example"]


class UniqueBookmark(Bookmark):
    """A resource whose ``url`` is unique, so that a sub-request can meet a 409."""

    name = "unique"
    unique_fields = ("url",)


@pytest.mark.postgresql
def test_conflicts_and_failed_preconditions_in_a_postgresql_batch_keep_the_transaction_usable(postgresql_url):
    """§8.4: 409 and 412 sub-responses are 4xx: the batch goes on in the same transaction, and nothing is undone."""
    from wsgicliquet.middleware.transaction import Transaction
    from wsgicliquet.storage.postgresql import Storage as PostgreSQLStorage

    storage = PostgreSQLStorage.from_settings({"storage_url": postgresql_url, "storage_pool_size": 2})
    storage.initialize_schema()
    resources = ResourceApp([UniqueBookmark], load_settings({}, environ={}), storage=storage)
    stack = Authentication(resources, policies=["basicauth"], userid_hmac_secret="batch-test-secret")
    api = webtest.TestApp(mount({"/v1": Transaction(Batch(stack), storage=storage)}), lint=True)
    auth = {"Authorization": basic(f"user-{uuid.uuid4().hex}")}
    first = api.post_json("/v1/uniques", {"data": {"url": "a"}}, headers=auth).json["data"]
    second = api.post_json("/v1/uniques", {"data": {"url": "b"}}, headers=auth).json["data"]
    stale = {"If-Match": f'"{first["last_modified"] - 1}"'}
    result = batch(api, {"requests": [
        {"method": "POST", "path": "/uniques", "body": {"data": {"url": "a"}}},
        {"method": "PUT", "path": f"/uniques/{second['id']}", "body": {"data": {"url": "a"}}},
        {"method": "PATCH", "path": f"/uniques/{second['id']}", "body": {"data": {"url": "a"}}},
        {"method": "PATCH", "path": f"/uniques/{first['id']}", "body": {"data": {"title": "x"}}, "headers": stale},
        {"method": "POST", "path": "/uniques", "body": {"data": {"id": first["id"], "url": "z"}},
         "headers": {"If-None-Match": "*"}},
        {"method": "POST", "path": "/uniques", "body": {"data": {"url": "c"}}},
        {"method": "PATCH", "path": f"/uniques/{first['id']}", "body": {"data": {"title": "y"}}},
    ]}, headers=auth)
    assert [entry["status"] for entry in result["responses"]] == [200, 409, 409, 412, 412, 201, 200]
    assert result["responses"][1]["body"]["details"] == {"field": "url", "existing": first}
    listed = api.get("/v1/uniques", headers=auth).json["data"]
    assert sorted((record["url"], record.get("title")) for record in listed) == [("a", "y"), ("b", None),
                                                                                  ("c", None)]


# --- Headers of the layers above ----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, "http://app.example"])
def test_entries_carry_the_cors_headers_of_a_direct_call(echo, origin):
    """PROTOCOL.md §8.3: an entry's headers include the CORS expose list and ``Vary``, as the same request sent
    alone would get them from the CORS layer above the batch."""
    from wsgicliquet.middleware.cors import Cors

    app = webtest.TestApp(Cors(mount({"/v1": Batch(echo)}), origins=["*"]))
    headers = {"Origin": origin} if origin else {}
    direct = app.get("/v1/echo", headers=headers).headers
    entry = app.post_json("/v1/batch", {"requests": [{"path": "/echo"}]}, headers=headers).json["responses"][0]
    assert entry["headers"]["Vary"] == direct["Vary"] == "Authorization"
    if origin:
        assert entry["headers"]["Access-Control-Allow-Origin"] == direct["Access-Control-Allow-Origin"] == "*"
        assert entry["headers"]["Access-Control-Expose-Headers"] == direct["Access-Control-Expose-Headers"]
        assert "ETag" in entry["headers"]["Access-Control-Expose-Headers"]
    else:
        assert "Access-Control-Allow-Origin" not in entry["headers"]


def proxied_flask_pipeline() -> webtest.TestApp:
    """The whole pipeline around a Flask app that trusts one proxy (``ProxyFix``) and allows one internal address."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    site = flask.Flask(__name__)

    @site.route("/internal", methods=["GET", "POST"])
    def internal():
        if flask.request.remote_addr != "10.0.0.1":
            return {"code": 403, "errno": ERRORS.FORBIDDEN, "error": "Forbidden"}, 403
        return {"secret": True}

    @site.route("/seen", methods=["GET", "POST"])
    def seen():
        request = flask.request
        return {"host": request.host, "scheme": request.scheme, "origin": request.headers.get("Origin"),
                "body": request.get_data(as_text=True)}

    site.wsgi_app = ProxyFix(site.wsgi_app, x_for=1, x_host=1, x_proto=1)
    settings = {"storage_url": "memory://", "cache_url": "memory://", "permission_url": "memory://",
                "userid_hmac_secret": "batch-test-secret"}
    resources = ResourceApp([Bookmark], load_settings(settings, environ={}), storage=MemoryStorage(),
                            fallback=site)
    return webtest.TestApp(build_pipeline(resources, settings), lint=True)


@pytest.mark.parametrize("name", ["X-Forwarded-For", "x-forwarded-for", "X_Forwarded_For"])
def test_sub_request_headers_cannot_forge_what_the_front_proxy_vouches_for(name):
    """The front proxy appends the client address to ``X-Forwarded-For`` of the request it forwards; it never
    sees the sub-requests' headers, so one naming an internal address must not pass an app's address check."""
    api = proxied_flask_pipeline()
    result = batch(api, {"requests": [
        {"path": "/internal", "headers": {name: "10.0.0.1"}},
        {"method": "POST", "path": "/internal", "headers": {"Forwarded": "for=10.0.0.1", name: "10.0.0.1"},
         "body": {}},
    ]}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert [entry["status"] for entry in result["responses"]] == [403, 403]
    direct = api.get("/v1/internal", headers={"X-Forwarded-For": "10.0.0.1"})
    assert direct.json == {"secret": True}  # what the front proxy vouches for is trusted


def test_sub_request_keeps_the_host_scheme_origin_and_body_framing_of_the_batch():
    api = proxied_flask_pipeline()
    result = batch(api, {"requests": [
        {"path": "/seen", "headers": {"Host": "admin.example.com", "X-Forwarded-Host": "admin.example.com",
                                      "X-Forwarded-Proto": "https", "Origin": "https://api.example.com"}},
        {"method": "POST", "path": "/seen", "body": {"a": 1},
         "headers": {"Transfer_Encoding": "chunked", "Content_Length": "1"}},
    ]}, headers={"Host": "api.example.com", "Origin": "https://evil.example"})
    pinned, framed = result["responses"]
    assert pinned["body"] == {"host": "api.example.com", "scheme": "http", "origin": "https://evil.example",
                              "body": ""}
    assert framed["body"]["body"] == '{"a":1}'  # a chunked claim would have the app read no body at all

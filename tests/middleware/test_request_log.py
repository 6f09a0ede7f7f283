"""The request log: real logging handlers, lines parsed as JSON, every field checked."""
from __future__ import annotations

import datetime
import io
import json
import logging
import logging.config
import os
import time
import uuid
from typing import Any, Dict, Iterator, List

import pytest
import webtest

from wsgicliquet import environ as keys
from wsgicliquet.errors import ERRORS, HTTPError
from wsgicliquet.logs import EVENT_ATTR, FIELDS_ATTR, ClassicFormatter, MozlogFormatter
from wsgicliquet.middleware.request_log import RequestLog, filter_factory, local_iso
from wsgicliquet.settings import ConfigurationError, load_settings

USERID = "basicauth:" + "c2c5" * 16


def api(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    """A resource-like app: authenticated, with resource extras and an errno on error paths."""
    environ[keys.USERID] = USERID
    environ[keys.AUTHN_TYPE] = "basicauth"
    if environ["PATH_INFO"].endswith("/missing"):
        return HTTPError(404, ERRORS.INVALID_RESOURCE_ID)(environ, start_response)
    if environ["PATH_INFO"].endswith("/broken"):
        return HTTPError(500)(environ, start_response)
    if environ["PATH_INFO"].endswith("/raise"):
        raise RuntimeError("boom")
    environ[keys.LOG_CONTEXT] = {"collection_id": "bookmark", "collection_timestamp": 1795879918522,
                                 "nb_records": 0, "limit": 2, "code": 999}
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Request-Id", "from-the-app")])
    return [b'{"data": []}']


def version_prefix(app: Any) -> Any:
    """Shifts /v1 to SCRIPT_NAME and clears it afterwards, like a router that does not restore the environ."""
    def shifted(environ: Dict[str, Any], start_response: Any) -> Any:
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/v1", environ["PATH_INFO"][3:]
        try:
            return app(environ, start_response)
        finally:
            environ["SCRIPT_NAME"], environ["PATH_INFO"] = "", "/elsewhere"
    return shifted


def mini_batch(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    """Batch-like: runs two sub-requests through ``api`` and records them as the batch middleware does."""
    statuses = []
    for method, path in (("GET", "/v1/bookmarks"), ("DELETE", "/v1/bookmarks/missing")):
        sub_environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "/v1", "PATH_INFO": path[3:],
                       "QUERY_STRING": "_limit=2", "HTTP_USER_AGENT": "UA/sub", "wsgi.input": io.BytesIO()}
        started = time.perf_counter()
        captured: List[str] = []
        b"".join(api(sub_environ, lambda status, headers, exc_info=None: captured.append(status)))
        environ[keys.SUBREQUESTS].append({"environ": sub_environ, "status": int(captured[0][:3]),
                                          "duration": time.perf_counter() - started})
        statuses.append(captured[0])
    environ[keys.LOG_CONTEXT] = {"batch_size": 2}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(statuses).encode()]


class Capture(logging.Handler):
    """A real handler with the ini's ``format = %(message)s``: what a console handler would print."""

    def __init__(self, formatter: logging.Formatter = logging.Formatter("%(message)s")) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(formatter)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def events(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("request.summary")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)


def client(app: Any, **settings: Any) -> webtest.TestApp:
    return webtest.TestApp(RequestLog.from_settings(app, load_settings(settings, environ={})), lint=True)


def assert_recent_iso(value: str) -> None:
    moment = datetime.datetime.fromisoformat(value)
    assert abs((datetime.datetime.now() - moment).total_seconds()) < 60
    assert len(value) == len("2026-11-28T15:31:58.524000")


def test_json_summary_has_every_field(capture: Capture) -> None:
    app = client(version_prefix(api), project_name="myapp")
    response = app.get("/v1/bookmarks?_limit=2&_sort=-title", headers={
        "User-Agent": "UA/1", "Accept-Language": "fr", "X-Request-Id": "abc-123"})
    assert response.headers.getall("X-Request-Id") == ["abc-123"]  # the app's own value is replaced
    [line] = capture.events()
    assert list(line) == ["Timestamp", "Logger", "Type", "Hostname", "Severity", "Pid", "EnvVersion", "Fields"]
    assert line["Logger"] == "myapp"
    assert line["Type"] == "request.summary"
    assert line["Hostname"] == (os.environ.get("HOSTNAME") or __import__("platform").node())
    assert (line["Severity"], line["Pid"], line["EnvVersion"]) == (6, os.getpid(), "2.0")
    assert line["Timestamp"] % 1_000_000 == 0 and abs(line["Timestamp"] / 1e9 - time.time()) < 60
    fields = line["Fields"]
    assert_recent_iso(fields.pop("time"))
    assert isinstance(fields.pop("t"), int)
    assert fields == {
        "agent": "UA/1", "path": "/v1/bookmarks", "method": "GET",
        "querystring": json.dumps({"_limit": "2", "_sort": "-title"}, separators=(",", ":")),
        "lang": "fr", "uid": "c2c5" * 16, "authn_type": "basicauth", "errno": None, "code": 200, "rid": "abc-123",
        "collection_id": "bookmark", "collection_timestamp": 1795879918522, "nb_records": 0, "limit": 2,
    }


@pytest.mark.parametrize("path, code, errno", [
    pytest.param("/v1/bookmarks/missing", 404, 110, id="404-errno-110"),
    pytest.param("/v1/bookmarks/broken", 500, 999, id="500-errno-999"),
])
def test_error_responses_are_logged_with_their_errno(capture: Capture, path: str, code: int, errno: int) -> None:
    client(version_prefix(api)).get(path, status=code)
    [line] = capture.events()
    fields = line["Fields"]
    assert (fields["path"], fields["code"], fields["errno"], fields["uid"]) == (path, code, errno, "c2c5" * 16)
    assert (fields["agent"], fields["lang"], fields["querystring"]) == (None, None, "{}")
    assert line["Logger"] == "request.summary"  # no project_name: the logger name
    uuid.UUID(fields["rid"])


def test_an_exception_is_logged_as_500_and_propagates(capture: Capture) -> None:
    app = RequestLog(api)
    with pytest.raises(RuntimeError):
        app({"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/v1/raise", "QUERY_STRING": ""},
            lambda status, headers, exc_info=None: None)
    [line] = capture.events()
    assert (line["Fields"]["code"], line["Fields"]["method"], line["Fields"]["path"]) == (500, "POST", "/v1/raise")


def test_request_id_generated_when_absent_or_unsafe(capture: Capture) -> None:
    seen: List[str] = []

    def probe(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        seen.append(environ[keys.REQUEST_ID])
        start_response("204 No Content", [])
        return []

    app = client(probe)
    first = app.get("/", status=204).headers["X-Request-Id"]
    second = app.get("/", headers={"X-Request-Id": "bad id\twith spaces"}, status=204).headers["X-Request-Id"]
    assert seen == [first, second] and first != second
    assert [event["Fields"]["rid"] for event in capture.events()] == [str(uuid.UUID(first)), str(uuid.UUID(second))]


def test_logged_after_the_body_is_sent(capture: Capture) -> None:
    def slow_body(environ: Dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        assert capture.lines == []  # nothing logged while the body is being produced
        time.sleep(0.05)
        yield b"second"

    body = client(slow_body).get("/").body
    assert body == b"firstsecond"
    [line] = capture.events()
    assert line["Fields"]["t"] >= 50


def test_batch_logs_each_subrequest_then_the_request(capture: Capture) -> None:
    client(mini_batch, project_name="myapp").post("/v1/batch", headers={"X-Request-Id": "batch-1"})
    events = capture.events()
    assert [event["Type"] for event in events] == ["subrequest.summary", "subrequest.summary", "request.summary"]
    first, second, summary = (event["Fields"] for event in events)
    for fields in (first, second):
        assert (fields["agent"], fields["uid"], fields["authn_type"], fields["rid"]) == (
            "UA/sub", "c2c5" * 16, "basicauth", "batch-1")
        assert fields["querystring"] == '{"_limit":"2"}'
        assert isinstance(fields["t"], int)
        assert_recent_iso(fields["time"])
    assert (first["method"], first["path"], first["code"], first["errno"]) == ("GET", "/v1/bookmarks", 200, None)
    assert (first["collection_id"], first["nb_records"]) == ("bookmark", 0)
    assert (second["method"], second["path"], second["code"], second["errno"]) == (
        "DELETE", "/v1/bookmarks/missing", 404, 110)
    assert (summary["path"], summary["method"], summary["code"], summary["batch_size"]) == (
        "/v1/batch", "POST", 200, 2)
    assert summary["uid"] is None


def test_classic_renderer_one_readable_line(capture: Capture) -> None:
    client(version_prefix(api), logging_renderer="classic").get(
        "/v1/bookmarks?_limit=2", headers={"X-Request-Id": "r1", "User-Agent": "UA/1"})
    [line] = capture.lines
    head, rest = line.split(" request.summary ")
    assert head.startswith('"GET   /v1/bookmarks?_limit=2" 200 (') and head.endswith(" ms)")
    pairs = rest.split(" ")
    assert [pair.split("=", 1)[0] for pair in pairs] == sorted(pair.split("=", 1)[0] for pair in pairs)
    assert {"agent=UA/1", "authn_type=basicauth", "collection_id=bookmark", "rid=r1", "limit=2",
            "uid=" + "c2c5" * 16} <= set(pairs)


def test_fields_that_do_not_serialize_are_logged_as_strings(capture: Capture) -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd-value"

    def odd(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        environ[keys.LOG_CONTEXT] = {"thing": Odd(), "nested": {"inner": Odd(), (1, 2): "tuple key"},
                                     "tags": ["a", "b"], "mixed": ["a", 1]}
        start_response("200 OK", [])
        return [b""]

    client(odd).get("/")
    fields = capture.events()[0]["Fields"]
    assert fields["thing"] == "odd-value"
    assert json.loads(fields["nested"]) == {"inner": "odd-value", "(1, 2)": "tuple key"}
    assert fields["tags"] == ["a", "b"]
    assert fields["mixed"] == '["a",1]'


@pytest.mark.parametrize("context", [
    pytest.param({}, id="plain"),
    pytest.param({"note": "été \u2028 \x00\x1f \"q\" \\ 😀"}, id="unicode-and-control-characters"),
    pytest.param({"ratio": 1e16, "small": 0.1, "nan": float("nan")}, id="floats"),
    pytest.param({"huge": 2 ** 70, "negative": -2 ** 63, "flag": True}, id="big-integers"),
    pytest.param({"surrogate": "\ud800"}, id="lone-surrogate"),
    pytest.param({"tags": ["a", "é"], "when": datetime.date(2026, 1, 2)}, id="lists-and-objects"),
])
def test_summary_line_is_what_the_json_formatter_renders(capture: Capture, context: Dict[str, Any]) -> None:
    """Summaries are rendered by a direct path: byte for byte the line of JsonFormatter.format."""
    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        environ[keys.LOG_CONTEXT] = context
        start_response("200 OK", [])
        return [b""]

    records: List[logging.LogRecord] = []
    capture.emit = records.append  # type: ignore[method-assign]
    client(app, project_name="myapp").get("/?a=1")
    [record] = records
    formatter = MozlogFormatter(logger_name="myapp")
    generic = super(MozlogFormatter, formatter).format(record)
    assert formatter.format(record) == generic
    assert record.getMessage() == generic


@pytest.mark.parametrize("fields", [
    pytest.param({1: "one", "1": "again", None: True, "ratio": 0.5}, id="keys-and-floats"),
    pytest.param({"name": "n", str.__new__(type("Key", (str,), {}), "sub"): [1, "a"]}, id="string-subclass-key"),
])
def test_fields_given_by_other_code_render_as_the_generic_path(fields: Dict[Any, Any]) -> None:
    """A record carrying fields (not made by the request log) may have keys that are not strings."""
    record = logging.LogRecord("request.summary", logging.INFO, __file__, 0, "request.summary", (), None)
    record.__dict__.update({EVENT_ATTR: "request.summary", FIELDS_ATTR: fields})
    formatter = MozlogFormatter(logger_name="myapp")
    assert formatter.format(record) == super(MozlogFormatter, formatter).format(record)


def test_a_broken_handler_never_breaks_the_request(capture: Capture) -> None:
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("disk full")

        def handleError(self, record: logging.LogRecord) -> None:
            pass

    logger = logging.getLogger("request.summary")
    broken = Broken()
    logger.addHandler(broken)
    try:
        assert client(api).get("/v1/bookmarks").status_int == 200
    finally:
        logger.removeHandler(broken)
    assert len(capture.lines) == 1


def test_handler_formatters_render_from_fields(capture: Capture) -> None:
    """An ini that puts the formatters on the handler gets the same shapes (no JSON inside JSON)."""
    capture.setFormatter(MozlogFormatter())
    client(api, project_name="myapp", logging_renderer="classic").get("/v1/bookmarks")
    capture.setFormatter(ClassicFormatter())
    client(api).get("/v1/bookmarks")
    json_line = json.loads(capture.lines[0])
    assert (json_line["Type"], json_line["Logger"], json_line["Fields"]["code"]) == ("request.summary", "myapp", 200)
    assert capture.lines[1].startswith('"GET   /v1/bookmarks" 200 (')


INI_LOGGING = """
[loggers]
keys = root, summary

[handlers]
keys = console

[formatters]
keys = json

[logger_root]
level = WARNING
handlers = console

[logger_summary]
level = INFO
handlers = console
qualname = request.summary
propagate = 0

[handler_console]
class = StreamHandler
args = (sys.stdout,)
formatter = json

[formatter_json]
class = wsgicliquet.logs.MozlogFormatter
"""

INI_SCRIPT = """
import logging, logging.config, sys, webtest
from wsgicliquet.middleware.request_log import RequestLog
logging.config.fileConfig(sys.argv[1])
def app(environ, start_response):
    start_response("200 OK", [])
    return [b""]
webtest.TestApp(RequestLog(app, project_name="myapp")).get("/v1/x", headers={"X-Request-Id": "ini"})
logging.getLogger("other").warning("plain message", extra={"detail": {"a": 1}})
"""


def test_ini_logging_config(tmp_path: Any) -> None:
    """The logging section documented in docs/observability.md, loaded by fileConfig in a fresh process."""
    import subprocess
    import sys

    ini = tmp_path / "app.ini"
    ini.write_text(INI_LOGGING)
    output = subprocess.run([sys.executable, "-c", INI_SCRIPT, str(ini)], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    summary, plain = (json.loads(line) for line in output.splitlines())
    assert (summary["Type"], summary["Logger"], summary["Fields"]["rid"]) == ("request.summary", "myapp", "ini")
    assert (plain["Type"], plain["Logger"], plain["Severity"], plain["Fields"]) == (
        "plain message", "other", 4, {"detail": '{"a":1}'})


@pytest.mark.parametrize("renderer", [
    pytest.param("yaml", id="unknown-name"),
    pytest.param("logging:Logger", id="not-a-formatter"),
    pytest.param("nowhere.module:Formatter", id="not-importable"),
])
def test_bad_renderer_fails_at_construction(renderer: str) -> None:
    with pytest.raises(ConfigurationError, match="logging_renderer|Cannot import"):
        RequestLog(api, renderer=renderer)


def test_paste_filter_factory(capture: Capture) -> None:
    wrapped = filter_factory({"project_name": "pasted"}, logging_renderer="json")(api)
    webtest.TestApp(wrapped).get("/v1/bookmarks")
    assert capture.events()[0]["Logger"] == "pasted"


def test_with_the_batch_middleware(capture: Capture) -> None:
    """The real batch middleware fills the sub-request list the request log reads."""
    from wsgicliquet.middleware.batch import Batch

    app = client(version_prefix(Batch(api)), project_name="myapp")
    response = app.post_json("/v1/batch", {"requests": [
        {"method": "GET", "path": "/v1/bookmarks?_limit=2"},
        {"method": "DELETE", "path": "/v1/bookmarks/missing"},
    ]}, headers={"X-Request-Id": "batch-2", "User-Agent": "UA/2"})
    assert [item["status"] for item in response.json["responses"]] == [200, 404]
    events = capture.events()
    assert [event["Type"] for event in events] == ["subrequest.summary", "subrequest.summary", "request.summary"]
    first, second, summary = (event["Fields"] for event in events)
    assert (first["method"], first["path"], first["code"], first["querystring"], first["rid"]) == (
        "GET", "/v1/bookmarks", 200, '{"_limit":"2"}', "batch-2")
    assert (first["uid"], first["authn_type"], first["agent"], first["collection_id"]) == (
        "c2c5" * 16, "basicauth", "UA/2", "bookmark")
    assert (second["method"], second["path"], second["code"], second["errno"]) == (
        "DELETE", "/v1/bookmarks/missing", 404, 110)
    assert (summary["path"], summary["code"], summary["batch_size"], summary["rid"]) == (
        "/v1/batch", 200, 2, "batch-2")


def test_resource_app_extras_in_the_canonical_pipeline(capture: Capture) -> None:
    """End to end: authentication, the resource app's extras and a batch, as build_pipeline stacks them."""
    import base64

    from wsgicliquet import build_pipeline
    from wsgicliquet.resource.app import ResourceApp
    from wsgicliquet.resource.resource import Resource

    class Bookmark(Resource):
        schema = {"type": "object", "properties": {"title": {"type": "string"}}}

    # A pool size nobody else uses: this test's own memory storage.
    settings = load_settings(dict(project_name="myapp", project_version="1.0.0", userid_hmac_secret="secret",
                                  storage_pool_size=7781), environ={})
    app = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    app.post_json("/v1/bookmarks", {"data": {"title": "x"}}, headers=auth, status=201)
    app.get("/v1/bookmarks?_limit=2", headers=auth)
    app.post_json("/v1/batch", {"requests": [{"method": "GET", "path": "/v1/bookmarks"}]}, headers=auth)
    created, listed, sub, batch = (event["Fields"] for event in capture.events())
    assert (created["code"], created["collection_id"], created["authn_type"]) == (201, "bookmark", "basicauth")
    assert (listed["nb_records"], listed["limit"], listed["querystring"]) == (1, 2, '{"_limit":"2"}')
    assert listed["collection_timestamp"] == created["collection_timestamp"]
    assert len(listed["uid"]) == 64 and ":" not in listed["uid"]
    assert (sub["path"], sub["nb_records"], sub["uid"], sub["rid"]) == ("/v1/bookmarks", 1, listed["uid"], batch["rid"])
    assert (batch["path"], batch["batch_size"]) == ("/v1/batch", 1)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/St_Johns"])
def test_time_field_is_the_local_time_to_the_microsecond(monkeypatch, zone: str) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        # Both sides of a second, of a daylight saving change (Paris, 2026-03-29 01:00 UTC) and of a day.
        for moment in (1774746000.0 - 0.000001, 1774746000.0, 1774746000.25, 1774746000.999999, 1795996799.5,
                       1795996800.0, time.time()):
            expected = datetime.datetime.fromtimestamp(moment)
            rendered = local_iso(moment)
            assert len(rendered) == len("2026-11-28T15:31:58.524000")
            assert abs(datetime.datetime.fromisoformat(rendered) - expected) <= datetime.timedelta(microseconds=1)
    finally:
        monkeypatch.undo()
        time.tzset()


def canonical_app(**extra: Any) -> webtest.TestApp:
    """build_pipeline around a resource app, with its own memory storage."""
    from wsgicliquet import build_pipeline
    from wsgicliquet.resource.app import ResourceApp
    from wsgicliquet.resource.resource import Resource

    class Bookmark(Resource):
        schema = {"type": "object", "properties": {"title": {"type": "string"}}}

    settings = load_settings(dict(userid_hmac_secret="secret", storage_pool_size=7782, **extra), environ={})
    return webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))


def test_a_redirect_has_no_errno(capture: Capture) -> None:
    """The trailing-slash redirect replaces the app's 404 errno 111: the 307 is not an error response."""
    import base64

    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    canonical_app().get("/v1/bookmarks/", headers=auth, status=307)
    [line] = capture.events()
    assert (line["Fields"]["code"], line["Fields"]["errno"]) == (307, None)


def test_paths_and_headers_are_logged_as_text(capture: Capture) -> None:
    """WSGI gives the path one character per byte; the log shows what the client meant, as for the querystring."""
    app = canonical_app()
    utf8 = {"User-Agent": "café☃/1.0".encode().decode("latin-1"), "Accept-Language": "fr-\xe9"}  # as WSGI gives
    app.get("/v1/caf%C3%A9/%E2%9C%93%FF?q=%C3%A9", headers=utf8, status=404)
    app.post_json("/v1/batch", {"requests": [{"method": "GET", "path": "/v1/%C3%A9t%C3%A9"}]})
    request, sub, batch = (event["Fields"] for event in capture.events())
    assert (request["path"], request["querystring"]) == ("/v1/café/\u2713\ufffd", '{"q":"\\u00e9"}')
    assert (request["agent"], request["lang"]) == ("café☃/1.0", "fr-\ufffd"), "headers too"
    assert (sub["path"], sub["code"], batch["path"]) == ("/v1/été", 404, "/v1/batch")


def test_classic_lines_stay_one_line_whatever_the_client_sends(capture: Capture) -> None:
    """A newline in a path, header or sub-request cannot forge a line, nor a terminal escape reach the console."""
    app = canonical_app(logging_renderer="classic")
    app.get("/v1/%0A%22GET%20%20%20/v1/%22%20200%20(1%20ms)%20request.summary", status=404, extra_environ={
        "HTTP_USER_AGENT": "evil\r\nUA\x1b[31m", "HTTP_ACCEPT_LANGUAGE": "fr\u2028x"})
    app.post_json("/v1/batch", {"requests": [
        {"method": "GET", "path": "/v1/bookmarks%0Ax", "headers": {"User-Agent": "a\nb"}}]})
    lines = capture.lines
    assert len(lines) == 3
    assert all(line.isprintable() for line in lines)
    assert lines[0].startswith('"GET   /v1/\\n"GET   /v1/" 200 (1 ms) request.summary" 404 (')
    assert "agent=evil\\r\\nUA\\x1b[31m" in lines[0] and "lang=fr\\u2028x" in lines[0]
    assert lines[1].startswith('"GET   /v1/bookmarks\\nx" 404 (') and "agent=a\\nb" in lines[1]


def test_start_up_message(caplog: pytest.LogCaptureFixture) -> None:
    """§15: ``<project_name> <project_version> starting.`` at INFO when the pipeline is built, before any request."""
    from wsgicliquet.pipeline import build_pipeline

    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("200 OK", [])
        return [b""]

    with caplog.at_level(logging.INFO, logger="wsgicliquet"):
        build_pipeline(app, load_settings({"project_name": "arcade", "project_version": "2.3.1", "storage_url": "",
                                           "cache_url": "", "permission_url": ""}, environ={}))
    assert [(record.levelname, record.getMessage()) for record in caplog.records
            if record.getMessage().endswith("starting.")] == [("INFO", "arcade 2.3.1 starting.")]

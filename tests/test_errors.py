import json

import pytest
import webtest

from wsgicliquet.errors import ERRORS, MESSAGES, STATUS_OF_ERRNO, HTTPError, error_body, validation_error

REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
           413: "Request Entity Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}


@pytest.mark.parametrize("errno", list(ERRORS), ids=lambda e: e.name)
def test_error_builder_for_every_errno(errno):
    code = STATUS_OF_ERRNO[errno]
    body = error_body(code, errno)
    assert body["code"] == code
    assert body["errno"] == int(errno)
    expected_title = "Invalid parameters" if errno == ERRORS.INVALID_PARAMETERS else REASONS[code]
    assert body["error"] == expected_title
    if errno in MESSAGES:
        assert body["message"] == MESSAGES[errno]
    assert "info" not in body and "details" not in body


def test_catalogue_messages():
    assert error_body(404, ERRORS.MISSING_RESOURCE)["message"] == \
        "The resource you are looking for could not be found."
    assert error_body(503)["errno"] == 201
    assert error_body(503)["message"].startswith("Service temporary unavailable")
    assert error_body(500, info="http://x")["info"] == "http://x"


def test_errno_defaults_from_status():
    assert error_body(404)["errno"] == 111
    assert error_body(418)["errno"] == 999


@pytest.mark.parametrize("details, message", [
    ([{"location": "body", "name": "data.url", "description": "Must be a URL"}], "data.url in body: Must be a URL"),
    ([{"location": "path", "name": None, "description": "Invalid record id"}], "path: Invalid record id"),
    ([{"location": "querystring", "name": "foo", "description": "Unknown filter field 'foo'"}],
     "Unknown filter field 'foo'"),
    ([{"location": "body", "name": "zeta", "description": "bad"},
      {"location": "body", "name": "alpha", "description": "alpha is missing"}], "alpha is missing"),
])
def test_validation_message(details, message):
    error = validation_error(details)
    assert error.body["message"] == message
    assert error.body["errno"] == 107 and error.body["error"] == "Invalid parameters"
    assert error.body["details"] == details


def test_http_error_is_a_wsgi_response():
    app = webtest.TestApp(HTTPError(503, headers=[("Retry-After", "30")]), lint=True)
    response = app.get("/", status=503)
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.headers["Retry-After"] == "30"
    assert response.json == {"code": 503, "errno": 201, "error": "Service Unavailable",
                             "message": MESSAGES[201]}
    assert response.status == "503 Service Unavailable"


def test_validation_error_status_line_keeps_reason_phrase():
    app = webtest.TestApp(validation_error([{"location": "header", "name": "Accept", "description": "x"}], code=406))
    response = app.get("/", status=406)
    assert response.status == "406 Not Acceptable"
    assert response.json["error"] == "Invalid parameters"


def test_errno_recorded_in_environ():
    environ = {"REQUEST_METHOD": "GET"}
    HTTPError(412)(environ, lambda status, headers: None)
    assert environ["wsgicliquet.errno"] == 114
    assert json.loads(b"".join(HTTPError(412)({}, lambda s, h: None)))["errno"] == 114


def test_unauthorized_or_forbidden():
    from wsgicliquet.errors import unauthorized_or_forbidden

    anonymous = unauthorized_or_forbidden(["system.Everyone"])
    assert (anonymous.code, anonymous.errno) == (401, 104)
    assert ("WWW-Authenticate", 'Basic realm="Realm"') in anonymous.headers
    user = unauthorized_or_forbidden(["system.Everyone", "system.Authenticated", "basicauth:x"])
    assert (user.code, user.errno, user.headers) == (403, 121, [])


def test_a_failing_sentry_report_is_logged_and_never_raised(caplog) -> None:
    from wsgicliquet.environ import REPORT_EXCEPTION
    from wsgicliquet.errors import report_exception

    def broken(exc, environ):
        raise RuntimeError("transport down")

    with caplog.at_level("WARNING", logger="wsgicliquet.errors"):
        report_exception(ValueError("boom"), {REPORT_EXCEPTION: broken})
    assert "Could not report ValueError('boom') to Sentry" in caplog.text and "transport down" in caplog.text

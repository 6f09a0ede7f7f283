"""Conformance of the error format (PROTOCOL.md §7) through the whole pipeline around a Flask app, as README.md
builds it: every error, including the wrapped app's own, has ``code``, ``errno``, ``error`` and ``message``."""
from __future__ import annotations

import flask
import pytest
import webtest

from wsgicliquet import Resource, ResourceApp, build_pipeline
from wsgicliquet.errors import ERRORS, HTTPError, error_body

SETTINGS = {"project_name": "myapp", "project_version": "1.0.0", "userid_hmac_secret": "abc",
            "storage_url": "memory://", "cache_url": "memory://", "permission_url": "memory://"}


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}, "required": ["url"]}
    preserve_unknown = True


@pytest.fixture
def app() -> webtest.TestApp:
    site = flask.Flask("conformance_errors")
    site.logger.disabled = True

    @site.route("/abort/<int:code>", methods=["GET", "POST"])
    def abort(code):
        flask.abort(code)

    @site.get("/json/<int:code>")
    def json_error(code):
        return flask.jsonify(error="custom"), code

    api = ResourceApp([Bookmark], SETTINGS, fallback=site.wsgi_app)
    site.wsgi_app = build_pipeline(site.wsgi_app, SETTINGS, versions={"/v1": api})
    test_app = webtest.TestApp(site)
    test_app.authorization = ("Basic", ("alice", "secret"))
    return test_app


REASONS = {400: "Bad Request", 406: "Not Acceptable", 409: "Conflict", 411: "Length Required",
           415: "Unsupported Media Type"}


@pytest.mark.parametrize("code", sorted(REASONS))
def test_the_wrapped_apps_errors_have_a_message(app, code):
    """A Flask ``abort(400)`` (HTML) or a JSON body without the error shape still gets a ``message``."""
    for path in (f"/v1/abort/{code}", f"/v1/json/{code}"):
        body = app.get(path, status=code).json
        assert {"code", "errno", "error", "message"} <= set(body), body
        assert body["code"] == code
        assert body["message"] == REASONS[code]


@pytest.mark.parametrize("code", sorted(REASONS))
def test_the_wrapped_apps_errors_have_a_message_inside_a_batch(app, code):
    response = app.post_json("/v1/batch", {"requests": [{"path": f"/abort/{code}"}]}).json["responses"][0]
    assert response["status"] == code
    assert response["body"]["message"] == REASONS[code]


def test_every_errno_has_a_message_even_without_a_catalogue_text():
    """Errors raised by code with no message of their own (a 409 errno 122, a bare 400) still carry one."""
    assert error_body(409, ERRORS.CONSTRAINT_VIOLATED)["message"] == "Conflict"
    assert error_body(400)["message"] == "Bad Request"
    assert HTTPError(411, ERRORS.MISSING_CONTENT_LENGTH).body["message"] == "Length Required"
    assert error_body(404, ERRORS.MISSING_RESOURCE)["message"] == \
        "The resource you are looking for could not be found."
    assert error_body(400, message="given")["message"] == "given"

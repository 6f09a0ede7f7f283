"""Hello: ``GET /`` of the API describes the service (PROTOCOL.md §1.4)."""
from __future__ import annotations

import datetime

import pytest
import webtest
from webob import Request

from wsgicliquet import environ as keys
from wsgicliquet.middleware import hello as hello_module
from wsgicliquet.middleware.hello import Hello, add_capability, add_public_setting, filter_factory
from wsgicliquet.middleware.version_prefix import VersionPrefix
from wsgicliquet.settings import ConfigurationError, load_settings

from .pages import FRAMEWORKS, bare_app

# The observed cliquet 3.1.5 answer for these settings (PROTOCOL.md §1.4), byte for byte.
OBSERVED = (b'{"project_name": "myapp", "project_version": "1.4.2", "http_api_version": "1.4", '
            b'"project_docs": "https://example.org/docs", "cliquet_protocol_version": "2", '
            b'"url": "http://localhost/v1/", "settings": {"batch_max_requests": 25, "readonly": false}, '
            b'"capabilities": {}}')
SETTINGS = {"project_name": "myapp", "project_version": "1.4.2", "project_docs": "https://example.org/docs"}


@pytest.fixture(params=FRAMEWORKS)
def inner(request):
    return request.param()


def authenticated(app, userid="basicauth:c2c5", principals=("system.Everyone", "system.Authenticated")):
    """What the authentication middleware above hello does: put the user in the environ."""
    def middleware(environ, start_response):
        environ[keys.USERID] = userid
        environ[keys.PRINCIPALS] = [*principals, userid]
        return app(environ, start_response)
    return middleware


def test_observed_answer_through_the_version_prefix(inner):
    settings = load_settings(SETTINGS, environ={})
    app = webtest.TestApp(VersionPrefix.from_settings(Hello.from_settings(inner, settings), settings), lint=True)
    response = app.get("/v1/")
    assert response.body == OBSERVED
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert app.get("/").headers["Location"] == "http://localhost/v1/"
    assert app.get("/v1/page").text == "page"


def test_every_field(inner):
    hello = Hello(inner, project_name="myapp", project_version="2.1.0", http_api_version="2.1",
                  project_docs="https://docs", eos=datetime.date(2099, 1, 5),
                  settings={"batch_max_requests": 50, "readonly": True},
                  capabilities={"history": {"description": "Track changes", "url": "https://docs/history",
                                            "limit": 10}},
                  http_scheme="https", http_host="api.example.org:8443")
    app = webtest.TestApp(authenticated(hello), lint=True)
    assert app.get("/", extra_environ={"SCRIPT_NAME": "/v2"}).json == {
        "project_name": "myapp",
        "project_version": "2.1.0",
        "http_api_version": "2.1",
        "project_docs": "https://docs",
        "cliquet_protocol_version": "2",
        "url": "https://api.example.org:8443/v2/",
        "eos": "2099-01-05",
        "settings": {"batch_max_requests": 50, "readonly": True},
        "user": {"id": "basicauth:c2c5",
                 "principals": ["system.Everyone", "system.Authenticated", "basicauth:c2c5"]},
        "capabilities": {"history": {"description": "Track changes", "url": "https://docs/history", "limit": 10}},
    }


@pytest.mark.parametrize("environ,options,url", [
    pytest.param({}, {}, "http://localhost/", id="root"),
    pytest.param({"SCRIPT_NAME": "/v1"}, {}, "http://localhost/v1/", id="under-prefix"),
    pytest.param({"HTTP_HOST": "example.org:8080"}, {}, "http://example.org:8080/", id="request-host"),
    pytest.param({"wsgi.url_scheme": "https", "HTTP_HOST": "example.org"}, {}, "https://example.org/",
                 id="request-scheme"),
    pytest.param({"SCRIPT_NAME": "/api/v1"}, {"http_scheme": "https", "http_host": "public.example.org"},
                 "https://public.example.org/api/v1/", id="settings-win"),
])
def test_url_ends_with_a_slash(environ, options, url):
    app = webtest.TestApp(Hello(bare_app, **options), lint=True)
    assert app.get("/", extra_environ=environ).json["url"] == url


def test_anonymous_has_no_user_and_no_eos():
    body = webtest.TestApp(Hello(bare_app), lint=True).get("/").json
    assert "user" not in body and "eos" not in body


def test_head_has_headers_and_no_body():
    app = webtest.TestApp(Hello(bare_app), lint=True)
    get, head = app.get("/"), app.head("/")
    assert head.body == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.headers["Content-Type"] == "application/json; charset=UTF-8"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_on_hello_are_405(method):
    response = webtest.TestApp(Hello(bare_app), lint=True).request("/", method=method, status=405)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert response.json == {"code": 405, "errno": 115, "error": "Method Not Allowed",
                             "message": "Method not allowed on this endpoint."}


def test_view_name():
    environ = Request.blank("/").environ
    Hello(bare_app)(environ, lambda *args: None)
    assert environ[keys.VIEW] == "hello"


def test_options_lists_the_methods_for_cors_preflights():
    response = webtest.TestApp(Hello(bare_app), lint=True).options("/")
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert response.body == b""


@pytest.mark.parametrize("path,method", [("/page", "GET"), ("/page", "POST"), ("/page", "OPTIONS"), ("/page/", "GET")])
def test_other_requests_pass_through_untouched(path, method):
    body = [b"untouched"]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    environ = Request.blank(path, method=method).environ
    assert Hello(app)(environ, lambda *args: None) is body
    assert keys.VIEW not in environ


def test_framework_pages_still_served(inner):
    app = webtest.TestApp(Hello(inner), lint=True)
    assert app.get("/page").text == "page"
    assert app.get("/missing", status=404).content_type != "application/json"
    assert app.get("/").json["cliquet_protocol_version"] == "2"


def test_public_settings_from_the_settings_table(monkeypatch):
    monkeypatch.setattr(hello_module, "PUBLIC_SETTINGS", list(hello_module.PUBLIC_SETTINGS))
    add_public_setting("paginate_by")
    add_public_setting("cliquet.retry_after_seconds")
    add_public_setting("myapp.backoff")
    add_public_setting("paginate_by")  # twice is once
    settings = load_settings({**SETTINGS, "readonly": "true", "paginate_by": "100", "backoff": "10",
                              "batch_max_requests": "0"}, environ={})
    body = webtest.TestApp(Hello.from_settings(bare_app, settings), lint=True).get("/").json
    assert body["settings"] == {"batch_max_requests": None, "readonly": True, "paginate_by": 100,
                                "cliquet.retry_after_seconds": 30, "myapp.backoff": 10}


def test_capabilities_per_instance():
    hello = Hello(bare_app)
    hello.add_capability("attachments", "Add files to records", "https://docs/attachments", max_size=10)
    with pytest.raises(ConfigurationError, match="attachments"):
        hello.add_capability("attachments", "again", "https://docs")
    assert webtest.TestApp(hello, lint=True).get("/").json["capabilities"] == {
        "attachments": {"description": "Add files to records", "url": "https://docs/attachments", "max_size": 10}}


def test_capabilities_registry(monkeypatch):
    monkeypatch.setattr(hello_module, "CAPABILITIES", {})
    add_capability("history", "Track changes", "https://docs/history")
    with pytest.raises(ConfigurationError, match="history"):
        add_capability("history", "Other", "https://other")
    settings = load_settings(SETTINGS, environ={})
    first, second = Hello.from_settings(bare_app, settings), Hello.from_settings(bare_app, settings)
    first.add_capability("quotas", "Quotas", "https://docs/quotas")  # only on that instance
    with pytest.raises(ConfigurationError, match="history"):
        first.add_capability("history", "Again", "https://docs")
    assert webtest.TestApp(first, lint=True).get("/").json["capabilities"] == {
        "history": {"description": "Track changes", "url": "https://docs/history"},
        "quotas": {"description": "Quotas", "url": "https://docs/quotas"}}
    assert list(webtest.TestApp(second, lint=True).get("/").json["capabilities"]) == ["history"]


def test_capability_needs_description_and_url():
    with pytest.raises(ConfigurationError, match="history"):
        Hello(bare_app, capabilities={"history": {"description": "no url"}})


def test_from_settings_reads_eos_and_urls():
    settings = load_settings({**SETTINGS, "eos": "2099-01-05", "http_scheme": "https",
                              "http_host": "api.example.org", "http_api_version": "1.7"}, environ={})
    body = webtest.TestApp(Hello.from_settings(bare_app, settings), lint=True).get(
        "/", extra_environ={"SCRIPT_NAME": "/v1"}).json
    assert (body["eos"], body["url"], body["http_api_version"]) == ("2099-01-05", "https://api.example.org/v1/",
                                                                     "1.7")


def test_filter_factory():
    app = filter_factory({"project_name": "paste"}, project_version="3.0.1")(bare_app)
    body = webtest.TestApp(app, lint=True).get("/").json
    assert (body["project_name"], body["project_version"], body["http_api_version"]) == ("paste", "3.0.1", "3.0")


def test_repeated_requests_follow_the_user_host_and_capabilities():
    """Bodies are remembered per URL and user: a change of any of them, or a new capability, shows."""
    hello = Hello(bare_app)
    app = webtest.TestApp(authenticated(hello), lint=True)
    anonymous = webtest.TestApp(hello, lint=True)
    assert app.get("/").json["user"]["id"] == "basicauth:c2c5"
    assert "user" not in anonymous.get("/").json
    assert webtest.TestApp(authenticated(hello, userid="basicauth:other"), lint=True).get("/").json["user"] == {
        "id": "basicauth:other", "principals": ["system.Everyone", "system.Authenticated", "basicauth:other"]}
    assert app.get("/", headers={"Host": "example.com"}).json["url"] == "http://example.com/"
    assert app.get("/").json["url"] == "http://localhost/"
    hello.add_capability("quotas", "Quotas", "https://docs/quotas")
    assert list(app.get("/").json["capabilities"]) == ["quotas"]

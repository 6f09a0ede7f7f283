"""Heartbeat: ``__heartbeat__`` (checks run concurrently, with a timeout), ``__lbheartbeat__``, ``__version__``."""
from __future__ import annotations

import json
import threading

import pytest
import webtest
from webob import Request

from wsgicliquet import environ as keys
from wsgicliquet.middleware import heartbeat as heartbeat_module
from wsgicliquet.middleware.heartbeat import Heartbeat, add_check, filter_factory
from wsgicliquet.settings import ConfigurationError, load_settings
from wsgicliquet.storage.memory import Storage as MemoryStorage

from .pages import FRAMEWORKS, bare_app

NOT_FOUND = {"code": 404, "errno": 111, "error": "Not Found",
             "message": "The resource you are looking for could not be found."}
JSON = "application/json; charset=UTF-8"


@pytest.fixture(params=FRAMEWORKS)
def inner(request):
    return request.param()


class Backend:
    """A backend-shaped object: the heartbeat calls its ``ping(readonly=...)``."""

    def __init__(self, healthy=True):
        self.healthy = healthy
        self.calls = []

    def ping(self, readonly=False):
        self.calls.append(readonly)
        return self.healthy


class PingStorage(MemoryStorage):
    """Loaded by dotted path through ``storage_backend``, like any third-party backend (a subclass of the contract,
    as load_backend() requires)."""

    instances = []

    def ping(self, readonly=False):
        self.calls.append(readonly)
        return True

    @classmethod
    def from_settings(cls, settings, prefix="storage"):
        instance = cls()
        instance.calls = []
        cls.instances.append(instance)
        return instance


def _fail():
    raise RuntimeError("backend down")


@pytest.mark.parametrize("checks,status,body", [
    pytest.param({"storage": lambda: True, "cache": lambda: True}, 200, {"storage": True, "cache": True},
                 id="all-true"),
    pytest.param({"storage": lambda: True, "oauth": lambda: None}, 200, {"storage": True, "oauth": None},
                 id="none-is-not-applicable"),
    pytest.param({"storage": lambda: True, "cache": lambda: False}, 503, {"storage": True, "cache": False},
                 id="one-false"),
    pytest.param({"storage": _fail, "cache": lambda: True}, 503, {"storage": False, "cache": True},
                 id="raising-counts-false"),
    pytest.param({"storage": lambda: 1, "cache": lambda: 0}, 503, {"storage": True, "cache": False},
                 id="truthy-values-become-booleans"),
    pytest.param({}, 200, {}, id="no-checks"),
])
def test_heartbeat(inner, checks, status, body):
    app = webtest.TestApp(Heartbeat(inner, checks=checks), lint=True)
    response = app.get("/__heartbeat__", status=status)
    assert response.headers["Content-Type"] == JSON
    assert response.json == body
    assert "Retry-After" not in response.headers
    assert list(response.json) == list(body)  # the configured order


def test_checks_run_concurrently():
    """Three checks that each wait for the two others: only a concurrent run lets them all pass."""
    barrier = threading.Barrier(3, timeout=5)
    threads = set()

    def check():
        threads.add(threading.current_thread().name)
        barrier.wait()
        return True

    middleware = Heartbeat(bare_app, checks={"a": check, "b": check, "c": check})
    app = webtest.TestApp(middleware, lint=True)
    assert app.get("/__heartbeat__").json == {"a": True, "b": True, "c": True}
    barrier.reset()
    assert app.get("/__heartbeat__").json == {"a": True, "b": True, "c": True}
    assert all(name.startswith("wsgicliquet-heartbeat") for name in threads)
    assert len(threads) <= 6  # one pool, reused by every heartbeat


def test_timed_out_check_counts_false():
    release = threading.Event()
    app = webtest.TestApp(Heartbeat(bare_app, checks={"slow": lambda: release.wait(30), "fast": lambda: True},
                                    timeout=0.2), lint=True)
    try:
        assert app.get("/__heartbeat__", status=503).json == {"slow": False, "fast": True}
    finally:
        release.set()


def test_backends_are_pinged_with_the_readonly_flag():
    storage, cache = Backend(), Backend(healthy=False)
    app = webtest.TestApp(Heartbeat(bare_app, checks={"storage": storage, "cache": cache}, readonly=True),
                          lint=True)
    assert app.get("/__heartbeat__", status=503).json == {"storage": True, "cache": False}
    assert storage.calls == [True] and cache.calls == [True]


@pytest.mark.parametrize("path,view", [("/__heartbeat__", "heartbeat"), ("/__lbheartbeat__", "lbheartbeat"),
                                       ("/__version__", "version")])
def test_view_names(path, view):
    environ = Request.blank(path).environ
    Heartbeat(bare_app)(environ, lambda *args: None)
    assert environ[keys.VIEW] == view


def test_lbheartbeat_is_always_ok(inner):
    app = webtest.TestApp(Heartbeat(inner, checks={"storage": lambda: False}), lint=True)
    response = app.get("/__lbheartbeat__", status=200)
    assert response.json == {}
    assert response.headers["Content-Type"] == JSON


@pytest.mark.parametrize("path,status", [("/__heartbeat__", 200), ("/__lbheartbeat__", 200), ("/__version__", 404)])
def test_head(path, status):
    response = webtest.TestApp(Heartbeat(bare_app, checks={"a": lambda: True}), lint=True).head(path, status=status)
    assert response.body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/__heartbeat__", "/__lbheartbeat__", "/__version__"])
def test_writes_are_not_allowed(method, path):
    response = webtest.TestApp(Heartbeat(bare_app), lint=True).request(path, method=method, status=405)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert response.json == {"code": 405, "errno": 115, "error": "Method Not Allowed",
                             "message": "Method not allowed on this endpoint."}


def test_version_file_relative_to_working_directory(inner, tmp_path, monkeypatch):
    version = {"name": "myapp", "version": "1.4.2", "commit": "abc123", "source": "https://example.org/myapp"}
    (tmp_path / "version.json").write_text(json.dumps(version))
    monkeypatch.chdir(tmp_path)
    response = webtest.TestApp(Heartbeat(inner), lint=True).get("/__version__")
    assert response.json == version
    assert response.headers["Content-Type"] == JSON


@pytest.mark.parametrize("content", [
    pytest.param(None, id="missing"),
    pytest.param("{not json", id="invalid-json"),
    pytest.param("[1, 2]", id="not-an-object"),
    pytest.param("", id="empty"),
])
def test_version_unavailable_is_404(inner, tmp_path, content):
    path = tmp_path / "build" / "version.json"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    app = webtest.TestApp(Heartbeat(inner, version_json_path=str(path)), lint=True)
    assert app.get("/__version__", status=404).json == NOT_FOUND


@pytest.mark.parametrize("path", ["/page", "/__heartbeat__/", "/x/__heartbeat__"])
def test_other_paths_pass_through(inner, path):
    app = webtest.TestApp(Heartbeat(inner, checks={"storage": lambda: False}), lint=True)
    response = app.get(path, expect_errors=True)
    if path == "/page":
        assert response.status_int == 200 and response.text == "page"
    else:
        assert response.status_int == 404 and response.content_type != "application/json"


def test_pass_through_is_untouched():
    body = [b"untouched"]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    assert Heartbeat(app)(Request.blank("/page").environ, lambda *args: None) is body


@pytest.mark.parametrize("path", ["/__heartbeat__", "/__lbheartbeat__", "/__version__"])
def test_options_lists_the_methods_for_cors_preflights(path):
    calls = []

    def app(environ, start_response):
        calls.append(environ["REQUEST_METHOD"])
        return bare_app(environ, start_response)

    response = webtest.TestApp(Heartbeat(app), lint=True).options(path)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert calls == []


@pytest.mark.parametrize("options", [
    pytest.param({"timeout": 0}, id="zero-timeout"),
    pytest.param({"checks": {"storage": "memory://"}}, id="not-callable"),
])
def test_bad_configuration(options):
    with pytest.raises(ConfigurationError):
        Heartbeat(bare_app, **options)


def test_registered_checks(monkeypatch):
    monkeypatch.setattr(heartbeat_module, "CHECKS", {})
    add_check("oauth", lambda: True)
    with pytest.raises(ConfigurationError, match="oauth"):
        add_check("oauth", lambda: False)
    settings = load_settings({"storage_url": "", "cache_url": "", "permission_url": ""}, environ={})
    app = webtest.TestApp(Heartbeat.from_settings(bare_app, settings), lint=True)
    assert app.get("/__heartbeat__").json == {"oauth": True}


@pytest.mark.parametrize("readonly", [False, True])
def test_from_settings_pings_the_configured_backends(readonly):
    settings = load_settings({"storage_backend": "tests.middleware.test_heartbeat:PingStorage",
                              "storage_url": "", "cache_url": "", "permission_url": "",
                              "storage_pool_size": str(10 + readonly),  # a distinct shared instance per case
                              "readonly": str(readonly)}, environ={})
    app = webtest.TestApp(Heartbeat.from_settings(bare_app, settings), lint=True)
    assert app.get("/__heartbeat__").json == {"storage": True}
    assert PingStorage.instances[-1].calls == [readonly]


def test_from_settings_with_memory_backends():
    app = webtest.TestApp(Heartbeat.from_settings(bare_app, load_settings({}, environ={})), lint=True)
    assert app.get("/__heartbeat__").json == {"storage": True, "cache": True, "permission": True}


@pytest.mark.redis
def test_redis_backends_up_and_down(redis_url):
    up = load_settings({"storage_url": redis_url, "cache_url": redis_url, "permission_url": ""}, environ={})
    app = webtest.TestApp(Heartbeat.from_settings(bare_app, up), lint=True)
    assert app.get("/__heartbeat__").json == {"storage": True, "cache": True}
    down = load_settings({"storage_url": "memory://", "cache_url": "redis://127.0.0.1:1/0", "permission_url": "",
                          "heartbeat_timeout_seconds": "5"}, environ={})
    app = webtest.TestApp(Heartbeat.from_settings(bare_app, down), lint=True)
    assert app.get("/__heartbeat__", status=503).json == {"storage": True, "cache": False}


def test_filter_factory(tmp_path):
    (tmp_path / "v.json").write_text('{"version": "2.0"}')
    app = filter_factory({"storage_url": "", "cache_url": "", "permission_url": ""},
                         version_json_path=str(tmp_path / "v.json"))(bare_app)
    assert webtest.TestApp(app, lint=True).get("/__version__").json == {"version": "2.0"}


@pytest.mark.parametrize("layers", ["heartbeat", "pipeline"])
def test_head_of_a_failing_heartbeat_is_the_report_not_an_error(layers):
    """HEAD answers what GET answers, without the body: the same 503 report, no ``Retry-After`` of an error."""
    from wsgicliquet.middleware.backoff import Backoff
    from wsgicliquet.middleware.json_errors import JsonErrors

    app = Heartbeat(bare_app, checks={"storage": _fail, "cache": lambda: True})
    if layers == "pipeline":
        app = JsonErrors(Backoff(app, retry_after_seconds=30), paths=["/"])
    client = webtest.TestApp(app, lint=True)
    got = client.get("/__heartbeat__", status=503)
    head = client.head("/__heartbeat__", status=503)
    assert got.json == {"storage": False, "cache": True}
    assert head.body == b""
    assert "Retry-After" not in got.headers and "Retry-After" not in head.headers
    assert head.headers["Content-Type"] == got.headers["Content-Type"]


@pytest.mark.parametrize("healthy", [True, False], ids=["healthy", "failing"])
def test_batch_sub_requests_reach_the_heartbeat_views(monkeypatch, tmp_path, healthy):
    """The heartbeat sits above the batch: its views are served to sub-requests too, and a failing heartbeat is an
    entry of the batch (a report, not an error aborting it), as in Cliquet where they are ordinary views."""
    import base64

    from wsgicliquet import build_pipeline

    monkeypatch.setattr(heartbeat_module, "CHECKS", {"oauth": lambda: healthy})
    version = tmp_path / "version.json"
    version.write_text('{"version": "1.2.3"}')
    settings = {"storage_url": "", "cache_url": "", "permission_url": "", "userid_hmac_secret": "s",
                "version_json_path": str(version)}
    app = webtest.TestApp(build_pipeline(bare_app, settings))
    batch = {"requests": [{"path": "/__heartbeat__"}, {"path": "/v1/__lbheartbeat__"}, {"path": "/__version__"},
                          {"path": "/__heartbeat__", "method": "HEAD"}, {"path": "/nothing"}]}
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    responses = app.post_json("/v1/batch", batch, headers=auth, status=200).json["responses"]
    assert [(entry["path"], entry["status"]) for entry in responses] == [
        ("/v1/__heartbeat__", 200 if healthy else 503), ("/v1/__lbheartbeat__", 200), ("/v1/__version__", 200),
        ("/v1/__heartbeat__", 200 if healthy else 503), ("/v1/nothing", 404)]
    assert responses[0]["body"] == {"oauth": healthy} and responses[2]["body"] == {"version": "1.2.3"}
    assert responses[1]["body"] == {} and responses[3]["body"] == ""
    direct = app.get("/v1/__heartbeat__", status=200 if healthy else 503)
    assert direct.json == responses[0]["body"]

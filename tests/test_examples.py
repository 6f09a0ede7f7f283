"""The example sites, loaded from their ``.ini`` files the way ``wsgicliquet serve`` and gunicorn load them.

Each example keeps its own pages (HTML, its own error pages) and gains the API under ``/v1``: hello, bookmarks,
batch, JSON errors, and a framework view (``/v1/scores``) using the same storage through the environ.
"""
from __future__ import annotations

import base64
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Iterator

import pytest
import webtest
from paste.deploy import loadapp

from wsgicliquet.__main__ import main
from wsgicliquet.backends import load_backend
from wsgicliquet.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent

# (ini file, the class of the framework's WSGI app), by test id.
EXAMPLES = {
    "flask": ("examples/flask_app/app.ini", "Flask"),
    "flask-layers": ("examples/flask_app/pipeline.ini", "Flask"),
    "bottle": ("examples/bottle_app/app.ini", "Bottle"),
    "pyramid": ("examples/pyramid_app/app.ini", "Router"),
}
PROJECT_NAMES = {"examples/flask_app": "arcade", "examples/bottle_app": "library", "examples/pyramid_app": "chessclub"}
BACKEND_SETTINGS = ("storage_url", "cache_url", "permission_url")
OVERRIDE_PREFIXES = ("WSGICLIQUET_",) + tuple(name.upper() + "_" for name in PROJECT_NAMES.values())
PRIVATE_SCHEMA = "wsgicliquet_examples"
PRIVATE_REDIS_PREFIX = "wsgicliquet-examples:"


def private_postgresql_url(url: str) -> str:
    """``url`` with its own schema, so that other suites flushing the shared test database leave these tests alone."""
    import psycopg2
    from psycopg2 import sql

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PRIVATE_SCHEMA)))
    connection.close()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{PRIVATE_SCHEMA}"


def clear_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove environment overrides of the machine running the tests, so that the ini's values apply."""
    for variable in list(os.environ):
        if variable.startswith(OVERRIDE_PREFIXES):
            monkeypatch.delenv(variable)


def basic_auth(user: str) -> Dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


@pytest.fixture
def user() -> Dict[str, str]:
    """A fresh user per test: the memory backend is shared by the whole process."""
    return basic_auth(f"player-{uuid.uuid4().hex[:8]}")


# The Python form: each example's app_factory, which calls make_app(settings) (build_pipeline in Python).
PYTHON_FORMS = {f"{name}-python": f"examples.{name}_app.app" for name in ("flask", "bottle", "pyramid")}


@pytest.fixture(params=list(EXAMPLES) + list(PYTHON_FORMS))
def example(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> webtest.TestApp:
    clear_overrides(monkeypatch)
    if request.param in PYTHON_FORMS:
        module = importlib.import_module(PYTHON_FORMS[request.param])
        name = PROJECT_NAMES[module.__name__.rpartition(".")[0].replace(".", "/")]
        return webtest.TestApp(module.app_factory({}, project_name=name, userid_hmac_secret="s"), lint=True)
    ini, _site = EXAMPLES[request.param]
    return webtest.TestApp(loadapp(f"config:{ROOT / ini}"), lint=True)


def test_flask_wsgi_app_idiom(monkeypatch, user):
    """``app.wsgi_app = make_app(settings)``: the Flask object itself then serves the site and the API."""
    from examples.flask_app import app as example_module

    clear_overrides(monkeypatch)
    monkeypatch.setattr(example_module.app, "wsgi_app", example_module.make_app({"project_name": "arcade"}))
    client = webtest.TestApp(example_module.app, lint=True)
    assert "Home" in client.get("/").text
    assert client.post_json("/v1/scores", {"game": "g", "score": 1}, headers=user, status=201)
    assert client.get("/v1/scores", status=401).json["errno"] == 104


@pytest.mark.parametrize("path, text", [
    pytest.param("/", "Home", id="index"),
    pytest.param("/about", "Cliquet API under /v1", id="about"),
])
def test_the_site_pages_are_unchanged(example, path, text):
    response = example.get(path, headers={"Accept": "text/html"})
    assert response.content_type == "text/html"
    assert text in response.text


def test_the_site_json_view_is_unchanged(example):
    response = example.get("/status.json")
    assert response.content_type == "application/json"
    assert len(response.json["games"]) == 2


def test_the_site_keeps_its_html_errors(example):
    response = example.get("/nope", headers={"Accept": "text/html"}, status=404)
    assert response.content_type == "text/html"
    assert "errno" not in response.text


@pytest.mark.parametrize("path", [
    pytest.param("/v1/nope", id="unknown"),
    pytest.param("/v1/about", id="site-page-under-the-api"),
    pytest.param("/v1/bookmarks/x/y", id="below-a-record"),
])
def test_api_paths_answer_json_errors(example, path):
    response = example.get(path, headers={"Accept": "text/html"}, status=404)
    assert response.content_type == "application/json"
    assert (response.json["code"], response.json["errno"]) == (404, 111)


def test_an_unknown_version_is_a_json_404(example):
    assert example.get("/v2/bookmarks", status=404).json["errno"] == 116


def test_api_views_are_not_served_at_the_root(example, user):
    response = example.get("/scores", headers={"Accept": "text/html", **user}, status=404)
    assert response.content_type == "text/html"


def test_a_method_an_api_view_refuses_is_a_json_405_under_the_api_only(example, user):
    refused = example.put_json("/v1/scores", {"game": "g", "score": 1}, headers=user, status=405)
    assert (refused.json["code"], refused.json["errno"]) == (405, 115)
    assert example.put_json("/scores", {"game": "g", "score": 1}, headers=user, status=404)


def test_hello_shows_the_project_and_the_user(example, user):
    anonymous = example.get("/v1/").json
    assert anonymous["project_name"] in PROJECT_NAMES.values()
    assert anonymous["url"] == "http://localhost/v1/"
    assert "user" not in anonymous
    assert example.get("/v1/", headers=user).json["user"]["id"].startswith("basicauth:")


def test_unprefixed_dockerflow_endpoints_are_served(example):
    assert example.get("/__lbheartbeat__").json == {}
    assert example.get("/v1/__heartbeat__").status_int == 200


def test_bookmarks_crud(example, user):
    created = example.post_json("/v1/bookmarks", {"data": {"url": "https://example.com/a", "title": "A"}},
                                headers=user, status=201).json["data"]
    assert created["title"] == "A"  # fields the schema does not declare are kept
    url = f"/v1/bookmarks/{created['id']}"
    assert example.get(url, headers=user).json["data"] == created
    listed = example.get("/v1/bookmarks", headers=user)
    assert [record["id"] for record in listed.json["data"]] == [created["id"]]
    assert listed.headers["Total-Records"] == "1"
    patched = example.patch_json(url, {"data": {"title": "B"}}, headers=user).json["data"]
    assert (patched["title"], patched["url"]) == ("B", "https://example.com/a")
    replaced = example.put_json(url, {"data": {"url": "https://example.com/c"}}, headers=user).json["data"]
    assert "title" not in replaced
    deleted = example.delete(url, headers=user).json["data"]
    assert deleted["deleted"] is True
    assert example.get(url, headers=user, status=404).json["errno"] == 110


def test_bookmarks_are_private(example, user):
    created = example.post_json("/v1/bookmarks", {"data": {"url": "https://example.com/"}}, headers=user).json
    other = basic_auth(f"other-{uuid.uuid4().hex[:8]}")
    assert example.get("/v1/bookmarks", headers=other).json["data"] == []
    example.get(f"/v1/bookmarks/{created['data']['id']}", headers=other, status=404)


def test_bookmark_urls_are_stripped_of_whitespace_as_in_cliquet(example, user):
    """PROTOCOL.md §20.1: ``"  http://l.org  "`` is stored as ``http://l.org``."""
    created = example.post_json("/v1/bookmarks", {"data": {"url": "  http://l.org  "}}, headers=user).json["data"]
    assert created["url"] == "http://l.org"
    url = f"/v1/bookmarks/{created['id']}"
    assert example.get(url, headers=user).json["data"]["url"] == "http://l.org"
    patched = example.patch_json(url, {"data": {"url": "\thttp://m.org\n"}}, headers=user).json["data"]
    assert patched["url"] == "http://m.org"
    replaced = example.put_json(url, {"data": {"url": " http://n.org", "note": " kept "}}, headers=user).json["data"]
    assert (replaced["url"], replaced["note"]) == ("http://n.org", " kept "), "only the URL is stripped"


@pytest.mark.parametrize("body, field", [
    pytest.param({"title": "no url"}, "data.url", id="missing-url"),
    pytest.param({"url": "not a uri"}, "data.url", id="not-a-uri"),
    pytest.param({"url": "   "}, "data.url", id="blank"),
    pytest.param({"url": "http://a.org/" + "x" * 2048}, "data.url", id="too-long"),
])
def test_bookmarks_validate_the_url(example, user, body, field):
    error = example.post_json("/v1/bookmarks", {"data": body}, headers=user, status=400).json
    assert (error["errno"], error["details"][0]["name"]) == (107, field)


def test_bookmarks_need_authentication(example):
    response = example.get("/v1/bookmarks", status=401)
    assert response.json["errno"] == 104
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_scores_view_needs_authentication(example):
    response = example.post_json("/v1/scores", {"game": "g", "score": 1}, status=401)
    assert (response.content_type, response.json["errno"]) == ("application/json", 104)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_scores_view_stores_per_user_scores_best_first(example, user):
    for score in (10, 30, 20):
        created = example.post_json("/v1/scores", {"game": "g", "score": score}, headers=user, status=201)
        assert created.json["data"]["score"] == score
    listed = example.get("/v1/scores", headers=user).json["data"]
    assert [record["score"] for record in listed] == [30, 20, 10]
    assert example.get("/v1/scores", headers=basic_auth(f"o-{uuid.uuid4().hex}")).json["data"] == []


def test_scores_view_answers_head_as_get(example, user):
    """Frameworks route HEAD to the GET view: it lists (without a body), it never reads a score to create."""
    example.post_json("/v1/scores", {"game": "g", "score": 5}, headers=user, status=201)
    listed = example.get("/v1/scores", headers=user)
    head = example.head("/v1/scores", headers=user, status=200)
    assert (head.content_type, head.body) == (listed.content_type, b"")
    assert len(example.get("/v1/scores", headers=user).json["data"]) == 1


@pytest.mark.parametrize("body", [
    pytest.param({"game": "g"}, id="no-score"),
    pytest.param({"game": "g", "score": "high"}, id="score-not-an-integer"),
    pytest.param(["g", 1], id="not-an-object"),
])
def test_scores_view_refuses_bad_bodies(example, user, body):
    error = example.post_json("/v1/scores", body, headers=user, status=400).json
    assert (error["errno"], error["details"][0]["location"]) == (107, "body")


@pytest.mark.parametrize("body", [
    pytest.param(b"[" * 100000, id="nested-beyond-the-recursion-limit"),
    pytest.param(b'{"game": "g", "score": ' + b"[" * 100 + b"]" * 100 + b"}", id="nested-too-deep"),
    pytest.param(b'{"game": "\\ud800", "score": 1}', id="lone-surrogate"),
    pytest.param(b'{"game": "\\u0000", "score": 1}', id="nul-character"),
    pytest.param(b'{"game": "g", "score": 99999999999999999999}', id="integer-beyond-64-bits"),
    pytest.param(b'{"game": "g", "score": NaN}', id="nan"),
    pytest.param(b'\xff', id="not-utf-8"),
])
def test_scores_view_refuses_bodies_the_resources_refuse(example, user, body):
    """The framework's own JSON decoding let a deep body through as a 500, and stored what PostgreSQL cannot hold
    (lone surrogates, NUL) or reads back differently (integers beyond 64 bits): the view parses like the resources."""
    headers = {**user, "Content-Type": "application/json"}
    error = example.post("/v1/scores", body, headers=headers, status=400).json
    assert (error["errno"], error["details"][0]["location"]) == (107, "body")
    assert example.get("/v1/scores", headers=user).json["data"] == []


def test_scores_view_refuses_bodies_beyond_the_resources_limit(example, user):
    """The frameworks read a body whole, whatever its size (a worker held a 2 GB upload in memory): the view reads
    it as the resources do, 413 errno 113 beyond ``storage_max_request_size``."""
    padding = b"x" * (8 * 1024 * 1024)
    body = b'{"game": "g", "score": 1, "padding": "' + padding + b'"}'
    headers = {**user, "Content-Type": "application/json"}
    error = example.post("/v1/scores", body, headers=headers, status=413).json
    assert error["errno"] == 113
    assert example.get("/v1/scores", headers=user).json["data"] == []
    assert example.post("/v1/scores", b'{"game": "g", "score": 1}', headers=headers, status=201)


def test_scores_view_uses_the_storage_of_the_settings(example, user):
    """The view's records are in the configured backend, in the user's partition, beside the bookmarks."""
    example.post_json("/v1/scores", {"game": "g", "score": 7}, headers=user, status=201)
    userid = example.get("/v1/", headers=user).json["user"]["id"]
    storage = load_backend("storage", load_settings({"storage_url": "memory://"}, environ={}))
    records, total = storage.get_all("score", userid)
    assert (total, records[0]["score"]) == (1, 7)


def test_batch_mixes_a_bookmark_and_a_framework_view(example, user):
    batch = {"requests": [
        {"method": "POST", "path": "/v1/bookmarks", "body": {"data": {"url": "https://example.com/b"}}},
        {"method": "POST", "path": "/scores", "body": {"game": "g", "score": 42}},
        {"method": "GET", "path": "/v1/scores"},
        {"method": "GET", "path": f"/v1/bookmarks/{uuid.uuid4()}"},
    ]}
    responses = example.post_json("/v1/batch", batch, headers=user).json["responses"]
    assert [response["status"] for response in responses] == [201, 201, 200, 404]
    assert responses[1]["path"] == "/v1/scores"
    assert [record["score"] for record in responses[2]["body"]["data"]] == [42]
    assert responses[3]["body"]["errno"] == 110
    assert [r["url"] for r in example.get("/v1/bookmarks", headers=user).json["data"]] == ["https://example.com/b"]


def test_framework_errors_inside_a_batch_are_json(example, user):
    batch = {"requests": [{"method": "GET", "path": "/nope"}, {"method": "GET", "path": "/about"}]}
    responses = example.post_json("/v1/batch", batch, headers=user).json["responses"]
    # The framework answers both with its own HTML 404 (its pages live at the root, not under /v1).
    assert [(r["status"], r["body"]["errno"]) for r in responses] == [(404, 111), (404, 111)]
    assert responses[0]["headers"]["Content-Type"] == "application/json; charset=UTF-8"


def test_batch_sub_requests_are_authenticated_one_by_one(example):
    batch = {"requests": [{"method": "GET", "path": "/scores"}, {"method": "GET", "path": "/bookmarks"}]}
    responses = example.post_json("/v1/batch", batch).json["responses"]
    assert [response["status"] for response in responses] == [401, 401]


@pytest.mark.parametrize("ini, site", [pytest.param(*value, id=key) for key, value in EXAMPLES.items()])
def test_pipeline_command_prints_the_chain(ini, site, monkeypatch, capsys):
    clear_overrides(monkeypatch)
    assert main(["pipeline", "--ini", str(ROOT / ini)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    names = [line.split(" ")[0] for line in lines]
    assert names[:7] == ["Profiler", "RequestLog", "StatsdMetrics", "Cors", "JsonErrors", "Sentry", "VersionPrefix"]
    assert names[7] == "/v1:"
    assert names[8:19] == ["Backoff", "EndOfLife", "Heartbeat", "Transaction", "Batch", "JsonErrors",
                           "Authentication", "ReadOnly", "Hello", "Backends", "ResourceApp"]
    assert names[19] == site


def _clean_environment() -> Dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith(OVERRIDE_PREFIXES)}


def test_the_documented_pipeline_command():
    """``python -m wsgicliquet pipeline --ini examples/flask_app/app.ini``, from the repository root."""
    output = subprocess.run([sys.executable, "-m", "wsgicliquet", "pipeline", "--ini", "examples/flask_app/app.ini"],
                            cwd=ROOT, env=_clean_environment(), capture_output=True, text=True, timeout=60,
                            check=True).stdout
    assert output.splitlines()[0].startswith("Profiler ")
    assert "ResourceApp (wsgicliquet.resource.app.ResourceApp)" in output
    assert output.splitlines()[-1] == "Flask (flask.app.Flask)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:  # refused, reset, or timed out while the workers boot
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def served_flask_example() -> Iterator[str]:
    """``python -m wsgicliquet serve --ini examples/flask_app/app.ini`` (the README's command) on a free port."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wsgicliquet", "serve", "--ini", "examples/flask_app/app.ini", "--port", str(port)],
        cwd=ROOT, env=_clean_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base + "/__lbheartbeat__", process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_development_server_serves_the_flask_example(served_flask_example):
    with urllib.request.urlopen(served_flask_example + "/") as response:
        assert response.headers.get_content_type() == "text/html"
    with urllib.request.urlopen(served_flask_example + "/v1/") as response:
        assert json.loads(response.read())["url"] == served_flask_example + "/v1/"


def test_serve_listens_on_8888_by_default():
    from wsgicliquet.__main__ import build_parser

    assert build_parser().parse_args(["serve", "--ini", "examples/flask_app/app.ini"]).port == 8888


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
                                  pytest.param("redis", marks=pytest.mark.redis, id="redis")])
@pytest.mark.parametrize("ini", [pytest.param("examples/flask_app/app.ini", id="flask"),
                                 pytest.param("examples/bottle_app/app.ini", id="bottle"),
                                 pytest.param("examples/pyramid_app/app.ini", id="pyramid")])
def test_environment_moves_the_backends(kind, ini, request, monkeypatch, user):
    """``WSGICLIQUET_STORAGE_URL`` (and the cache and permission URLs) move an example off the memory backend."""
    url = request.getfixturevalue(f"{kind}_url")
    clear_overrides(monkeypatch)
    if kind == "postgresql":
        url = private_postgresql_url(url)
    else:
        monkeypatch.setenv("WSGICLIQUET_REDIS_KEY_PREFIX", PRIVATE_REDIS_PREFIX)
    for name in BACKEND_SETTINGS:
        monkeypatch.setenv("WSGICLIQUET_" + name.upper(), url)
    assert main(["migrate", "--ini", str(ROOT / ini)]) == 0
    settings = load_settings({})
    storage = load_backend("storage", settings)
    assert type(storage).__module__ == f"wsgicliquet.storage.{kind}"
    try:
        app = webtest.TestApp(loadapp(f"config:{ROOT / ini}"), lint=True)
        created = app.post_json("/v1/bookmarks", {"data": {"url": "https://example.com/pg"}}, headers=user).json
        app.post_json("/v1/scores", {"game": "g", "score": 3}, headers=user, status=201)
        userid = app.get("/v1/", headers=user).json["user"]["id"]
        assert storage.get("bookmark", userid, created["data"]["id"])["url"] == "https://example.com/pg"
        assert storage.get_all("score", userid)[1] == 1
        assert app.get("/v1/__heartbeat__").json == {"storage": True, "cache": True, "permission": True}
    finally:
        for kind_name in ("storage", "cache", "permission"):
            load_backend(kind_name, settings).flush()


@pytest.mark.parametrize("module", sorted(PYTHON_FORMS.values()))
def test_a_storage_failure_in_an_api_view_is_a_503(module, monkeypatch, caplog, user):
    """The scores view of each framework, its storage unreachable (nothing listens on port 1): the protocol's 503
    errno 201 with Retry-After, logged at critical, directly and in a batch (Flask and Bottle answered their own
    500)."""
    clear_overrides(monkeypatch)
    example_module = importlib.import_module(module)
    name = PROJECT_NAMES[module.rpartition(".")[0].replace(".", "/")]
    app = webtest.TestApp(example_module.app_factory(
        {}, project_name=name, userid_hmac_secret="s", storage_url="redis://127.0.0.1:1/11", cache_url="",
        permission_url="memory://"), lint=True)
    with caplog.at_level("CRITICAL"):
        response = app.get("/v1/scores", headers=user, status=503)
        assert (response.json["errno"], response.headers["Retry-After"]) == (201, "30")
        assert app.post_json("/v1/scores", {"game": "go", "score": 1}, headers=user, status=503).json["errno"] == 201
        batch = app.post_json("/v1/batch", {"requests": [{"method": "GET", "path": "/scores"}]}, headers=user,
                              status=503)
        assert batch.json["errno"] == 201
    assert [record.levelname for record in caplog.records if record.getMessage().startswith("Backend failure")] \
        == ["CRITICAL"] * 3

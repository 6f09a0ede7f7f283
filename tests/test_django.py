"""A Django site wrapped by the pipeline, as the Flask example is: its pages unchanged at the root, the protocol
under ``/v1``, and Django views under ``/v1`` reached through the resource app's fallback (``tests/django_site.py``).
"""
from __future__ import annotations

import base64
import uuid
from typing import Dict, Iterator, List

import pytest
import webtest
from django.core.signals import request_finished, request_started

from tests import django_site
from wsgicliquet.backends import load_backend
from wsgicliquet.settings import load_settings

PRIVATE_SCHEMA = "wsgicliquet_django"


def basic_auth(user: str) -> Dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


@pytest.fixture
def user() -> Dict[str, str]:
    """A fresh user per test: the memory backend is shared by the whole process."""
    return basic_auth(f"reader-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def app() -> webtest.TestApp:
    return webtest.TestApp(django_site.make_app({"project_name": "club", "userid_hmac_secret": "s"}), lint=True)


# The site, at the root: Django's own behaviour.

def test_the_site_pages_are_unchanged(app):
    page = app.get("/", headers={"Accept": "text/html"})
    assert page.content_type == "text/html"
    assert '<a href="/about/">About</a>' in page.text  # {% url %} at the root: no script prefix
    assert "Cliquet API under /v1" in app.get("/about/").text
    assert app.get("/status.json").json == {"site": "reading club", "books": ["Dune", "Emma"]}


def test_the_site_keeps_django_html_errors(app):
    missing = app.get("/nope", headers={"Accept": "application/json"}, status=404)
    assert missing.content_type == "text/html"
    assert "<h1>Not Found</h1>" in missing.text and "errno" not in missing.text
    failed = app.get("/broken/", status=500)
    assert failed.content_type == "text/html"
    assert "Server Error (500)" in failed.text
    assert app.get("/reading", headers=basic_auth("someone"), status=404).content_type == "text/html"


def test_the_site_keeps_append_slash(app):
    """Django's ``APPEND_SLASH`` redirects the site's pages: wsgicliquet's trailing-slash rule is for ``/v1`` only."""
    assert app.get("/about", status=301).headers["Location"] == "/about/"


def test_the_site_forms_keep_their_csrf_protection(app):
    forbidden = app.post("/contact/", {"message": "hi"}, status=403)
    assert forbidden.content_type == "text/html"
    form = app.get("/contact/").form  # the CSRF cookie and token, as a browser gets them
    form["message"] = "hello"
    assert "hello" in form.submit().text


# The protocol under /v1.

def test_hello_shows_the_project_and_the_user(app, user):
    hello = app.get("/v1/", headers=user).json
    assert hello["project_name"] == "club"
    assert hello["url"] == "http://localhost/v1/"
    assert hello["user"]["id"].startswith("basicauth:")
    assert app.get("/v1", status=307).headers["Location"] == "http://localhost/v1/"


def test_bookmarks_crud(app, user):
    assert app.get("/v1/bookmarks", status=401).json["errno"] == 104
    created = app.post_json("/v1/bookmarks", {"data": {"url": "https://example.com/a"}}, headers=user,
                            status=201).json["data"]
    record = f"/v1/bookmarks/{created['id']}"
    assert app.get(record, headers=user).json["data"]["url"] == "https://example.com/a"
    patched = app.patch_json(record, {"data": {"title": "A"}}, headers=user).json["data"]
    assert (patched["url"], patched["title"]) == ("https://example.com/a", "A")
    assert [r["id"] for r in app.get("/v1/bookmarks", headers=user).json["data"]] == [created["id"]]
    assert app.get(record, headers=basic_auth("someone-else"), status=404).json["errno"] == 110
    assert app.delete(record, headers=user).json["data"]["deleted"] is True
    assert app.get(record, headers=user, status=404).json["errno"] == 110
    assert app.post_json("/v1/bookmarks", {"data": {"url": "no"}}, headers=user, status=400).json["errno"] == 107


def test_a_django_view_under_the_api_sees_the_user_and_the_storage(app, user):
    app.post_json("/v1/bookmarks", {"data": {"url": "https://example.com/b"}}, headers=user, status=201)
    whoami = app.get("/v1/whoami", headers=user).json
    assert whoami["userid"] == app.get("/v1/", headers=user).json["user"]["id"]
    assert whoami["bookmarks"] == ["https://example.com/b"]  # the records of the resource app
    app.post_json("/v1/reading", {"title": "Emma", "pages": 474}, headers=user, status=201)
    app.post_json("/v1/reading", {"title": "Dune", "pages": 612}, headers=user, status=201)
    listed = app.get("/v1/reading", headers=user).json["data"]
    assert [record["title"] for record in listed] == ["Dune", "Emma"]
    assert app.get("/v1/reading", headers=basic_auth("someone-else")).json["data"] == []


def test_a_django_view_answers_protocol_errors(app, user):
    anonymous = app.get("/v1/reading", status=401)
    assert anonymous.json["errno"] == 104
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    refused = app.post_json("/v1/reading", {"title": "Dune"}, headers=user, status=400).json
    assert (refused["errno"], refused["details"][0]["location"]) == (107, "body")


@pytest.mark.parametrize("path", [
    pytest.param("/v1/nope", id="unknown"),
    pytest.param("/v1/status.json", id="site-page-under-the-api"),
    pytest.param("/v1/bookmarks/x/y", id="below-a-record"),
])
def test_django_404_under_the_api_is_a_json_error(app, path):
    response = app.get(path, headers={"Accept": "text/html"}, status=404)
    assert response.content_type == "application/json"
    assert (response.json["code"], response.json["errno"]) == (404, 111)


def test_django_500_under_the_api_is_a_json_error(app):
    response = app.get("/v1/broken", status=500)
    assert (response.json["code"], response.json["errno"]) == (500, 999)
    assert app.head("/v1/broken", status=500).body == b""


def test_a_method_a_django_view_refuses_is_a_json_405(app, user):
    response = app.delete("/v1/reading", headers=user, status=405)
    assert (response.json["errno"], response.headers["Allow"]) == (115, "GET, POST")


def test_an_api_view_without_csrf_exempt_refuses_posts(app, user):
    """Django's CSRF check applies to every view not ``csrf_exempt``: under the API, its 403 becomes errno 121."""
    response = app.post("/v1/notes", "x", headers=user, status=403)
    assert (response.json["code"], response.json["errno"]) == (403, 121)


def test_a_storage_failure_in_a_django_view_is_a_503(user, caplog):
    """Nothing listens on port 1: the view's BackendError is the protocol's 503 (``ApiMiddleware``), directly and
    in a batch."""
    app = webtest.TestApp(django_site.make_app({
        "project_name": "club", "userid_hmac_secret": "s", "storage_url": "redis://127.0.0.1:1/11",
        "cache_url": "", "permission_url": "memory://"}), lint=True)
    with caplog.at_level("CRITICAL"):
        response = app.get("/v1/reading", headers=user, status=503)
        assert (response.json["errno"], response.headers["Retry-After"]) == (201, "30")
        batch = app.post_json("/v1/batch", {"requests": [{"method": "GET", "path": "/reading"}]}, headers=user,
                              status=503)
        assert batch.json["errno"] == 201


@pytest.mark.postgresql
def test_a_django_500_rolls_the_request_back(postgresql_url, user):
    """On PostgreSQL each request, and each batch, is one storage transaction: the write of a Django view that
    fails afterwards (Django answers its own 500) is rolled back."""
    url = _private_postgresql_url(postgresql_url)
    settings = load_settings({"storage_url": url})
    storage = load_backend("storage", settings)
    storage.initialize_schema()
    try:
        app = webtest.TestApp(django_site.make_app({"project_name": "club", "userid_hmac_secret": "s",
                                                    "storage_url": url}), lint=True)
        assert app.post("/v1/broken-after-writing", headers=user, status=500).json["errno"] == 999
        batch = {"requests": [{"method": "POST", "path": "/reading", "body": {"title": "Emma", "pages": 474}},
                              {"method": "POST", "path": "/broken-after-writing"}]}
        assert app.post_json("/v1/batch", batch, headers=user, status=500).json["errno"] == 999
        assert app.get("/v1/reading", headers=user).json["data"] == []
        app.post_json("/v1/reading", {"title": "Emma", "pages": 474}, headers=user, status=201)
        assert [record["title"] for record in app.get("/v1/reading", headers=user).json["data"]] == ["Emma"]
    finally:
        storage.flush()


def _private_postgresql_url(url: str) -> str:
    """``url`` with its own schema, so that other suites flushing the shared test database leave this one alone."""
    import psycopg2
    from psycopg2 import sql

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PRIVATE_SCHEMA)))
    connection.close()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{PRIVATE_SCHEMA}"


# Batch.

def test_batch_mixes_a_bookmark_and_django_views(app, user):
    batch = {"requests": [
        {"method": "POST", "path": "/v1/bookmarks", "body": {"data": {"url": "https://example.com/c"}}},
        {"method": "POST", "path": "/reading", "body": {"title": "Emma", "pages": 474}},
        {"method": "GET", "path": "/v1/reading"},
        {"method": "GET", "path": "/whoami"},
        {"method": "GET", "path": "/nope"},
    ]}
    responses = app.post_json("/v1/batch", batch, headers=user).json["responses"]
    assert [response["status"] for response in responses] == [201, 201, 200, 200, 404]
    assert responses[1]["path"] == "/v1/reading"
    assert responses[1]["headers"]["Location"] == "http://localhost:80/v1/reading"
    assert [record["title"] for record in responses[2]["body"]["data"]] == ["Emma"]
    assert responses[3]["body"]["bookmarks"] == ["https://example.com/c"]
    assert responses[3]["body"]["reverse"] == "/v1/whoami"
    assert responses[4]["body"]["errno"] == 111
    assert [r["url"] for r in app.get("/v1/bookmarks", headers=user).json["data"]] == ["https://example.com/c"]


def test_batch_sub_requests_are_authenticated_one_by_one(app):
    batch = {"requests": [{"method": "GET", "path": "/reading"}, {"method": "GET", "path": "/bookmarks"}]}
    responses = app.post_json("/v1/batch", batch).json["responses"]
    assert [(response["status"], response["body"]["errno"]) for response in responses] == [(401, 104), (401, 104)]


def test_a_django_500_aborts_the_batch(app, user):
    batch = {"requests": [{"method": "GET", "path": "/whoami"}, {"method": "GET", "path": "/broken"}]}
    assert app.post_json("/v1/batch", batch, headers=user, status=500).json["errno"] == 999


# CORS.

def test_cors_headers_on_django_views_and_pages(app, user):
    origin = {"Origin": "https://reader.example"}
    view = app.get("/v1/whoami", headers={**origin, **user})
    assert view.headers["Access-Control-Allow-Origin"] == "*"
    error = app.get("/v1/nope", headers=origin, status=404)
    assert error.headers["Access-Control-Allow-Origin"] == "*"
    # The CORS layer is above the version prefix: the site's pages get the headers too (docs/examples.md).
    assert app.get("/about/", headers=origin).headers["Access-Control-Allow-Origin"] == "*"


def test_a_preflight_reads_the_methods_of_a_django_view_without_running_it(app, user):
    preflight = {"Origin": "https://reader.example", "Access-Control-Request-Method": "POST"}
    response = app.options("/v1/reading", headers=preflight)
    assert response.headers["Access-Control-Allow-Methods"] == "GET,HEAD,POST,OPTIONS"
    refused = app.options("/v1/reading", headers={**preflight, "Access-Control-Request-Method": "DELETE"},
                          status=400)
    assert refused.json["errno"] == 107
    assert app.get("/v1/reading", headers=user).json["data"] == []
    cross_origin = app.post_json("/v1/reading", {"title": "Emma", "pages": 474},
                                 headers={"Origin": "https://reader.example", **user}, status=201)
    assert cross_origin.headers["Access-Control-Allow-Origin"] == "*"


# Trailing slashes: Django's APPEND_SLASH and the protocol's redirect.

def test_the_api_drops_a_trailing_slash(app, user):
    """Under ``/v1`` the protocol's rule applies: the API routes have no trailing slash, ``APPEND_SLASH`` never
    matches them, and a path with one that Django does not serve gets a 307 without it (method and body kept)."""
    response = app.get("/v1/reading/?_limit=1", headers=user, status=307)
    assert response.headers["Location"] == "http://localhost/v1/reading?_limit=1"
    assert app.post_json("/v1/reading/", {}, headers=user, status=307).headers["Location"] \
        == "http://localhost/v1/reading"
    assert app.get("/v1/bookmarks/", headers=user, status=307).headers["Location"] == "http://localhost/v1/bookmarks"
    assert app.get("/v1/nope/", status=307).headers["Location"] == "http://localhost/v1/nope"
    assert app.get("/v1/reading", headers=user).json == {"data": []}


def test_a_django_route_with_a_slash_under_the_api_keeps_append_slash(app):
    """A route written the Django way (``slashed/``) is served with its slash; without it, ``APPEND_SLASH``
    answers Django's 301 (the two redirects never chase each other)."""
    assert app.get("/v1/slashed", status=301).headers["Location"] == "/v1/slashed/"
    assert app.get("/v1/slashed/").json["path"] == "/v1/slashed/"


# SCRIPT_NAME: the URLs Django builds under /v1.

def test_django_builds_its_urls_under_the_version_prefix(app, user):
    whoami = app.get("/v1/whoami", headers=user).json
    assert (whoami["script_name"], whoami["path_info"], whoami["path"]) == ("/v1", "/whoami", "/v1/whoami")
    assert whoami["reverse"] == "/v1/whoami"
    assert whoami["absolute"] == "http://localhost:80/v1/reading"  # Django's get_host(): the Host header as sent
    assert app.post_json("/v1/reading", {"title": "Emma", "pages": 474}, headers=user,
                         status=201).headers["Location"] == "http://localhost:80/v1/reading"
    # The next page request is at the root again: no script prefix left over from the API request.
    assert '<a href="/about/">About</a>' in app.get("/").text


def test_a_site_mounted_below_a_script_name(app, user):
    """Served under ``/club`` (``SCRIPT_NAME``): Django's URLs and wsgicliquet's redirects both keep it."""
    club = {"SCRIPT_NAME": "/club"}
    whoami = app.get("/v1/whoami", headers=user, extra_environ=club).json
    assert (whoami["path"], whoami["reverse"]) == ("/club/v1/whoami", "/club/v1/whoami")
    assert '<a href="/club/about/">About</a>' in app.get("/", extra_environ=club).text
    assert app.get("/about", extra_environ=club, status=301).headers["Location"] == "/club/about/"
    assert app.get("/v1/reading/", headers=user, extra_environ=club, status=307).headers["Location"] \
        == "http://localhost/club/v1/reading"
    batch = {"requests": [{"method": "GET", "path": "/whoami"}, {"method": "GET", "path": "/club/v1/whoami"}]}
    responses = app.post_json("/v1/batch", batch, headers=user, extra_environ=club).json["responses"]
    assert [(r["status"], r["path"], r["body"]["reverse"]) for r in responses] \
        == [(200, "/club/v1/whoami", "/club/v1/whoami")] * 2


# Django's request cycle: every response is closed.

@pytest.fixture
def django_requests() -> Iterator[List[str]]:
    """The Django request signals sent, in order: ``request_finished`` is sent when the response is closed, and
    Django closes its database connections on it."""
    sent: List[str] = []

    def started(**_kwargs: object) -> None:
        sent.append("started")

    def finished(**_kwargs: object) -> None:
        sent.append("finished")

    request_started.connect(started)
    request_finished.connect(finished)
    yield sent
    request_started.disconnect(started)
    request_finished.disconnect(finished)


@pytest.mark.parametrize("method, path, status", [
    pytest.param("GET", "/about/", 200, id="page"),
    pytest.param("GET", "/nope", 404, id="page-404"),
    pytest.param("GET", "/v1/whoami", 200, id="api-view"),
    pytest.param("GET", "/v1/nope", 404, id="json-404"),
    pytest.param("GET", "/v1/broken", 500, id="json-500"),
    pytest.param("HEAD", "/v1/nope", 404, id="json-404-head"),
    pytest.param("GET", "/v1/reading/", 307, id="trailing-slash"),
    pytest.param("OPTIONS", "/v1/reading", 200, id="preflight"),
])
def test_every_django_response_is_closed(app, user, django_requests, method, path, status):
    headers = {"Origin": "https://reader.example", "Access-Control-Request-Method": "GET", **user}
    app.request(path, method=method, headers=headers, status=status)
    assert django_requests and django_requests == ["started", "finished"] * (len(django_requests) // 2)


def test_every_django_response_of_a_batch_is_closed(app, user, django_requests):
    batch = {"requests": [{"method": "GET", "path": "/whoami"}, {"method": "POST", "path": "/reading", "body": {}},
                          {"method": "GET", "path": "/nope"}, {"method": "GET", "path": "/reading/"}]}
    app.post_json("/v1/batch", batch, headers=user)
    assert django_requests == ["started", "finished"] * 5  # the redirect is followed: /reading/ then /reading

"""Routing, negotiation and errors of the app as a whole: 404, 405, 406, 415, 413, 503, fallback (§3.1, §7)."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest
import webtest
from webob import Request

from wsgicliquet.resource.app import ResourceApp
from wsgicliquet.resource.generators import Generator
from wsgicliquet.resource.resource import Resource
from wsgicliquet.settings import ConfigurationError, load_settings
from wsgicliquet.storage.memory import Storage as MemoryStorage

from wsgicliquet.middleware.json_errors import JsonErrors

from .conftest import ALICE, Bookmark, Note, as_user, unique_user


@pytest.mark.parametrize("url", ["/nothing", "/bookmarks/", "/bookmarks/a/b", "/",
                                 "/buckets/b/collections/c"])
def test_unknown_urls(app, url):
    response = app.get(url, status=404)
    assert response.json == {"code": 404, "errno": 111, "error": "Not Found",
                             "message": "The resource you are looking for could not be found."}


@pytest.mark.parametrize("method, url, allow", [
    pytest.param("PUT", "/bookmarks", "GET, HEAD, POST, DELETE, OPTIONS", id="collection"),
    pytest.param("POST", "/bookmarks/8c42b0ad-7a1c-4b53-9c30-1c5e6e7ba9d5", "GET, HEAD, PUT, PATCH, DELETE, OPTIONS",
                 id="record"),
    pytest.param("TRACE", "/bookmarks", "GET, HEAD, POST, DELETE, OPTIONS", id="unknown-method"),
])
def test_method_not_allowed(app, method, url, allow):
    response = app.request(url, method=method, status=405)
    assert response.json["errno"] == 115 and response.json["message"] == "Method not allowed on this endpoint."
    assert response.headers["Allow"] == allow
    options = app.options(url)
    assert options.headers["Allow"] == allow and options.body == b""


@pytest.mark.parametrize("setting, method, url, allow", [
    pytest.param("collection_bookmark_delete_enabled", "DELETE", "/bookmarks", "GET, HEAD, POST, OPTIONS",
                 id="collection-delete"),
    pytest.param("record_bookmark_put_enabled", "PUT", "/bookmarks/8c42b0ad-7a1c-4b53-9c30-1c5e6e7ba9d5",
                 "GET, HEAD, PATCH, DELETE, OPTIONS", id="record-put"),
    pytest.param("collection_bookmark_get_enabled", "HEAD", "/bookmarks", "POST, DELETE, OPTIONS",
                 id="get-takes-head"),
])
def test_endpoint_switches(make_app, setting, method, url, allow):
    app = make_app(**{setting: "false"})
    response = app.request(url, method=method, status=405)
    assert response.headers["Allow"] == allow


def test_resource_methods_attribute(make_app):
    class ReadOnly(Resource):
        collection_methods = ("GET",)
        record_methods = ("GET",)

    app = make_app(resources=[ReadOnly])
    app.get("/readonlys")
    assert app.post_json("/readonlys", {"data": {}}, status=405).headers["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("accept, status", [
    ("application/json", 200), ("*/*", 200), ("application/*", 200), ("text/html, application/json;q=0.1", 200),
    ("application/json; charset=utf-8", 200), ("application/json;charset=UTF-8;q=0.5", 200),
    ("text/html;level=1, */*;q=0.1", 200),
    ("text/html", 406), ("application/xml", 406), ("application/json;q=0", 406),
    ("application/json; charset=utf-8;q=0", 406), ("application/json;q=0, */*", 406),
])
def test_accept(app, accept, status):
    response = app.get("/bookmarks", headers={"Accept": accept}, status=status)
    if status == 406:
        assert response.json == {
            "code": 406, "errno": 107, "error": "Invalid parameters",
            "message": "Accept header should be one of ['application/json']",
            "details": [{"location": "header", "name": "Accept",
                         "description": "Accept header should be one of ['application/json']"}]}


@pytest.mark.parametrize("content_type, status", [
    ("application/json", 201), ("application/json; charset=utf-8", 201), ("Application/JSON", 201),
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("application/jsonx", 415),
])
def test_content_type(app, content_type, status):
    response = app.post("/notes", json.dumps({"data": {}}), headers={"Content-Type": content_type}, status=status)
    if status == 415:
        assert response.json["errno"] == 107
        assert response.json["message"] == "Content-Type header should be one of ['application/json']"
        assert response.json["details"][0] == {"location": "header", "name": "Content-Type",
                                               "description": "Content-Type header should be one of "
                                                              "['application/json']"}


def test_body_too_large(make_app):
    app = make_app(storage_max_request_size="100")
    response = app.post_json("/notes", {"data": {"x": "y" * 200}}, status=413)
    assert response.json["errno"] == 113
    app.post_json("/notes", {"data": {"x": "y"}}, status=201)
    assert len(app.get("/notes").json["data"]) == 1


def test_ten_megabyte_record_is_413_by_default(app):
    """The documented limit: setting storage_max_request_size, 8 MiB by default."""
    response = app.post_json("/notes", {"data": {"blob": "x" * (10 * 1024 * 1024)}}, status=413)
    body = response.json
    assert (body["code"], body["errno"], body["message"]) == (413, 113, "Request body too large.")
    assert app.get("/notes").json["data"] == []


def test_chunked_body_too_large(make_app):
    """A body without Content-Length (chunked upload) is read up to the limit only."""
    app = make_app(storage_max_request_size="100").app
    request = Request.blank("/notes", method="POST", environ=as_user(ALICE))
    request.environ.update({"wsgi.input": io.BytesIO(json.dumps({"data": {"x": "y" * 200}}).encode()),
                            "wsgi.input_terminated": True, "CONTENT_TYPE": "application/json"})
    request.environ.pop("CONTENT_LENGTH", None)
    assert request.get_response(app).status_int == 413
    request.environ["wsgi.input"] = io.BytesIO(b'{"data": {"x": 1}}')
    assert request.get_response(app).status_int == 201


@pytest.mark.parametrize("content_length", ["\u00b2", "-1", "+17", "1_7", "17x", "0x11"])
def test_a_content_length_that_is_not_a_decimal_number_is_a_400(make_app, content_length):
    body = b'{"data": {"x": 1}}'
    request = Request.blank("/notes", method="POST", environ=as_user(ALICE))
    request.environ.update({"wsgi.input": io.BytesIO(body), "CONTENT_TYPE": "application/json",
                            "CONTENT_LENGTH": content_length})
    response = request.get_response(make_app().app)
    assert (response.status_int, response.json["errno"]) == (400, 107)
    assert response.json["details"] == [
        {"location": "headers", "name": "Content-Length", "description": "Invalid Content-Length"}]
    request.environ.update({"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": f" {len(body)} "})
    assert request.get_response(make_app().app).status_int == 201


def test_backend_failure_is_503(make_app):
    from wsgicliquet.storage.redis import Storage

    dead = Storage.from_settings({"storage_url": "redis://127.0.0.1:1/0", "storage_pool_size": 1})
    app = make_app(backend=dead, retry_after_seconds="17")
    for call in (lambda: app.get("/bookmarks", status=503),
                 lambda: app.post_json("/bookmarks", {"data": {"url": "http://a.org"}}, status=503)):
        response = call()
        assert response.json["errno"] == 201 and response.headers["Retry-After"] == "17"
        assert response.json["message"].startswith("Service temporary unavailable")


def test_fallback_receives_unmatched_paths(make_app, storage):
    from flask import Flask, jsonify, request

    flask_app = Flask(__name__)

    @flask_app.route("/scores")
    def scores():
        backend = request.environ["wsgicliquet.storage"]
        records, total = backend.get_all("bookmark", request.environ["wsgicliquet.userid"])
        return jsonify(path=request.path, script=request.script_root, total=total)

    app = make_app(fallback=flask_app, extra_environ={"SCRIPT_NAME": "/v1"})
    app.post_json("/v1/bookmarks", {"data": {"url": "http://a.org"}})
    assert app.get("/v1/scores").json == {"path": "/scores", "script": "/v1", "total": 1}
    app.get("/v1/elsewhere", status=404)  # Flask's own 404
    assert app.get("/v1/bookmarks").json["data"][0]["url"] == "http://a.org"


class CountingStorage(MemoryStorage):
    """The memory backend, counting the calls each request makes."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name in ("get", "get_all", "collection_timestamp", "create", "update", "delete", "delete_all"):
            object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("method, url, calls", [
    pytest.param("GET", "/notes?_limit=1&_sort=-x", ["collection_timestamp", "get_all"], id="list"),
    pytest.param("HEAD", "/notes", ["collection_timestamp", "get_all"], id="count"),
    pytest.param("GET", "/notes/{id}", ["get"], id="record"),
    pytest.param("DELETE", "/notes/{id}", ["delete"], id="delete"),
    pytest.param("PATCH", "/notes/{id}", ["get", "update"], id="patch"),
    pytest.param("PUT", "/notes/{id}", ["get", "update"], id="put"),
    pytest.param("POST", "/notes", ["create"], id="create"),
    pytest.param("DELETE", "/notes?x=1", ["delete_all"], id="bulk-delete"),
])
def test_storage_round_trips(make_app, method, url, calls):
    storage = CountingStorage()
    app = make_app(backend=storage)
    for i in range(3):
        record = app.post_json("/notes", {"data": {"x": i}}).json["data"]
    storage.calls.clear()
    body = {"data": {"x": 9}} if method in ("POST", "PUT", "PATCH") else None
    app.request(url.format(id=record["id"]), method=method, body=json.dumps(body).encode() if body else b"",
                headers={"Content-Type": "application/json"} if body else {})
    assert storage.calls == calls


@pytest.mark.parametrize("url, headers", [
    pytest.param("/bookmarks/8c42b0ad-7a1c-4b53-9c30-1c5e6e7ba9d5", {}, id="404-record"),
    pytest.param("/bookmarks/{id}", {"If-Match": '"1"'}, id="412-record"),
    pytest.param("/bookmarks/{id}", {"If-None-Match": "*"}, id="412-record-exists"),
    pytest.param("/bookmarks", {"If-Match": '"1"'}, id="412-collection"),
    pytest.param("/bookmarks", {"If-Match": "W/1"}, id="400-header"),
    pytest.param("/bookmarks?_limit=x", {}, id="400-querystring"),
    pytest.param("/bookmarks/nope", {}, id="400-id"),
])
def test_head_of_an_error_has_the_headers_of_its_get(make_app, any_storage, url, headers):
    """Behind the JSON error converter, the HEAD of an error keeps the headers of the GET's (RFC 9110 §9.3.2): its
    Content-Length was that of a generic error without ``details``, on every backend."""
    inner = make_app(userid=unique_user(), backend=any_storage)
    app = webtest.TestApp(JsonErrors(inner.app), extra_environ=inner.extra_environ)
    record = app.post_json("/bookmarks", {"data": {"url": "http://a.org"}}, status=201).json["data"]
    url = url.format(id=record["id"])
    got = app.get(url, headers=headers, expect_errors=True)
    head = app.head(url, headers=headers, expect_errors=True)
    assert got.status_int >= 400 and head.status_int == got.status_int and head.body == b""
    assert head.headers == got.headers and int(got.headers["Content-Length"]) == len(got.body)


def test_bottle_fallback(make_app):
    import bottle

    bottle_app = bottle.Bottle()

    @bottle_app.route("/hello")
    def hello():
        storage = bottle.request.environ["wsgicliquet.storage"]
        return {"timestamp": storage.collection_timestamp("note", bottle.request.environ["wsgicliquet.userid"])}

    app = make_app(fallback=bottle_app)
    record = app.post_json("/notes", {"data": {}}).json["data"]
    assert app.get("/hello").json == {"timestamp": record["last_modified"]}


def _resource(class_name: str, **attributes: Any) -> type:
    return type(class_name, (Resource,), attributes)


_FIELDS = {"type": "object", "properties": {"url": {"type": "string"}, "author": {"type": "object"}}}


@pytest.mark.parametrize("resources, message", [
    pytest.param([Bookmark, Bookmark], "Resource 'bookmark' is declared twice", id="duplicate"),
    pytest.param([_resource("A", name="x"), _resource("B", name="x", collection_path="/b")],
                 "Resource 'x' is declared twice", id="same-name-other-path"),
    pytest.param([_resource("A", collection_path="/things"), _resource("B", collection_path="/things")],
                 r"Resource 'b': its collection path '/things' matches the same URLs as the collection path of "
                 r"resource 'a'", id="same-path"),
    pytest.param([_resource("A", collection_path="/things"), _resource("B", collection_path="/things/{thing_id}")],
                 r"'/things/\{thing_id\}' matches the same URLs as the record path of resource 'a', "
                 r"'/things/\{id\}'", id="path-shadowing-another"),
    pytest.param(["nowhere.module:Thing"], "'resources'.*cannot import", id="import"),
    pytest.param([object], "not a Resource", id="not-a-resource"),
    pytest.param([_resource("A", name=5)], "Resource 'A': name must be a non-empty string", id="name-int"),
    pytest.param([_resource("A", name="my notes")], "name must be .* not 'my notes'", id="name-space"),
    pytest.param([_resource("A", collection_id=5)], "Resource 'a': collection_id must be a string", id="coll-id"),
    pytest.param([_resource("A", schema=_FIELDS, readonly_fields="url")],
                 "Resource 'a': readonly_fields must be a list or tuple of strings, not 'url'", id="readonly-str"),
    pytest.param([_resource("A", schema=_FIELDS, unique_fields="url")],
                 "unique_fields must be a list or tuple of strings, not 'url'", id="unique-str"),
    pytest.param([_resource("A", schema=_FIELDS, unique_fields=5)], "unique_fields must be a list", id="unique-int"),
    pytest.param([_resource("A", schema=_FIELDS, unique_fields=("urll",))],
                 "Resource 'a': unique_fields names 'urll', which is not a property of the schema", id="unique-typo"),
    pytest.param([_resource("A", schema=_FIELDS, readonly_fields=("nope.x",))],
                 "readonly_fields names 'nope.x'", id="readonly-typo"),
    pytest.param([_resource("A", collection_methods="GET")],
                 "Resource 'a': collection_methods must be a list or tuple of strings, not 'GET'", id="methods-str"),
    pytest.param([_resource("A", preserve_unknown="no")],
                 "Resource 'a': preserve_unknown must be True or False, not 'no'", id="preserve-str"),
    pytest.param([_resource("A", collection_path="/b/{bid}/as", placeholder_pattern="(")],
                 "Resource 'a': placeholder_pattern '\\(' is not a regular expression", id="pattern-regex"),
    pytest.param([_resource("A", placeholder_pattern=5)], "placeholder_pattern must be a regular expression",
                 id="pattern-int"),
    pytest.param([_resource("A", collection_path=5)], "Resource 'a': collection_path must be a string", id="path-int"),
    pytest.param([_resource("A", id_generator=lambda: "x")], "Resource 'a': id_generator .* not a generator",
                 id="generator-function"),
    pytest.param([_resource("A", id_generator="nowhere:Thing")], "Resource 'a': id_generator: Cannot import",
                 id="generator-import"),
    pytest.param([_resource("A", id_generator=type("G", (Generator,), {"regexp": "(", "__call__": lambda s: "x"}))],
                 "Resource 'a': id_generator has an invalid regexp", id="generator-regexp"),
])
def test_bad_configuration(resources, message):
    """Each mistake stops start-up with a ConfigurationError naming the resource and what is wrong, never a
    TypeError or re.error, nor a silent misreading (a string of field names read as one-letter fields)."""
    with pytest.raises(ConfigurationError, match=message):
        ResourceApp(resources, load_settings({}, environ={}))


def test_fields_outside_the_schema_are_fine_when_unknown_fields_are_kept(make_app):
    loose = _resource("Loose", unique_fields=("anything", "nested.field"), readonly_fields=("other",),
                      preserve_unknown=True)
    app = make_app(resources=[loose])
    first = app.post_json("/looses", {"data": {"anything": 1}}, status=201).json["data"]
    assert app.post_json("/looses", {"data": {"anything": 1}}, status=200).json["data"] == first


def test_bad_paths_and_methods():
    class Wrong(Resource):
        record_path = "/wrongs/{other}"

    class Verb(Resource):
        collection_methods = ("GET", "BREW")

    for resource in (Wrong, Verb):
        with pytest.raises(ConfigurationError):
            ResourceApp([resource], load_settings({}, environ={}))


def test_custom_paths_names_and_generator(make_app):
    from wsgicliquet.resource.generators import Generator

    class Counter(Generator):
        regexp = r"^n[0-9]+$"
        count = 0

        def __call__(self):
            Counter.count += 1
            return f"n{Counter.count}"

    class Thing(Resource):
        name = "stuff"
        collection_path = "/user/{{section}}/stuff"
        record_path = "/user/{{section}}/stuff/{{id}}"
        id_generator = Counter

    app = make_app(resources=[Thing, Note])
    record = app.post_json("/user/s1/stuff", {"data": {}}).json["data"]
    assert record["id"] == "n1"
    app.get("/user/s1/stuff/n1")
    assert app.get("/user/s1/stuff/abc", status=400).json["message"] == "path: Invalid record id"
    assert app.get("/user/s2/stuff/n1", status=404).json["details"] == {"id": "n1", "resource_name": "stuff"}


def test_id_generator_setting(make_app):
    app = make_app(resources=[Note], id_generator="wsgicliquet.resource.generators:Generator")
    app.put_json("/notes/my-note_1", {"data": {}}, status=201)
    with pytest.raises(ConfigurationError):
        make_app(resources=[Note], id_generator="wsgicliquet.resource.generators:nothing")


class Nested(Resource):
    """A nested resource whose partition is built from the URL placeholders (and which spoils them afterwards)."""

    schema = {"type": "object", "properties": {"folder": {"type": "string"}}}
    collection_path = "/folders/{folder_id}/items"
    record_path = "/folders/{folder_id}/items/{id}"

    def get_parent_id(self, request):
        parent_id = super().get_parent_id(request)
        self.matchdict["folder_id"] = "spoiled"  # the router's remembered match must not see this
        return parent_id


def test_remembered_routes_answer_each_path_afresh():
    app = webtest.TestApp(ResourceApp([Nested], load_settings({}), storage=MemoryStorage()),
                          extra_environ=as_user(ALICE))
    for round_ in range(2):
        for folder in ("a", "b"):
            assert len(app.get(f"/folders/{folder}/items").json["data"]) == round_
            created = app.post_json(f"/folders/{folder}/items", {"data": {"folder": folder}}, status=201).json["data"]
            assert app.get(f"/folders/{folder}/items/{created['id']}").json["data"]["folder"] == folder
    assert len(app.get("/folders/a/items").json["data"]) == 2
    for _ in range(2):
        app.get("/folders/a/items/x/y", status=404)

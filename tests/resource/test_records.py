"""Record and collection endpoints, verb by verb (PROTOCOL.md §3, Part A D4-D6, §6)."""
from __future__ import annotations

import re
from email.utils import formatdate

import pytest

from wsgicliquet.resource.resource import Resource

from .conftest import ALICE, BOB, as_user, unique_user

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
OTHER_ID = "8c42b0ad-7a1c-4b53-9c30-1c5e6e7ba9d5"


def create(app, url="http://a.org", **fields):
    return app.post_json("/bookmarks", {"data": {"url": url, **fields}}, status=201).json["data"]


def etag(response) -> int:
    return int(response.headers["ETag"].strip('"'))


# -- POST ------------------------------------------------------------------------------------------------------------

def test_post_creates_with_defaults_and_headers(app):
    response = app.post_json("/bookmarks", {"data": {"url": "http://a.org", "title": "A", "junk": 1}},
                             headers={"User-Agent": "Firefox"}, status=201)
    record = response.json["data"]
    assert UUID.fullmatch(record["id"]) and isinstance(record["last_modified"], int)
    assert record == {"url": "http://a.org", "title": "A", "favorite": False, "device": "Firefox",
                      "id": record["id"], "last_modified": record["last_modified"]}
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert etag(response) == record["last_modified"]  # D5: ETag on POST too
    assert response.headers["Last-Modified"].endswith(" GMT")
    listing = app.get("/bookmarks")
    assert etag(listing) == record["last_modified"]


def test_post_compact_json(app):
    response = app.post_json("/notes", {"data": {"a": "é/x"}}, status=201)
    assert b'"a":"\xc3\xa9/x"' in response.body and b", " not in response.body


def test_post_existing_id_returns_the_stored_record(app):
    record = create(app, title="first")
    response = app.post_json("/bookmarks", {"data": {"id": record["id"], "url": "http://b.org"}}, status=200)
    assert response.json["data"] == record
    assert etag(response) == record["last_modified"]


def test_post_unique_conflict_returns_the_existing_record(app):
    record = create(app)
    response = app.post_json("/bookmarks", {"data": {"url": "http://a.org", "title": "again"}}, status=200)
    assert response.json["data"] == record
    assert app.get("/bookmarks").headers["Total-Records"] == "1"


def test_post_with_client_id(app):
    response = app.post_json("/bookmarks", {"data": {"id": OTHER_ID, "url": "http://a.org"}}, status=201)
    assert response.json["data"]["id"] == OTHER_ID


@pytest.mark.parametrize("bad_id", ["abc", "8C42B0AD-7A1C-4B53-9C30-1C5E6E7BA9D5", 12, ["x"], ""])
def test_post_with_invalid_id(app, bad_id):
    response = app.post_json("/bookmarks", {"data": {"id": bad_id, "url": "http://a.org"}}, status=400)
    assert response.json["details"] == [{"location": "path", "name": None, "description": "Invalid record id"}]
    assert response.json["message"] == "path: Invalid record id"


def test_post_preconditions(app):
    record = create(app)
    current = etag(app.get("/bookmarks"))
    app.post_json("/bookmarks", {"data": {"url": "http://b.org"}}, headers={"If-Match": f'"{current - 1}"'},
                  status=412)
    app.post_json("/bookmarks", {"data": {"url": "http://b.org"}}, headers={"If-Match": f'"{current}"'}, status=201)
    response = app.post_json("/bookmarks", {"data": {"id": record["id"], "url": "http://c.org"}},
                             headers={"If-None-Match": "*"}, status=412)
    assert response.json["details"] == {"existing": record}
    app.post_json("/bookmarks", {"data": {"id": OTHER_ID, "url": "http://c.org"}}, headers={"If-None-Match": "*"},
                  status=201)


def test_post_empty_body_on_schema_accepting_empty(app):
    response = app.post("/notes", status=201)
    assert set(response.json["data"]) == {"id", "last_modified"}


def test_post_missing_data(app):
    response = app.post_json("/bookmarks", {}, status=400)
    assert response.json["message"] == "data is missing"


# -- GET / HEAD ------------------------------------------------------------------------------------------------------

def test_empty_collection(app):
    first, second = app.get("/bookmarks"), app.get("/bookmarks")
    assert first.json == {"data": []}
    assert first.headers["ETag"] == second.headers["ETag"]
    assert first.headers["Total-Records"] == "0" and first.headers["Cache-Control"] == "no-cache"
    assert "Next-Page" not in first.headers


def test_get_record_and_head(app):
    record = create(app)
    response = app.get(f"/bookmarks/{record['id']}")
    assert response.json == {"data": record}
    assert etag(response) == record["last_modified"] and response.headers["Cache-Control"] == "no-cache"
    head = app.head(f"/bookmarks/{record['id']}")
    assert head.body == b"" and head.headers["ETag"] == response.headers["ETag"]
    head = app.head("/bookmarks?title=nothing")
    assert head.body == b"" and head.headers["Total-Records"] == "0"


def test_missing_record_is_404_110(app):
    response = app.get(f"/bookmarks/{OTHER_ID}", status=404)
    assert response.json == {"code": 404, "errno": 110, "error": "Not Found",
                             "message": "The resource you are looking for could not be found.",
                             "details": {"id": OTHER_ID, "resource_name": "bookmark"}}


@pytest.mark.parametrize("method", ["get", "patch_json", "delete"])
def test_records_are_private(make_app, method):
    alice, bob = make_app(ALICE), make_app(BOB)
    record = create(alice)
    args = ({"data": {"title": "x"}},) if method == "patch_json" else ()
    response = getattr(bob, method)(f"/bookmarks/{record['id']}", *args, status=404)
    assert response.json["errno"] == 110
    assert bob.get("/bookmarks").json["data"] == []
    assert alice.get(f"/bookmarks/{record['id']}").json["data"] == record


def test_cache_expires_for_anonymous_reads_of_a_public_resource(make_app):
    from wsgicliquet.resource.resource import Resource

    class Public(Resource):
        def get_parent_id(self, request):
            return ""

    app = make_app(userid=None, resources=[Public], public_cache_expires_seconds="60")
    response = app.get("/publics")
    assert response.headers["Cache-Control"] == "max-age=60" and "Expires" in response.headers
    authenticated = make_app(resources=[Public], public_cache_expires_seconds="60").get("/publics")
    assert authenticated.headers["Cache-Control"] == "no-cache"


# -- conditional requests --------------------------------------------------------------------------------------------

def test_not_modified_and_precondition_failed_on_lists(app):
    create(app)
    current = etag(app.get("/bookmarks"))
    response = app.get("/bookmarks", headers={"If-None-Match": f'"{current}"'}, status=304)
    assert response.body == b"" and etag(response) == current and "Content-Type" not in response.headers
    app.get("/bookmarks", headers={"If-None-Match": f'"{current - 1}"'}, status=200)
    app.get("/bookmarks", headers={"If-None-Match": f'"{current + 1}"'}, status=200)  # strict equality
    app.get("/bookmarks", headers={"If-None-Match": "*"}, status=200)  # never crashes (§21.8)
    app.get("/bookmarks", headers={"If-Match": f'"{current}"'}, status=200)
    for stale in (current - 1, current + 1):
        response = app.get("/bookmarks", headers={"If-Match": f'"{stale}"'}, status=412)
        assert response.json == {"code": 412, "errno": 114, "error": "Precondition Failed",
                                 "message": "Resource was modified meanwhile", "details": {}}
        assert etag(response) == current and "Last-Modified" in response.headers


def test_conditional_record_reads(app):
    record = create(app)
    url, current = f"/bookmarks/{record['id']}", record["last_modified"]
    app.get(url, headers={"If-None-Match": f'"{current}"'}, status=304)
    app.head(url, headers={"If-None-Match": f'"{current}"'}, status=304)
    app.get(url, headers={"If-None-Match": f'"{current + 1}"'}, status=200)
    response = app.get(url, headers={"If-None-Match": "*"}, status=412)
    assert response.json["details"] == {"existing": record}
    response = app.get(url, headers={"If-Match": f'"{current - 1}"'}, status=412)
    assert response.json["details"] == {"existing": record} and etag(response) == current


@pytest.mark.parametrize("header, value", [("If-Match", "1234"), ("If-Match", '"abc"'), ("If-Match", "*"),
                                           ("If-None-Match", '""'), ("If-None-Match", "W/\"1\"")])
def test_malformed_precondition_headers(app, header, value):
    response = app.get("/bookmarks", headers={header: value}, status=400)
    assert response.json["errno"] == 107 and response.json["details"][0]["location"] == "headers"


# -- PUT -------------------------------------------------------------------------------------------------------------

def test_put_creates_then_replaces(app):
    url = f"/bookmarks/{OTHER_ID}"
    created = app.put_json(url, {"data": {"url": "http://a.org", "title": "A"}}, status=201)
    assert created.json["data"]["id"] == OTHER_ID and etag(created) == created.json["data"]["last_modified"]
    replaced = app.put_json(url, {"data": {"url": "http://b.org"}}, status=200)
    assert "title" not in replaced.json["data"]  # full replacement
    assert replaced.json["data"]["last_modified"] > created.json["data"]["last_modified"]


def test_put_body_id_must_match(app):
    response = app.put_json(f"/bookmarks/{OTHER_ID}", {"data": {"id": "other", "url": "http://a.org"}}, status=400)
    assert response.json["details"] == [{"location": "body", "name": "id",
                                         "description": "Record id does not match existing record"}]
    app.put_json(f"/bookmarks/{OTHER_ID}", {"data": {"id": OTHER_ID, "url": "http://a.org"}}, status=201)


def test_put_preconditions(app):
    url = f"/bookmarks/{OTHER_ID}"
    collection_etag = app.get("/bookmarks").headers["ETag"]
    response = app.put_json(url, {"data": {"url": "http://a.org"}}, headers={"If-Match": '"123"'}, status=412)
    assert response.json["details"] == {}  # D4: If-Match on a missing id
    assert response.headers["ETag"] == collection_etag  # §5.6: a 412 carries the current ETag, the collection's here
    assert "Last-Modified" in response.headers
    record = app.put_json(url, {"data": {"url": "http://a.org"}}, headers={"If-None-Match": "*"},
                          status=201).json["data"]
    response = app.put_json(url, {"data": {"url": "http://b.org"}}, headers={"If-None-Match": "*"}, status=412)
    assert response.json["details"] == {"existing": record}
    app.put_json(url, {"data": {"url": "http://b.org"}}, headers={"If-Match": f'"{record["last_modified"] - 1}"'},
                 status=412)
    app.put_json(url, {"data": {"url": "http://b.org"}}, headers={"If-Match": f'"{record["last_modified"]}"'},
                 status=200)


def test_put_over_tombstone_creates(app):
    record = create(app)
    url = f"/bookmarks/{record['id']}"
    tombstone = app.delete(url).json["data"]
    response = app.put_json(url, {"data": {"url": "http://z.org"}}, headers={"If-None-Match": "*"}, status=201)
    assert response.json["data"]["last_modified"] > tombstone["last_modified"]


def test_put_unique_conflict_is_409(app):
    first = create(app, "http://a.org")
    second = create(app, "http://b.org")
    response = app.put_json(f"/bookmarks/{second['id']}", {"data": {"url": "http://a.org"}}, status=409)
    assert response.json == {"code": 409, "errno": 122, "error": "Conflict",
                             "message": f"Conflict of field url on record {first['id']}",
                             "details": {"field": "url", "existing": first}}


# -- PATCH -----------------------------------------------------------------------------------------------------------

def test_patch_merges_shallowly(app):
    record = create(app, title="A")
    response = app.patch_json(f"/bookmarks/{record['id']}", {"data": {"title": "B", "junk": 1}})
    patched = response.json["data"]
    assert patched == {**record, "title": "B", "last_modified": patched["last_modified"]}
    assert patched["last_modified"] > record["last_modified"] and etag(response) == patched["last_modified"]


def test_patch_without_change_writes_nothing(app):
    record = create(app, title="A")
    before = etag(app.get("/bookmarks"))
    response = app.patch_json(f"/bookmarks/{record['id']}", {"data": {"title": "A"}})
    assert response.json["data"] == record and etag(response) == record["last_modified"]
    assert etag(app.get("/bookmarks")) == before


def test_patch_readonly_field(app):
    record = create(app)
    url = f"/bookmarks/{record['id']}"
    response = app.patch_json(url, {"data": {"device": "x"}}, status=400)
    assert response.json["message"] == "Cannot modify device"
    assert response.json["details"] == [{"location": "body", "name": "device", "description": "Cannot modify device"}]
    app.patch_json(url, {"data": {"device": record["device"]}}, status=200)


@pytest.mark.parametrize("behavior, expected", [
    pytest.param(None, None, id="full"),
    pytest.param("full", None, id="full-explicit"),
    pytest.param("light", {"title": "B", "favorite": True}, id="light"),
    pytest.param("diff", {}, id="diff"),
])
def test_patch_response_behavior(app, behavior, expected):
    record = create(app, title="A")
    headers = {"Response-Behavior": behavior} if behavior else {}
    response = app.patch_json(f"/bookmarks/{record['id']}", {"data": {"title": "B", "favorite": True}},
                              headers=headers)
    data = response.json["data"]
    if expected is None:
        assert data["title"] == "B" and data["id"] == record["id"]
    else:
        assert data == expected
    assert etag(response) > record["last_modified"]


def test_patch_diff_shows_server_changes(make_app):
    from wsgicliquet.resource.resource import Resource

    class Upper(Resource):
        schema = {"type": "object", "properties": {"name": {"type": "string"}}}

        def process_record(self, new, old=None):
            new["name"] = new.get("name", "").upper()
            return new

    app = make_app(resources=[Upper])
    record = app.post_json("/uppers", {"data": {"name": "a"}}).json["data"]
    response = app.patch_json(f"/uppers/{record['id']}", {"data": {"name": "b"}},
                              headers={"Response-Behavior": "diff"})
    assert response.json["data"] == {"name": "B"}


class Upper(Resource):
    """Upper-cases ``name``: the server changes what the client sent, or sets it back to the stored value."""

    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}}
    preserve_unknown = True

    def process_record(self, new, old=None):
        new = super().process_record(new, old)
        new["name"] = new.get("name", "").upper()
        return new


@pytest.mark.parametrize("behavior, changes, expected", [
    pytest.param("light", {"n": 1}, {}, id="light-stored-value"),
    pytest.param("light", {"name": "a"}, {}, id="light-set-back-by-server"),
    pytest.param("light", {"n": 1, "name": "b", "x": None}, {"name": "B", "x": None}, id="light-mixed"),
    pytest.param("light", {"n": 1.0}, {}, id="light-equal-number"),
    pytest.param("diff", {"name": "a"}, {}, id="diff-set-back-by-server"),
    pytest.param("diff", {"n": 1, "name": "b", "m": 2}, {"name": "B"}, id="diff-mixed"),
])
def test_patch_light_and_diff_show_changed_fields_only(make_app, any_storage, behavior, changes, expected):
    """§3.8: ``light`` and ``diff`` answer with the sent fields whose value changed, on every backend; a field
    sent with its stored value (or one the server set back to it) is left out, whether or not anything was
    written."""
    app = make_app(userid=unique_user(), resources=[Upper], backend=any_storage)
    record = app.post_json("/uppers", {"data": {"name": "a", "n": 1}}, status=201).json["data"]
    response = app.patch_json(f"/uppers/{record['id']}", {"data": changes},
                              headers={"Response-Behavior": behavior}, status=200)
    assert response.json["data"] == expected
    stored = app.get(f"/uppers/{record['id']}").json["data"]
    assert etag(response) == stored["last_modified"]


@pytest.mark.parametrize("method, url", [
    pytest.param("post_json", "/forgetfuls", id="post"),
    pytest.param("put_json", "/forgetfuls/{id}", id="put"),
    pytest.param("patch_json", "/forgetfuls/{id}", id="patch"),
])
def test_a_process_record_without_return_is_named(make_app, storage, method, url):
    """A hook that forgets ``return new`` fails with an error naming it, not deep in the storage; the client's
    500 is JSON once the pipeline's error layer is around the app."""
    from wsgicliquet.resource.resource import Resource

    class Forgetful(Resource):
        schema = {"type": "object", "properties": {"name": {"type": "string"}}}

        def process_record(self, new, old=None):
            new["name"] = "x"

    record = storage.create("forgetful", ALICE, {"name": "a"})
    app = make_app(resources=[Forgetful])
    with pytest.raises(TypeError, match=r"^Forgetful.process_record\(\) must return the record, not NoneType$"):
        getattr(app, method)(url.format(id=record["id"]), {"data": {"name": "b"}})
    assert storage.get("forgetful", ALICE, record["id"]) == record


def test_patch_errors(app):
    record = create(app)
    url = f"/bookmarks/{record['id']}"
    assert app.patch_json(url, {}, status=400).json["message"] == "data is missing"
    assert app.patch(url, status=400).json["message"] == "data is missing"
    assert app.patch_json(url, {"data": {"id": "x"}}, status=400).json["details"][0]["name"] == "id"
    other = create(app, "http://b.org")
    response = app.patch_json(f"/bookmarks/{other['id']}", {"data": {"url": "http://a.org"}}, status=409)
    assert response.json["details"] == {"field": "url", "existing": record}
    app.patch_json(f"/bookmarks/{OTHER_ID}", {"data": {"title": "x"}}, status=404)
    response = app.patch_json(url, {"data": {"title": "x"}}, headers={"If-None-Match": "*"}, status=412)
    assert response.json["details"] == {"existing": record}
    app.patch_json(url, {"data": {"title": "x"}}, headers={"If-Match": f'"{record["last_modified"] + 1}"'},
                   status=412)
    app.patch_json(url, {"data": {"title": "x"}}, headers={"If-Match": f'"{record["last_modified"]}"'})


def test_patch_last_modified_is_ignored(app):
    record = create(app)
    patched = app.patch_json(f"/bookmarks/{record['id']}", {"data": {"title": "x", "last_modified": 1}}).json
    assert patched["data"]["last_modified"] > record["last_modified"]


# -- DELETE ----------------------------------------------------------------------------------------------------------

def test_delete_record(app):
    record = create(app)
    url = f"/bookmarks/{record['id']}"
    app.delete(url, headers={"If-Match": f'"{record["last_modified"] - 1}"'}, status=412)
    response = app.delete(url, headers={"If-Match": f'"{record["last_modified"]}"'})
    tombstone = response.json["data"]
    assert tombstone == {"id": record["id"], "last_modified": tombstone["last_modified"], "deleted": True}
    assert etag(response) == tombstone["last_modified"] > record["last_modified"]
    assert app.delete(url, status=404).json["errno"] == 110
    app.get(url, status=404)
    app.delete(f"/bookmarks/{OTHER_ID}", headers={"If-None-Match": "*"}, status=404)


def test_delete_collection_with_filters(app):
    keep = create(app, "http://keep.org", title="keep")
    gone = [create(app, f"http://{i}.org", title="gone") for i in range(3)]
    before = etag(app.get("/bookmarks"))
    response = app.delete("/bookmarks?title=gone")
    tombstones = response.json["data"]
    assert sorted(t["id"] for t in tombstones) == sorted(r["id"] for r in gone)
    assert all(t["deleted"] and t["last_modified"] > before for t in tombstones)
    assert len({t["last_modified"] for t in tombstones}) == 3
    assert [r["id"] for r in app.get("/bookmarks").json["data"]] == [keep["id"]]
    since = app.get(f"/bookmarks?_since={before}").json["data"]
    assert {r["id"] for r in since} == {r["id"] for r in gone}
    app.delete("/bookmarks", headers={"If-Match": '"1"'}, status=412)
    assert app.delete("/bookmarks?title=nothing").json == {"data": []}
    app.delete("/bookmarks?foo=1", status=400)


def test_delete_collection_preconditions(app):
    assert app.delete("/notes", headers={"If-Match": '"0"'}).json == {"data": []}  # never written: timestamp 0
    app.get("/notes", headers={"If-Match": '"0"'}, status=200)
    records = [app.post_json("/notes", {"data": {"n": n}}).json["data"] for n in range(3)]
    current = etag(app.get("/notes"))
    for stale in (current - 1, current + 1, 0):
        response = app.delete("/notes?n=1", headers={"If-Match": f'"{stale}"'}, status=412)
        assert response.json == {"code": 412, "errno": 114, "error": "Precondition Failed",
                                 "message": "Resource was modified meanwhile", "details": {}}
        assert etag(response) == current and "Last-Modified" in response.headers
    assert app.get("/notes").json["data"] == records[::-1], "a failed precondition deletes nothing"
    for value in ("*", "1234", '"abc"'):
        assert app.delete("/notes", headers={"If-Match": value}, status=400).json["errno"] == 107
    assert app.delete("/notes?n=5", headers={"If-None-Match": "*"}).json == {"data": []}  # ignored on a collection
    tombstones = app.delete("/notes?n=1", headers={"If-Match": f'"{current}"'}).json["data"]
    assert [t["id"] for t in tombstones] == [records[1]["id"]]
    app.delete("/notes?n=2", headers={"If-Match": f'"{current}"'}, status=412)
    assert [r["id"] for r in app.get("/notes").json["data"]] == [records[2]["id"], records[0]["id"]]


# -- client timestamps (D2) ------------------------------------------------------------------------------------------

def test_forced_timestamp_on_create(app):
    now = etag(app.post_json("/notes", {"data": {}}))
    past = app.post_json("/notes", {"data": {"last_modified": 1000}}).json["data"]
    assert past["last_modified"] == now + 1  # still a fresh value of the counter
    created = app.put_json(f"/notes/{OTHER_ID}", {"data": {"last_modified": now + 2000}}, status=201).json["data"]
    assert created["last_modified"] == now + 2000
    again = app.post_json("/notes", {"data": {"last_modified": now + 2000}}).json["data"]
    assert again["last_modified"] == now + 2001  # the same candidate twice: distinct, increasing


@pytest.mark.parametrize("value", [10 ** 15, -1, "123", 1.5, True])
def test_forced_timestamp_refused(app, value):
    response = app.post_json("/notes", {"data": {"last_modified": value}}, status=400)
    assert response.json["details"][0]["name"] == "data.last_modified"
    assert app.get("/notes").json["data"] == []


def test_forced_timestamp_margin_setting(make_app):
    app = make_app(last_modified_margin_ms="0")
    future = etag(app.post_json("/notes", {"data": {}})) + 60_000
    app.post_json("/notes", {"data": {"last_modified": future}}, status=400)
    app = make_app(last_modified_margin_ms="120000")
    assert app.post_json("/notes", {"data": {"last_modified": future}}).json["data"]["last_modified"] == future


def test_put_replace_ignores_client_timestamp(app):
    record = app.put_json(f"/notes/{OTHER_ID}", {"data": {}}).json["data"]
    replaced = app.put_json(f"/notes/{OTHER_ID}", {"data": {"last_modified": 5}}).json["data"]
    assert replaced["last_modified"] > record["last_modified"]


# -- nested resources ------------------------------------------------------------------------------------------------

def test_nested_partitions(app):
    base = "/buckets/b1/collections/c1/records"
    first = app.post_json(base, {"data": {"n": 1}}).json["data"]
    other = app.post_json("/buckets/b1/collections/c2/records", {"data": {"n": 2}}).json["data"]
    assert [r["id"] for r in app.get(base).json["data"]] == [first["id"]]
    assert etag(app.get(base)) == first["last_modified"]
    assert etag(app.get("/buckets/b1/collections/c2/records")) == other["last_modified"]
    app.get(f"/buckets/b1/collections/c2/records/{first['id']}", status=404)
    assert app.get(f"{base}/{first['id']}").json["data"] == first
    assert app.get("/buckets/b2/collections/c1/records").json["data"] == []


def test_placeholder_as_last_segment_is_part_of_the_partition(make_app):
    from wsgicliquet.resource.resource import Resource

    class Thing(Resource):
        collection_path = "/things/{kind}"

    app = make_app(resources=[Thing])
    app.post_json("/things/a", {"data": {}})
    assert app.get("/things/b").json["data"] == []
    assert len(app.get("/things/a").json["data"]) == 1


def test_nested_placeholder_validation(app):
    response = app.get("/buckets/b%20x/collections/c1/records", status=400)
    assert response.json["details"] == [{"location": "path", "name": "bucket_id", "description": "Invalid bucket_id"}]


def test_views_and_log_context(make_app):
    seen = {}
    app = make_app()
    inner = app.app

    def spy(environ, start_response):
        result = inner(environ, start_response)
        seen.update(view=environ["wsgicliquet.view"], log=dict(environ["wsgicliquet.log"]),
                    storage=environ["wsgicliquet.storage"])
        return result

    app.app = spy
    record = create(app)
    assert seen["view"] == "bookmark-collection" and seen["storage"] is inner.storage
    assert seen["log"] == {"collection_id": "bookmark", "collection_timestamp": record["last_modified"]}
    app.get("/bookmarks?_limit=5", extra_environ={"wsgicliquet.log": {"request_id": "x"}})
    assert seen["log"] == {"request_id": "x", "collection_id": "bookmark",
                           "collection_timestamp": record["last_modified"], "nb_records": 1, "limit": 5}
    app.get(f"/bookmarks/{record['id']}")
    assert seen["view"] == "bookmark-record"


def test_every_user_needs_a_partition(make_app):
    anonymous = make_app(userid=None)
    response = anonymous.get("/bookmarks", status=401)
    assert response.json["errno"] == 104
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Realm"'
    anonymous.post_json("/bookmarks", {"data": {"url": "http://a.org"}}, status=401)
    authenticated_without_id = make_app(userid=None, extra_environ={
        "wsgicliquet.principals": ["system.Everyone", "system.Authenticated"]})
    assert authenticated_without_id.get("/bookmarks", status=403).json["errno"] == 121
    assert as_user(ALICE)["wsgicliquet.userid"] == ALICE


# -- the same protocol on every backend ------------------------------------------------------------------------------
# The tests above run on the memory backend; these repeat the statements of §5, §6 and D2-D5 that each storage
# implements on its own (timestamps, atomic preconditions, tombstones, unique fields) on Redis and PostgreSQL too.

@pytest.fixture
def backend_app(make_app, any_storage):
    """The resource app on each storage backend, for a user of its own (the servers are shared)."""
    return make_app(userid=unique_user(), backend=any_storage)


def assert_etag_headers(response, timestamp: int) -> None:
    assert response.headers["ETag"] == f'"{timestamp}"'
    assert response.headers["Last-Modified"] == formatdate(timestamp // 1000, usegmt=True)


def test_every_write_bumps_the_timestamp_and_every_record_answer_has_its_etag(backend_app):
    app = backend_app
    empty = app.get("/bookmarks")
    assert_etag_headers(empty, 0)  # never written: 0, and reading it writes nothing (D1, §21.6)
    assert etag(app.get("/bookmarks")) == 0
    posted = app.post_json("/bookmarks", {"data": {"url": "http://a.org"}}, status=201)
    record = posted.json["data"]
    assert_etag_headers(posted, record["last_modified"])
    assert_etag_headers(app.get(f"/bookmarks/{record['id']}"), record["last_modified"])
    assert_etag_headers(app.head(f"/bookmarks/{record['id']}"), record["last_modified"])
    url, stamps = f"/bookmarks/{record['id']}", [record["last_modified"]]
    for write in (lambda: app.put_json(url, {"data": {"url": "http://b.org"}}),
                  lambda: app.patch_json(url, {"data": {"title": "B"}}),
                  lambda: app.delete(url)):
        response = write()
        stamps.append(response.json["data"]["last_modified"])
        assert_etag_headers(response, stamps[-1])
        assert_etag_headers(app.get("/bookmarks"), stamps[-1])  # collection timestamp = the last write
    assert stamps == sorted(set(stamps))
    assert app.get(f"/bookmarks?_since={stamps[-2]}").json["data"] == [
        {"id": record["id"], "last_modified": stamps[-1], "deleted": True}]


def test_a_patch_that_changes_nothing_writes_nothing(backend_app):
    app = backend_app
    record = create(app, title="A")
    response = app.patch_json(f"/bookmarks/{record['id']}", {"data": {"title": "A"}})
    assert response.json["data"] == record and etag(response) == record["last_modified"]
    assert etag(app.get("/bookmarks")) == record["last_modified"]


def test_client_timestamps_on_create(backend_app):
    app = backend_app
    now = create(app)["last_modified"]
    for value in (1000, now):  # at or below the counter: a fresh value all the same (D2)
        assert create(app, f"http://{value}.org", last_modified=value)["last_modified"] == etag(app.get("/bookmarks"))
    counter = etag(app.get("/bookmarks"))
    assert counter == now + 2
    ahead = counter + 2000
    assert create(app, "http://ahead.org", last_modified=ahead)["last_modified"] == ahead
    put = app.put_json(f"/bookmarks/{OTHER_ID}", {"data": {"url": "http://put.org", "last_modified": ahead}},
                       status=201).json["data"]
    assert put["last_modified"] == ahead + 1
    far = app.post_json("/bookmarks", {"data": {"url": "http://far.org", "last_modified": ahead + 10 ** 7}},
                        status=400)
    assert far.json["details"] == [{"location": "body", "name": "data.last_modified",
                                    "description": "last_modified cannot be more than 5000 ms in the future"}]
    patched = app.patch_json(f"/bookmarks/{OTHER_ID}", {"data": {"title": "t", "last_modified": ahead + 3000}})
    assert patched.json["data"]["last_modified"] == ahead + 2  # ignored on updates


def test_preconditions_and_412_bodies(backend_app):
    app = backend_app
    record = create(app)
    url, current = f"/bookmarks/{record['id']}", record["last_modified"]
    app.get("/bookmarks", headers={"If-None-Match": f'"{current}"'}, status=304)
    app.get(url, headers={"If-None-Match": f'"{current}"'}, status=304)
    app.get(url, headers={"If-None-Match": f'"{current + 1}"'}, status=200)  # strict equality (D4)
    app.get("/bookmarks", headers={"If-None-Match": "*"}, status=200)
    for method, body in (("put_json", {"data": {"url": "http://b.org"}}), ("patch_json", {"data": {"title": "x"}}),
                         ("delete", None)):
        send = getattr(app, method)
        for headers in ({"If-Match": f'"{current + 1}"'}, {"If-Match": f'"{current - 1}"'}, {"If-None-Match": "*"}):
            response = send(url, body, headers=headers, status=412) if body else send(url, headers=headers,
                                                                                       status=412)
            assert response.json == {"code": 412, "errno": 114, "error": "Precondition Failed",
                                     "message": "Resource was modified meanwhile",
                                     "details": {"existing": record}}
            assert_etag_headers(response, current)
    response = app.post_json("/bookmarks", {"data": {"id": record["id"], "url": "http://a.org"}},
                             headers={"If-None-Match": "*"}, status=412)
    assert response.json["details"] == {"existing": record}
    response = app.put_json(f"/bookmarks/{OTHER_ID}", {"data": {"url": "http://c.org"}},
                            headers={"If-Match": f'"{current}"'}, status=412)  # If-Match on a missing id (D4)
    assert response.json["details"] == {} and etag(response) == current
    updated = app.patch_json(url, {"data": {"title": "x"}}, headers={"If-Match": f'"{current}"',
                                                                      "If-None-Match": f'"{current}"'}).json["data"]
    tombstone = app.delete(url, headers={"If-Match": f'"{updated["last_modified"]}"'}).json["data"]
    response = app.put_json(url, {"data": {"url": "http://d.org"}}, headers={"If-Match": f'"{current}"'},
                            status=412)
    assert response.json["details"] == {"existing": tombstone}
    assert_etag_headers(response, tombstone["last_modified"])
    app.put_json(url, {"data": {"url": "http://d.org"}}, headers={"If-None-Match": "*"}, status=201)


def test_unique_fields(backend_app):
    app = backend_app
    first, second = create(app, "http://a.org"), create(app, "http://b.org")
    again = app.post_json("/bookmarks", {"data": {"url": "http://a.org", "title": "again"}}, status=200)
    assert again.json["data"] == first  # POST: the existing record, nothing written (§6.3)
    assert etag(app.get("/bookmarks")) == second["last_modified"]
    conflict = {"code": 409, "errno": 122, "error": "Conflict",
                "message": f"Conflict of field url on record {first['id']}",
                "details": {"field": "url", "existing": first}}
    assert app.put_json(f"/bookmarks/{second['id']}", {"data": {"url": "http://a.org"}}, status=409).json == conflict
    assert app.patch_json(f"/bookmarks/{second['id']}", {"data": {"url": "http://a.org"}},
                          status=409).json == conflict
    assert app.get(f"/bookmarks/{second['id']}").json["data"] == second
    app.delete(f"/bookmarks/{first['id']}")  # a tombstone holds no value
    app.patch_json(f"/bookmarks/{second['id']}", {"data": {"url": "http://a.org"}}, status=200)


def test_each_partition_has_its_own_counter(backend_app, make_app, any_storage):
    """§5.1: one counter per (collection, parent): per user, and per parent object of a nested resource."""
    app = backend_app
    first = app.post_json("/buckets/b1/collections/c1/records", {"data": {"n": 1}}).json["data"]
    assert etag(app.get("/buckets/b1/collections/c2/records")) == 0
    assert etag(app.get("/bookmarks")) == 0
    other = app.post_json("/buckets/b1/collections/c2/records", {"data": {"n": 2}}).json["data"]
    assert etag(app.get("/buckets/b1/collections/c1/records")) == first["last_modified"]
    assert etag(app.get("/buckets/b1/collections/c2/records")) == other["last_modified"]
    app.get(f"/buckets/b1/collections/c2/records/{first['id']}", status=404)
    someone_else = make_app(userid=unique_user(), backend=any_storage)
    assert etag(someone_else.get("/buckets/b1/collections/c1/records")) == 0
    app.get(f"/buckets/b1/collections/c1/records/{first['id']}", headers={"If-Match": f'"{first["last_modified"]}"'})

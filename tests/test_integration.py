"""The canonical pipeline built from the real middlewares, end to end through WebTest."""
import base64

import pytest
import webtest

from wsgicliquet import Resource, ResourceApp, build_pipeline
from wsgicliquet.__main__ import main
from wsgicliquet.backends import clear_backends
from wsgicliquet.pipeline import CANONICAL, describe


class Bookmark(Resource):
    schema = {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}, "required": ["url"]}
    preserve_unknown = True


SETTINGS = {"project_name": "myapp", "project_version": "1.4.2", "userid_hmac_secret": "abc",
            "storage_url": "memory://", "cache_url": "memory://", "permission_url": "memory://"}


def auth(user="alice", password="secret"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def api():
    clear_backends()
    app = build_pipeline(ResourceApp([Bookmark], SETTINGS), SETTINGS)
    yield webtest.TestApp(app)
    clear_backends()


def test_every_canonical_layer_is_built_in_order():
    clear_backends()
    settings = dict(SETTINGS, profiler_enabled=True, statsd_url="udp://127.0.0.1:9",
                    sentry_dsn="http://public@127.0.0.1:9/1")
    lines = describe(build_pipeline(ResourceApp([Bookmark], settings), settings))
    modules = [line.split("(")[-1].rstrip(")") for line in lines]
    expected = [path.split(":")[0] for _, path in CANONICAL]
    built = [module.rsplit(".", 1)[0] for module in modules if module.startswith("wsgicliquet.middleware")]
    assert built == expected
    assert modules[-1] == "wsgicliquet.resource.app.ResourceApp"


def test_conformance_checklist_through_the_whole_stack(api):
    assert api.get("/", status=307).headers["Location"] == "http://localhost/v1/"
    assert api.get("/v1", status=307).headers["Location"] == "http://localhost/v1/"
    hello = api.get("/v1/", headers=auth()).json
    assert hello["user"]["id"] == "basicauth:c2c5fb7523b5fcf46a424a6e371ef158633ff7636c31fb946cf8d34a4c05aa90"
    assert hello["settings"] == {"batch_max_requests": 25, "readonly": False}
    assert api.get("/v2/", status=404).json["errno"] == 116
    assert api.get("/v1/__heartbeat__").json == {"storage": True, "cache": True, "permission": True}
    assert api.get("/__lbheartbeat__").json == {}

    anonymous = api.get("/v1/bookmarks", status=401)
    assert anonymous.json["errno"] == 104
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="Realm"'

    empty = api.get("/v1/bookmarks", headers=auth())
    assert empty.headers["Total-Records"] == "0"
    assert api.get("/v1/bookmarks", headers=auth()).headers["ETag"] == empty.headers["ETag"]

    created = api.post_json("/v1/bookmarks", {"data": {"url": "http://a.org"}}, headers=auth(), status=201)
    record = created.json["data"]
    assert created.headers["ETag"] == f'"{record["last_modified"]}"'
    listing = api.get("/v1/bookmarks", headers=dict(auth(), Origin="http://x.org"))
    assert listing.headers["ETag"] == f'"{record["last_modified"]}"'
    exposed = listing.headers["Access-Control-Expose-Headers"]
    assert "ETag" in exposed and "Total-Records" in exposed
    assert "Authorization" in listing.headers["Vary"]

    api.get("/v1/bookmarks", headers=dict(auth(), **{"If-None-Match": listing.headers["ETag"]}), status=304)
    stale = api.delete(f"/v1/bookmarks/{record['id']}", headers=dict(auth(), **{"If-Match": '"1"'}), status=412)
    assert stale.json["errno"] == 114

    batch = api.post_json("/v1/batch", {"defaults": {"method": "POST", "path": "/bookmarks"},
                                        "requests": [{"body": {"data": {"url": "http://b.org"}}},
                                                     {"method": "GET", "path": "/nowhere"}]}, headers=auth())
    statuses = [entry["status"] for entry in batch.json["responses"]]
    assert statuses == [201, 404]
    unknown = api.get("/v1/nowhere", status=404)
    assert unknown.json["errno"] == 111


def test_browsers_read_the_headers_of_every_record_response(api):
    """§12 and D5: listings expose their whole list (a single page too), record reads theirs, and every write the
    ETag and Last-Modified it carries."""
    headers = dict(auth(), Origin="http://x.org")

    def exposed(response):
        return {item.strip() for item in response.headers["Access-Control-Expose-Headers"].split(",")}

    listing = {"Next-Page", "Total-Records", "Last-Modified", "ETag", "Cache-Control", "Expires", "Pragma"}
    for method in ("get", "head"):
        assert exposed(getattr(api, method)("/v1/bookmarks", headers=headers)) >= listing
    created = api.post_json("/v1/bookmarks", {"data": {"url": "http://a.org"}}, headers=headers, status=201)
    assert exposed(created) >= {"ETag", "Last-Modified"}
    url = f"/v1/bookmarks/{created.json['data']['id']}"
    assert exposed(api.get(url, headers=headers)) >= {"Last-Modified", "ETag", "Cache-Control", "Expires", "Pragma"}
    assert exposed(api.patch_json(url, {"data": {"title": "a"}}, headers=headers)) >= {"ETag", "Last-Modified"}
    assert exposed(api.put_json(url, {"data": {"url": "http://b.org"}}, headers=headers)) >= {"ETag", "Last-Modified"}
    assert exposed(api.delete(url, headers=headers)) >= {"ETag", "Last-Modified"}


def test_backoff_readonly_and_end_of_life_settings():
    clear_backends()
    settings = dict(SETTINGS, readonly=True, backoff=10, eos="2000-01-01")
    app = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    gone = app.get("/v1/", status=410)
    assert gone.json["errno"] == 202 and '"hard-eol"' in gone.headers["Alert"]

    clear_backends()
    settings = dict(SETTINGS, readonly=True, backoff=10)
    app = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    refused = app.post_json("/v1/bookmarks", {"data": {"url": "http://a.org"}}, headers=auth(), status=405)
    assert refused.json["errno"] == 115 and refused.headers["Backoff"] == "10"
    assert app.get("/v1/").json["settings"]["readonly"] is True
    batch = app.post_json("/v1/batch", {"requests": [{"method": "POST", "path": "/bookmarks",
                                                      "body": {"data": {"url": "http://a.org"}}}]}, headers=auth())
    assert batch.json["responses"][0]["status"] == 405


def test_migrate_command_prepares_postgresql(postgresql_url, tmp_path, capsys):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[DEFAULT]\nstorage_url = {postgresql_url}\ncache_url = {postgresql_url}\n"
                   f"permission_url = {postgresql_url}\n")
    clear_backends()
    try:
        assert main(["migrate", "--ini", str(ini)]) == 0
        assert main(["migrate", "--ini", str(ini)]) == 0  # idempotent
    finally:
        clear_backends()
    out = capsys.readouterr().out
    assert "storage: wsgicliquet.storage.postgresql ready" in out
    assert "permission: wsgicliquet.permission.postgresql ready" in out


def test_failing_heartbeat_keeps_its_map_through_the_error_converter(api):
    from wsgicliquet.middleware import heartbeat

    class Broken:
        def ping(self, readonly=False):
            return False

    clear_backends()
    app = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], SETTINGS), SETTINGS))
    # Reach the heartbeat layer of the built stack and give it a failing check, as a user's add_check would.
    layer = app.app
    while not isinstance(layer, heartbeat.Heartbeat):
        layer = getattr(layer, "app", None) or next(iter(layer.versions.values()))
    layer.checks["broken"] = Broken().ping
    for path in ("/v1/__heartbeat__", "/__heartbeat__"):
        response = app.get(path, status=503)
        assert response.json == {"storage": True, "cache": True, "permission": True, "broken": False}
        assert "Retry-After" not in response.headers


@pytest.mark.parametrize("path, method, status, allowed", [
    pytest.param("/v1/", "GET", 200, "GET,HEAD,OPTIONS", id="hello"),
    pytest.param("/v1/", "POST", 400, None, id="hello-post"),
    pytest.param("/v1/__heartbeat__", "GET", 200, "GET,HEAD,OPTIONS", id="heartbeat"),
    pytest.param("/v1/bookmarks", "DELETE", 200, "GET,HEAD,POST,DELETE,OPTIONS", id="collection"),
    pytest.param("/v1/bookmarks/abc", "PATCH", 200, "GET,HEAD,PUT,PATCH,DELETE,OPTIONS", id="record"),
])
def test_preflights_list_each_endpoint_methods(api, path, method, status, allowed):
    response = api.options(path, headers={"Origin": "http://x.org", "Access-Control-Request-Method": method},
                           status=status)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    if allowed is None:
        assert response.json["message"] == "Access-Control-Request-Method in header: Method not allowed"
    else:
        assert response.headers["Access-Control-Allow-Methods"].replace(" ", "") == allowed

"""Shareable resources over HTTP: the permission table of §11.6, the settings bypass, ``permissions`` in bodies
(§2.4), restricted listings and ``_since`` sync, bulk deletes, bound permissions (docs/permissions.md).

Requests go through the Authentication middleware (Basic Auth) into the resource app, with the permission backend
shared by both (groups come from it).  The main tests run against the memory, Redis and PostgreSQL permission
backends; each test uses a resource name and a secret of its own, so tests sharing a server never meet.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

import pytest
import webtest

from tests.backends import database_url
from wsgicliquet.middleware.auth import Authentication, RemoteUser
from wsgicliquet.permission.memory import Permission as MemoryPermission
from wsgicliquet.resource.app import ResourceApp
from wsgicliquet.resource.resource import Resource
from wsgicliquet.resource.shareable import ShareableResource
from wsgicliquet.settings import ConfigurationError, load_settings
from wsgicliquet.storage.memory import Storage as MemoryStorage

from .conftest import RESOURCE_DATABASE, SERVERS, server_backend

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}, "tag": {"type": "string"}}}
USERS = ("owner", "reader", "member", "stranger", "writer", "editor")
GROUP = "group:friends"
MISSING = "5cd3bb6e-2b5d-4c4b-9f3a-2f2cd5a9c0e1"


def basic_userid(secret: str, user: str) -> str:
    """The user id the Basic Auth policy gives ``user`` (password ``pw``)."""
    return "basicauth:" + hmac.new(secret.encode(), f"{user}:pw".encode(), hashlib.sha256).hexdigest()


def basic_headers(user: Optional[str], **extra: str) -> Dict[str, str]:
    if user is not None:
        extra["Authorization"] = "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()
    return extra


def shareable(name: Optional[str] = None, **attributes: Any) -> type:
    """A ShareableResource subclass with a name of its own (``/<name>s``)."""
    name = name or "n" + uuid.uuid4().hex[:12]
    return type(name.capitalize(), (ShareableResource,), {"name": name, "schema": SCHEMA, **attributes})


class Api:
    """A WebTest app behind Basic Auth, and the ids of the test users."""

    def __init__(self, permission, resources, storage=None, **settings: Any) -> None:
        self.permission = permission
        self.secret = uuid.uuid4().hex
        self.resource = resources[0]
        self.name = self.resource.name
        self.url = f"/{self.name}s"
        app = ResourceApp(resources, load_settings(settings, environ={}), storage=storage or MemoryStorage(),
                          permission=permission)
        self.app = webtest.TestApp(Authentication(app, userid_hmac_secret=self.secret, permission=permission),
                                   lint=True)

    def userid(self, user: str) -> str:
        return basic_userid(self.secret, user)

    def headers(self, user: Optional[str], **extra: str) -> Dict[str, str]:
        return basic_headers(user, **extra)

    def request(self, user: Optional[str], method: str, url: str, body: Any = None, status: Any = None,
                **headers: str) -> webtest.TestResponse:
        kwargs: Dict[str, Any] = {"headers": self.headers(user, **headers), "status": status}
        if body is None:
            return getattr(self.app, method.lower())(url, **kwargs)
        return getattr(self.app, method.lower() + "_json")(url, body, **kwargs)

    def create(self, user: str = "owner", permissions: Optional[Dict[str, Any]] = None, **data: Any) -> str:
        body: Dict[str, Any] = {"data": data}
        if permissions is not None:
            body["permissions"] = permissions
        return self.request(user, "POST", self.url, body, status=201).json["data"]["id"]

    def share(self, object_id: str, user: str = "owner", **permissions: Any) -> webtest.TestResponse:
        return self.request(user, "PATCH", f"{self.url}/{object_id}", {"permissions": permissions}, status=200)

    def ids(self, user: Optional[str], query: str = "", status: int = 200) -> set:
        response = self.request(user, "GET", self.url + query, status=status)
        return {record["id"] for record in response.json["data"]}

    def uri(self, object_id: str) -> str:
        return f"{self.url}/{object_id}"

    def cleanup(self) -> None:
        """Forget this test's ACEs and groups (real servers are shared by the whole test run)."""
        principals = [self.userid(user) for user in USERS] + [GROUP, "group:editors", "system.Everyone",
                                                              "system.Authenticated"]
        objects = set()
        for perm in ("read", "write", f"{self.name}:create"):
            objects |= self.permission.principals_accessible_objects(principals, perm, f"{self.url}*")
        if objects:
            self.permission.delete_object_permissions(*objects)
        for user in USERS:
            for group in self.permission.user_principals(self.userid(user)):
                self.permission.remove_user_principal(self.userid(user), group)


@pytest.fixture(params=SERVERS)
def permission(request):
    """Each permission backend."""
    return server_backend(request, "permission", {
        "redis": {"permission_key_prefix": f"wsgicliquet-shareable-{os.getpid()}:"},
        "postgresql": {"permission_pool_size": 5},
    })


@pytest.fixture
def make_api(permission):
    """``make_api(resource=None, **settings)``; records of the test's own resource, ACEs cleaned afterwards."""
    apis = []

    def make(*resources: type, **settings: Any) -> Api:
        api = Api(permission, list(resources) or [shareable()], **settings)
        apis.append(api)
        return api

    yield make
    for api in apis:
        api.cleanup()


@pytest.fixture
def api(make_api):
    """Authenticated users may create; ``member`` belongs to GROUP."""
    resource = shareable()
    api = make_api(resource, **{f"{resource.name}_create_principals": "system.Authenticated"})
    api.permission.add_user_principal(api.userid("member"), GROUP)
    return api


@pytest.fixture
def shared(api):
    """A record of ``owner``, readable by ``reader`` and by GROUP (so by ``member``)."""
    object_id = api.create(text="shared", permissions={"read": [api.userid("reader"), GROUP]})
    return api, object_id


# -- §11.6: who may do what ------------------------------------------------------------------------------------

@pytest.mark.parametrize("user, status, listed", [
    pytest.param("reader", 200, True, id="reader-sees-it"),
    pytest.param("member", 200, True, id="group-member-sees-it"),
    pytest.param("owner", 200, False, id="write-does-not-imply-read"),
    pytest.param("stranger", 200, False, id="stranger-may-create-so-empty-list"),
    pytest.param(None, 401, False, id="anonymous"),
])
def test_collection_get(shared, user, status, listed):
    api, object_id = shared
    response = api.request(user, "GET", api.url, status=status)
    if status == 200:
        assert [record["id"] for record in response.json["data"]] == ([object_id] if listed else [])
        assert response.headers["Total-Records"] == ("1" if listed else "0")
        assert "permissions" not in response.json
    else:
        assert response.json["errno"] == 104 and response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("user, status", [
    pytest.param("reader", 200, id="reader-has-shared-records"),
    pytest.param("stranger", 403, id="stranger-nothing-shared-no-create"),
    pytest.param(None, 401, id="anonymous"),
])
def test_collection_get_without_create_permission(make_api, user, status):
    api = make_api()
    api.permission.add_principal_to_ace(api.url, f"{api.name}:create", api.userid("owner"))
    object_id = api.create(permissions={"read": [api.userid("reader")]})
    response = api.request(user, "GET", api.url, status=status)
    if status == 200:
        assert [record["id"] for record in response.json["data"]] == [object_id]
    else:
        assert response.json["errno"] == {401: 104, 403: 121}[status]


@pytest.mark.parametrize("grant, user, status", [
    pytest.param("setting", "stranger", 201, id="setting-authenticated"),
    pytest.param("setting", None, 401, id="setting-authenticated-anonymous"),
    pytest.param("backend", "owner", 201, id="backend-ace"),
    pytest.param("backend", "stranger", 403, id="backend-ace-other-user"),
    pytest.param("backend-group", "member", 201, id="backend-ace-to-group"),
    pytest.param(None, "owner", 403, id="nobody-may-create"),
])
def test_collection_post(make_api, grant, user, status):
    resource = shareable()
    settings = {f"{resource.name}_create_principals": "system.Authenticated"} if grant == "setting" else {}
    api = make_api(resource, **settings)
    api.permission.add_user_principal(api.userid("member"), GROUP)
    if grant == "backend":
        api.permission.add_principal_to_ace(api.url, f"{api.name}:create", api.userid("owner"))
    elif grant == "backend-group":
        api.permission.add_principal_to_ace(api.url, f"{api.name}:create", GROUP)
    response = api.request(user, "POST", api.url, {"data": {"text": "x"}}, status=status)
    if status == 201:
        assert response.json["permissions"] == {"write": [api.userid(user)]}
        assert api.permission.object_permissions(api.uri(response.json["data"]["id"])) == {
            "write": {api.userid(user)}}


@pytest.mark.parametrize("user, method, status", [
    pytest.param("reader", "GET", 200, id="get-reader"),
    pytest.param("member", "GET", 200, id="get-group-member"),
    pytest.param("owner", "GET", 403, id="get-owner-write-only"),
    pytest.param("stranger", "GET", 403, id="get-stranger"),
    pytest.param(None, "GET", 401, id="get-anonymous"),
    pytest.param("reader", "HEAD", 200, id="head-reader"),
    pytest.param("stranger", "HEAD", 403, id="head-stranger"),
    pytest.param("owner", "PATCH", 200, id="patch-owner"),
    pytest.param("reader", "PATCH", 403, id="patch-reader"),
    pytest.param("stranger", "PATCH", 403, id="patch-stranger"),
    pytest.param(None, "PATCH", 401, id="patch-anonymous"),
    pytest.param("owner", "PUT", 200, id="put-existing-owner"),
    pytest.param("reader", "PUT", 403, id="put-existing-reader"),
    pytest.param("stranger", "PUT", 403, id="put-existing-stranger-who-may-create"),
    pytest.param("reader", "DELETE", 403, id="delete-reader"),
    pytest.param("stranger", "DELETE", 403, id="delete-stranger"),
    pytest.param(None, "DELETE", 401, id="delete-anonymous"),
    pytest.param("owner", "DELETE", 200, id="delete-owner"),
])
def test_record_endpoints(shared, user, method, status):
    api, object_id = shared
    body = {"data": {"text": "changed"}} if method in ("PATCH", "PUT") else None
    response = api.request(user, method, api.uri(object_id), body, status=status)
    if status in (401, 403) and method != "HEAD":
        assert response.json["errno"] == {401: 104, 403: 121}[status]
    elif method in ("PATCH", "PUT"):
        assert response.json["data"]["text"] == "changed"


@pytest.mark.parametrize("user, method, status", [
    pytest.param("reader", "GET", 403, id="get-reader"),
    pytest.param("stranger", "GET", 403, id="get-stranger"),
    pytest.param(None, "GET", 401, id="get-anonymous"),
    pytest.param("owner", "PATCH", 403, id="patch-owner"),
    pytest.param("owner", "DELETE", 403, id="delete-owner"),
])
def test_missing_record_answers_like_a_forbidden_one(api, user, method, status):
    """A user who may not read the whole collection cannot tell a missing id from a record of someone else."""
    hidden = api.create(user="editor", text="hidden")
    body = {"data": {"text": "x"}} if method == "PATCH" else None
    forbidden = api.request(user, method, api.uri(hidden), body, status=status)
    missing = api.request(user, method, api.uri(MISSING), body, status=status)
    assert forbidden.json == missing.json and forbidden.headers == missing.headers


def test_missing_record_is_404_to_collection_readers(make_api):
    resource = shareable()
    api = make_api(resource, **{f"{resource.name}_read_principals": "system.Authenticated",
                                f"{resource.name}_write_principals": "system.Authenticated"})
    for method in ("GET", "PATCH", "DELETE"):
        body = {"data": {"text": "x"}} if method == "PATCH" else None
        response = api.request("stranger", method, api.uri(MISSING), body, status=404)
        assert response.json["errno"] == 110


@pytest.mark.parametrize("user, status", [
    pytest.param("stranger", 201, id="creator"),
    pytest.param(None, 401, id="anonymous"),
])
def test_put_new_record_needs_create(api, user, status):
    response = api.request(user, "PUT", api.uri(MISSING), {"data": {"text": "new"}}, status=status)
    if status == 201:
        assert response.json["permissions"] == {"write": [api.userid(user)]}


@pytest.mark.parametrize("user, status", [
    pytest.param("owner", 412, id="writer-learns-it-exists"),
    pytest.param("stranger", 403, id="creator-gets-no-details"),
])
def test_put_if_none_match_on_a_taken_id(shared, user, status):
    api, object_id = shared
    response = api.request(user, "PUT", api.uri(object_id), {"data": {}}, status=status, **{"If-None-Match": "*"})
    assert ("shared" in response.text) is (status == 412)


def test_put_new_record_without_create_permission(make_api):
    api = make_api()
    assert api.request("owner", "PUT", api.uri(MISSING), {"data": {}}, status=403).json["errno"] == 121


@pytest.mark.parametrize("user, deleted", [
    pytest.param("owner", {"a", "b", "c"}, id="owner-of-all"),
    pytest.param("writer", {"b", "c"}, id="writer-of-some"),
    pytest.param("reader", None, id="reader-writes-nothing"),
])
def test_bulk_delete_only_writable_records(api, user, deleted):
    records = {key: api.create(text=key, permissions={"read": [api.userid("reader")]}) for key in "abc"}
    records["d"] = api.create(user="editor", permissions={"read": [api.userid("reader")]})
    for key in "bc":
        api.share(records[key], write=[api.userid("writer")])
    if deleted is None:
        assert api.request(user, "DELETE", api.url, status=403).json["errno"] == 121
        return
    response = api.request(user, "DELETE", api.url, status=200)
    gone = {tombstone["id"] for tombstone in response.json["data"]}
    assert gone == {records[key] for key in deleted}
    assert all(tombstone["deleted"] for tombstone in response.json["data"])
    assert api.ids("reader") == {records[key] for key in set(records) - deleted}
    for key in deleted:
        assert api.permission.object_permissions(api.uri(records[key])) == {}


def test_bulk_delete_with_filters_stays_within_writable_records(api):
    mine = api.create(tag="x")
    theirs = api.create(user="stranger", tag="x")
    response = api.request("owner", "DELETE", api.url + "?tag=x", status=200)
    assert [tombstone["id"] for tombstone in response.json["data"]] == [mine]
    assert api.request("stranger", "PATCH", api.uri(theirs), {"data": {"text": "still here"}}, status=200)


# -- settings bypass -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, value, user, method, expected", [
    pytest.param("read", "system.Authenticated", "stranger", "GET", 200, id="read-authenticated"),
    pytest.param("read", "system.Authenticated", None, "GET", 401, id="read-authenticated-not-anonymous"),
    pytest.param("read", "system.Everyone", None, "GET", 200, id="read-everyone"),
    pytest.param("read", GROUP, "member", "GET", 200, id="read-group"),
    pytest.param("read", GROUP, "stranger", "GET", 403, id="read-group-outsider"),
    pytest.param("write", GROUP, "member", "PATCH", 200, id="write-group"),
    pytest.param("write", GROUP, "stranger", "PATCH", 403, id="write-group-outsider"),
    pytest.param("write", "system.Authenticated", "stranger", "DELETE", 200, id="write-authenticated-delete"),
])
def test_bypass_settings(make_api, setting, value, user, method, expected):
    resource = shareable()
    api = make_api(resource, **{f"{resource.name}_{setting}_principals": value,
                                f"{resource.name}_create_principals": "system.Authenticated"})
    api.permission.add_user_principal(api.userid("member"), GROUP)
    object_id = api.create()
    body = {"data": {"text": "x"}} if method == "PATCH" else None
    api.request(user, method, api.uri(object_id), body, status=expected)
    if setting == "read" and user is not None:
        # the whole collection is readable (not restricted), or nothing is (an empty list: the user may create)
        assert api.ids(user) == ({object_id} if expected == 200 else set())


def test_bypass_grants_on_top_of_the_backend(make_api):
    """A setting grants its principals; records shared through the backend stay readable by others."""
    resource = shareable()
    api = make_api(resource, **{f"{resource.name}_read_principals": "group:editors",
                                f"{resource.name}_create_principals": "system.Authenticated"})
    api.permission.add_user_principal(api.userid("editor"), "group:editors")
    shared = api.create(permissions={"read": [api.userid("reader")]})
    other = api.create()
    assert api.ids("editor") == {shared, other}
    assert api.ids("reader") == {shared}
    api.request("reader", "GET", api.uri(shared), status=200)
    api.request("reader", "GET", api.uri(other), status=403)


def test_create_for_everyone_has_no_author(make_api):
    resource = shareable()
    api = make_api(resource, **{f"{resource.name}_create_principals": "system.Everyone",
                                f"{resource.name}_read_principals": "system.Everyone"})
    response = api.request(None, "POST", api.url, {"data": {"text": "anonymous"}}, status=201)
    assert response.json["permissions"] == {}
    assert api.ids(None) == {response.json["data"]["id"]}


# -- permissions in bodies (§2.4) ------------------------------------------------------------------------------

def test_post_sets_permissions_and_adds_the_author(api):
    response = api.request("owner", "POST", api.url, {"data": {"text": "a"}, "permissions": {
        "read": ["system.Authenticated", GROUP, GROUP], "write": [api.userid("writer")]}}, status=201)
    assert response.json["permissions"] == {
        "read": sorted([GROUP, "system.Authenticated"]),
        "write": sorted([api.userid("owner"), api.userid("writer")])}
    object_id = response.json["data"]["id"]
    assert api.permission.object_permissions(api.uri(object_id)) == {
        "read": {GROUP, "system.Authenticated"}, "write": {api.userid("owner"), api.userid("writer")}}
    # the writer gets the permissions; a reader gets the record, not who else may see it
    assert api.request("writer", "PATCH", api.uri(object_id), {"data": {}}).json["permissions"]["read"]
    assert api.request("stranger", "GET", api.uri(object_id)).json["permissions"] == {}


def test_put_replaces_every_permission(shared):
    api, object_id = shared
    api.share(object_id, write=[api.userid("writer")])
    response = api.request("writer", "PUT", api.uri(object_id), {"data": {"text": "replaced"}, "permissions": {
        "read": [api.userid("stranger")]}})
    assert response.json["permissions"] == {"read": [api.userid("stranger")], "write": [api.userid("writer")]}
    assert api.ids("reader") == set()
    assert api.ids("stranger") == {object_id}


def test_patch_with_only_permissions_replaces_those_listed(shared):
    api, object_id = shared
    before = api.request("reader", "GET", api.uri(object_id))
    response = api.share(object_id, write=[api.userid("writer")])
    assert response.json["permissions"] == {"read": sorted([api.userid("reader"), GROUP]),
                                            "write": sorted([api.userid("owner"), api.userid("writer")])}
    assert response.json["data"]["text"] == "shared"
    # sharing is a write: a new timestamp, so that it reaches _since pollers
    assert int(response.headers["ETag"].strip('"')) > int(before.headers["ETag"].strip('"'))
    emptied = api.share(object_id, read=[])
    assert emptied.json["permissions"] == {"write": sorted([api.userid("owner"), api.userid("writer")])}
    api.request("reader", "GET", api.uri(object_id), status=403)


def test_patch_without_any_change_does_not_write(shared):
    api, object_id = shared
    first = api.share(object_id, read=[api.userid("reader"), GROUP])
    second = api.share(object_id, read=[GROUP, api.userid("reader")])
    assert first.headers["ETag"] == second.headers["ETag"]
    third = api.request("owner", "PATCH", api.uri(object_id), {}, status=200)
    assert third.headers["ETag"] == second.headers["ETag"]


def test_empty_write_list_keeps_the_author(shared):
    api, object_id = shared
    response = api.share(object_id, write=[])
    assert response.json["permissions"]["write"] == [api.userid("owner")]


def test_delete_removes_permissions(shared):
    api, object_id = shared
    response = api.request("owner", "DELETE", api.uri(object_id))
    assert set(response.json) == {"data"} and response.json["data"]["deleted"] is True
    assert api.permission.object_permissions(api.uri(object_id)) == {}
    # re-created later under the same id, the record does not inherit the old permissions
    api.request("stranger", "PUT", api.uri(object_id), {"data": {}}, status=201)
    assert api.permission.object_permissions(api.uri(object_id)) == {"write": {api.userid("stranger")}}
    api.request("reader", "GET", api.uri(object_id), status=403)


@pytest.mark.parametrize("method, body, message", [
    pytest.param("POST", {"data": {}, "permissions": {"delete": ["x"]}},
                 'permissions in body: "delete" is not one of read, write', id="unknown-permission"),
    pytest.param("PATCH", {"permissions": {"read": "book"}}, 'permissions.read in body: "book" is not iterable',
                 id="not-a-list"),
    pytest.param("PUT", {"data": {}, "permissions": ["read"]}, 'permissions in body: ["read"] is not a mapping',
                 id="not-a-mapping"),
    pytest.param("PATCH", {"permissions": {"write": [1]}}, "permissions.write in body: 1 is not a principal",
                 id="not-a-string"),
    pytest.param("PATCH", {"permissions": {"write": [""]}}, 'permissions.write in body: "" is not a principal',
                 id="empty-principal"),
    pytest.param("PATCH", {"permissions": {"read": ["group:" + "x" * 251]}},
                 'permissions.read in body: "group:xxxxxxxxxxxxxx..." is longer than 256 characters',
                 id="principal-too-long"),  # PostgreSQL's index refused it (503); the others stored it
    pytest.param("PATCH", None, "Provide at least one of data or permissions", id="empty-body"),
    pytest.param("POST", {"permissions": {}, "foo": 1}, "foo is not allowed", id="other-key"),
])
def test_invalid_permissions(shared, method, body, message):
    api, object_id = shared
    url = api.url if method == "POST" else api.uri(object_id)
    if body is None:
        response = api.app.patch(url, headers=api.headers("owner"), status=400)
    else:
        response = api.request("owner", method, url, body, status=400)
    assert response.json["errno"] == 107 and response.json["message"] == message
    assert api.permission.object_permissions(api.uri(object_id))["read"] == {api.userid("reader"), GROUP}


def test_longest_principal_is_shared_on_every_backend(shared):
    api, object_id = shared
    longest = "group:" + "\U0001f600" * 250
    response = api.share(object_id, read=[longest])
    assert response.json["permissions"]["read"] == [longest]
    api.permission.add_user_principal(api.userid("stranger"), longest)
    api.request("stranger", "GET", api.uri(object_id), status=200)


@pytest.mark.parametrize("remote_user, status", [
    pytest.param("carol", 201, id="usable"),
    pytest.param("ca\x00rol", 401, id="nul"),  # was a 500 on PostgreSQL: the author's id cannot be stored
    pytest.param("c" * 300, 401, id="too-long"),  # was a 503 on PostgreSQL: too long for the ACL's index
])
def test_unusable_remote_user_is_anonymous(permission, remote_user, status):
    resource = shareable()
    app = ResourceApp([resource], load_settings({f"{resource.name}_create_principals": "system.Authenticated"},
                                                environ={}), storage=MemoryStorage(), permission=permission)
    client = webtest.TestApp(Authentication(app, policies=[RemoteUser("HTTP_X_USER")], permission=permission))
    url = f"/{resource.name}s/{MISSING}"
    try:
        response = client.put_json(url, {"data": {}}, headers={"X-User": remote_user}, status=status)
        if status == 201:
            assert response.json["permissions"] == {"write": ["remoteuser:carol"]}
        else:
            assert response.json["errno"] == 104
    finally:
        permission.delete_object_permissions(url)


def test_private_resources_refuse_permissions(make_api):
    class Diary(Resource):
        schema = SCHEMA

    api = make_api(shareable(), Diary)
    response = api.request("owner", "POST", "/diarys", {"data": {}, "permissions": {"read": ["x"]}}, status=400)
    assert response.json["message"] == "permissions is not allowed"


# -- listing: restricted to readable records, pagination, counts, sync -----------------------------------------

def test_restricted_listing_pages_and_counts(api):
    readable = {api.create(text=f"t{n}", permissions={"read": [GROUP]}) for n in range(5)}
    for n in range(3):
        api.create(text=f"private {n}")
    seen = []
    url = api.url + "?_limit=2"
    while url:
        parts = urlsplit(url)
        response = api.request("member", "GET", f"{parts.path}?{parts.query}")
        assert response.headers["Total-Records"] == "5"
        seen.extend(record["id"] for record in response.json["data"])
        url = response.headers.get("Next-Page")
    assert sorted(seen) == sorted(readable)
    head = api.request("member", "HEAD", api.url + "?text=t3")
    assert head.headers["Total-Records"] == "1"


def _etag(response) -> str:
    return response.headers["ETag"].strip('"')


def test_since_sync_of_sharing_and_unsharing(api):
    """A reader polling ``_since=<last ETag>`` gets a record when it is shared with them, never once unshared."""
    reader = api.userid("reader")
    first = api.create(text="one", permissions={"read": [reader]})
    listing = api.request("reader", "GET", api.url)
    assert [record["id"] for record in listing.json["data"]] == [first]
    etag = _etag(listing)

    second = api.create(text="two")
    poll = api.request("reader", "GET", f"{api.url}?_since={etag}")
    assert poll.json["data"] == [] and int(_etag(poll)) > int(etag)  # the collection moved on, unseen
    etag = _etag(poll)

    api.share(second, read=[reader])  # sharing writes the record: it gets a timestamp above the reader's ETag
    poll = api.request("reader", "GET", f"{api.url}?_since={etag}")
    assert [(record["id"], record["text"]) for record in poll.json["data"]] == [(second, "two")]
    assert poll.json["data"][0]["last_modified"] > int(etag)
    etag = _etag(poll)

    api.share(first, read=[])  # un-sharing: the record leaves the reader's view, its content is never sent again
    api.request("owner", "PATCH", api.uri(first), {"data": {"text": "secret"}})
    poll = api.request("reader", "GET", f"{api.url}?_since={etag}")
    assert poll.json["data"] == []
    full = api.request("reader", "GET", api.url)
    assert [record["id"] for record in full.json["data"]] == [second] and full.headers["Total-Records"] == "1"
    api.request("reader", "GET", api.uri(first), status=403)

    # a deleted shared record: its ACL goes with it, so the reader gets no tombstone (docs/permissions.md)
    api.request("owner", "DELETE", api.uri(second))
    poll = api.request("reader", "GET", f"{api.url}?_since={_etag(full)}")
    assert poll.json["data"] == []
    assert api.ids("reader") == set()


def test_since_sync_sees_tombstones_with_collection_read(make_api):
    resource = shareable()
    api = make_api(resource, **{f"{resource.name}_read_principals": "system.Authenticated",
                                f"{resource.name}_create_principals": "system.Authenticated"})
    object_id = api.create()
    etag = _etag(api.request("reader", "GET", api.url))
    api.request("owner", "DELETE", api.uri(object_id))
    poll = api.request("reader", "GET", f"{api.url}?_since={etag}")
    assert poll.json["data"] == [{"id": object_id, "last_modified": poll.json["data"][0]["last_modified"],
                                  "deleted": True}]


def test_group_membership_change_is_not_a_record_write(shared):
    """Documented: joining a group grants its records at once, but _since pollers need a full listing."""
    api, object_id = shared
    etag = _etag(api.request("stranger", "GET", api.url))
    api.permission.add_user_principal(api.userid("stranger"), GROUP)
    assert api.ids("stranger", f"?_since={etag}") == set()
    assert api.ids("stranger") == {object_id}
    api.permission.remove_user_principal(api.userid("stranger"), GROUP)
    assert api.ids("stranger") == set()


# -- existing records in answers -------------------------------------------------------------------------------

@pytest.mark.parametrize("user, status", [
    pytest.param("reader", 200, id="reader-gets-it"),
    pytest.param("stranger", 403, id="stranger-does-not"),
])
def test_post_of_an_existing_id(shared, user, status):
    api, object_id = shared
    response = api.request(user, "POST", api.url, {"data": {"id": object_id, "text": "other"}}, status=status)
    if status == 200:
        assert response.json["data"]["text"] == "shared" and response.json["permissions"] == {}
    assert api.permission.object_permissions(api.uri(object_id))["write"] == {api.userid("owner")}


def test_unique_conflict_does_not_show_an_unreadable_record(make_api):
    resource = shareable(unique_fields=("tag",))
    api = make_api(resource, **{f"{resource.name}_create_principals": "system.Authenticated"})
    api.create(tag="taken", text="secret")
    response = api.request("stranger", "POST", api.url, {"data": {"tag": "taken"}}, status=403)
    assert "secret" not in response.text
    mine = api.create(user="stranger", tag="free")
    response = api.request("stranger", "PATCH", api.uri(mine), {"data": {"tag": "taken"}}, status=403)
    assert "secret" not in response.text
    # the failed write left the record's permissions as they were
    assert api.permission.object_permissions(api.uri(mine)) == {"write": {api.userid("stranger")}}



def test_precondition_failed_shows_the_record_without_its_permissions(api):
    """§6.2: the 412 of a shareable resource has ``details.existing`` as stored, never its ACL."""
    object_id = api.create(text="a", permissions={"read": [api.userid("owner")]})
    record = api.request("owner", "GET", api.uri(object_id)).json["data"]
    for method, body in (("PATCH", {"data": {"text": "b"}}), ("PUT", {"data": {"text": "b"}}), ("DELETE", None)):
        response = api.request("owner", method, api.uri(object_id), body, status=412, **{"If-Match": '"1"'})
        assert response.json["details"] == {"existing": record}
        assert response.headers["ETag"] == f'"{record["last_modified"]}"'
    tombstone = api.request("owner", "DELETE", api.uri(object_id)).json["data"]
    response = api.request("owner", "PUT", api.uri(object_id), {"data": {"text": "c"}}, status=412,
                           **{"If-Match": f'"{record["last_modified"]}"'})
    assert response.json["details"] == {"existing": tombstone}

# -- bound permissions ------------------------------------------------------------------------------------------

class WriteImpliesRead(ShareableResource):
    """The example of docs/permissions.md: writers may read; the collection's permissions apply to records."""

    schema = SCHEMA

    def get_bound_permissions(self, object_id, permission):
        pairs = super().get_bound_permissions(object_id, permission)
        if permission == "read":
            pairs += [(obj, "write") for obj, _ in pairs]
        return pairs


def test_write_implies_read(make_api):
    resource = type("Wir" + uuid.uuid4().hex[:8], (WriteImpliesRead,), {"name": "w" + uuid.uuid4().hex[:10]})
    api = make_api(resource, **{f"{resource.name}_create_principals": "system.Authenticated"})
    object_id = api.create()
    api.request("owner", "GET", api.uri(object_id), status=200)
    assert api.ids("owner") == {object_id}
    assert api.ids("stranger") == set()
    api.permission.add_principal_to_ace(api.url, "write", api.userid("editor"))  # collection writers read it all
    assert api.ids("editor") == {object_id}
    api.request("editor", "GET", api.uri(object_id), status=200)


def test_records_inherit_the_collection_permissions(api, shared):
    _, object_id = shared
    api.permission.add_principal_to_ace(api.url, "read", api.userid("stranger"))
    assert api.ids("stranger") == {object_id}
    api.request("stranger", "GET", api.uri(object_id), status=200)
    api.request("stranger", "PATCH", api.uri(object_id), {"data": {}}, status=403)


# -- nesting and configuration ----------------------------------------------------------------------------------

def test_nested_shareable_resource(make_api):
    resource = shareable(collection_path="/boards/{board_id}/cards")
    api = make_api(resource, **{f"{resource.name}_create_principals": "system.Authenticated"})
    b1, b2 = (uuid.uuid4().hex for _ in range(2))  # boards of this test only (servers are shared)
    response = api.request("owner", "POST", f"/boards/{b1}/cards", {"data": {}, "permissions": {"read": [GROUP]}})
    object_id = response.json["data"]["id"]
    try:
        assert api.permission.object_permissions(f"/boards/{b1}/cards/{object_id}")["read"] == {GROUP}
        api.permission.add_user_principal(api.userid("member"), GROUP)
        assert [r["id"] for r in api.request("member", "GET", f"/boards/{b1}/cards").json["data"]] == [object_id]
        assert api.request("member", "GET", f"/boards/{b2}/cards").json["data"] == []
        api.request("member", "GET", f"/boards/{b2}/cards/{object_id}", status=403)
    finally:
        api.permission.delete_object_permissions(f"/boards/{b1}/cards/{object_id}")


def test_a_permission_backend_is_required():
    with pytest.raises(ConfigurationError, match="permission_url"):
        ResourceApp([shareable()], load_settings({"permission_url": ""}, environ={}), storage=MemoryStorage())


def test_record_permissions_must_include_write():
    with pytest.raises(ConfigurationError, match="write"):
        ResourceApp([shareable(record_permissions=("read",))], load_settings({}, environ={}),
                    storage=MemoryStorage(), permission=MemoryPermission())


def test_exported_from_the_package():
    import wsgicliquet
    import wsgicliquet.resource

    assert wsgicliquet.ShareableResource is wsgicliquet.resource.ShareableResource is ShareableResource


# -- a reader polling between the steps of a write ---------------------------------------------------------------

class _HookedStorage(MemoryStorage):
    def __init__(self, hook) -> None:
        super().__init__()
        self.hook = hook

    def create(self, *args, **kwargs):
        record = super().create(*args, **kwargs)
        self.hook()
        return record

    def update(self, *args, **kwargs):
        record = super().update(*args, **kwargs)
        self.hook()
        return record


class _HookedPermission(MemoryPermission):
    def __init__(self, hook) -> None:
        super().__init__()
        self.hook = hook

    def replace_object_permissions(self, *args, **kwargs):
        super().replace_object_permissions(*args, **kwargs)
        self.hook()


@pytest.mark.parametrize("action", ["post", "post-with-id", "put-new", "share", "unshare"])
def test_a_poll_between_the_steps_of_a_write(action):
    """Whatever step of a sharing write a reader's poll falls between, ``_since=<its ETag>`` gets the record
    afterwards, and an un-shared record's new content is never sent to the former reader."""
    polls = []
    state = {"active": False}

    def poll() -> None:
        if state["active"]:
            state["active"] = False  # the poll itself must not recurse
            response = api.request("reader", "GET", api.url)
            polls.append((_etag(response), {record["id"]: record for record in response.json["data"]}))
            state["active"] = True

    resource = shareable()
    api = Api(_HookedPermission(poll), [resource], storage=_HookedStorage(poll),
              **{f"{resource.name}_create_principals": "system.Authenticated"})
    read = {"read": [api.userid("reader")]}
    object_id = str(uuid.uuid4())
    if action in ("share", "unshare"):
        object_id = api.create(text="before", permissions=read if action == "unshare" else None)
    state["active"] = True
    if action == "post":
        object_id = api.create(text="after", permissions=read)
    elif action == "post-with-id":
        api.request("owner", "POST", api.url, {"data": {"id": object_id, "text": "after"}, "permissions": read},
                    status=201)
    elif action == "put-new":
        api.request("owner", "PUT", api.uri(object_id), {"data": {"text": "after"}, "permissions": read},
                    status=201)
    elif action == "share":
        api.request("owner", "PATCH", api.uri(object_id), {"data": {"text": "after"}, "permissions": read})
    else:
        api.request("owner", "PATCH", api.uri(object_id), {"data": {"text": "after"}, "permissions": {"read": []}})
    state["active"] = False
    assert polls, "the write was expected to go through the hooked backends"
    for etag, seen in polls:
        if action == "unshare":
            assert seen.get(object_id, {}).get("text") != "after"
            continue
        later = api.request("reader", "GET", f"{api.url}?_since={etag}").json["data"]
        texts = [record["text"] for record in later if record["id"] == object_id]
        assert texts == ["after"] or seen.get(object_id, {}).get("text") == "after"


# -- every storage with every permission backend ---------------------------------------------------------------

def _sharing_flow(api: Api) -> None:
    reader = api.userid("reader")
    first = api.create(tag="a", permissions={"read": [reader]})
    second = api.create(tag="b")
    etag = _etag(api.request("reader", "GET", api.url))
    api.request("owner", "PUT", api.uri(MISSING), {"data": {"tag": "c"}, "permissions": {"read": [reader]}},
                status=201)
    api.share(second, read=[reader])
    api.share(first, read=[])
    assert api.ids("reader", f"?_since={etag}") == {second, MISSING}
    # a unique conflict (with a record the owner may write but not read: 403) leaves the ACL as it was
    api.request("owner", "PATCH", api.uri(second), {"data": {"tag": "c"}, "permissions": {"read": []}}, status=403)
    assert api.permission.object_permissions(api.uri(second))["read"] == {reader}
    api.request("owner", "DELETE", api.uri(MISSING))
    assert api.permission.object_permissions(api.uri(MISSING)) == {}
    assert {t["id"] for t in api.request("owner", "DELETE", api.url).json["data"]} == {first, second}
    assert api.permission.object_permissions(api.uri(first)) == {}


def test_sharing_on_every_storage(make_api, any_storage, permission):
    resource = shareable(unique_fields=("tag",))
    api = make_api(resource, storage=any_storage, **{f"{resource.name}_create_principals": "system.Authenticated"})
    _sharing_flow(api)


@pytest.mark.postgresql
def test_postgresql_storage_and_permission_in_one_transaction(postgresql_url):
    """On one database the ACL and the record commit together (and the record is written first)."""
    from wsgicliquet.permission.postgresql import Permission
    from wsgicliquet.resource.shareable import _one_transaction
    from wsgicliquet.storage.postgresql import Storage

    url = database_url(postgresql_url, RESOURCE_DATABASE)
    storage = Storage.from_settings({"storage_url": url, "storage_pool_size": 5})
    permission = Permission.from_settings({"permission_url": url, "permission_pool_size": 5})
    storage.initialize_schema()
    permission.initialize_schema()
    assert _one_transaction(storage, permission)
    assert not _one_transaction(MemoryStorage(), permission)
    resource = shareable(unique_fields=("tag",))
    api = Api(permission, [resource], storage=storage,
              **{f"{resource.name}_create_principals": "system.Authenticated"})
    try:
        _sharing_flow(api)
    finally:
        api.cleanup()


def test_concurrent_edits_do_not_lose_a_sharing(make_api):
    """A sharing PATCH racing with PATCHes of other fields: every field lands and the sharing stays."""
    import json
    import threading

    from webob import Request

    resource = shareable(preserve_unknown=True, schema={"type": "object"})
    api = make_api(resource, **{f"{resource.name}_create_principals": "system.Authenticated"})
    object_id = api.create()
    reader = api.userid("reader")
    bodies = [{"data": {f"f{n}": n}} for n in range(8)] + [{"permissions": {"read": [reader]}}]
    barrier = threading.Barrier(len(bodies))
    statuses = []

    def patch(body):
        request = Request.blank(api.uri(object_id), method="PATCH", headers=api.headers("owner"),
                                body=json.dumps(body).encode(), content_type="application/json")
        barrier.wait()
        statuses.append(request.get_response(api.app.app).status_int)

    threads = [threading.Thread(target=patch, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * len(bodies)
    record = api.request("reader", "GET", api.uri(object_id)).json["data"]
    assert {f"f{n}" for n in range(8)} <= set(record)
    assert api.permission.object_permissions(api.uri(object_id))["read"] == {reader}


class Card(ShareableResource):
    """The parent inheritance example of docs/permissions.md."""

    collection_path = "/boards/{board_id}/cards"
    schema = SCHEMA

    def get_bound_permissions(self, object_id, permission):
        pairs = super().get_bound_permissions(object_id, permission)
        board = "/boards/" + self.matchdict["board_id"]
        return pairs + [(board, permission)]


def test_records_inherit_from_a_parent_object(make_api):
    resource = type("Card" + uuid.uuid4().hex[:8], (Card,), {"name": "c" + uuid.uuid4().hex[:10]})
    api = make_api(resource, **{f"{resource.name}_create_principals": "system.Authenticated"})
    b1, b2 = (uuid.uuid4().hex for _ in range(2))  # boards of this test only (servers are shared)
    cards = {board: api.request("owner", "POST", f"/boards/{board}/cards", {"data": {}}).json["data"]["id"]
             for board in (b1, b2)}
    api.permission.add_principal_to_ace(f"/boards/{b1}", "read", GROUP)
    api.permission.add_user_principal(api.userid("member"), GROUP)
    try:
        listing = api.request("member", "GET", f"/boards/{b1}/cards").json["data"]
        assert [card["id"] for card in listing] == [cards[b1]]
        api.request("member", "GET", f"/boards/{b1}/cards/{cards[b1]}", status=200)
        api.request("member", "GET", f"/boards/{b2}/cards/{cards[b2]}", status=403)
        assert api.request("member", "GET", f"/boards/{b2}/cards").json["data"] == []
        api.request("member", "PATCH", f"/boards/{b1}/cards/{cards[b1]}", {"data": {}}, status=403)
    finally:
        objects = [f"/boards/{board}/cards/{card}" for board, card in cards.items()]
        api.permission.delete_object_permissions(f"/boards/{b1}", *objects)


def test_in_the_full_pipeline_with_batch():
    """From settings alone: the app and the Authentication middleware share the permission backend (groups)."""
    from wsgicliquet import build_pipeline
    from wsgicliquet.backends import load_backend

    resource = shareable()
    settings = load_settings({"permission_url": "memory://", "storage_url": "memory://",
                              "userid_hmac_secret": uuid.uuid4().hex,
                              f"{resource.name}_create_principals": "system.Authenticated"}, environ={})
    app = webtest.TestApp(build_pipeline(ResourceApp([resource], settings), settings))
    url = f"/v1/{resource.name}s"
    batch = app.post_json("/v1/batch", {"requests": [
        {"method": "POST", "path": url, "body": {"data": {"text": "hi"}, "permissions": {"read": [GROUP]}}},
        {"method": "GET", "path": url}]}, headers=basic_headers("owner"))
    created, listing = batch.json["responses"]
    assert created["status"] == 201 and listing["body"] == {"data": []}  # the author may write, not read
    member = basic_userid(settings["userid_hmac_secret"], "member")
    load_backend("permission", settings).add_user_principal(member, GROUP)
    response = app.get(url, headers=basic_headers("member"))
    assert [record["id"] for record in response.json["data"]] == [created["body"]["data"]["id"]]


def test_a_restricted_listing_lists_the_shared_ids_once():
    """Authorizing a reader only asks whether anything is shared; the ids are listed once, after the collection
    timestamp (with many shares, listing them twice doubled the cost of every read)."""
    calls = {"listed": 0, "asked": 0}

    class Counting(MemoryPermission):
        def principals_accessible_objects(self, *args, **kwargs):
            calls["listed"] += 1
            return super().principals_accessible_objects(*args, **kwargs)

        def has_accessible_objects(self, *args, **kwargs):
            calls["asked"] += 1
            return super().has_accessible_objects(*args, **kwargs)

    api = Api(Counting(), [shareable()])
    api.permission.add_principal_to_ace(api.url, f"{api.name}:create", api.userid("owner"))
    first = api.create(text="a", permissions={"read": [api.userid("reader")]})
    api.create(text="b")
    calls.update(listed=0, asked=0)
    assert api.ids("reader") == {first}
    assert calls == {"listed": 1, "asked": 1}
    calls.update(listed=0, asked=0)
    api.request("stranger", "GET", api.url, status=403)
    assert calls == {"listed": 0, "asked": 1}

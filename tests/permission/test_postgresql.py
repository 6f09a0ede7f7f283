"""PostgreSQL permission backend: groups, ACEs, accessible objects by glob, SQL safety, shared transactions."""
from __future__ import annotations

from typing import Iterator, List, Tuple

import pytest

from tests.backends import database_url, emptied
from wsgicliquet import postgresql as pg
from wsgicliquet.permission.postgresql import Permission
from wsgicliquet.permission.testing import PermissionContract
from wsgicliquet.storage.exceptions import BackendError
from wsgicliquet.storage.postgresql import Storage

pytestmark = pytest.mark.postgresql


@pytest.fixture(scope="module")
def permission_url(postgresql_url: str) -> str:
    url = database_url(postgresql_url)
    Permission.from_settings({"permission_url": url}).initialize_schema()
    Storage.from_settings({"storage_url": url}).initialize_schema()
    return url


@pytest.fixture
def permission(permission_url: str) -> Iterator[Permission]:
    yield from emptied(Permission.from_settings({"permission_url": permission_url}))


class TestPostgreSQLPermission(PermissionContract):
    """The shared contract suite, unchanged."""


def test_user_principals(permission: Permission) -> None:
    permission.add_user_principal("alice", "group:a")
    permission.add_user_principal("alice", "group:a")
    permission.add_user_principal("alice", "group:b")
    permission.add_user_principal("bob", "group:a")
    assert permission.user_principals("alice") == {"group:a", "group:b"}
    permission.remove_user_principal("alice", "group:b")
    assert permission.user_principals("alice") == {"group:a"}
    permission.remove_principal("group:a")
    assert permission.user_principals("alice") == set() == permission.user_principals("bob")
    permission.remove_user_principal("nobody", "nothing")


def test_aces(permission: Permission) -> None:
    permission.add_principal_to_ace("/a/1", "read", "alice")
    permission.add_principal_to_ace("/a/1", "read", "alice")
    permission.add_principal_to_ace("/a/1", "write", "bob")
    assert permission.object_permission_principals("/a/1", "read") == {"alice"}
    assert permission.object_permissions("/a/1") == {"read": {"alice"}, "write": {"bob"}}
    assert permission.object_permissions("/a/1", ["write", "other"]) == {"write": {"bob"}}
    assert permission.check_permission("/a/1", "read", ["alice", "carol"])
    assert not permission.check_permission("/a/1", "read", ["bob"])
    permission.remove_principal_from_ace("/a/1", "read", "alice")
    assert permission.object_permissions("/a/1") == {"write": {"bob"}}
    assert permission.object_permissions("/nothing") == {}


def bound(object_id: str, perm: str) -> List[Tuple[str, str]]:
    """Write implies read; a parent's write grants its children."""
    pairs = [(object_id, perm)] + ([(object_id, "write")] if perm == "read" else [])
    parent = object_id.rsplit("/", 2)[0]
    if parent and parent != object_id:
        pairs.append((parent, "write"))
    return pairs


def test_bound_permissions(permission: Permission) -> None:
    permission.add_principal_to_ace("/buckets/b/collections/c", "write", "writer")
    permission.add_principal_to_ace("/buckets/b", "write", "owner")
    permission.add_principal_to_ace("/buckets/b/collections/c", "read", "reader")
    assert permission.object_permission_authorized_principals("/buckets/b/collections/c", "read", bound) == {
        "writer", "owner", "reader"}
    assert permission.check_permission("/buckets/b/collections/c", "read", ["owner"], bound)
    assert not permission.check_permission("/buckets/b/collections/c", "write", ["reader"], bound)
    assert permission.object_permission_authorized_principals("/x", "read", lambda o, p: []) == set()


def test_accessible_objects_by_glob(permission: Permission) -> None:
    for object_id in ("/a/1", "/a/2", "/b/1", "/a/1/sub/1"):
        permission.add_principal_to_ace(object_id, "read", "alice")
    permission.add_principal_to_ace("/a/3", "write", "alice")
    permission.add_principal_to_ace("/a/4", "read", "bob")
    assert permission.principals_accessible_objects(["alice"], "read", "/a/*") == {"/a/1", "/a/2", "/a/1/sub/1"}
    assert permission.principals_accessible_objects(["alice", "bob"], "read", "/a/*/sub/*") == {"/a/1/sub/1"}
    assert permission.principals_accessible_objects(["alice"], "read") == {"/a/1", "/a/2", "/b/1", "/a/1/sub/1"}
    assert permission.principals_accessible_objects(["alice", "bob"], "read", "/a/?") == set()
    assert permission.principals_accessible_objects([], "read", "/a/*") == set()
    with_bound = permission.principals_accessible_objects(
        ["alice"], "read", "/a/*", lambda obj, perm: [(obj, perm), (obj, "write")])
    assert with_bound == {"/a/1", "/a/2", "/a/3", "/a/1/sub/1"}


@pytest.mark.parametrize("glob, expected", [
    pytest.param("/x/%", {"/x/%"}, id="percent-is-literal"),
    pytest.param("/x/_", {"/x/_"}, id="underscore-is-literal"),
    pytest.param("/x/\\*", {"/x/\\y"}, id="backslash-is-literal"),
    pytest.param("/x/*", {"/x/%", "/x/_", "/x/a", "/x/\\y", "/x/'"}, id="star"),
    pytest.param("/x/'", {"/x/'"}, id="quote"),
])
def test_glob_special_characters(permission: Permission, glob: str, expected: set) -> None:
    for object_id in ("/x/%", "/x/_", "/x/a", "/x/\\y", "/x/'"):
        permission.add_principal_to_ace(object_id, "read", "alice")
    assert permission.principals_accessible_objects(["alice"], "read", glob) == expected


HOSTILE = ["'; DROP TABLE access_control_entries; --", "a') OR ('1'='1", "%", "\\", "{}", "%s"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_principals_and_ids_are_plain_values(permission: Permission, text: str) -> None:
    permission.add_principal_to_ace("/safe", "read", "alice")
    permission.add_principal_to_ace(text, text, text)
    permission.add_user_principal(text, text)
    assert permission.object_permission_principals(text, text) == {text}
    assert permission.user_principals(text) == {text}
    assert permission.principals_accessible_objects([text], text, text) == {text}
    assert permission.principals_accessible_objects([text], "read") == set()
    assert permission.check_permission(text, text, [text, "x"])
    permission.replace_object_permissions(text, {text: [text, "other"]})
    assert permission.object_permissions(text) == {text: {text, "other"}}
    permission.delete_object_permissions(text)
    assert permission.object_permissions(text) == {}
    assert permission.object_permissions("/safe") == {"read": {"alice"}}


def test_replace_and_delete_object_permissions(permission: Permission) -> None:
    permission.replace_object_permissions("/a", {"read": ["x", "y"], "write": ["z"]})
    permission.replace_object_permissions("/a", {"read": ["y", "w"]})
    assert permission.object_permissions("/a") == {"read": {"y", "w"}, "write": {"z"}}
    permission.replace_object_permissions("/a", {"write": []})
    assert permission.object_permissions("/a") == {"read": {"y", "w"}}
    permission.replace_object_permissions("/b", {"read": ["x"]})
    permission.delete_object_permissions("/a", "/b")
    assert permission.object_permissions("/a") == {} == permission.object_permissions("/b")
    permission.delete_object_permissions()


def test_acl_and_record_commit_or_roll_back_together(permission: Permission, permission_url: str) -> None:
    storage = Storage.from_settings({"storage_url": permission_url})
    storage.flush()
    assert storage.client is permission.client
    with pytest.raises(RuntimeError):
        with storage.transaction():
            storage.create("items", "", {"id": "a"})
            permission.replace_object_permissions("/items/a", {"write": ["alice"]})
            raise RuntimeError("the request failed")
    assert permission.object_permissions("/items/a") == {} and storage.get_all("items", "")[1] == 0
    with storage.transaction():
        storage.create("items", "", {"id": "a"})
        permission.replace_object_permissions("/items/a", {"write": ["alice"]})
    assert permission.object_permissions("/items/a") == {"write": {"alice"}}
    storage.flush()


def test_ping_and_faults(permission: Permission) -> None:
    assert permission.ping() is True and permission.ping(readonly=True) is True
    assert permission.user_principals("__heartbeat__") == set()
    unreachable = Permission(pg.Client("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", pool_size=1))
    with pytest.raises(BackendError):
        unreachable.user_principals("alice")
    assert unreachable.ping() is False and unreachable.ping(readonly=True) is False

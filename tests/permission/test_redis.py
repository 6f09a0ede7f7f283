"""Redis permission backend: sets and their reverse indexes stay consistent; globs; the key layout."""
from __future__ import annotations

import os
import random

import pytest

from tests.backends import emptied
from wsgicliquet.permission.memory import Permission as MemoryPermission
from wsgicliquet.permission.redis import Permission
from wsgicliquet.permission.testing import PermissionContract

pytestmark = pytest.mark.redis

KEY_PREFIX = f"wsgicliquet-test-{os.getpid()}:"


@pytest.fixture
def permission(redis_url):
    yield from emptied(Permission.from_settings({"permission_url": redis_url, "permission_key_prefix": KEY_PREFIX}))


class TestRedisPermissionContract(PermissionContract):
    pass


@pytest.mark.parametrize("pattern, expected", [
    pytest.param(None, {"/buckets/a", "/buckets/a/collections/x", "/buckets/b+c/collections/y", "/other"},
                 id="everything"),
    pytest.param("/buckets/*", {"/buckets/a", "/buckets/a/collections/x", "/buckets/b+c/collections/y"},
                 id="star-crosses-slashes"),
    pytest.param("/buckets/*/collections/*", {"/buckets/a/collections/x", "/buckets/b+c/collections/y"},
                 id="two-stars"),
    pytest.param("/buckets/b+c/collections/*", {"/buckets/b+c/collections/y"}, id="regex-characters-literal"),
    pytest.param("/buckets/?", set(), id="question-mark-literal"),
    pytest.param("/other", {"/other"}, id="exact"),
])
def test_principals_accessible_objects_globs(permission, pattern, expected):
    for object_id in ("/buckets/a", "/buckets/a/collections/x", "/buckets/b+c/collections/y", "/other"):
        permission.add_principal_to_ace(object_id, "read", "alice")
    permission.add_principal_to_ace("/buckets/z", "write", "alice")
    permission.add_principal_to_ace("/buckets/y", "read", "mallory")
    assert permission.principals_accessible_objects(["alice", "bob"], "read", pattern) == expected


def test_bound_permissions(permission):
    permission.add_principal_to_ace("/buckets/a", "write", "alice")
    permission.add_principal_to_ace("/buckets/b", "read", "bob")

    def bound(object_id, perm):
        return [(object_id, "write"), (object_id, "read")] if perm == "read" else [(object_id, perm)]

    assert permission.object_permission_authorized_principals("/buckets/a", "read", bound) == {"alice"}
    assert permission.check_permission("/buckets/a", "read", ["alice"], bound)
    assert not permission.check_permission("/buckets/a", "read", ["bob"], bound)
    assert permission.principals_accessible_objects(["alice", "bob"], "read", "/buckets/*", bound) == {
        "/buckets/a", "/buckets/b"}


def test_reverse_indexes_follow_every_write(permission):
    permission.add_principal_to_ace("/o", "read", "alice")
    permission.add_principal_to_ace("/o", "write", "bob")
    permission.replace_object_permissions("/o", {"read": ["carol"], "write": []})
    assert permission.object_permissions("/o") == {"read": {"carol"}}
    assert permission.principals_accessible_objects(["alice"], "read") == set()
    assert permission.principals_accessible_objects(["bob"], "write") == set()
    permission.delete_object_permissions("/o", "/never")
    assert permission.principals_accessible_objects(["carol"], "read") == set()
    assert permission.object_permissions("/o") == {}
    permission.add_user_principal("u1", "group:x")
    permission.add_user_principal("u2", "group:x")
    permission.remove_principal("group:x")
    assert permission.user_principals("u1") == permission.user_principals("u2") == set()
    assert list(permission.client.scan_iter(match=KEY_PREFIX + "*")) == []


def test_key_layout(permission):
    permission.add_user_principal("basicauth:abc", "group:x")
    permission.add_principal_to_ace("/buckets/a:b", "read:all", "basicauth:abc")
    ns = KEY_PREFIX + "permission:"
    assert sorted(key.decode() for key in permission.client.scan_iter(match=KEY_PREFIX + "*")) == sorted([
        ns + "user:basicauth:abc", ns + "members:group:x", ns + "ace:read%3Aall:/buckets/a:b",
        ns + "perms:/buckets/a:b", ns + "objects:read%3Aall:basicauth:abc"])
    assert permission.client.smembers(ns + "user:basicauth:abc") == {b"group:x"}


def test_random_operations_agree_with_the_memory_backend(permission):
    """A few hundred random operations; both backends answer every read the same way."""
    reference = MemoryPermission()
    rng = random.Random(8)
    objects = ["/a", "/a/1", "/a/2", "/b", "/b/1"]
    perms = ["read", "write"]
    principals = ["alice", "bob", "group:x", "system.Everyone"]
    users = ["u1", "u2"]
    for _ in range(300):
        action = rng.randrange(7)
        obj, perm, principal, user = (rng.choice(objects), rng.choice(perms), rng.choice(principals),
                                      rng.choice(users))
        replacement, rare = rng.sample(principals, rng.randrange(3)), rng.random() < 0.2
        for backend in (permission, reference):
            if action == 0:
                backend.add_principal_to_ace(obj, perm, principal)
            elif action == 1:
                backend.remove_principal_from_ace(obj, perm, principal)
            elif action == 2:
                backend.replace_object_permissions(obj, {perm: replacement})
            elif action == 3 and rare:
                backend.delete_object_permissions(obj)
            elif action == 4:
                backend.add_user_principal(user, principal)
            elif action == 5:
                backend.remove_user_principal(user, principal)
            elif action == 6 and rare:
                backend.remove_principal(principal)
        for who in ([principal], principals[:2]):
            assert (permission.principals_accessible_objects(who, perm, "/a*")
                    == reference.principals_accessible_objects(who, perm, "/a*"))
        assert permission.object_permissions(obj) == reference.object_permissions(obj)
        assert permission.user_principals(user) == reference.user_principals(user)

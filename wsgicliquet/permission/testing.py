"""The permission contract suite (PROTOCOL.md §17.4): every permission backend passes it unchanged.

Subclass :class:`PermissionContract` with a fixture named ``permission`` returning a flushed backend::

    class TestMyPermission(PermissionContract):
        @pytest.fixture
        def permission(self):
            backend = Permission.from_settings({"permission_url": "..."})
            backend.flush()
            return backend
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

import pytest

from wsgicliquet.storage.testing import run_concurrently

from . import MAX_PRINCIPAL_LENGTH, Permission

__all__ = ["PermissionContract", "bound_permissions"]

EVERYONE, ALICE, BOB = "system.Everyone", "basicauth:alice", "basicauth:bob"
BUCKET = "/buckets/b1"
COLLECTION = "/buckets/b1/collections/c1"
RECORD = "/buckets/b1/collections/c1/records/r1"


def bound_permissions(object_id: str, permission: str) -> Iterable[Tuple[str, str]]:
    """A small inheritance tree for the tests: ``write`` implies ``read``, and a bucket's permission covers its
    collections and records (``object_id`` may be a ``*`` glob, as with ``principals_accessible_objects``)."""
    pairs = [(object_id, permission)]
    if permission == "read":
        pairs.append((object_id, "write"))
    parts = object_id.split("/")
    if len(parts) > 3:  # /buckets/<id>/...: the bucket grants the same permissions
        bucket = "/".join(parts[:3])
        pairs.append((bucket, permission))
        if permission == "read":
            pairs.append((bucket, "write"))
    return pairs


class PermissionContract:
    """Tests of the permission contract.  Subclasses provide a ``permission`` fixture returning a flushed backend."""

    # --- user principals ---------------------------------------------------------------------------------------

    def test_user_principals(self, permission: Permission) -> None:
        assert permission.user_principals(ALICE) == set()
        permission.add_user_principal(ALICE, "group:admins")
        permission.add_user_principal(ALICE, "group:admins")
        permission.add_user_principal(ALICE, "group:editors")
        permission.add_user_principal(BOB, "group:editors")
        assert permission.user_principals(ALICE) == {"group:admins", "group:editors"}
        permission.remove_user_principal(ALICE, "group:admins")
        permission.remove_user_principal(ALICE, "not-a-member")
        permission.remove_user_principal("unknown-user", "group:editors")
        assert permission.user_principals(ALICE) == {"group:editors"}
        assert permission.user_principals(BOB) == {"group:editors"}

    def test_remove_principal_from_every_user(self, permission: Permission) -> None:
        for user in (ALICE, BOB):
            permission.add_user_principal(user, "group:editors")
        permission.add_user_principal(BOB, "group:admins")
        permission.add_principal_to_ace(BUCKET, "write", "group:editors")
        permission.remove_principal("group:editors")
        assert permission.user_principals(ALICE) == set()
        assert permission.user_principals(BOB) == {"group:admins"}
        assert permission.object_permission_principals(BUCKET, "write") == {"group:editors"}, "ACEs untouched"

    def test_returned_sets_are_copies(self, permission: Permission) -> None:
        permission.add_user_principal(ALICE, "group:a")
        permission.add_principal_to_ace(BUCKET, "read", ALICE)
        permission.user_principals(ALICE).add("intruder")
        permission.object_permission_principals(BUCKET, "read").add("intruder")
        permission.object_permissions(BUCKET)["read"].add("intruder")
        assert permission.user_principals(ALICE) == {"group:a"}
        assert permission.object_permissions(BUCKET) == {"read": {ALICE}}

    # --- access control entries -----------------------------------------------------------------------------------

    def test_aces(self, permission: Permission) -> None:
        assert permission.object_permission_principals(BUCKET, "read") == set()
        permission.add_principal_to_ace(BUCKET, "read", ALICE)
        permission.add_principal_to_ace(BUCKET, "read", ALICE)
        permission.add_principal_to_ace(BUCKET, "read", EVERYONE)
        permission.add_principal_to_ace(BUCKET, "write", BOB)
        permission.add_principal_to_ace(COLLECTION, "read", BOB)
        assert permission.object_permission_principals(BUCKET, "read") == {ALICE, EVERYONE}
        permission.remove_principal_from_ace(BUCKET, "read", ALICE)
        permission.remove_principal_from_ace(BUCKET, "read", "absent")
        permission.remove_principal_from_ace("/nothing", "read", ALICE)
        assert permission.object_permission_principals(BUCKET, "read") == {EVERYONE}
        assert permission.object_permission_principals(BUCKET, "write") == {BOB}
        assert permission.object_permission_principals(COLLECTION, "read") == {BOB}

    def test_authorized_principals_and_check_permission(self, permission: Permission) -> None:
        permission.add_principal_to_ace(BUCKET, "write", ALICE)
        permission.add_principal_to_ace(RECORD, "read", BOB)
        assert permission.object_permission_authorized_principals(RECORD, "read") == {BOB}
        assert permission.object_permission_authorized_principals(RECORD, "read", bound_permissions) == {ALICE, BOB}
        assert permission.object_permission_authorized_principals(RECORD, "write", bound_permissions) == {ALICE}
        assert permission.check_permission(RECORD, "read", [BOB, EVERYONE])
        assert not permission.check_permission(RECORD, "read", [ALICE])
        assert permission.check_permission(RECORD, "read", [ALICE], bound_permissions)
        assert not permission.check_permission(RECORD, "write", [BOB], bound_permissions)
        assert not permission.check_permission(RECORD, "read", [])

    def test_object_permissions(self, permission: Permission) -> None:
        assert permission.object_permissions(BUCKET) == {}
        permission.add_principal_to_ace(BUCKET, "read", ALICE)
        permission.add_principal_to_ace(BUCKET, "read", BOB)
        permission.add_principal_to_ace(BUCKET, "write", ALICE)
        permission.add_principal_to_ace(BUCKET, "collection:create", BOB)
        permission.add_principal_to_ace(COLLECTION, "read", EVERYONE)
        assert permission.object_permissions(BUCKET) == {"read": {ALICE, BOB}, "write": {ALICE},
                                                         "collection:create": {BOB}}
        assert permission.object_permissions(BUCKET, ["write", "read", "unknown"]) == {"read": {ALICE, BOB},
                                                                                       "write": {ALICE}}
        assert permission.object_permissions(BUCKET, []) == {}
        permission.remove_principal_from_ace(BUCKET, "write", ALICE)
        assert "write" not in permission.object_permissions(BUCKET), "empty permissions are not listed"

    def test_replace_object_permissions(self, permission: Permission) -> None:
        permission.add_principal_to_ace(BUCKET, "read", ALICE)
        permission.add_principal_to_ace(BUCKET, "write", ALICE)
        permission.add_principal_to_ace(BUCKET, "collection:create", ALICE)
        permission.replace_object_permissions(BUCKET, {"read": [BOB, EVERYONE], "write": [],
                                                       "group:create": (BOB,)})
        assert permission.object_permissions(BUCKET) == {"read": {BOB, EVERYONE}, "collection:create": {ALICE},
                                                         "group:create": {BOB}}
        permission.replace_object_permissions(BUCKET, {})
        assert permission.object_permissions(BUCKET)["read"] == {BOB, EVERYONE}
        permission.replace_object_permissions("/new", {"read": {ALICE}})
        assert permission.object_permissions("/new") == {"read": {ALICE}}

    def test_delete_object_permissions(self, permission: Permission) -> None:
        for object_id in (BUCKET, COLLECTION, RECORD):
            permission.add_principal_to_ace(object_id, "read", ALICE)
            permission.add_principal_to_ace(object_id, "write", BOB)
        permission.delete_object_permissions(COLLECTION, RECORD, "/never-existed")
        assert permission.object_permissions(COLLECTION) == {}
        assert permission.object_permissions(RECORD) == {}
        assert permission.object_permissions(BUCKET) == {"read": {ALICE}, "write": {BOB}}
        permission.delete_object_permissions()
        assert permission.object_permissions(BUCKET) == {"read": {ALICE}, "write": {BOB}}

    # --- accessible objects -----------------------------------------------------------------------------------------

    def test_principals_accessible_objects(self, permission: Permission) -> None:
        permission.add_principal_to_ace("/buckets/b1", "read", ALICE)
        permission.add_principal_to_ace("/buckets/b2", "read", EVERYONE)
        permission.add_principal_to_ace("/buckets/b3", "write", ALICE)
        permission.add_principal_to_ace("/buckets/b1/collections/c1", "read", ALICE)
        permission.add_principal_to_ace("/groups/g1", "read", ALICE)
        accessible = permission.principals_accessible_objects
        assert accessible([ALICE], "read") == {"/buckets/b1", "/buckets/b1/collections/c1", "/groups/g1"}
        assert accessible([ALICE, EVERYONE], "read", "/buckets/*") == {"/buckets/b1", "/buckets/b2",
                                                                       "/buckets/b1/collections/c1"}
        assert accessible([ALICE], "read", "/buckets/*/collections/*") == {"/buckets/b1/collections/c1"}
        assert accessible([ALICE], "read", "/buckets/b1") == {"/buckets/b1"}
        assert accessible([BOB], "read") == set()
        assert accessible([], "read") == set()
        assert accessible([ALICE], "write", "/buckets/*") == {"/buckets/b3"}

    def test_accessible_objects_glob_is_literal_except_star(self, permission: Permission) -> None:
        for object_id in ("/a_b/1", "/aXb/1", "/a%b/1", "/a.b/1", "/a[b]/1", "/a\\b/1", "/A_B/1"):
            permission.add_principal_to_ace(object_id, "read", ALICE)
        accessible = permission.principals_accessible_objects
        assert accessible([ALICE], "read", "/a_b/*") == {"/a_b/1"}
        assert accessible([ALICE], "read", "/a%b/*") == {"/a%b/1"}
        assert accessible([ALICE], "read", "/a.b/*") == {"/a.b/1"}
        assert accessible([ALICE], "read", "/a[b]/*") == {"/a[b]/1"}
        assert accessible([ALICE], "read", "/a\\b/*") == {"/a\\b/1"}
        assert accessible([ALICE], "read", "*/1") == {"/a_b/1", "/aXb/1", "/a%b/1", "/a.b/1", "/a[b]/1",
                                                      "/a\\b/1", "/A_B/1"}

    def test_accessible_objects_with_bound_permissions(self, permission: Permission) -> None:
        permission.add_principal_to_ace("/buckets/b1", "write", ALICE)
        permission.add_principal_to_ace("/buckets/b2/collections/c1", "read", ALICE)
        permission.add_principal_to_ace("/buckets/b2/collections/c2", "write", ALICE)
        permission.add_principal_to_ace("/buckets/b2/collections/c3", "write", BOB)
        calls: List[Tuple[str, str]] = []

        def bound(object_id: str, perm: str) -> Iterable[Tuple[str, str]]:
            calls.append((object_id, perm))
            return bound_permissions(object_id, perm)

        found = permission.principals_accessible_objects([ALICE], "read", "/buckets/*/collections/*", bound)
        assert calls == [("/buckets/*/collections/*", "read")]
        assert found == {"/buckets/b1", "/buckets/b2/collections/c1", "/buckets/b2/collections/c2"}
        assert permission.principals_accessible_objects([ALICE], "read", "/buckets/b2/*", bound) == {
            "/buckets/b2/collections/c1", "/buckets/b2/collections/c2"}

    def test_has_accessible_objects_agrees_with_the_listing(self, permission: Permission) -> None:
        for object_id in ("/buckets/b1", "/a[b]/1", "/a\\b/1", "/a?b/1", "/a*b/1", "/aXc/1", "/ab/2"):
            permission.add_principal_to_ace(object_id, "read", ALICE)
        permission.add_principal_to_ace("/buckets/b2/collections/c2", "write", ALICE)
        permission.add_principal_to_ace("/buckets/b3", "write", BOB)
        queries = [
            ([ALICE], "read", None, None), ([ALICE], "read", "/buckets/*", None), ([BOB], "read", None, None),
            ([], "read", None, None), ([ALICE], "write", "/nothing*", None),
            # Only * is special: ?, [ and \ are themselves.
            ([ALICE], "read", "/a[b]/*", None), ([ALICE], "read", "/a?b/*", None), ([ALICE], "read", "/a?c/*", None),
            ([ALICE], "read", "/a[b]/2*", None), ([ALICE], "read", "/a\\b/*", None), ([ALICE], "read", "/a*b/1", None),
            ([ALICE], "read", "/buckets/b2/*", bound_permissions),
            ([BOB], "read", "/buckets/b3/collections/*", bound_permissions),
            ([BOB], "read", "/buckets/b4/*", bound_permissions),
            (["remoteuser:a\x00b"], "read", None, None), ([ALICE], "re\x00ad", None, None),
        ]
        answers = []
        for principals, perm, match, bound in queries:
            expected = bool(permission.principals_accessible_objects(principals, perm, match, bound))
            answer = permission.has_accessible_objects(principals, perm, match, bound)
            assert answer is expected, (principals, perm, match)
            answers.append(answer)
        assert answers.count(True) == 8 and answers.count(False) == 8

    # --- strings a backend may not store ------------------------------------------------------------------------

    # NUL: PostgreSQL text cannot hold one; a lone surrogate: not encodable as UTF-8, so neither Redis nor PostgreSQL
    # can receive it.
    unstorable = pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])

    @unstorable
    def test_unstorable_characters_match_nothing(self, permission: Permission, bad: str) -> None:
        """A principal, permission or object id with such a character is asked about, never a failure."""
        principal, object_id = f"remoteuser:a{bad}b", f"/a{bad}b"
        permission.add_principal_to_ace(RECORD, "read", ALICE)
        assert permission.user_principals(principal) == set()
        assert permission.check_permission(RECORD, "read", [principal]) is False
        assert permission.check_permission(RECORD, "read", [principal, ALICE]) is True
        assert permission.check_permission(object_id, "read", [ALICE], bound_permissions) is False
        assert permission.check_permission(RECORD, f"re{bad}ad", [ALICE]) is False
        assert permission.object_permission_principals(object_id, "read") == set()
        assert permission.object_permission_principals(RECORD, f"re{bad}ad") == set()
        assert permission.object_permission_authorized_principals(object_id, "read") == set()
        assert permission.object_permissions(object_id) == {}
        assert permission.object_permissions(RECORD, ["read", f"a{bad}b"]) == {"read": {ALICE}}
        assert permission.principals_accessible_objects([principal], "read") == set()
        assert permission.principals_accessible_objects([principal, ALICE], "read", "/buckets/*") == {RECORD}
        assert permission.principals_accessible_objects([ALICE], "read", f"{object_id}/*") == set()
        assert permission.principals_accessible_objects([ALICE], f"re{bad}ad") == set()
        permission.add_principal_to_ace(BUCKET, "write", BOB)
        # The glob's own pairs are unstorable, the bucket's are not.
        glob = f"{BUCKET}/collections/c{bad}*"
        assert permission.principals_accessible_objects([BOB], "read", glob, bound_permissions) == {BUCKET}
        assert permission.object_permission_authorized_principals(f"{BUCKET}/collections/c{bad}", "read",
                                                                  bound_permissions) == {BOB}
        permission.remove_user_principal(principal, "group:a")
        permission.remove_user_principal(ALICE, f"group:{bad}")
        permission.remove_principal(principal)
        permission.remove_principal_from_ace(RECORD, "read", principal)
        permission.remove_principal_from_ace(RECORD, f"re{bad}ad", ALICE)
        permission.delete_object_permissions(object_id, "/b")
        assert permission.object_permissions(RECORD) == {"read": {ALICE}}

    @unstorable
    def test_unstorable_characters_are_never_written(self, permission: Permission, bad: str) -> None:
        """Every backend refuses to write such a character with a ValueError, and writes nothing."""
        permission.add_principal_to_ace(RECORD, "read", ALICE)
        writes = [
            lambda: permission.add_user_principal(f"a{bad}b", "group:a"),
            lambda: permission.add_user_principal(ALICE, f"group:{bad}"),
            lambda: permission.add_principal_to_ace(RECORD, "read", f"a{bad}b"),
            lambda: permission.add_principal_to_ace(f"/a{bad}b", "read", ALICE),
            lambda: permission.add_principal_to_ace(RECORD, f"re{bad}ad", ALICE),
            lambda: permission.replace_object_permissions(RECORD, {"read": [BOB, f"a{bad}b"]}),
            lambda: permission.replace_object_permissions(RECORD, {"read": [BOB], f"w{bad}": [BOB]}),
            lambda: permission.replace_object_permissions(f"/a{bad}b", {"read": [BOB]}),
        ]
        for write in writes:
            with pytest.raises(ValueError, match="cannot contain"):  # not a driver's UnicodeEncodeError
                write()
        assert permission.user_principals(ALICE) == set()
        assert permission.object_permissions(RECORD) == {"read": {ALICE}}
        assert permission.principals_accessible_objects([BOB], "read") == set()

    def test_replace_with_none_removes(self, permission: Permission) -> None:
        permission.add_principal_to_ace(BUCKET, "read", ALICE)
        permission.add_principal_to_ace(BUCKET, "write", ALICE)
        permission.replace_object_permissions(BUCKET, {"read": None})  # type: ignore[dict-item]
        assert permission.object_permissions(BUCKET) == {"write": {ALICE}}
        assert permission.principals_accessible_objects([ALICE], "read") == set()

    def test_longest_principal_is_stored(self, permission: Permission) -> None:
        """Principals up to MAX_PRINCIPAL_LENGTH characters, of any script, fit every backend's indexes."""
        longest = "".join(chr(0x10000 + (index * 7919) % 50000) for index in range(MAX_PRINCIPAL_LENGTH))
        permission.replace_object_permissions(RECORD, {"read": [longest, ALICE]})
        permission.add_user_principal(longest, longest)
        assert permission.object_permissions(RECORD) == {"read": {longest, ALICE}}
        assert permission.principals_accessible_objects([longest], "read", "/buckets/*") == {RECORD}
        assert permission.user_principals(longest) == {longest}

    # --- misc -------------------------------------------------------------------------------------------------------

    def test_flush(self, permission: Permission) -> None:
        permission.add_user_principal(ALICE, "group:a")
        permission.add_principal_to_ace(BUCKET, "read", ALICE)
        permission.flush()
        assert permission.user_principals(ALICE) == set()
        assert permission.object_permissions(BUCKET) == {}
        assert permission.principals_accessible_objects([ALICE], "read") == set()

    def test_concurrent_edits(self, permission: Permission) -> None:
        def editor(slot: int) -> None:
            for index in range(20):
                permission.add_principal_to_ace(BUCKET, "read", f"user:{slot}:{index}")
                permission.add_user_principal(f"user:{slot}", f"group:{index}")

        errors = [outcome for outcome in run_concurrently(8, editor) if isinstance(outcome, BaseException)]
        assert not errors, errors
        assert len(permission.object_permission_principals(BUCKET, "read")) == 160
        assert all(len(permission.user_principals(f"user:{slot}")) == 20 for slot in range(8))

    def test_ping(self, permission: Permission) -> None:
        assert permission.ping() is True
        assert permission.ping(readonly=True) is True
        assert permission.user_principals("__heartbeat__") == set()

"""Memory permission backend."""
from __future__ import annotations

import pytest

from wsgicliquet.permission.memory import Permission


@pytest.fixture
def permission():
    return Permission.from_settings({"permission_url": "memory://"}, prefix="permission")


def test_aces_and_accessible_objects(permission):
    permission.add_principal_to_ace("/a/1", "read", "alice")
    permission.add_principal_to_ace("/b/1", "read", "alice")
    assert permission.check_permission("/a/1", "read", ["alice", "bob"])
    assert permission.principals_accessible_objects(["alice"], "read", "/a/*") == {"/a/1"}
    permission.add_user_principal("bob", "group")
    assert permission.user_principals("bob") == {"group"}

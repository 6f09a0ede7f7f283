"""The memory permission backend: the shared contract suite."""
from __future__ import annotations

import pytest

from wsgicliquet.backends import clear_backends, load_backend
from wsgicliquet.permission.memory import Permission
from wsgicliquet.permission.testing import PermissionContract


class TestMemoryPermission(PermissionContract):
    @pytest.fixture
    def permission(self):
        return Permission.from_settings({"permission_url": "memory://"}, prefix="permission")


def test_loaded_by_url():
    settings = {"permission_url": "memory://", "permission_backend": "", "permission_pool_size": 25,
                "cache_prefix": ""}
    try:
        assert isinstance(load_backend("permission", settings), Permission)
    finally:
        clear_backends()

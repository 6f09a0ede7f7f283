"""The memory storage backend: the shared contract suite, plus what only memory promises."""
from __future__ import annotations

import pytest

from wsgicliquet.backends import clear_backends, load_backend
from wsgicliquet.storage import Sort
from wsgicliquet.storage.memory import Storage
from wsgicliquet.storage.testing import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self):
        return Storage.from_settings({"storage_url": "memory://"}, prefix="storage")


def test_loaded_by_url():
    settings = {"storage_url": "memory://", "storage_backend": "", "storage_pool_size": 25, "cache_prefix": ""}
    try:
        assert isinstance(load_backend("storage", settings), Storage)
    finally:
        clear_backends()


def test_default_order_after_updates_and_forced_timestamps():
    storage = Storage()
    first = storage.create("c", "p", {"id": "a"})
    storage.create("c", "p", {"id": "b", "last_modified": first["last_modified"] + 10_000})
    storage.update("c", "p", "a", {})
    storage.create("c", "p", {"id": "c"})
    for sorting in ([], [Sort("last_modified", -1)]):
        records, total = storage.get_all("c", "p", sorting=sorting, limit=2)
        assert [record["id"] for record in records] == ["c", "a"] and total == 3
    records, _ = storage.get_all("c", "p", sorting=[Sort("last_modified", 1)])
    assert [record["id"] for record in records] == ["b", "a", "c"]

"""Memory storage backend."""
from __future__ import annotations

import pytest

from wsgicliquet.storage import COMPARISON, Filter, RecordNotFoundError, Sort, UnicityError
from wsgicliquet.storage.memory import Storage


@pytest.fixture
def storage():
    return Storage.from_settings({"storage_url": "memory://"}, prefix="storage")


def test_create_get_update_delete(storage):
    assert storage.collection_timestamp("c", "p") == 0
    record = storage.create("c", "p", {"title": "a"})
    assert storage.get("c", "p", record["id"]) == record
    updated = storage.update("c", "p", record["id"], {"title": "b"})
    assert updated["last_modified"] > record["last_modified"]
    tombstone = storage.delete("c", "p", record["id"])
    assert tombstone["deleted"] and tombstone["last_modified"] > updated["last_modified"]
    assert storage.collection_timestamp("c", "p") == tombstone["last_modified"]
    with pytest.raises(RecordNotFoundError):
        storage.get("c", "p", record["id"])
    assert storage.get("c", "p", record["id"], include_deleted=True) == tombstone


def test_unique_fields(storage):
    first = storage.create("c", "p", {"email": "x"})
    with pytest.raises(UnicityError) as info:
        storage.create("c", "p", {"email": "x"}, unique_fields=["email"])
    assert info.value.field == "email" and info.value.record == first


def test_default_order_page_and_total(storage):
    created = [storage.create("c", "p", {"n": i}) for i in range(20)]
    page, total = storage.get_all("c", "p", sorting=[Sort("last_modified", -1)], limit=5)
    assert [r["n"] for r in page] == [19, 18, 17, 16, 15] and total == 20
    page[0]["n"] = "changed"
    assert storage.get("c", "p", created[-1]["id"])["n"] == 19
    page, total = storage.get_all("c", "p", filters=[Filter("n", 10, COMPARISON.LT)], sorting=[Sort("n", 1)],
                                  limit=3)
    assert [r["n"] for r in page] == [0, 1, 2] and total == 10

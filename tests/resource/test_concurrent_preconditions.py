"""Concurrent writes through the resource app, on every storage backend (PROTOCOL.md Part A D4, §6).

Threads send their requests together (a barrier), each with its own client, against one app and one storage, as a
threaded server would.  The storage checks ``If-Match`` atomically with the write, so two requests presenting the
same ETag can never both succeed, and a PATCH without ``If-Match`` never overwrites a concurrent one; unique fields
are checked atomically with the write too, so concurrent writers of one value leave a single holder (§6.3).
"""
from __future__ import annotations

import sys
import uuid
from typing import Any, Callable, ClassVar, Dict, List

import pytest
import webtest

from wsgicliquet.middleware.transaction import Transaction
from wsgicliquet.resource import handlers
from wsgicliquet.resource.resource import Resource
from wsgicliquet.storage.testing import run_concurrently

from .conftest import unique_user

THREADS = 8


@pytest.fixture(autouse=True)
def switch_threads_often():
    """Interleave threads at every few bytecodes, so that races in the memory backend's path show up too."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.fixture(params=[pytest.param(False, id="alone"), pytest.param(True, id="transaction")])
def make_client(request, make_app, any_storage) -> Callable[[], webtest.TestApp]:
    """A factory of clients of one app (per test) on each backend, all as the same user of their own; the app
    alone, or in one storage transaction per request (PostgreSQL then holds the partition lock until the end)."""
    shared = make_app(userid=unique_user(), backend=any_storage)
    app = Transaction(shared.app, storage=any_storage) if request.param else shared.app

    def client() -> webtest.TestApp:
        return webtest.TestApp(app, extra_environ=shared.extra_environ, lint=True)

    return client


def concurrently(make_client: Callable[[], webtest.TestApp], send: Callable[[webtest.TestApp, int], Any]
                 ) -> List[webtest.TestResponse]:
    clients = [make_client() for _ in range(THREADS)]
    responses = run_concurrently(THREADS, lambda slot: send(clients[slot], slot))
    assert all(isinstance(response, webtest.TestResponse) for response in responses), responses
    return responses


def send_patch(client: webtest.TestApp, url: str, slot: int, headers: Dict[str, str]) -> webtest.TestResponse:
    return client.patch_json(url, {"data": {f"field{slot}": slot}}, headers=headers, expect_errors=True)


def send_put(client: webtest.TestApp, url: str, slot: int, headers: Dict[str, str]) -> webtest.TestResponse:
    return client.put_json(url, {"data": {"writer": slot}}, headers=headers, expect_errors=True)


def send_delete(client: webtest.TestApp, url: str, slot: int, headers: Dict[str, str]) -> webtest.TestResponse:
    return client.delete(url, headers=headers, expect_errors=True)


@pytest.mark.parametrize("send, loser_statuses", [
    pytest.param(send_patch, {412}, id="patch"),
    pytest.param(send_put, {412}, id="put"),
    # A DELETE that reads the record after the winner's is a 404 (§3.9: the record must exist), else a 412.
    pytest.param(send_delete, {404, 412}, id="delete"),
])
def test_same_if_match_exactly_one_write_wins(make_client, send, loser_statuses):
    client = make_client()
    for _ in range(3):
        record = client.post_json("/notes", {"data": {"initial": True}}, status=201).json["data"]
        url = f"/notes/{record['id']}"
        headers = {"If-Match": f'"{record["last_modified"]}"'}

        responses = concurrently(make_client, lambda each, slot: send(each, url, slot, headers))

        winners = [response for response in responses if response.status_int == 200]
        losers = [response for response in responses if response.status_int != 200]
        assert len(winners) == 1, [response.status for response in responses]
        assert {response.status_int for response in losers} <= loser_statuses
        won = winners[0].json["data"]
        for response in losers:
            if response.status_int == 412:
                body = response.json
                assert (body["errno"], body["message"]) == (114, "Resource was modified meanwhile")
                assert body["details"]["existing"] == won, "the 412 shows what the winner wrote"
                assert response.headers["ETag"] == f'"{won["last_modified"]}"'
        current = client.get(url, expect_errors=True)
        if won.get("deleted"):
            assert current.status_int == 404
            # The losers' DELETEs write nothing: the changes since the record show its tombstone once.
            changes = client.get(f"/notes?_since={record['last_modified']}")
            assert changes.json["data"] == [won]
            assert changes.headers["ETag"] == f'"{won["last_modified"]}"', "nothing else was written"
        else:
            assert current.json["data"] == won and current.headers["ETag"] == f'"{won["last_modified"]}"'


def test_collection_deletes_with_the_same_if_match_one_wins(make_client):
    client = make_client()
    for round_ in range(3):
        created = [client.post_json("/notes", {"data": {"round": round_}}, status=201).json["data"]
                   for _ in range(3)]
        headers = {"If-Match": client.get("/notes").headers["ETag"]}

        responses = concurrently(make_client, lambda each, slot: each.delete(
            f"/notes?round={round_}", headers=headers, expect_errors=True))

        winners = [response for response in responses if response.status_int == 200]
        assert len(winners) == 1, [response.status for response in responses]
        assert sorted(response.status_int for response in responses) == [200] + [412] * (THREADS - 1)
        tombstones = winners[0].json["data"]
        assert sorted(t["id"] for t in tombstones) == sorted(record["id"] for record in created)
        current = client.get("/notes")
        assert current.json["data"] == [] and current.headers["ETag"] == f'"{tombstones[-1]["last_modified"]}"'
        for response in responses:
            if response.status_int == 412:
                assert response.json["details"] == {} and response.json["errno"] == 114
                assert response.headers["ETag"] == current.headers["ETag"], "the 412 shows the winner's timestamp"


def test_patches_of_different_fields_without_if_match_all_land(make_client):
    client = make_client()
    for _ in range(3):
        record = client.post_json("/notes", {"data": {"initial": True}}, status=201).json["data"]
        url = f"/notes/{record['id']}"

        responses = concurrently(make_client, lambda each, slot: send_patch(each, url, slot, {}))

        assert [response.status_int for response in responses] == [200] * THREADS
        final = client.get(url).json["data"]
        assert {key: value for key, value in final.items() if key not in ("id", "last_modified")} == {
            "initial": True, **{f"field{slot}": slot for slot in range(THREADS)}}
        stamps = sorted(response.json["data"]["last_modified"] for response in responses)
        assert len(set(stamps)) == THREADS and stamps[-1] == final["last_modified"], "each PATCH wrote once"


def test_put_with_if_none_match_star_creates_once(make_client):
    url = f"/notes/{uuid.uuid4()}"
    responses = concurrently(make_client, lambda each, slot: each.put_json(
        url, {"data": {"writer": slot}}, headers={"If-None-Match": "*"}, expect_errors=True))
    created = [response for response in responses if response.status_int == 201]
    assert len(created) == 1, [response.status for response in responses]
    assert sorted(response.status_int for response in responses) == [201] + [412] * (THREADS - 1)
    assert make_client().get(url).json["data"] == created[0].json["data"]


class Racy(Resource):
    """Schema-less; before each merge, ``process_record`` runs the next queued write of the test, which therefore
    lands between the app's read and its write, exactly when a concurrent request would."""

    schema = {"type": "object"}
    preserve_unknown = True
    meanwhile: ClassVar[List[Callable[[], Any]]] = []

    def process_record(self, new, old=None):
        if self.meanwhile:
            self.meanwhile.pop(0)()
        return new


@pytest.fixture
def racy(make_app, any_storage):
    """(client, record URL, writes): ``writes["change"](field)`` sets a field, ``writes["delete"]`` deletes the record;
    queue them in ``Racy.meanwhile``."""
    userid = unique_user()
    client = make_app(userid=userid, resources=(Racy,), backend=any_storage)
    record = client.post_json("/racys", {"data": {"initial": True}}, status=201).json["data"]
    Racy.meanwhile = []

    def change(field: str) -> Callable[[], Any]:
        def write() -> None:
            current = any_storage.get("racy", userid, record["id"])
            any_storage.update("racy", userid, record["id"], {**current, field: True})
        return write

    def delete() -> None:
        any_storage.delete("racy", userid, record["id"])

    yield client, f"/racys/{record['id']}", {"change": change, "delete": delete}
    Racy.meanwhile = []


def test_patch_merges_again_after_a_write_in_between(racy):
    client, url, writes = racy
    Racy.meanwhile = [writes["change"]("theirs"), writes["change"]("again")]
    data = client.patch_json(url, {"data": {"mine": True}}).json["data"]
    assert Racy.meanwhile == [], "merged three times: two writes came in between"
    assert {key: data[key] for key in ("initial", "theirs", "again", "mine")} == dict.fromkeys(
        ("initial", "theirs", "again", "mine"), True)
    assert client.get(url).json["data"] == data


def test_patch_with_if_match_does_not_merge_again(racy):
    client, url, writes = racy
    etag = client.get(url).headers["ETag"]
    Racy.meanwhile = [writes["change"]("theirs")]
    response = client.patch_json(url, {"data": {"mine": True}}, headers={"If-Match": etag}, status=412)
    current = client.get(url)
    assert response.json["details"]["existing"] == current.json["data"]
    assert response.headers["ETag"] == current.headers["ETag"]
    assert "mine" not in current.json["data"]


def test_patch_of_a_record_deleted_in_between_is_a_404(racy):
    client, url, writes = racy
    Racy.meanwhile = [writes["delete"]]
    response = client.patch_json(url, {"data": {"mine": True}}, status=404)
    assert response.json["errno"] == 110
    client.get(url, status=404)


def test_patch_gives_up_after_its_attempts(racy, monkeypatch):
    client, url, writes = racy
    monkeypatch.setattr(handlers, "PATCH_ATTEMPTS", 2)
    Racy.meanwhile = [writes["change"]("theirs"), writes["change"]("again")]
    response = client.patch_json(url, {"data": {"mine": True}}, status=412)
    current = client.get(url).json["data"]
    assert response.json["details"]["existing"] == current
    assert current["again"] is True and "mine" not in current


def bookmarks_with(client: webtest.TestApp, url: str) -> List[Dict[str, Any]]:
    return client.get("/bookmarks", params={"url": json_string(url)}).json["data"]


def json_string(value: str) -> str:
    """A querystring value always read as a string (§4.3)."""
    return '"' + value + '"'


def test_posts_of_the_same_unique_value_create_one_record(make_client):
    """§3.4, §6.3: one POST creates the record, the others answer 200 with it and write nothing."""
    client = make_client()
    for round_ in range(3):
        url = f"https://example.com/{uuid.uuid4()}"

        responses = concurrently(make_client, lambda each, slot: each.post_json(
            "/bookmarks", {"data": {"url": url, "title": f"writer {slot}"}}, expect_errors=True))

        assert sorted(response.status_int for response in responses) == [200] * (THREADS - 1) + [201], [
            response.status for response in responses]
        created = next(response for response in responses if response.status_int == 201).json["data"]
        assert all(response.json["data"] == created for response in responses)
        assert bookmarks_with(client, url) == [created]


@pytest.mark.parametrize("method", ["patch", "put"])
def test_changes_to_the_same_unique_value_leave_one_holder(make_client, method):
    """§6.3: PUT/PATCH of different records to one value at once: one holds it, the others are 409 errno 122."""
    client = make_client()
    for _ in range(3):
        records = [client.post_json("/bookmarks", {"data": {"url": f"https://example.com/{uuid.uuid4()}"}},
                                    status=201).json["data"] for _ in range(THREADS)]
        url = f"https://example.com/{uuid.uuid4()}"

        def send(each: webtest.TestApp, slot: int) -> webtest.TestResponse:
            send_json = each.patch_json if method == "patch" else each.put_json
            return send_json(f"/bookmarks/{records[slot]['id']}", {"data": {"url": url}}, expect_errors=True)

        responses = concurrently(make_client, send)

        assert sorted(response.status_int for response in responses) == [200] + [409] * (THREADS - 1), [
            response.status for response in responses]
        holder = next(response for response in responses if response.status_int == 200).json["data"]
        assert bookmarks_with(client, url) == [holder]
        for response in responses:
            if response.status_int == 409:
                body = response.json
                assert (body["errno"], body["message"]) == (122, f"Conflict of field url on record {holder['id']}")
                assert body["details"] == {"field": "url", "existing": holder}
        unchanged = {record["id"]: record for record in records if record["id"] != holder["id"]}
        assert {record["id"]: record for record in client.get("/bookmarks").json["data"]
                if record["id"] in unchanged} == unchanged, "the losers wrote nothing"


def test_puts_creating_records_with_the_same_unique_value_create_one(make_client):
    """§3.7, §6.3: PUTs of new ids with one value at once: one 201, the others 409 and nothing created."""
    client = make_client()
    for _ in range(3):
        url = f"https://example.com/{uuid.uuid4()}"
        ids = [str(uuid.uuid4()) for _ in range(THREADS)]

        responses = concurrently(make_client, lambda each, slot: each.put_json(
            f"/bookmarks/{ids[slot]}", {"data": {"url": url}}, expect_errors=True))

        assert sorted(response.status_int for response in responses) == [201] + [409] * (THREADS - 1), [
            response.status for response in responses]
        holder = next(response for response in responses if response.status_int == 201).json["data"]
        assert bookmarks_with(client, url) == [holder]
        for record_id in ids:
            if record_id != holder["id"]:
                client.get(f"/bookmarks/{record_id}", status=404)

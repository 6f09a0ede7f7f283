"""Concurrent writes through the resource app, on every storage backend (PROTOCOL.md Part A D4, §6).

Threads send their requests together (a barrier), each with its own client, against one app and one storage, as a
threaded server would.  The storage checks ``If-Match`` atomically with the write, so two requests presenting the
same ETag can never both succeed, and a PATCH without ``If-Match`` never overwrites a concurrent one.
"""
from __future__ import annotations

import sys
import uuid
from typing import Any, Callable, Dict, List

import pytest
import webtest

from wsgicliquet.middleware.transaction import Transaction
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
        else:
            assert current.json["data"] == won and current.headers["ETag"] == f'"{won["last_modified"]}"'


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

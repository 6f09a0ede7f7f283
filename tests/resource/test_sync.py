"""Synchronisation guarantees, with real threads, on every backend (Part A D1, D3; §21.1-§21.4)."""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Dict, List

import pytest
import webtest

from .conftest import as_user, unique_user


def etag(response) -> int:
    return int(response.headers["ETag"].strip('"'))


@pytest.fixture
def resource_app(make_app, any_storage):
    """The WSGI app on each backend, and a user of its own."""
    userid = unique_user()
    return make_app(userid=userid, backend=any_storage).app, userid


def client(app, userid) -> webtest.TestApp:
    """One client per thread (WebTest apps are not shared between threads; the WSGI app is)."""
    return webtest.TestApp(app, extra_environ=as_user(userid), lint=True)


@pytest.mark.parametrize("sort", ["", "&_sort=title"])
def test_paging_with_concurrent_inserts_returns_each_existing_record_once(resource_app, any_storage, sort):
    app, userid = resource_app
    api = client(app, userid)
    with any_storage.transaction():
        existing = {any_storage.create("note", userid, {"title": f"t{i % 17}"})["id"] for i in range(1000)}
    seen: List[str] = []
    url = f"/notes?_limit=7{sort}"
    pages = 0
    while url:
        response = api.get(url)
        seen += [record["id"] for record in response.json["data"]]
        for j in range(2):  # concurrent writers between pages
            api.post_json("/notes", {"data": {"title": f"new{pages}-{j}"}})
        url = response.headers.get("Next-Page")
        pages += 1
    old = [object_id for object_id in seen if object_id in existing]
    assert len(old) == len(existing) == len(set(old))
    assert len(seen) == len(set(seen))


def test_since_poller_converges_with_four_writers(resource_app):
    app, userid = resource_app
    done = threading.Event()
    errors: List[BaseException] = []

    def writer(seed: int) -> None:
        try:
            api, rng, mine = client(app, userid), random.Random(seed), []
            for step in range(40):
                action = rng.random()
                if not mine or action < 0.5:
                    mine.append(api.post_json("/notes", {"data": {"w": seed, "step": step}}).json["data"]["id"])
                elif action < 0.8:
                    api.patch_json(f"/notes/{rng.choice(mine)}", {"data": {"step": step}})
                else:
                    api.delete(f"/notes/{mine.pop(rng.randrange(len(mine)))}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    api = client(app, userid)
    local: Dict[str, Any] = {}
    since = 0

    def poll() -> None:
        nonlocal since
        url, first, seen = f"/notes?_since={since}&_limit=5", None, set()
        while url:
            response = api.get(url)
            first = first if first is not None else etag(response)
            for record in response.json["data"]:
                assert record["id"] not in seen  # never twice in one pass
                seen.add(record["id"])
                if record.get("deleted"):
                    local.pop(record["id"], None)
                else:
                    local[record["id"]] = record
            url = response.headers.get("Next-Page")
        since = first

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    watcher = threading.Thread(target=lambda: [t.join() for t in threads] and None or done.set())
    watcher.start()
    polls = 0
    while True:  # at least one poll while the writers run
        poll()
        polls += 1
        if done.is_set():
            break
    watcher.join()
    poll()
    assert not errors
    server = {record["id"]: record for record in api.get("/notes").json["data"]}
    assert local == server and polls >= 1
    assert since == etag(api.get("/notes"))


def test_concurrent_writes_get_distinct_increasing_timestamps(resource_app):
    app, userid = resource_app
    stamps: List[List[int]] = [[] for _ in range(6)]

    def write(index: int) -> None:
        api = client(app, userid)
        for i in range(20):
            stamps[index].append(api.post_json("/notes", {"data": {"i": i}}).json["data"]["last_modified"])

    threads = [threading.Thread(target=write, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [stamp for thread_stamps in stamps for stamp in thread_stamps]
    assert len(set(everything)) == len(everything) == 120
    assert all(s == sorted(s) and len(set(s)) == len(s) for s in stamps)
    assert etag(client(app, userid).get("/notes")) == max(everything)


def test_same_millisecond_writes(resource_app):
    """Two writes asking for the same instant (replication) get distinct, increasing timestamps (§22 item 7)."""
    app, userid = resource_app
    api = client(app, userid)
    base = etag(api.post_json("/notes", {"data": {}})) + 1000
    first = api.post_json("/notes", {"data": {"last_modified": base}}).json["data"]["last_modified"]
    second = api.post_json("/notes", {"data": {"last_modified": base}}).json["data"]["last_modified"]
    assert (first, second) == (base, base + 1)
    third = api.post_json("/notes", {"data": {}}).json["data"]["last_modified"]
    assert third > second


@pytest.mark.parametrize("limit", [2, 3, 5, 7])
def test_paged_since_walk_equals_the_unpaged_listing(resource_app, any_storage, limit):
    """Pages mixing records and tombstones, boundaries anywhere: the walk returns exactly the full answer."""
    app, userid = resource_app
    api = client(app, userid)
    rng = random.Random(limit)
    ids = [api.post_json("/notes", {"data": {"i": i}}).json["data"]["id"] for i in range(30)]
    start = etag(api.get("/notes"))
    for object_id in ids:
        action = rng.random()
        if action < 0.4:
            api.delete(f"/notes/{object_id}")
        elif action < 0.6:
            api.patch_json(f"/notes/{object_id}", {"data": {"i": -1}})
    for since in (0, start - 10, start):
        full = api.get(f"/notes?_since={since}").json["data"]
        url, walked = f"/notes?_since={since}&_limit={limit}", []
        while url:
            response = api.get(url)
            walked += response.json["data"]
            url = response.headers.get("Next-Page")
        assert walked == full


def test_paged_since_client_under_writes_never_misses_duplicates_or_resurrects(resource_app, any_storage):
    """A kinto.js-like client (``_since`` + ``If-None-Match``, small pages, both sort directions) polls while
    writers create, PATCH with If-Match, delete, re-create deleted ids and hold multi-write transactions (batches):
    no pass returns a version twice or an older one, nothing reappears after its tombstone, and the local copy
    ends equal to the server's."""
    app, userid = resource_app
    errors: List[BaseException] = []
    stamps: List[tuple] = []
    lock = threading.Lock()

    def writer(seed: int) -> None:
        try:
            api, rng, mine, gone = client(app, userid), random.Random(seed), [], []
            for step in range(25):
                action = rng.random()
                written: List[Dict[str, Any]] = []
                if not mine or action < 0.3:
                    written.append(api.post_json("/notes", {"data": {"w": seed, "step": step}}).json["data"])
                    mine.append(written[-1]["id"])
                elif action < 0.5:
                    object_id = rng.choice(mine)
                    current = etag(api.get(f"/notes/{object_id}"))
                    response = api.patch_json(f"/notes/{object_id}", {"data": {"step": step}},
                                              headers={"If-Match": f'"{current}"'})
                    written.append(response.json["data"])
                elif action < 0.65:
                    gone.append(mine.pop(rng.randrange(len(mine))))
                    written.append(api.delete(f"/notes/{gone[-1]}").json["data"])
                elif action < 0.8 and gone:
                    object_id = gone.pop(rng.randrange(len(gone)))
                    written.append(api.put_json(f"/notes/{object_id}", {"data": {"again": step}}).json["data"])
                    mine.append(object_id)
                else:  # a batch: several writes in one transaction, kept open a little
                    with any_storage.transaction():
                        written.append(any_storage.create("note", userid, {"w": seed, "batch": step}))
                        mine.append(written[-1]["id"])
                        time.sleep(0.002)
                        written.append(any_storage.update("note", userid, mine[0], {"batch": step}))
                        if len(mine) > 2:
                            gone.append(mine.pop(1))
                            written.append(any_storage.delete("note", userid, gone[-1]))
                with lock:
                    stamps.extend((record["id"], record["last_modified"]) for record in written)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    api = client(app, userid)
    local: Dict[str, Dict[str, Any]] = {}
    last_seen: Dict[str, int] = {}  # id -> newest timestamp applied (record or tombstone)
    since = 0

    def poll(ascending: bool) -> None:
        nonlocal since
        url = f"/notes?_since={since}&_limit=3" + ("&_sort=last_modified" if ascending else "")
        headers, first, seen = {"If-None-Match": f'"{since}"'}, None, {}
        while url:
            response = api.get(url, headers=headers, status=[200, 304])
            headers = {}
            if response.status_int == 304:
                assert etag(response) == since
                return
            first = first if first is not None else etag(response)
            for record in response.json["data"]:
                object_id, stamp = record["id"], record["last_modified"]
                assert stamp > since
                # Keyset pages: a record shows up again in one pass only when rewritten, after the cursor.
                assert object_id not in seen or (ascending and stamp > seen[object_id])
                seen[object_id] = stamp
                # Never older than what was applied (no resurrection).  The same version again is allowed: the ETag
                # is read before the page, so a write landing in between is listed now and by the next pass.
                assert stamp >= last_seen.get(object_id, 0)
                assert stamp > last_seen.get(object_id, 0) or record == (local.get(object_id) or record)
                last_seen[object_id] = stamp
                if record.get("deleted"):
                    local.pop(object_id, None)
                else:
                    local[object_id] = record
            url = response.headers.get("Next-Page")
        assert first >= since
        since = first

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    passes = 0
    while any(thread.is_alive() for thread in threads) or passes < 2:
        poll(ascending=passes % 2 == 1)
        passes += 1
    for thread in threads:
        thread.join()
    poll(ascending=False)
    poll(ascending=False)  # nothing changed: a 304
    assert not errors
    assert len(set(stamp for _, stamp in set(stamps))) == len(set(stamps))  # one timestamp per write
    server = {record["id"]: record for record in api.get("/notes").json["data"]}
    assert local == server
    assert since == etag(api.get("/notes")) == max(stamp for _, stamp in stamps)

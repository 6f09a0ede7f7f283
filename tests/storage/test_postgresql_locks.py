"""Locks held by someone else (a stuck migration, an admin's ``LOCK TABLE``, a transaction left open): calls fail
with BackendError once ``statement_timeout`` has passed instead of waiting for as long as the lock is held, and the
pool is whole again once the lock is gone.

Every test runs in a PostgreSQL schema of its own, so the tables it locks are nobody else's.
"""
from __future__ import annotations

import base64
import contextlib
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator, List, Optional, Tuple

import psycopg2
import psycopg2.extensions
import pytest

from wsgicliquet import postgresql as pg
from wsgicliquet.storage import BackendError
from wsgicliquet.storage.postgresql import Storage

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

C, P = "locked", "alice"
TIMEOUT = 0.5


@contextlib.contextmanager
def held(url: str, statement: str, seconds: float = 8) -> Iterator[None]:
    """``statement`` run in a transaction left open, so its locks are held until the block ends (or, should the
    block hang on them, for ``seconds`` at most)."""
    conn = psycopg2.connect(url)
    locked = threading.Event()

    def hold() -> None:
        with conn.cursor() as cursor:
            cursor.execute(statement)
            locked.set()
            try:
                cursor.execute("SELECT pg_sleep(%s)", (seconds,))
            except psycopg2.extensions.QueryCanceledError:
                pass
        conn.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10), "the lock was not taken"
        yield
    finally:
        conn.cancel()
        holder.join()
        conn.close()


def timed(call: Callable[[], Any]) -> Tuple[float, Optional[BaseException]]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_locked_table_fails_calls_after_the_statement_timeout_then_they_work(schema_url: str) -> None:
    storage = Storage(pg.Client(schema_url, pool_size=2, pool_timeout=10, statement_timeout=TIMEOUT))
    first = storage.create(C, P, {"before": True})
    outcomes: List[Tuple[float, Optional[BaseException]]] = []
    lock = threading.Lock()

    def caller(slot: int) -> None:
        for step in range(3):
            call = (lambda: storage.create(C, P, {"slot": slot})) if (slot + step) % 2 else (
                lambda: storage.get_all(C, P, limit=5))
            outcome = timed(call)
            with lock:
                outcomes.append(outcome)

    with held(schema_url, "LOCK TABLE records IN ACCESS EXCLUSIVE MODE"):
        threads = [threading.Thread(target=caller, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), "a call hung on the lock"

    assert len(outcomes) == 12
    assert all(isinstance(error, BackendError) for _, error in outcomes), [repr(e) for _, e in outcomes]
    # Four callers share two connections: a call waits for a few calls before it, then its own timeout; never for
    # the lock, held for 8 s (the bound leaves room for a loaded machine, where a waiter may lose the pool twice).
    assert max(duration for duration, _ in outcomes) < 4 * TIMEOUT + 2
    # The lock is gone: every connection is usable again, nothing leaked.
    for _ in range(5):
        storage.create(C, P, {"after": True})
    records, total = storage.get_all(C, P)
    assert total == 6 and first["id"] in {record["id"] for record in records}
    assert storage.client._in_use == 0
    storage.client.close()


def test_a_held_partition_lock_fails_writes_but_not_reads(schema_url: str) -> None:
    storage = Storage(pg.Client(schema_url, pool_size=2, statement_timeout=TIMEOUT))
    record = storage.create(C, P, {"n": 1})
    counter = storage.collection_timestamp(C, P)
    # A transaction of another process stuck while holding the partition lock (the counter row).
    with held(schema_url, f"SELECT * FROM timestamps WHERE collection_id = '{C}' AND parent_id = '{P}' FOR UPDATE"):
        for write in (lambda: storage.create(C, P, {"n": 2}), lambda: storage.update(C, P, record["id"], {"n": 3}),
                      lambda: storage.delete(C, P, record["id"]), lambda: storage.delete_all(C, P)):
            duration, error = timed(write)
            assert isinstance(error, BackendError) and duration < TIMEOUT + 3
        assert storage.get_all(C, P) == ([record], 1)
        assert storage.collection_timestamp(C, P) == counter
        assert storage.create(C, "bob", {"other": "partition"})["last_modified"] > 0
    assert storage.update(C, P, record["id"], {"n": 4})["last_modified"] > counter
    assert storage.get_all(C, P)[1] == 1
    storage.client.close()


def test_statement_timeout_default_url_override_and_migrations(schema_url: str) -> None:
    def shown(client: pg.Client) -> str:
        value = client.execute("SHOW statement_timeout", fetch="one")[0]
        client.close()
        return value

    assert shown(pg.Client(schema_url)) == f"{int(pg.DEFAULT_STATEMENT_TIMEOUT)}s"
    assert shown(pg.Client(schema_url, statement_timeout=0)) == "0"
    options = urllib.parse.parse_qs(urllib.parse.urlsplit(schema_url).query)["options"][0]
    own = schema_url.replace(urllib.parse.quote(options), urllib.parse.quote(options + " -c statement_timeout=1234"))
    assert shown(pg.Client(own, statement_timeout=TIMEOUT)) == "1234ms", "the URL's own setting wins"

    # A migration step may take longer than requests are allowed to.
    client = pg.Client(schema_url, statement_timeout=0.1)
    assert pg.migrate(client, "slow", [(1, "SELECT pg_sleep(0.3)")]) == ["slow 1"]
    with pytest.raises(BackendError):
        client.execute("SELECT pg_sleep(0.3)")
    client.close()


def test_http_a_write_blocked_by_a_lock_is_a_503_and_the_service_recovers(schema_url: str) -> None:
    import webtest

    from wsgicliquet import Resource, ResourceApp, build_pipeline
    from wsgicliquet.backends import clear_backends

    class Note(Resource):
        schema = {"type": "object"}
        preserve_unknown = True

    settings = {"userid_hmac_secret": "abc", "storage_url": schema_url, "permission_url": "",
                "storage_statement_timeout": TIMEOUT, "retry_after_seconds": 7}
    headers = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    clear_backends()
    try:
        api = webtest.TestApp(build_pipeline(ResourceApp([Note], settings), settings))
        note = api.post_json("/v1/notes", {"data": {"n": 1}}, headers=headers, status=201).json["data"]
        batch = {"requests": [{"method": "POST", "path": "/notes", "body": {"data": {"n": n}}} for n in (2, 3)]}
        with held(schema_url, "LOCK TABLE timestamps IN EXCLUSIVE MODE"):  # writers wait, readers do not
            started = time.monotonic()
            for response in (api.post_json("/v1/notes", {"data": {"n": 2}}, headers=headers, status=503),
                             api.patch_json(f"/v1/notes/{note['id']}", {"data": {"n": 2}}, status=503,
                                            headers=dict(headers, **{"If-Match": f'"{note["last_modified"]}"'})),
                             api.post_json("/v1/batch", batch, headers=headers, status=503)):
                assert response.json["errno"] == 201 and response.headers["Retry-After"] == "7"
            assert time.monotonic() - started < 3 * TIMEOUT + 3
            listing = api.get("/v1/notes", headers=headers, status=200)
            assert listing.headers["Total-Records"] == "1"
        api.post_json("/v1/batch", batch, headers=headers, status=200)
        listing = api.get("/v1/notes", headers=headers)
        assert sorted(record["n"] for record in listing.json["data"]) == [1, 2, 3]
        assert listing.headers["Total-Records"] == "3"
    finally:
        clear_backends()

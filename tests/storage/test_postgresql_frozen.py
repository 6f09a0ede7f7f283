"""A PostgreSQL server that stops answering without going away (its process stopped, its VM paused): the kernel
still acknowledges every packet and keepalive, and ``statement_timeout`` needs the server to run, so only the client
can end the wait.  A TCP relay between the client and the real server plays the frozen server: when frozen, it keeps
both connections open and holds back every byte.
"""
from __future__ import annotations

import base64
import socket
import threading
import time
import urllib.parse
from typing import Any, Iterator

import psycopg2
import pytest

from tests.relay import Relay
from wsgicliquet import postgresql as pg
from wsgicliquet.storage import BackendError
from wsgicliquet.storage.postgresql import Storage

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

LIMIT = 1.0  # the client's response timeout in these tests
# How late the watchdog may be: it wakes every TICK seconds; the rest is for a loaded machine.
LATE = pg._Watchdog.TICK + 1.5
_READY = b"Z\x00\x00\x00\x05"  # the server's ReadyForQuery message


class FreezableRelay(Relay):
    """A relay that :meth:`freeze` makes hold every byte back, connections kept open."""

    def __init__(self, host: str, port: int) -> None:
        self.thawed = threading.Event()
        self.thawed.set()
        self.freeze_when_ready = False  # freeze once the server said it is ready for queries (after the login)
        super().__init__(host, port)

    def forward(self, data: bytes, source: socket.socket, sink: socket.socket, to_client: bool) -> bool:
        self.thawed.wait()
        if not super().forward(data, source, sink, to_client):
            return False
        if self.freeze_when_ready and to_client and _READY in data:
            self.freeze_when_ready = False
            self.freeze()
        return True

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def close(self) -> None:
        self.thaw()
        super().close()


@pytest.fixture
def relay(postgresql_url: str) -> Iterator[FreezableRelay]:
    parts = urllib.parse.urlsplit(postgresql_url)
    relay = FreezableRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    yield relay
    relay.close()


def through(url: str, relay: FreezableRelay) -> str:
    """``url`` with its host and port replaced by the relay's."""
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{relay.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def timed_failure(call: Any) -> float:
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        call()
    assert isinstance(caught.value, pg.Unanswered), caught.value
    return time.monotonic() - started


def test_a_frozen_server_fails_calls_after_the_response_timeout_then_the_pool_heals(
        schema_url: str, relay: FreezableRelay) -> None:
    client = pg.Client(through(schema_url, relay), pool_size=4, pool_timeout=5, response_timeout=LIMIT)
    storage = Storage(client)
    kept = storage.create("c", "alice", {"n": 1})
    # One pooled connection per failing call below (a new connection to a frozen server fails on its own, after
    # the connect_timeout).
    for conn in [client._checkout() for _ in range(4)]:
        client._release(conn)

    relay.freeze()
    assert timed_failure(lambda: storage.get_all("c", "alice")) < LIMIT + LATE
    with pytest.raises(BackendError):  # inside a larger transaction: the transaction is lost, never committed
        with client.transaction():
            with pytest.raises(pg.Unanswered):
                storage.create("c", "alice", {"n": 2})
    # A transaction whose COMMIT is not answered, and a call in a transaction of its own (the cache's).
    with pytest.raises(pg.Unanswered):
        with client.transaction():
            relay.thaw()
            storage.create("c", "alice", {"n": 3})
            relay.freeze()
    assert timed_failure(lambda: client.execute("SELECT 1", fetch="one", autonomous=True)) < LIMIT + LATE
    assert client._in_use == 0 and client._idle == [], "lost connections are closed, none is kept"

    relay.thaw()
    records, count = storage.get_all("c", "alice")
    written = sorted(record["n"] for record in records)
    # The COMMIT unanswered is the one ambiguous outcome, as with any network failure: the server got it, and
    # commits once it runs again.  The transactions that never sent theirs are rolled back.
    assert written in ([1], [1, 3]) and count == len(written)
    assert storage.get("c", "alice", kept["id"]) == kept
    client.close()


def test_a_server_frozen_while_a_connection_is_set_up_does_not_cost_a_pool_slot(
        schema_url: str, relay: FreezableRelay) -> None:
    client = pg.Client(through(schema_url, relay), pool_size=1, pool_timeout=2, statement_timeout=5,
                       response_timeout=LIMIT)
    relay.freeze_when_ready = True  # the login succeeds, the SET statement_timeout that follows is not answered
    assert timed_failure(lambda: client.execute("SELECT 1")) < LIMIT + LATE
    relay.thaw()
    assert client.execute("SELECT 1", fetch="one") == (1,), "the only slot of the pool is free again"
    assert client._in_use == 0
    client.close()


def test_slow_statements_within_the_response_timeout_and_migrations_are_not_cut(
        schema_url: str, relay: FreezableRelay) -> None:
    client = pg.Client(through(schema_url, relay), statement_timeout=0, response_timeout=0.5)
    assert client.execute("SELECT 1 FROM pg_sleep(0.2)", fetch="one") == (1,)
    with pytest.raises(pg.Unanswered):
        client.execute("SELECT pg_sleep(1.5)")
    # A migration may take longer than requests are allowed to, on the server and on the client.
    assert pg.migrate(client, "slow", [(1, "SELECT pg_sleep(1)")]) == ["slow 1"]
    client.close()


def test_the_default_response_timeout_follows_the_statement_timeout(schema_url: str) -> None:
    assert pg.Client(schema_url, statement_timeout=2)._response_timeout == 2 + pg.RESPONSE_GRACE
    assert pg.Client(schema_url, statement_timeout=0)._response_timeout is None, "no limit on the server: none here"
    assert pg.Client(schema_url, statement_timeout=2, response_timeout=0)._response_timeout is None
    assert pg.Client(schema_url, statement_timeout=0, response_timeout=3)._response_timeout == 3
    own = schema_url + "&options=" + urllib.parse.quote("-c statement_timeout=60000")
    assert pg.Client(own)._response_timeout is None, "a statement timeout unknown to the client: no guess"
    named = pg.Client("postgresql://statement_timeout:statement_timeout@localhost/app_statement_timeout_tests")
    assert named._statement_timeout_ms == 10_000 and named._response_timeout == 15, "only options count"
    options = pg.settings_options({"storage_url": schema_url, "storage_response_timeout": "7.5"}, "storage")
    assert pg.Client(**options)._response_timeout == 7.5


def test_http_a_frozen_server_is_a_503_with_retry_after_and_the_service_recovers(
        schema_url: str, relay: FreezableRelay) -> None:
    import webtest

    from wsgicliquet import Resource, ResourceApp, build_pipeline
    from wsgicliquet.backends import clear_backends

    class Note(Resource):
        schema = {"type": "object"}
        preserve_unknown = True

    url = through(schema_url, relay)
    settings = {"userid_hmac_secret": "abc", "storage_url": url, "permission_url": "", "cache_url": "",
                "storage_response_timeout": LIMIT, "retry_after_seconds": 7}
    headers = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    clear_backends()
    try:
        api = webtest.TestApp(build_pipeline(ResourceApp([Note], settings), settings))
        api.post_json("/v1/notes", {"data": {"n": 1}}, headers=headers, status=201)
        relay.freeze()
        started = time.monotonic()
        response = api.get("/v1/notes", headers=headers, status=503)
        assert response.json["errno"] == 201 and response.headers["Retry-After"] == "7"
        assert time.monotonic() - started < LIMIT + LATE
        relay.thaw()
        api.post_json("/v1/notes", {"data": {"n": 2}}, headers=headers, status=201)
        listing = api.get("/v1/notes", headers=headers, status=200)
        assert sorted(record["n"] for record in listing.json["data"]) == [1, 2]
    finally:
        clear_backends()


def test_connections_of_other_code_in_the_process_are_left_alone(schema_url: str) -> None:
    """The watchdog only watches the client's own statements: a plain psycopg2 connection may run for longer."""
    client = pg.Client(schema_url, statement_timeout=0, response_timeout=0.3)
    client.execute("SELECT 1")
    own = psycopg2.connect(schema_url)
    with own.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.8)")
    own.close()
    client.close()

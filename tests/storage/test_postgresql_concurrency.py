"""Real concurrency against PostgreSQL: processes and threads writing one collection while a client syncs with
``_since``, and connections killed in the middle of the load.

What must hold (PROTOCOL.md D1, §21.2-21.4): a poller that asks for everything newer than the last timestamp it
saw receives every acknowledged write exactly once, in strictly increasing timestamp order; writers never fail
because of a timestamp collision; when connections die, callers get BackendError only, and the pool recovers.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import socket
import threading
import time
import urllib.parse
import uuid
from typing import Dict, Iterator, List, Tuple

import pytest

from tests.backends import emptied
from tests.storage.test_postgresql import admin_execute
from wsgicliquet import postgresql as pg
from wsgicliquet.storage import COMPARISON, BackendError, Filter, Sort
from wsgicliquet.storage.postgresql import Storage

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

C, P = "concurrency", "shared"
PROCESSES, THREADS, SECONDS = 4, 4, 2.5

Write = Tuple[str, int]  # (id, last_modified) of an acknowledged write


def _write_for(url: str, seconds: float, slot: int) -> Tuple[List[Write], List[str]]:
    """Runs in a child process: THREADS threads create records until the deadline; one in three writes a batch
    of three records in one transaction, like a batch request."""
    storage = Storage.from_settings({"storage_url": url, "storage_pool_size": THREADS})
    deadline = time.monotonic() + seconds
    acknowledged: List[Write] = []
    errors: List[str] = []
    lock = threading.Lock()

    def writer(thread: int) -> None:
        count = 0
        while time.monotonic() < deadline:
            count += 1
            try:
                if count % 3 == 0:
                    with storage.transaction():
                        batch = [storage.create(C, P, {"slot": slot, "thread": thread, "n": count, "i": index})
                                 for index in range(3)]
                else:
                    batch = [storage.create(C, P, {"slot": slot, "thread": thread, "n": count})]
            except Exception as exc:  # reported to the parent, which fails the test
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                acknowledged.extend((record["id"], record["last_modified"]) for record in batch)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acknowledged, errors


class Poller:
    """A sync client: asks for the changes since the last timestamp it saw, as ``GET ?_since=`` does."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.since = 0
        self.seen: List[Write] = []

    def poll(self) -> None:
        changes, _ = self.storage.get_all(C, P, filters=[Filter("last_modified", self.since, COMPARISON.GT)],
                                          sorting=[Sort("last_modified", 1)], include_deleted=True)
        for record in changes:
            self.seen.append((record["id"], record["last_modified"]))
        if changes:
            self.since = changes[-1]["last_modified"]


@pytest.fixture
def storage(pg_url: str) -> Iterator[Storage]:
    yield from emptied(Storage.from_settings({"storage_url": pg_url}))


def test_processes_and_threads_write_while_a_poller_syncs(storage: Storage, pg_url: str) -> None:
    poller = Poller(storage)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(_write_for, pg_url, SECONDS, slot) for slot in range(PROCESSES)]
        polls = 0
        while not all(future.done() for future in futures):
            poller.poll()
            polls += 1
            time.sleep(0.01)
        results = [future.result() for future in futures]
    poller.poll()

    acknowledged = [write for writes, _ in results for write in writes]
    errors = [error for _, errors in results for error in errors]
    assert errors == [], "no writer ever fails (no timestamp collision, no deadlock)"
    assert len(acknowledged) > 100 and polls > 10
    stamps = [stamp for _, stamp in poller.seen]
    assert stamps == sorted(set(stamps)), "the poller sees strictly increasing timestamps"
    assert len(poller.seen) == len(set(poller.seen)), "nothing is seen twice"
    assert sorted(poller.seen) == sorted(acknowledged), "every acknowledged write is seen exactly once"
    assert storage.collection_timestamp(C, P) == max(stamps)


def test_terminated_connections_mid_load(storage: Storage, pg_url: str) -> None:
    """Kill every connection of the writers three times: only BackendErrors, then full recovery, nothing lost."""
    name = f"wsgicliquet_fault_{uuid.uuid4().hex[:8]}"
    victim = Storage(pg.Client(f"{pg_url}{'&' if '?' in pg_url else '?'}application_name={name}", pool_size=8))
    stop = threading.Event()
    acknowledged: List[Write] = []
    failures: List[BaseException] = []
    last_success: Dict[int, float] = {}
    lock = threading.Lock()

    def writer(thread: int) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            try:
                with victim.transaction():
                    batch = [victim.create(C, P, {"thread": thread, "n": count, "i": index})
                             for index in range(1 + count % 2)]
                    victim.get_all(C, P, filters=[Filter("thread", thread, COMPARISON.EQ)], limit=5)
            except Exception as exc:
                with lock:
                    failures.append(exc)
                continue
            with lock:
                acknowledged.extend((record["id"], record["last_modified"]) for record in batch)
                last_success[thread] = time.monotonic()

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    killed = 0
    try:
        for _ in range(3):
            time.sleep(0.7)
            killed += len(admin_execute(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                                "WHERE application_name = %s", (name,)))
        last_kill = time.monotonic()
        # Every thread must write again; on a loaded machine that can take more than a moment.
        deadline = last_kill + 10
        while time.monotonic() < deadline and not all(last_success.get(index, 0) > last_kill for index in range(8)):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    assert killed > 0, "the writers' connections were killed"
    assert all(isinstance(exc, BackendError) for exc in failures), [repr(exc) for exc in failures[:5]]
    assert all(last_success.get(index, 0) > last_kill for index in range(8)), "every thread recovered"
    stored, total = storage.get_all(C, P)
    stored_writes = {(record["id"], record["last_modified"]) for record in stored}
    assert set(acknowledged) <= stored_writes, "every acknowledged write is present"
    stamps = [record["last_modified"] for record in stored]
    assert len(set(stamps)) == len(stamps) == total
    victim.client.close()


def test_http_writers_and_a_since_poller(storage: Storage) -> None:
    """The same guarantee end to end: the resource app in a transaction per request, POSTs from 8 threads,
    a client polling ``GET /notes?_since=<newest timestamp seen>``."""
    webtest = pytest.importorskip("webtest")
    from wsgicliquet.middleware.transaction import Transaction
    from wsgicliquet.resource.app import ResourceApp
    from wsgicliquet.resource.resource import Resource
    from wsgicliquet.settings import load_settings

    class Note(Resource):
        schema = {"type": "object"}
        preserve_unknown = True

    userid = f"basicauth:{uuid.uuid4().hex}"
    environ = {"wsgicliquet.userid": userid,
               "wsgicliquet.principals": ["system.Everyone", "system.Authenticated", userid]}
    app = Transaction(ResourceApp([Note], load_settings({}, environ={}), storage=storage), storage=storage)
    deadline = time.monotonic() + 1.5
    acknowledged: List[Write] = []
    failures: List[str] = []
    lock = threading.Lock()

    def writer(thread: int) -> None:
        api = webtest.TestApp(app, extra_environ=environ, lint=True)
        while time.monotonic() < deadline:
            response = api.post_json("/notes", {"data": {"thread": thread}}, expect_errors=True)
            with lock:
                if response.status_int == 201:
                    acknowledged.append((response.json["data"]["id"], response.json["data"]["last_modified"]))
                else:
                    failures.append(response.text)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    poller = webtest.TestApp(app, extra_environ=environ, lint=True)
    since, seen = 0, []
    while True:
        running = any(thread.is_alive() for thread in threads)
        records = poller.get(f"/notes?_since={since}&_sort=last_modified").json["data"]
        seen += [(record["id"], record["last_modified"]) for record in records]
        since = records[-1]["last_modified"] if records else since
        if not running:
            break
    assert failures == []
    stamps = [stamp for _, stamp in seen]
    assert stamps == sorted(set(stamps))
    assert sorted(seen) == sorted(acknowledged) and len(acknowledged) > 50


class Outage:
    """A TCP relay in front of PostgreSQL that can go down and come back (a server restart, a network cut),
    without touching the shared server."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.sockets: List[socket.socket] = []
        self.listener: socket.socket = socket.socket()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_server_unreachable_then_back(storage: Storage, pg_url: str) -> None:
    parts = urllib.parse.urlsplit(pg_url)
    outage = Outage(parts.hostname or "127.0.0.1", parts.port or 5432)
    outage.up()
    relayed = parts._replace(netloc=f"{parts.username}@127.0.0.1:{outage.port}").geturl()
    victim = Storage(pg.Client(relayed, pool_size=4, pool_timeout=5))
    first = victim.create(C, P, {"before": True})
    outage.down()
    for call in (lambda: victim.create(C, P, {}), lambda: victim.get_all(C, P),
                 lambda: victim.collection_timestamp(C, P), lambda: victim.delete(C, P, first["id"])):
        with pytest.raises(BackendError):
            call()
    assert victim.ping() is False and victim.ping(readonly=True) is False
    outage.up()  # same port: the server is back
    assert victim.ping() is True
    after = victim.create(C, P, {"after": True})
    records, total = victim.get_all(C, P)
    assert total == 2 and {record["id"] for record in records} == {first["id"], after["id"]}
    outage.down()

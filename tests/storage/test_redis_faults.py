"""Redis outages: a private redis-server is killed (or frozen) under load, then brought back on the same port.

During the outage every backend method raises BackendError and the probes answer False; afterwards the same
backend objects work again, without a restart.  The shared server on 6379 is never touched.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

import pytest
import redis

from tests.relay import Relay
from wsgicliquet.cache.redis import Cache
from wsgicliquet.permission.redis import Permission
from wsgicliquet.storage import COMPARISON, BackendError, Filter, Sort
from wsgicliquet.storage.redis import Storage

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throw-away redis-server without persistence, on a port of its own."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.time() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)
            finally:
                probe.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)


@pytest.fixture
def server():
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    instance = RedisServer()
    instance.start()
    yield instance
    if instance.process is not None and instance.process.poll() is None:
        instance.signal(signal.SIGCONT)
    instance.kill()


def _backends(url: str) -> Tuple[Storage, Cache, Permission]:
    settings = {"storage_url": url, "cache_url": url, "permission_url": url, "cache_prefix": "c_"}
    return (Storage.from_settings(settings), Cache.from_settings(settings),
            Permission.from_settings(settings))


def _every_method(storage: Storage, cache: Cache, permission: Permission) -> List[Tuple[str, Callable[[], Any]]]:
    since = [Filter("last_modified", 0, COMPARISON.GT)]
    return [
        ("storage.flush", storage.flush),
        ("storage.collection_timestamp", lambda: storage.collection_timestamp("c", "p")),
        ("storage.create", lambda: storage.create("c", "p", {"x": 1})),
        ("storage.get", lambda: storage.get("c", "p", "x", include_deleted=True)),
        ("storage.update", lambda: storage.update("c", "p", "x", {})),
        ("storage.delete", lambda: storage.delete("c", "p", "x")),
        ("storage.delete_all", lambda: storage.delete_all("c", "p")),
        ("storage.purge_deleted", lambda: storage.purge_deleted("c", "p")),
        ("storage.get_all-range", lambda: storage.get_all("c", "p", filters=since, include_deleted=True)),
        ("storage.get_all-scan", lambda: storage.get_all("c", "p", sorting=[Sort("x", 1)])),
        ("cache.flush", cache.flush),
        ("cache.set", lambda: cache.set("k", 1, 10)),
        ("cache.get", lambda: cache.get("k")),
        ("cache.ttl", lambda: cache.ttl("k")),
        ("cache.expire", lambda: cache.expire("k", 1)),
        ("cache.delete", lambda: cache.delete("k")),
        ("permission.flush", permission.flush),
        ("permission.add_user_principal", lambda: permission.add_user_principal("u", "g")),
        ("permission.remove_user_principal", lambda: permission.remove_user_principal("u", "g")),
        ("permission.remove_principal", lambda: permission.remove_principal("g")),
        ("permission.user_principals", lambda: permission.user_principals("u")),
        ("permission.add_principal_to_ace", lambda: permission.add_principal_to_ace("/o", "read", "u")),
        ("permission.remove_principal_from_ace", lambda: permission.remove_principal_from_ace("/o", "read", "u")),
        ("permission.object_permission_principals", lambda: permission.object_permission_principals("/o", "read")),
        ("permission.check_permission", lambda: permission.check_permission("/o", "read", ["u"])),
        ("permission.principals_accessible_objects",
         lambda: permission.principals_accessible_objects(["u"], "read", "/*")),
        ("permission.object_permissions", lambda: permission.object_permissions("/o")),
        ("permission.replace_object_permissions",
         lambda: permission.replace_object_permissions("/o", {"read": ["u"]})),
        ("permission.delete_object_permissions", lambda: permission.delete_object_permissions("/o")),
    ]


def test_every_method_raises_backend_error_while_down_and_works_after(server):
    backends = _backends(f"redis://127.0.0.1:{server.port}/0")
    assert all(backend.ping() for backend in backends)
    server.kill()
    failures = []
    for name, call in _every_method(*backends):
        try:
            call()
            failures.append(f"{name} did not fail")
        except BackendError:
            pass
        except Exception as exc:  # pragma: no cover - what the test exists to catch
            failures.append(f"{name} raised {exc!r}")
    assert failures == []
    assert not any(backend.ping() for backend in backends)
    assert not any(backend.ping(readonly=True) for backend in backends)

    server.start()  # same port, empty database, no script loaded
    assert all(backend.ping() for backend in backends)
    storage, cache, permission = backends
    record = storage.create("c", "p", {"after": True})
    assert storage.get_all("c", "p")[0] == [record]
    cache.set("k", "v", 10)
    assert cache.get("k") == "v"
    permission.add_principal_to_ace("/o", "read", "u")
    assert permission.principals_accessible_objects(["u"], "read") == {"/o"}


def test_initialize_schema_loads_the_scripts_which_also_come_back_by_themselves(server):
    storage, _, permission = _backends(f"redis://127.0.0.1:{server.port}/0")
    client = storage.client
    storage.initialize_schema(dry_run=True)
    assert client.script_exists(storage._write.sha) == [False]
    storage.initialize_schema()
    permission.initialize_schema()
    assert client.script_exists(storage._write.sha, storage._range.sha, permission._add_ace.sha) == [True] * 3
    client.script_flush()
    assert storage.create("c", "p", {})["last_modified"] > 0
    permission.add_principal_to_ace("/o", "read", "u")


def test_http_answers_503_with_retry_after_during_the_outage(server):
    import base64

    import webtest

    from wsgicliquet import Resource, ResourceApp, build_pipeline
    from wsgicliquet.backends import clear_backends

    class Note(Resource):
        schema = {"type": "object"}
        preserve_unknown = True

    url = f"redis://127.0.0.1:{server.port}/0"
    settings = {"userid_hmac_secret": "abc", "storage_url": url, "cache_url": url, "permission_url": url,
                "retry_after_seconds": 7}
    headers = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    clear_backends()
    try:
        api = webtest.TestApp(build_pipeline(ResourceApp([Note], settings), settings))
        api.post_json("/v1/notes", {"data": {"text": "before"}}, headers=headers, status=201)
        server.kill()
        for response in (api.get("/v1/notes", headers=headers, status=503),
                         api.post_json("/v1/notes", {"data": {"text": "during"}}, headers=headers, status=503)):
            assert response.json["errno"] == 201 and response.headers["Retry-After"] == "7"
        api.get("/v1/__heartbeat__", status=503)
        server.start()
        api.post_json("/v1/notes", {"data": {"text": "after"}}, headers=headers, status=201)
        assert [note["text"] for note in api.get("/v1/notes", headers=headers).json["data"]] == ["after"]
        assert api.get("/v1/__heartbeat__").json == {"storage": True, "cache": True, "permission": True}
    finally:
        clear_backends()


def test_a_full_server_refuses_writes_and_still_answers_every_read(server):
    """At maxmemory (noeviction) Redis refuses what may grow memory, and also any command queued in a MULTI: the
    reads must not use one, or a full server takes listings with filters, shareable listings and record reads with
    their tombstone down with the writes."""
    storage, cache, permission = _backends(f"redis://127.0.0.1:{server.port}/0")
    live = storage.create("c", "p", {"title": "kept"})
    buried = storage.delete("c", "p", storage.create("c", "p", {"title": "gone"})["id"])
    cache.set("k", "v", 100)
    permission.add_principal_to_ace("/o", "read", "u")
    ids = [live["id"], buried["id"]]
    storage.client.config_set("maxmemory-policy", "noeviction")
    storage.client.config_set("maxmemory", 1)
    try:
        with pytest.raises(BackendError, match="maxmemory"):
            storage.create("c", "p", {"title": "refused"})
        assert storage.get("c", "p", live["id"], include_deleted=True) == live
        assert storage.get("c", "p", buried["id"], include_deleted=True) == buried
        assert storage.get_all("c", "p", sorting=[Sort("title", 1)]) == ([live], 1)
        assert storage.get_all("c", "p", filters=[Filter("title", "kept", COMPARISON.EQ)]) == ([live], 1)
        assert storage.get_all("c", "p", filters=[Filter("id", ids, COMPARISON.IN)], include_deleted=True,
                               sorting=[Sort("title", 1)])[0] == [live, buried]
        assert storage.get_all("c", "p", sorting=[Sort("title", 1)], include_deleted=True)[0] == [live, buried]
        assert cache.get("k") == "v"
        assert permission.principals_accessible_objects(["u"], "read") == {"/o"}
    finally:
        storage.client.config_set("maxmemory", 0)
    assert storage.create("c", "p", {"title": "after"})["last_modified"] > buried["last_modified"]


class Load:
    """Threads writing and listing without pause; every outcome is logged with its start time."""

    def __init__(self, storage: Storage, threads: int = 4) -> None:
        self.storage = storage
        self.outcomes: List[Tuple[float, Optional[BaseException]]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self) -> None:
        step = 0
        while not self.stop.is_set():
            step += 1
            started = time.time()
            try:
                if step % 2:
                    self.storage.create("c", "p", {"step": step})
                else:
                    self.storage.get_all("c", "p", limit=5, include_deleted=True)
                error: Optional[BaseException] = None
            except BaseException as exc:
                error = exc
                time.sleep(0.005)  # a client backing off; keeps the log small
            self.outcomes.append((started, error))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def between(self, start: float, end: float = float("inf")) -> List[Optional[BaseException]]:
        return [error for started, error in list(self.outcomes) if start <= started < end]


@pytest.mark.parametrize("outage", [
    pytest.param("kill", id="server-killed-and-restarted"),
    pytest.param("freeze", id="server-frozen-then-resumed"),
])
def test_outage_under_load_gives_only_backend_errors_then_recovers(server, outage):
    # A short socket timeout, so that a frozen server fails requests quickly instead of hanging them.
    storage = Storage.from_settings(
        {"storage_url": f"redis://127.0.0.1:{server.port}/0?socket_timeout=0.3&socket_connect_timeout=0.3"})
    with Load(storage) as load:
        time.sleep(0.4)
        outage_start = time.time()
        server.kill() if outage == "kill" else server.signal(signal.SIGSTOP)
        time.sleep(1.0)
        outage_end = time.time()
        server.start() if outage == "kill" else server.signal(signal.SIGCONT)
        deadline = time.time() + 10
        while not storage.ping():
            assert time.time() < deadline, "no recovery"
            time.sleep(0.05)
        recovered = time.time()
        deadline = time.time() + 10  # a loaded machine may start few requests in a fixed wait
        while len(load.between(recovered + 0.05)) < 8 and time.time() < deadline:
            time.sleep(0.05)

    # Requests started near a transition may land on either side of it (a frozen server answers a request
    # waiting less than the socket timeout once it resumes): only the clear-cut windows are checked.
    before, during = load.between(0, outage_start - 0.05), load.between(outage_start + 0.05, outage_end - 0.4)
    after = load.between(recovered + 0.05)
    assert before and [error for error in before if error is not None] == []
    assert during and all(isinstance(error, BackendError) for error in during)
    unexpected = [error for error in load.between(0) if error is not None and not isinstance(error, BackendError)]
    assert unexpected == []
    assert after and all(error is None for error in after)


class ReplyCutter(Relay):
    """A relay to a Redis server that, when armed, lets the next command through, then drops its reply and closes
    the connection: the command ran, the client only sees the connection closed (a ``CLIENT KILL``, a network cut
    or a server crash after a write)."""

    def __init__(self, port: int) -> None:
        self.armed = threading.Event()
        super().__init__("127.0.0.1", port)

    def forward(self, data: bytes, source: socket.socket, sink: socket.socket, to_client: bool) -> bool:
        if data and to_client and self.armed.is_set():
            self.armed.clear()
            for sock in (source, sink):
                sock.shutdown(socket.SHUT_RDWR)
            return False
        return super().forward(data, source, sink, to_client)


@pytest.fixture
def cutter(server):
    relay = ReplyCutter(server.port)
    yield relay
    relay.close()


def test_a_write_whose_reply_is_lost_is_a_backend_error_never_run_twice(cutter):
    # The write ran: sending it again would apply it twice (a second timestamp, a PATCH or DELETE answered 412 or
    # 404 although it succeeded, a POST answered 200 as if the record had existed before).
    storage = Storage.from_settings({"storage_url": f"redis://127.0.0.1:{cutter.port}/0"})
    storage.initialize_schema()  # scripts loaded: the reply cut is the write's, not a NOSCRIPT
    record = storage.create("c", "p", {"n": 0})
    writes = [
        ("update", lambda: storage.update("c", "p", record["id"], {"n": 1}, if_match=record["last_modified"])),
        ("create", lambda: storage.create("c", "p", {"n": 2}, id_generator=lambda: "fixed")),
        ("delete", lambda: storage.delete("c", "p", record["id"])),
    ]
    for name, write in writes:
        before = storage.collection_timestamp("c", "p")
        cutter.armed.set()
        with pytest.raises(BackendError) as caught:
            write()
        assert isinstance(caught.value.__cause__, redis.ConnectionError), (name, caught.value)
        after = storage.collection_timestamp("c", "p")
        assert after > before, f"{name} did not run"
        # Run exactly once: the next write gets the timestamp right after, nothing was written in between.
        assert len(storage.get_all("c", "p", filters=[Filter("last_modified", before, COMPARISON.GT)],
                                   include_deleted=True)[0]) == 1, name
    records, _ = storage.get_all("c", "p", include_deleted=True)
    assert {(r["id"], r.get("deleted", False)) for r in records} == {(record["id"], True), ("fixed", False)}
    assert storage.ping()  # the next call gets a fresh connection

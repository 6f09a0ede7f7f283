"""StatsD metrics, received on a real UDP socket and checked by name and type."""
from __future__ import annotations

import socket
import threading
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import webtest

from wsgicliquet import environ as keys
from wsgicliquet.backends import load_backend
from wsgicliquet.errors import HTTPError
from wsgicliquet.middleware.statsd import StatsdMetrics, filter_factory
from wsgicliquet.settings import ConfigurationError, load_settings

USERID = "basicauth:" + "ab12" * 16
FLUSH = 0.05  # seconds between sends of the aggregated metrics in these tests


class Collector:
    """A StatsD server: a UDP socket on 127.0.0.1 that parses ``name:value|type`` lines."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = "udp://127.0.0.1:%d" % self.sock.getsockname()[1]

    def metrics(self, wait: float = 2.0) -> List[Tuple[str, str, str]]:
        """Every metric received until the socket stays quiet for a moment."""
        received: List[Tuple[str, str, str]] = []
        self.sock.settimeout(wait)
        try:
            while True:
                packet = self.sock.recv(65535).decode("ascii")
                for line in packet.split("\n"):
                    name, _, rest = line.partition(":")
                    value, _, kind = rest.partition("|")
                    received.append((name, value, kind))
                self.sock.settimeout(0.2)
        except socket.timeout:
            return received

    def names(self, wait: float = 2.0) -> List[Tuple[str, str]]:
        return [(name, kind) for name, _, kind in self.metrics(wait)]

    def totals(self, wait: float = 2.0) -> Dict[str, int]:
        """Counters summed by name (aggregation may split a count over several lines)."""
        totals: Dict[str, int] = {}
        for name, value, kind in self.metrics(wait):
            if kind == "c":
                totals[name] = totals.get(name, 0) + int(value)
        return totals


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.sock.close()


def view_app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    """Authenticates everyone and names its view; /redirect and /nowhere match no view."""
    path = environ["PATH_INFO"]
    if path == "/nowhere":
        return HTTPError(404)(environ, start_response)
    if path == "/redirect/":
        start_response("307 Temporary Redirect", [("Location", "/redirect")])
        return [b""]
    environ[keys.USERID] = USERID
    environ[keys.AUTHN_TYPE] = "basicauth"
    environ[keys.VIEW] = "bookmark-collection"
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def make(app: Any, **settings: Any) -> webtest.TestApp:
    """Without backends unless asked: the process-wide default instances stay uninstrumented."""
    settings.setdefault("statsd_flush_interval_seconds", FLUSH)
    for kind in ("storage", "cache", "permission"):
        settings.setdefault(f"{kind}_url", "" if f"{kind}_pool_size" not in settings else "memory://")
    return webtest.TestApp(StatsdMetrics.from_settings(app, load_settings(settings, environ={})), lint=True)


def test_request_metrics_by_name_and_type(collector: Collector) -> None:
    make(view_app, statsd_url=collector.url, project_name="myapp").get("/bookmarks")
    metrics = collector.metrics()
    assert sorted((name, kind) for name, _, kind in metrics) == [
        ("myapp.authn_type.basicauth", "c"), ("myapp.request", "ms"), ("myapp.users", "s"),
        ("myapp.view.bookmark-collection.GET", "c")]
    values = {name: value for name, value, _ in metrics}
    assert values["myapp.users"] == "basicauth_" + "ab12" * 16  # ':' is reserved by the line format
    assert values["myapp.view.bookmark-collection.GET"] == "1"
    assert float(values["myapp.request"]) >= 0


@pytest.mark.parametrize("path, status", [
    pytest.param("/nowhere", 404, id="unknown-url"),
    pytest.param("/redirect/", 307, id="trailing-slash-redirect"),
])
def test_unmatched_urls_are_counted_and_answered_unchanged(collector: Collector, path: str, status: int) -> None:
    response = make(view_app, statsd_url=collector.url).get(path, status=status)
    if status == 404:
        assert response.json["errno"] == 111
    assert sorted(collector.names()) == [("wsgicliquet.request", "ms"), ("wsgicliquet.view.unmatched.GET", "c")]


def test_prefix_falls_back_to_statsd_prefix(collector: Collector) -> None:
    make(view_app, statsd_url=collector.url, statsd_prefix="svc").post("/bookmarks")
    assert ("svc.view.bookmark-collection.POST", "c") in collector.names()


def test_unsafe_names_cannot_forge_metrics(collector: Collector) -> None:
    def odd(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        environ[keys.VIEW] = "x|c\nevil:1"
        environ[keys.USERID] = "remoteuser:été|s"
        start_response("200 OK", [])
        return [b""]

    make(odd, statsd_url=collector.url).get("/")
    assert sorted(collector.names()) == [("wsgicliquet.request", "ms"), ("wsgicliquet.users", "s"),
                                         ("wsgicliquet.view.x_c_evil_1.GET", "c")]


def test_client_chosen_methods_cannot_create_metrics(collector: Collector) -> None:
    """Any method name reaches the app (answered 405 by a real one); each would be a new series on the server."""
    app = webtest.TestApp(make(view_app, statsd_url=collector.url, statsd_flush_interval_seconds=0).app,
                          lint=False)  # lint refuses unknown methods, which servers pass on
    for method in ("BREW", "X-1", "PROPFIND", "get", "PATCH"):
        app.request("/bookmarks", method=method)
    assert collector.totals() == {"wsgicliquet.view.bookmark-collection.OTHER": 3,
                                  "wsgicliquet.view.bookmark-collection.GET": 1,
                                  "wsgicliquet.view.bookmark-collection.PATCH": 1,
                                  "wsgicliquet.authn_type.basicauth": 5}


def test_batch_subrequests_are_counted(collector: Collector) -> None:
    def mini_batch(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        environ[keys.VIEW] = "batch"
        for method, path in (("GET", "/bookmarks"), ("PUT", "/nowhere")):
            sub_environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": ""}
            view_app(sub_environ, lambda status, headers, exc_info=None: None)
            environ[keys.SUBREQUESTS].append({"environ": sub_environ, "status": 200, "duration": 0.001})
        start_response("200 OK", [])
        return [b""]

    make(mini_batch, statsd_url=collector.url).post("/batch")
    assert sorted(collector.names()) == [
        ("wsgicliquet.authn_type.basicauth", "c"), ("wsgicliquet.request", "ms"), ("wsgicliquet.users", "s"),
        ("wsgicliquet.view.batch.POST", "c"), ("wsgicliquet.view.bookmark-collection.GET", "c"),
        ("wsgicliquet.view.unmatched.PUT", "c")]


def test_backend_methods_are_timed_once(collector: Collector) -> None:
    # Private instances: a pool size nobody else uses gives this test its own shared backends.
    settings = dict(statsd_url=collector.url, project_name="myapp", storage_pool_size=7771, cache_pool_size=7772,
                    permission_pool_size=7773)

    def uses_backends(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        loaded = load_settings(settings, environ={})
        load_backend("storage", loaded).create("bookmark", "alice", {"title": "x"})
        load_backend("cache", loaded).set("key", "value", 10)
        load_backend("permission", loaded).user_principals("alice")
        start_response("200 OK", [])
        return [b""]

    make(uses_backends, **settings)
    app = make(uses_backends, **settings)  # built twice (two pipelines): the methods are wrapped once
    app.get("/")
    timers = [name for name, kind in collector.names() if kind == "ms"]
    assert sorted(timers) == ["myapp.cache.cache.set", "myapp.permission.permission.user_principals",
                              "myapp.request", "myapp.storage.storage.create"]
    storage = load_backend("storage", load_settings(settings, environ={}))
    assert storage.create.__name__ == "create" and storage.create.__wrapped__.__name__ == "create"


def test_backend_timers_travel_in_the_request_packet(collector: Collector) -> None:
    """One UDP packet per request: its backend timers go with its counters; calls outside a request at once."""
    settings = dict(statsd_url=collector.url, project_name="myapp", storage_pool_size=7781,
                    statsd_flush_interval_seconds=0)
    storage: List[Any] = []

    def uses_storage(environ: Dict[str, Any], start_response: Any) -> Iterator[bytes]:
        storage[:] = [load_backend("storage", load_settings(settings, environ={}))]
        storage[0].create("bookmark", "alice", {"title": "x"})
        start_response("200 OK", [])
        yield b""
        storage[0].get_all("bookmark", "alice")  # while the body streams: still this request's

    app = make(uses_storage, **settings)
    app.get("/")
    packets: List[List[str]] = []
    collector.sock.settimeout(2.0)
    packets.append(collector.sock.recv(65535).decode("ascii").split("\n"))
    names = sorted(line.partition(":")[0] for line in packets[0])
    assert names == ["myapp.request", "myapp.storage.storage.create", "myapp.storage.storage.get_all",
                     "myapp.view.unmatched.GET"]
    storage[0].get_all("bookmark", "alice")  # outside any request
    assert collector.names() == [("myapp.storage.storage.get_all", "ms")]


def test_unreachable_server_never_fails_a_request() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    app = make(view_app, statsd_url=f"udp://127.0.0.1:{port}")
    for _ in range(3):  # a refused datagram may surface as an error on the next send
        assert app.get("/bookmarks").json == {}


def test_concurrent_requests_share_one_client(collector: Collector) -> None:
    app = make(view_app, statsd_url=collector.url)
    errors: List[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(20):
                app.get("/bookmarks")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    metrics = collector.metrics()
    assert sum(int(value) for name, value, _ in metrics if name == "wsgicliquet.view.bookmark-collection.GET") == 160
    assert [name for name, _, _ in metrics].count("wsgicliquet.request") == 160


def test_disabled_is_a_pass_through() -> None:
    body = [b"untouched"]

    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("200 OK", [])
        return body

    middleware = StatsdMetrics.from_settings(app, load_settings({}, environ={}))
    assert middleware.client is None
    assert middleware({"REQUEST_METHOD": "GET"}, lambda *args: None) is body


@pytest.mark.parametrize("url", [
    pytest.param("tcp://127.0.0.1:8125", id="not-udp"),
    pytest.param("udp://127.0.0.1:port", id="bad-port"),
    pytest.param("udp://:8125", id="no-host"),
    pytest.param("udp://[::1:8125", id="unclosed-bracket"),
    pytest.param("udp://127.0.0.1:0", id="port-zero"),
])
def test_bad_url_fails_at_construction(url: str) -> None:
    with pytest.raises(ConfigurationError, match="statsd_url"):
        StatsdMetrics(view_app, url=url)


def test_ipv6_server() -> None:
    """``udp://[::1]:port`` sends over IPv6 (an IPv4 socket could not even resolve the address)."""
    try:
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with server:
        server.settimeout(2)
        make(view_app, statsd_url="udp://[::1]:%d" % server.getsockname()[1], statsd_flush_interval_seconds=0,
             project_name="six").get("/bookmarks")
        assert b"six.view.bookmark-collection.GET:1|c" in server.recv(65535)


def test_paste_filter_factory(collector: Collector) -> None:
    wrapped = filter_factory({"project_name": "pasted"}, statsd_url=collector.url,
                             statsd_flush_interval_seconds=str(FLUSH))(view_app)
    webtest.TestApp(wrapped).get("/bookmarks")
    assert ("pasted.view.bookmark-collection.GET", "c") in collector.names()


def test_canonical_pipeline_counts_redirects_and_unknown_urls(collector: Collector) -> None:
    """§21.16: with the real version prefix, redirects and unknown URLs keep their answers and are counted."""
    from wsgicliquet import build_pipeline

    def api(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        if environ["PATH_INFO"] != "/scores":
            return HTTPError(404)(environ, start_response)
        environ[keys.VIEW] = "scores"
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    app = webtest.TestApp(build_pipeline(api, load_settings(dict(
        statsd_url=collector.url, project_name="myapp", project_version="1.0.0", storage_url="", cache_url="",
        permission_url="", userid_hmac_secret="secret", statsd_flush_interval_seconds=FLUSH), environ={})))
    assert app.get("/scores", status=307).headers["Location"].endswith("/v1/scores")
    assert app.get("/v1/nowhere", status=404).json["errno"] == 111
    assert app.get("/v1/scores").json == {}
    metrics = collector.metrics()
    totals = {name: sum(int(v) for n, v, kind in metrics if n == name and kind == "c") for name, _, _ in metrics}
    assert totals["myapp.view.unmatched.GET"] == 2
    assert totals["myapp.view.scores.GET"] == 1
    assert [(name, kind) for name, _, kind in metrics].count(("myapp.request", "ms")) == 3


def test_resource_app_views_and_storage_timers(collector: Collector) -> None:
    """End to end with the resource app: its view names, and the timers of its (shared) storage."""
    import base64

    from wsgicliquet import build_pipeline
    from wsgicliquet.resource.app import ResourceApp
    from wsgicliquet.resource.resource import Resource

    class Bookmark(Resource):
        schema = {"type": "object", "properties": {"title": {"type": "string"}}}

    settings = load_settings(dict(statsd_url=collector.url, project_name="myapp", project_version="1.0.0",
                                  userid_hmac_secret="secret", storage_pool_size=7791, cache_url="",
                                  permission_url="", statsd_flush_interval_seconds=FLUSH), environ={})
    app = webtest.TestApp(build_pipeline(ResourceApp([Bookmark], settings), settings))
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    app.post_json("/v1/bookmarks", {"data": {"title": "x"}}, headers=auth, status=201)
    app.get("/v1/bookmarks", headers=auth)
    metrics = collector.metrics()
    names = [(name, kind) for name, _, kind in metrics]
    assert ("myapp.view.bookmark-collection.POST", "c") in names
    assert ("myapp.view.bookmark-collection.GET", "c") in names
    assert sum(int(value) for name, value, _ in metrics if name == "myapp.authn_type.basicauth") == 2
    assert ("myapp.storage.storage.create", "ms") in names
    assert ("myapp.storage.storage.get_all", "ms") in names


def users_app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    """``/<user>``: that user's request."""
    environ[keys.USERID] = "basicauth:" + environ["PATH_INFO"].strip("/")
    environ[keys.AUTHN_TYPE] = "basicauth"
    environ[keys.VIEW] = "scores"
    start_response("200 OK", [])
    return [b""]


def test_metrics_are_aggregated_between_sends(collector: Collector) -> None:
    """30 responses from 3 users: counters summed, each user once, every timing kept, in a few packets."""
    app = make(users_app, statsd_url=collector.url, statsd_flush_interval_seconds=0.3)
    for number in range(30):
        app.get(f"/user{number % 3}")
    packets: List[List[str]] = []
    collector.sock.settimeout(2.0)
    try:
        while True:
            packets.append(collector.sock.recv(65535).decode("ascii").split("\n"))
            collector.sock.settimeout(0.5)
    except socket.timeout:
        pass
    lines = [line for packet in packets for line in packet]
    assert len(packets) < 10
    assert sum(int(line.split(":")[1].split("|")[0]) for line in lines
               if line.startswith("wsgicliquet.view.scores.GET:")) == 30
    assert sorted(line for line in lines if line.startswith("wsgicliquet.users:")) == [
        "wsgicliquet.users:basicauth_user0|s", "wsgicliquet.users:basicauth_user1|s",
        "wsgicliquet.users:basicauth_user2|s"]
    assert len([line for line in lines if line.startswith("wsgicliquet.request:")]) == 30


def test_held_metrics_are_sent_without_further_requests(collector: Collector) -> None:
    app = make(users_app, statsd_url=collector.url, statsd_flush_interval_seconds=0.2)
    app.get("/alice")
    assert collector.totals(wait=2.0) == {"wsgicliquet.view.scores.GET": 1, "wsgicliquet.authn_type.basicauth": 1}
    app.get("/alice")  # the sending thread stopped once idle; the next metric starts another
    assert collector.totals(wait=2.0)["wsgicliquet.view.scores.GET"] == 1


def test_too_many_held_timings_are_sent_at_once(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsgicliquet.middleware import statsd

    monkeypatch.setattr(statsd._Aggregator, "MAX_TIMERS", 5)
    app = make(users_app, statsd_url=collector.url, statsd_flush_interval_seconds=60)
    for _ in range(5):
        app.get("/alice")
    assert collector.totals(wait=2.0) == {"wsgicliquet.view.scores.GET": 5, "wsgicliquet.authn_type.basicauth": 5}


def test_a_forked_worker_sends_only_its_own_metrics(collector: Collector) -> None:
    """What the parent held before the fork is sent by the parent alone."""
    import os

    middleware = StatsdMetrics.from_settings(users_app, load_settings(dict(
        statsd_url=collector.url, storage_url="", cache_url="", permission_url="",
        statsd_flush_interval_seconds=60), environ={}))
    app = webtest.TestApp(middleware)
    app.get("/parent")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            app.get("/child")
            middleware.sink.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    middleware.sink.flush()
    lines = [f"{name}:{value}" for name, value, kind in collector.metrics() if kind in ("c", "s")]
    assert sorted(lines) == ["wsgicliquet.authn_type.basicauth:1", "wsgicliquet.authn_type.basicauth:1",
                             "wsgicliquet.users:basicauth_child", "wsgicliquet.users:basicauth_parent",
                             "wsgicliquet.view.scores.GET:1", "wsgicliquet.view.scores.GET:1"]


def test_what_is_held_at_exit_is_sent(collector: Collector) -> None:
    import subprocess
    import sys

    script = (
        "import webtest\n"
        "from wsgicliquet.middleware.statsd import StatsdMetrics\n"
        "def app(environ, start_response):\n"
        "    environ['wsgicliquet.view'] = 'exit'\n"
        "    start_response('200 OK', [])\n"
        "    return [b'']\n"
        f"webtest.TestApp(StatsdMetrics(app, url={collector.url!r}, flush_interval=3600)).get('/')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert collector.totals(wait=5.0) == {"wsgicliquet.view.exit.GET": 1}


def test_negative_flush_interval_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="statsd_flush_interval_seconds"):
        StatsdMetrics(view_app, url="udp://127.0.0.1:8125", flush_interval=-1)


def test_views_count_and_time_their_own_metrics(collector: Collector) -> None:
    """Cliquet's ``statsd_count``: a view adds counters and timers to its request's metrics, names sanitised."""
    from wsgicliquet.middleware.statsd import count, timing

    def scores(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        environ[keys.VIEW] = "scores"
        count(environ, "scores.submitted")
        count(environ, "scores.submitted")
        count(environ, "evil|c\nforged:1")
        timing(environ, "game.duration", 12.5)
        start_response("200 OK", [])
        return [b""]

    make(scores, statsd_url=collector.url, project_name="arcade").post("/scores")
    metrics = collector.metrics()
    assert ("arcade.game.duration", "12.500000", "ms") in metrics
    totals = {}
    for name, value, kind in metrics:
        if kind == "c":
            totals[name] = totals.get(name, 0) + int(value)
    assert totals == {"arcade.scores.submitted": 2, "arcade.evil_c_forged_1": 1, "arcade.view.scores.POST": 1}


def test_metric_helpers_do_nothing_without_statsd() -> None:
    from wsgicliquet.middleware.statsd import count, timing

    environ: Dict[str, Any] = {}
    count(environ, "scores.submitted")
    timing(environ, "game.duration", 1.0)
    assert environ == {}


def test_authentication_policies_are_timed(collector: Collector) -> None:
    """§14: ``authentication.<policy>.unauthenticated_userid`` for each policy asked, batch sub-requests included."""
    import base64

    from wsgicliquet import build_pipeline

    def api(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        environ[keys.VIEW] = "scores"
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    app = webtest.TestApp(build_pipeline(api, load_settings(dict(
        statsd_url=collector.url, project_name="myapp", project_version="1.0.0", storage_url="", cache_url="",
        permission_url="", userid_hmac_secret="secret", statsd_flush_interval_seconds=FLUSH,
        **{"multiauth.policies": "remoteuser basicauth"}), environ={})))
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    app.get("/v1/scores", headers=auth)
    app.post_json("/v1/batch", {"requests": [{"path": "/scores"}, {"path": "/scores"}]}, headers=auth)
    timers = [name for name, _, kind in collector.metrics() if kind == "ms"]
    assert timers.count("myapp.authentication.remoteuser.unauthenticated_userid") == 3
    assert timers.count("myapp.authentication.basicauth.unauthenticated_userid") == 3

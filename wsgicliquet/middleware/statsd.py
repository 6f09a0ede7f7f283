"""StatsD metrics of PROTOCOL.md §14: per view counters, authentication types, unique users, timers.

Use it outermost (next to the request log) so that it times the whole response, body included, and counts every
request, unmatched URLs and redirects included (they count as view ``unmatched``, never an error: §21.16).
Per response:

* ``view.<view>.<METHOD>`` counter, where ``<view>`` is ``environ["wsgicliquet.view"]`` or ``unmatched``, and
  ``<METHOD>`` is ``OTHER`` for a method outside the standard ones (a client must not create metrics at will);
* ``authn_type.<policy>`` counter and the ``users`` set, for authenticated requests;
* ``request`` timer (milliseconds, until the server closes the response);
* the same counters for each batch sub-request (from ``environ["wsgicliquet.subrequests"]``);
* what the layers and views below added to ``environ["wsgicliquet.metrics"]``: the authentication middleware's
  ``authentication.<policy>.unauthenticated_userid`` timers, and an application's own counters and timers
  (:func:`count`, :func:`timing`).

Backend timers ``storage.<class>.<method>``, ``cache.<class>.<method>``, ``permission.<class>.<method>`` come
from wrapping each public method of the shared backend instances once, when the middleware is built.  Those
measured while a request runs are held (in a context variable) and reported with that request.

Metrics are aggregated in the process and sent every ``statsd_flush_interval_seconds`` (default 1): counters
summed, each user once, every timing kept.  On a busy worker the system call of a UDP send per response costs more
than everything else this layer does; StatsD sums counters over its own flush interval (10 s by default) anyway.
With 0, each response is sent as it ends, in one packet.

Settings: ``statsd_url`` (``udp://host:8125``; unset: pass-through), ``project_name`` (prefix) else
``statsd_prefix``, ``statsd_flush_interval_seconds``.  Metrics go over UDP and every error is swallowed, so an
absent StatsD server never slows or fails a request.  Needs ``pip install 'wsgicliquet[monitoring]'``.
"""
from __future__ import annotations

import atexit
import contextvars
import functools
import os
import re
import threading
import time
import weakref
from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Set, Tuple
from urllib.parse import urlsplit

from wsgicliquet import environ as keys
from wsgicliquet.backends import import_string, load_backend, missing_extra
from wsgicliquet.middleware import ClosingResponse
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import StartResponse

__all__ = ["StatsdMetrics", "instrument_backend", "make_client", "count", "timing", "filter_factory"]

BACKEND_KINDS = ("storage", "cache", "permission")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_INSTRUMENTED = "_wsgicliquet_statsd"
# Contract methods that are not timed: the constructor, and transaction() (a context manager: the call is instant).
_NOT_TIMED = {"from_settings", "transaction"}
_instrument_lock = threading.Lock()
# The methods named in view counters; any other (the client chooses it) counts as OTHER, so that a client cannot
# create metrics at will (each new name is a new series on the StatsD server).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def _safe(part: str) -> str:
    """A metric name part: the StatsD line format reserves ``:|@.`` and newlines."""
    return _UNSAFE.sub("_", part) or "_"


@functools.lru_cache(maxsize=4096)
def _view_metric(view: str, method: str) -> str:
    method = method.upper()
    return f"view.{_safe(view)}.{method if method in _METHODS else 'OTHER'}"


@functools.lru_cache(maxsize=256)
def _authn_metric(policy: str) -> str:
    return f"authn_type.{_safe(policy)}"


@functools.lru_cache(maxsize=4096)
def _user_value(userid: str) -> str:
    return _UNSAFE.sub("_", userid)


@functools.lru_cache(maxsize=4096)
def _metric_name(name: str) -> str:
    """A dotted name of the application's, each part sanitised: no forged line through a custom key."""
    return ".".join(_safe(part) for part in name.split("."))


def count(environ: Mapping[str, Any], key: str) -> None:
    """Increment the counter ``key`` with this request's metrics (Cliquet's ``statsd_count``); nothing without
    StatsD."""
    metrics = environ.get(keys.METRICS)
    if metrics is not None:
        metrics.append(("c", key, 1))


def timing(environ: Mapping[str, Any], key: str, milliseconds: float) -> None:
    """Report the timer ``key`` with this request's metrics; nothing without StatsD."""
    metrics = environ.get(keys.METRICS)
    if metrics is not None:
        metrics.append(("ms", key, milliseconds))


def make_client(url: str, prefix: str) -> Any:
    """A ``statsd.StatsClient`` for ``udp://host[:port]``; a bad URL or unknown host is a start-up error."""
    try:
        import statsd
    except ImportError:  # pragma: no cover - depends on the installation
        raise missing_extra("monitoring", "statsd") from None
    try:  # an unclosed IPv6 bracket fails in urlsplit, a bad port when it is read
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"Setting 'statsd_url' has an invalid value {url!r}: {exc}") from None
    if parts.scheme != "udp" or not parts.hostname or port == 0:
        raise ConfigurationError(f"Setting 'statsd_url' has an invalid value {url!r}: expected udp://host:port")
    try:  # an IPv6 literal (udp://[::1]:8125) needs an IPv6 socket
        return statsd.StatsClient(parts.hostname, port or 8125, prefix=prefix or None, ipv6=":" in parts.hostname)
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"Setting 'statsd_url' has an invalid value {url!r}: {exc}") from None


Timers = Sequence[Tuple[str, float]]


class Sink(Protocol):
    """Where the metrics of a response (or of a backend call outside any request) go."""

    def add(self, counters: Sequence[str], users: Sequence[str], timers: Timers) -> None: ...


class _Immediate:
    """Sends the metrics of each call at once, in one packet."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def add(self, counters: Sequence[str], users: Sequence[str], timers: Timers) -> None:
        _send(self.client, Counter(counters), users, timers)


class _Aggregator:
    """Holds the metrics of many responses and sends them together every ``interval`` seconds.

    A daemon thread sends them while metrics keep coming, and stops after an interval without any (it keeps the
    aggregator alive meanwhile, so that nothing held is lost); the next metric starts a new one.  A forked child
    (gunicorn forks its workers after loading the app) drops what its parent held, which the parent sends.  What is
    left at exit is sent then.
    """

    # Beyond this many timings held, the response adding one sends everything at once: memory stays bounded.
    MAX_TIMERS = 10_000

    def __init__(self, client: Any, interval: float) -> None:
        self.client = client
        self.interval = interval
        self._reset()
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(this, "_reset"))
        atexit.register(_call, this, "flush")

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._users: Set[str] = set()
        self._timers: List[Tuple[str, float]] = []
        self._flushing = False

    def add(self, counters: Sequence[str], users: Sequence[str], timers: Timers) -> None:
        with self._lock:
            held = self._counters
            for name in counters:  # a few names: cheaper than Counter.update and its checks of the argument
                held[name] += 1
            self._users.update(users)
            self._timers.extend(timers)
            full = len(self._timers) >= self.MAX_TIMERS
            start = not self._flushing
            self._flushing = True
        if start:
            try:
                threading.Thread(target=self._flush_while_busy, name="wsgicliquet-statsd", daemon=True).start()
            except RuntimeError:  # the interpreter is shutting down: the exit hook sends what is held
                with self._lock:
                    self._flushing = False
        if full:
            self.flush()

    def flush(self) -> None:
        """Send what is held now."""
        with self._lock:
            counters, users, timers = self._counters, self._users, self._timers
            self._counters, self._users, self._timers = Counter(), set(), []
        if counters or users or timers:
            _send(self.client, counters, users, timers)

    def _flush_while_busy(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                if not (self._counters or self._users or self._timers):
                    self._flushing = False
                    return
            self.flush()


def _call(ref: "weakref.ref[_Aggregator]", method: str) -> None:
    target = ref()
    if target is not None:
        getattr(target, method)()


def _send(client: Any, counters: Mapping[str, int], users: Iterable[str], timers: Timers) -> None:
    """One pipeline: as few packets as the metrics fit in (statsd splits them by its maximum UDP size)."""
    try:
        pipe = client.pipeline()
        for name, increment in counters.items():
            pipe.incr(name, increment)
        for user in users:
            pipe.set("users", user)
        for name, elapsed_ms in timers:
            pipe.timing(name, elapsed_ms)
        pipe.send()
    except Exception:  # metrics never break a response
        pass


class _Holder:
    """Where an instrumented backend reports; rebuilding a pipeline points it at the new sink."""

    __slots__ = ("sink",)

    def __init__(self, sink: Sink) -> None:
        self.sink = sink


class _Pending:
    """The backend timers measured during one request, reported with its metrics to ``sink``."""

    __slots__ = ("sink", "timers", "open")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.timers: List[Tuple[str, float]] = []
        self.open = True


_pending: contextvars.ContextVar[Optional[_Pending]] = contextvars.ContextVar("wsgicliquet_statsd_pending",
                                                                             default=None)


def _timed(method: Callable, holder: _Holder, name: str) -> Callable:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            pending = _pending.get()
            if pending is not None and pending.open and pending.sink is holder.sink:
                pending.timers.append((name, elapsed_ms))
            else:
                holder.sink.add((), (), ((name, elapsed_ms),))
    return timed


def instrument_backend(backend: Any, kind: str, sink: Sink) -> None:
    """Time every public method of ``kind``'s contract on this instance, as ``<kind>.<class>.<method>``.

    ``sink`` receives the timings (``sink.add(counters, users, timers)``).  Done once per instance (the backends are
    shared per process); instrumenting again only changes the sink.
    """
    with _instrument_lock:
        holder = getattr(backend, _INSTRUMENTED, None)
        if isinstance(holder, _Holder):
            holder.sink = sink
            return
        holder = _Holder(sink)
        contract = _contract(kind)
        group = f"{kind}.{_safe(type(backend).__name__.lower())}"
        for name in dir(contract):
            if name.startswith("_") or name in _NOT_TIMED or not callable(getattr(contract, name, None)):
                continue
            method = getattr(backend, name, None)
            if callable(method):
                setattr(backend, name, _timed(method, holder, f"{group}.{name}"))
        setattr(backend, _INSTRUMENTED, holder)


def _contract(kind: str) -> type:
    return import_string(f"wsgicliquet.{kind}:{kind.capitalize()}")


class StatsdMetrics:
    """Send the request metrics of every response to StatsD; a pass-through without a client."""

    def __init__(self, app: Callable, *, url: Optional[str] = None, prefix: str = "wsgicliquet",
                 client: Any = None, backends: Optional[Mapping[str, Any]] = None,
                 flush_interval: float = 1.0) -> None:
        """``client``: a ``statsd.StatsClient`` (else built from ``url``); ``flush_interval``: seconds between
        sends of the aggregated metrics, 0 to send each response's metrics as it ends."""
        self.app = app
        self.client = client if client is not None else (make_client(url, prefix) if url else None)
        if flush_interval < 0:
            raise ConfigurationError(f"Setting 'statsd_flush_interval_seconds' has an invalid value "
                                     f"{flush_interval!r}: expected 0 or more seconds")
        self.sink: Optional[Sink] = None
        if self.client is not None:
            self.sink = _Aggregator(self.client, flush_interval) if flush_interval else _Immediate(self.client)
            for kind, backend in (backends or {}).items():
                if backend is not None:
                    instrument_backend(backend, kind, self.sink)

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "StatsdMetrics":
        url = settings.get("statsd_url")
        prefix = str(settings.get("project_name") or settings.get("statsd_prefix") or "")
        backends = {kind: load_backend(kind, settings) for kind in BACKEND_KINDS} if url else {}
        return cls(app, url=url, prefix=prefix, backends=backends,
                   flush_interval=settings.get("statsd_flush_interval_seconds", 1.0))

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.client is None:
            return self.app(environ, start_response)
        if keys.SUBREQUESTS not in environ:
            environ[keys.SUBREQUESTS] = []
        environ[keys.METRICS] = []
        response = _Measured(self, environ, time.perf_counter())
        try:
            response.result = self.app(environ, start_response)
        except BaseException:
            response.close()
            raise
        return response

    def _report(self, environ: Mapping[str, Any], method: str, elapsed_ms: float,
                timers: List[Tuple[str, float]]) -> None:
        """All metrics of one response (and of its batch sub-requests) to the sink."""
        counters: List[str] = []
        users: List[str] = []
        try:
            _count(counters, users, environ, method)
            for entry in list(environ.get(keys.SUBREQUESTS) or ()):
                sub_environ = entry.get("environ") or {}
                _count(counters, users, sub_environ, str(sub_environ.get("REQUEST_METHOD", "")))
            for kind, name, value in list(environ.get(keys.METRICS) or ()):
                if kind == "c":
                    counters.append(_metric_name(str(name)))
                else:
                    timers.append((_metric_name(str(name)), float(value)))
            timers.append(("request", elapsed_ms))
            self.sink.add(counters, users, timers)
        except Exception:  # metrics never break a response
            pass


class _Measured(ClosingResponse):
    """The app's response iterable; ``close()`` (called by the server once the body is sent) sends the metrics."""

    __slots__ = ("_layer", "_environ", "_method", "_started", "_pending", "_token")

    def __init__(self, layer: StatsdMetrics, environ: Dict[str, Any], started: float) -> None:
        super().__init__()
        self._layer = layer
        self._environ = environ
        self._method = str(environ.get("REQUEST_METHOD", ""))
        self._started = started
        self._pending = _Pending(layer.sink)
        self._token = _pending.set(self._pending)

    def finish(self, failed: bool) -> None:
        pending = self._pending
        pending.open = False
        try:
            _pending.reset(self._token)
        except ValueError:  # closed from another context than the one that called the app
            pass
        self._layer._report(self._environ, self._method, (time.perf_counter() - self._started) * 1000,
                            pending.timers)


def _count(counters: List[str], users: List[str], environ: Mapping[str, Any], method: str) -> None:
    counters.append(_view_metric(str(environ.get(keys.VIEW) or "unmatched"), method))
    policy = environ.get(keys.AUTHN_TYPE)
    if policy:
        counters.append(_authn_metric(str(policy)))
    userid = environ.get(keys.USERID)
    if userid:
        users.append(_user_value(str(userid)))


filter_factory = make_filter_factory(StatsdMetrics)

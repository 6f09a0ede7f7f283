"""StatsD metrics of PROTOCOL.md §14: per view counters, authentication types, unique users, timers.

Use it outermost (next to the request log) so that it times the whole response, body included, and counts every
request, unmatched URLs and redirects included (they count as view ``unmatched``, never an error: §21.16).
Per response, in one UDP packet:

* ``view.<view>.<METHOD>`` counter, where ``<view>`` is ``environ["wsgicliquet.view"]`` or ``unmatched``;
* ``authn_type.<policy>`` counter and the ``users`` set, for authenticated requests;
* ``request`` timer (milliseconds, until the server closes the response);
* the same counters for each batch sub-request (from ``environ["wsgicliquet.subrequests"]``).

Backend timers ``storage.<class>.<method>``, ``cache.<class>.<method>``, ``permission.<class>.<method>`` come
from wrapping each public method of the shared backend instances once, when the middleware is built.  Those
measured while a request runs are held (in a context variable) and go out in the packet of that request; calls made
outside any request are sent at once.

Settings: ``statsd_url`` (``udp://host:8125``; unset: pass-through), ``project_name`` (prefix) else
``statsd_prefix``.  Metrics go over UDP and every error is swallowed, so an absent StatsD server never slows or
fails a request.  Needs ``pip install 'wsgicliquet[monitoring]'``.
"""
from __future__ import annotations

import contextvars
import functools
import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from wsgicliquet import environ as keys
from wsgicliquet.backends import import_string, load_backend, missing_extra
from wsgicliquet.middleware import ClosingResponse
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import StartResponse

__all__ = ["StatsdMetrics", "instrument_backend", "make_client", "filter_factory"]

BACKEND_KINDS = ("storage", "cache", "permission")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_INSTRUMENTED = "_wsgicliquet_statsd"
# Contract methods that are not timed: the constructor, and transaction() (a context manager: the call is instant).
_NOT_TIMED = {"from_settings", "transaction"}
_instrument_lock = threading.Lock()


def _safe(part: str) -> str:
    """A metric name part: the StatsD line format reserves ``:|@.`` and newlines."""
    return _UNSAFE.sub("_", part) or "_"


@functools.lru_cache(maxsize=4096)
def _view_metric(view: str, method: str) -> str:
    return f"view.{_safe(view)}.{_safe(method.upper())}"


@functools.lru_cache(maxsize=256)
def _authn_metric(policy: str) -> str:
    return f"authn_type.{_safe(policy)}"


def make_client(url: str, prefix: str) -> Any:
    """A ``statsd.StatsClient`` for ``udp://host[:port]``; a bad URL or unknown host is a start-up error."""
    try:
        import statsd
    except ImportError:  # pragma: no cover - depends on the installation
        raise missing_extra("monitoring", "statsd") from None
    parts = urlsplit(url)
    try:
        port = parts.port or 8125
    except ValueError as exc:
        raise ConfigurationError(f"Setting 'statsd_url' has an invalid value {url!r}: {exc}") from None
    if parts.scheme != "udp" or not parts.hostname:
        raise ConfigurationError(f"Setting 'statsd_url' has an invalid value {url!r}: expected udp://host:port")
    try:
        return statsd.StatsClient(parts.hostname, port, prefix=prefix or None)
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"Setting 'statsd_url' has an invalid value {url!r}: {exc}") from None


class _Holder:
    """The client an instrumented backend reports to; rebuilding a pipeline points it at the new client."""

    __slots__ = ("client",)

    def __init__(self, client: Any) -> None:
        self.client = client


class _Pending:
    """The backend timers measured during one request, sent with its metrics by ``client``."""

    __slots__ = ("client", "timers", "open")

    def __init__(self, client: Any) -> None:
        self.client = client
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
            if pending is not None and pending.open and pending.client is holder.client:
                pending.timers.append((name, elapsed_ms))
            else:
                try:
                    holder.client.timing(name, elapsed_ms)
                except Exception:
                    pass
    return timed


def instrument_backend(backend: Any, kind: str, client: Any) -> None:
    """Time every public method of ``kind``'s contract on this instance, as ``<kind>.<class>.<method>``.

    Done once per instance (the backends are shared per process); instrumenting again only changes the client.
    """
    with _instrument_lock:
        holder = getattr(backend, _INSTRUMENTED, None)
        if isinstance(holder, _Holder):
            holder.client = client
            return
        holder = _Holder(client)
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
                 client: Any = None, backends: Optional[Mapping[str, Any]] = None) -> None:
        self.app = app
        self.client = client if client is not None else (make_client(url, prefix) if url else None)
        if self.client is not None:
            for kind, backend in (backends or {}).items():
                if backend is not None:
                    instrument_backend(backend, kind, self.client)

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "StatsdMetrics":
        url = settings.get("statsd_url")
        prefix = str(settings.get("project_name") or settings.get("statsd_prefix") or "")
        backends = {kind: load_backend(kind, settings) for kind in BACKEND_KINDS} if url else {}
        return cls(app, url=url, prefix=prefix, backends=backends)

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.client is None:
            return self.app(environ, start_response)
        if keys.SUBREQUESTS not in environ:
            environ[keys.SUBREQUESTS] = []
        response = _Measured(self, environ, time.perf_counter())
        try:
            response.result = self.app(environ, start_response)
        except BaseException:
            response.close()
            raise
        return response

    def _send(self, environ: Mapping[str, Any], method: str, elapsed_ms: float,
              timers: Sequence[Tuple[str, float]] = ()) -> None:
        """All metrics of one response in one packet (a pipeline is per request, so no sharing across threads)."""
        try:
            pipe = self.client.pipeline()
            for name, backend_ms in timers:
                pipe.timing(name, backend_ms)
            _count(pipe, environ, method)
            for entry in list(environ.get(keys.SUBREQUESTS) or ()):
                sub_environ = entry.get("environ") or {}
                _count(pipe, sub_environ, str(sub_environ.get("REQUEST_METHOD", "")))
            pipe.timing("request", elapsed_ms)
            pipe.send()
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
        self._pending = _Pending(layer.client)
        self._token = _pending.set(self._pending)

    def finish(self, failed: bool) -> None:
        pending = self._pending
        pending.open = False
        try:
            _pending.reset(self._token)
        except ValueError:  # closed from another context than the one that called the app
            pass
        self._layer._send(self._environ, self._method, (time.perf_counter() - self._started) * 1000,
                          pending.timers)


def _count(pipe: Any, environ: Mapping[str, Any], method: str) -> None:
    pipe.incr(_view_metric(str(environ.get(keys.VIEW) or "unmatched"), method))
    policy = environ.get(keys.AUTHN_TYPE)
    if policy:
        pipe.incr(_authn_metric(str(policy)))
    userid = environ.get(keys.USERID)
    if userid:
        pipe.set("users", _UNSAFE.sub("_", str(userid)))


filter_factory = make_filter_factory(StatsdMetrics)

"""Health endpoints for load balancers and monitors (PROTOCOL.md §1.5-§1.7, Dockerflow).

* ``GET /__heartbeat__``: runs every check at once, in a thread pool, within ``timeout`` seconds; answers ``200``
  when all are true (or ``null``: not applicable) and ``503`` otherwise, with the mapping ``{name: result}`` as body
  either way.  A check that raises or does not answer in time counts as ``false``.
* ``GET /__lbheartbeat__``: always ``200 {}``; says "this process serves requests" without touching backends.
* ``GET /__version__``: the JSON file ``version_json_path`` (relative to the working directory), written at deploy
  time; ``404`` errno 111 when it is missing or not a JSON object.

Every other path goes to the wrapped app.  The version prefix middleware also routes the unprefixed Dockerflow paths
here.  ``from_settings`` checks the configured storage, cache and permission backends (their ``ping``, read-only
probes in read-only mode) plus the checks registered with :func:`add_check`::

    from wsgicliquet.middleware.heartbeat import add_check
    add_check("oauth", lambda: requests.get(OAUTH_URL, timeout=2).ok)

A check that never returns keeps a pool thread busy (and the interpreter waits for it at exit): give checks that
do network calls their own timeout too.  While a check is still running, later heartbeats wait for that same run
(and report ``false`` if it is still not done) rather than queueing new runs behind it, so a hung backend never
piles up work for the moment it comes back.

Settings: ``heartbeat_timeout_seconds``, ``version_json_path``, ``readonly``, the backend URLs.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Union

from wsgicliquet import environ as keys
from wsgicliquet.backends import load_backend
from wsgicliquet.errors import ERRORS, JSON_CONTENT_TYPE, HTTPError
from wsgicliquet.middleware import answer_options
from wsgicliquet.middleware.batch import BATCH_PATH
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import WSGIApp

__all__ = ["Heartbeat", "filter_factory", "add_check", "CHECKS"]

logger = logging.getLogger(__name__)

Check = Callable[[], Optional[bool]]
CheckOrBackend = Union[Check, Any]  # a callable, or a backend with ``ping(readonly=...)``

CHECKS: Dict[str, Check] = {}
"""Checks registered with :func:`add_check`; every Heartbeat built by ``from_settings`` runs them."""

_ALLOWED = "GET, HEAD, OPTIONS"
_VIEWS = {"/__heartbeat__": "heartbeat", "/__lbheartbeat__": "lbheartbeat", "/__version__": "version"}


def add_check(name: str, check: Check) -> None:
    """Run ``check`` (no argument, returns true, false or None) in the heartbeat of every pipeline built afterwards."""
    if name in CHECKS:
        raise ConfigurationError(f"The heartbeat check {name!r} is already registered")
    CHECKS[name] = check


def _json_response(start_response: Callable[..., Any], status: str, body: Any, method: str) -> Iterable[bytes]:
    payload = json.dumps(body).encode("utf-8")
    start_response(status, [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(payload)))])
    return [b""] if method == "HEAD" else [payload]


class Heartbeat:
    """Serve ``__heartbeat__``, ``__lbheartbeat__`` and ``__version__``; pass every other path through."""

    def __init__(self, app: WSGIApp, *, checks: Optional[Mapping[str, CheckOrBackend]] = None,
                 timeout: float = 10.0, version_json_path: str = "version.json", readonly: bool = False) -> None:
        if timeout <= 0:
            raise ConfigurationError(f"Setting 'heartbeat_timeout_seconds' must be positive, not {timeout!r}")
        self.app = app
        self._batch_views: Dict[str, WSGIApp] = dict.fromkeys(_VIEWS, self)
        self.timeout = timeout
        self.version_json_path = version_json_path
        self.readonly = readonly
        self.checks: Dict[str, Check] = {}
        for name, check in (checks or {}).items():
            self.checks[name] = self._as_check(name, check)
        # Created once; its threads start on the first heartbeat (after any fork of the server).
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, 2 * len(self.checks)), thread_name_prefix="wsgicliquet-heartbeat")
        # The run of each check still going on: a heartbeat joins it instead of queueing another behind it.
        self._running: Dict[str, concurrent.futures.Future] = {}
        self._lock = threading.Lock()

    def _as_check(self, name: str, check: CheckOrBackend) -> Check:
        ping = getattr(check, "ping", None)
        if ping is not None and callable(ping):
            return lambda: ping(readonly=self.readonly)
        if not callable(check):
            raise ConfigurationError(f"The heartbeat check {name!r} is neither callable nor a backend")
        return check

    @classmethod
    def from_settings(cls, app: WSGIApp, settings: Mapping[str, Any]) -> "Heartbeat":
        checks: Dict[str, CheckOrBackend] = {}
        for kind in ("storage", "cache", "permission"):
            backend = load_backend(kind, settings)
            if backend is not None:
                checks[kind] = backend
        checks.update(CHECKS)
        return cls(app, checks=checks, timeout=settings["heartbeat_timeout_seconds"],
                   version_json_path=settings["version_json_path"], readonly=settings["readonly"])

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        view = _VIEWS.get(path)
        if view is None:
            if path == BATCH_PATH:  # a batch below may have sub-requests for these views
                views = environ.get(keys.BATCH_VIEWS)
                environ[keys.BATCH_VIEWS] = self._batch_views if views is None else {**views, **self._batch_views}
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "OPTIONS":  # CORS preflights ask which methods the endpoint has
            return answer_options(start_response, _ALLOWED)
        environ[keys.VIEW] = view
        if method not in ("GET", "HEAD"):
            return HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, headers=[("Allow", _ALLOWED)])(
                environ, start_response)
        if view == "lbheartbeat":
            return _json_response(start_response, "200 OK", {}, method)
        if view == "version":
            version = self._read_version()
            if version is None:
                return HTTPError(404, ERRORS.MISSING_RESOURCE)(environ, start_response)
            return _json_response(start_response, "200 OK", version, method)
        results = self.run_checks()
        healthy = all(value is None or value is True for value in results.values())
        if not healthy:
            environ[keys.NOT_AN_ERROR] = True  # the map of results is the answer, not an error to reformat
        return _json_response(start_response, "200 OK" if healthy else "503 Service Unavailable", results, method)

    def run_checks(self) -> Dict[str, Optional[bool]]:
        """Every check at once; a check that raises or is still running after ``timeout`` is ``False``."""
        futures = {}
        with self._lock:
            for name, check in self.checks.items():
                running = self._running.get(name)
                if running is None or running.done():
                    running = self._running[name] = self._pool.submit(check)
                futures[name] = running
        concurrent.futures.wait(futures.values(), timeout=self.timeout)
        results: Dict[str, Optional[bool]] = {}
        for name, future in futures.items():
            if not future.done():
                logger.warning("Heartbeat check %r timed out after %ss", name, self.timeout)
                results[name] = False
            elif future.exception() is not None:
                logger.error("Heartbeat check %r failed", name, exc_info=future.exception())
                results[name] = False
            else:
                value = future.result()
                results[name] = None if value is None else bool(value)
        return results

    def _read_version(self) -> Optional[Dict[str, Any]]:
        """The deployed ``version.json``, read per request (a redeploy rewrites it), or None."""
        try:
            with open(self.version_json_path, encoding="utf-8") as stream:
                version = json.load(stream)
        except (OSError, ValueError) as exc:
            logger.warning("Cannot serve __version__ from %r: %s", self.version_json_path, exc)
            return None
        if not isinstance(version, dict):
            logger.warning("Cannot serve __version__ from %r: not a JSON object", self.version_json_path)
            return None
        return version


filter_factory = make_filter_factory(Heartbeat)

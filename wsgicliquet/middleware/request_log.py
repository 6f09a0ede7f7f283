"""One ``request.summary`` log event per request, and one ``subrequest.summary`` per batch sub-request.

Use it outermost (above CORS, JSON errors and the version prefix) so that it sees the final status and the whole
duration, errors and redirects included.  The event is emitted when the server closes the response iterable, after
the body has been sent, so ``t`` is the real duration.  It also gives every request an id: ``X-Request-Id`` when
the client (or a proxy) sent a sensible one, else a new UUID; the id is echoed in the response and stored in
``environ["wsgicliquet.request_id"]`` for the layers below.

Fields (PROTOCOL.md §13.2): ``agent path method querystring lang uid authn_type errno code t time rid``, plus what
any layer put in ``environ["wsgicliquet.log"]`` (``collection_id``, ``nb_records``...).  The line is rendered by
the ``logging_renderer`` setting (``json``: mozlog, ``classic``: one readable line) and goes through the standard
logger ``request.summary``; destination and level come from the logging configuration.  Logging never breaks a
request.
"""
from __future__ import annotations

import logging
import re
import time
from time import perf_counter
from urllib.parse import parse_qsl
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from wsgicliquet import environ as keys
from wsgicliquet.backends import import_string
from wsgicliquet.ids import uuid4
from wsgicliquet.logs import EVENT_ATTR, FIELDS_ATTR, LOGGER_ATTR, RENDERERS
from wsgicliquet.middleware import ClosingResponse, status_code
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import StartResponse

__all__ = ["RequestLog", "summary_fields", "filter_factory"]

_logger = logging.getLogger(__name__)

# A client-supplied request id is kept only when it cannot forge log content.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Fields of the event that extra context from the environ never overrides.
_CORE = ("agent", "path", "method", "querystring", "lang", "uid", "authn_type", "errno", "code", "t", "time", "rid")


def _querystring(raw: str) -> Dict[str, Any]:
    """``{name: value}``; a repeated parameter keeps all its values as a list."""
    if not raw:
        return {}
    result: Dict[str, Any] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        if name in result:
            previous = result[name]
            result[name] = previous + [value] if isinstance(previous, list) else [previous, value]
        else:
            result[name] = value
    return result


def _decoded(text: Optional[str]) -> Optional[str]:
    """A path or header as text: WSGI gives one character per byte, the client sent UTF-8 (invalid bytes become
    U+FFFD, as in the querystring)."""
    if not text or text.isascii() or type(text) is not str:
        return text
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # already text (a caller's own path)
        return text


_second: Tuple[int, str] = (-1, "")  # the last second rendered, and its text


def local_iso(now: float) -> str:
    """``datetime.fromtimestamp(now).isoformat(timespec="microseconds")`` (truncated, not rounded, to the
    microsecond) for less: the date and time of day are rendered once a second, not once per request."""
    global _second
    second = int(now)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second)))
    return f"{cached[1]}.{int((now - second) * 1_000_000):06d}"


def summary_fields(environ: Mapping[str, Any], *, code: int, duration: float, path: Optional[str] = None,
                   request_id: Optional[str] = None) -> Dict[str, Any]:
    """The fields of a ``request.summary`` or ``subrequest.summary`` event (PROTOCOL.md §13.2).

    ``path`` is the full path as the request arrived (SCRIPT_NAME + PATH_INFO when omitted), logged decoded from
    UTF-8; ``duration`` is in seconds.  ``errno`` is only given for an error response (a layer may have turned an
    error into a redirect).  Extra context in ``environ["wsgicliquet.log"]`` is added without overriding these
    fields.
    """
    get = environ.get
    userid = get(keys.USERID)
    authn_type = get(keys.AUTHN_TYPE)
    query = get("QUERY_STRING")
    fields: Dict[str, Any] = {
        "agent": _decoded(get("HTTP_USER_AGENT")),
        "path": _decoded(path if path is not None else get("SCRIPT_NAME", "") + get("PATH_INFO", "")),
        "method": str(get("REQUEST_METHOD", "")).upper(),
        "querystring": _querystring(query) if query else {},
        "lang": _decoded(get("HTTP_ACCEPT_LANGUAGE")),
        "uid": str(userid).split(":", 1)[-1] if userid else None,
        "authn_type": authn_type if authn_type is None or type(authn_type) is str else str(authn_type),
        "errno": get(keys.ERRNO) if code >= 400 else None,
        "code": code,
        "t": int(duration * 1000),
        "time": local_iso(time.time()),
        "rid": request_id if request_id is not None else get(keys.REQUEST_ID),
    }
    extra = get(keys.LOG_CONTEXT)
    if extra and (type(extra) is dict or isinstance(extra, Mapping)):
        for key, value in extra.items():
            if key not in _CORE:
                fields[str(key)] = value
    return fields


class RequestLog:
    """Log a summary of every request and batch sub-request, and give each request an id."""

    def __init__(self, app: Callable, *, renderer: str = "json", project_name: str = "",
                 logger: str = "request.summary") -> None:
        self.app = app
        self.logger = logging.getLogger(logger)
        self.project_name = project_name or None
        self.formatter = _renderer(renderer, project_name)

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "RequestLog":
        """Also logs ``<project_name> <project_version> starting.`` at INFO, as Cliquet did at start-up (§15): one
        line that shows the logging (and a Sentry logging handler) is wired before any request comes."""
        layer = cls(app, renderer=str(settings.get("logging_renderer") or "json"),
                    project_name=str(settings.get("project_name") or ""))
        _logger.info("%s %s starting.", settings.get("project_name") or "wsgicliquet",
                     settings.get("project_version") or "")
        return layer

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        request_id = environ.get(keys.REQUEST_ID) or _request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ[keys.REQUEST_ID] = request_id
        if keys.SUBREQUESTS not in environ:
            environ[keys.SUBREQUESTS] = []
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")  # before the layers below change it
        response = _LoggedResponse(self, environ, path, request_id, start_response, started)
        try:
            response.result = self.app(environ, response.start_response)
        except BaseException:
            response.finish(True)
            raise
        return response

    def _emit(self, environ: Dict[str, Any], path: str, request_id: str, code: int, duration: float) -> None:
        """Sub-request events first (in order), then the request's own; failures are reported, never raised."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        try:
            for entry in list(environ.get(keys.SUBREQUESTS) or ()):
                sub_environ = entry.get("environ") or {}
                self._log("subrequest.summary", summary_fields(
                    sub_environ, code=int(entry.get("status") or 0), duration=float(entry.get("duration") or 0),
                    request_id=sub_environ.get(keys.REQUEST_ID) or request_id))
            self._log("request.summary", summary_fields(environ, code=code, duration=duration, path=path,
                                                        request_id=request_id))
        except Exception:
            try:
                _logger.exception("Could not log the summary of %s", path)
            except Exception:  # a handler that raises (logging's own handlers never do)
                pass

    def _log(self, event: str, fields: Dict[str, Any]) -> None:
        record = self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0, event, (), None)
        # What extra= adds, without its check of each name against the record's (these never clash).
        record.__dict__.update({EVENT_ATTR: event, FIELDS_ATTR: fields, LOGGER_ATTR: self.project_name})
        try:
            record.msg = self.formatter.format(record)
        except Exception:
            record.msg = f"{event} {fields!r}"
        self.logger.handle(record)


def _renderer(renderer: str, project_name: str) -> logging.Formatter:
    """The formatter that renders the message of each event, from the ``logging_renderer`` setting."""
    choice = RENDERERS.get(renderer)
    if choice is None:
        if ":" not in renderer and "." not in renderer:
            raise ConfigurationError(f"Setting 'logging_renderer' has an invalid value {renderer!r}: "
                                     f"expected one of {', '.join(RENDERERS)} or a module:Formatter path")
        choice = import_string(renderer, "logging_renderer")
    if not (isinstance(choice, type) and issubclass(choice, logging.Formatter)):
        raise ConfigurationError(f"Setting 'logging_renderer' has an invalid value {renderer!r}: "
                                 "not a logging.Formatter class")
    if issubclass(choice, RENDERERS["json"]):
        return choice(logger_name=project_name or None)
    return choice()


def _request_id(header: Optional[str]) -> str:
    if header and _REQUEST_ID.match(header):
        return header
    return uuid4()


def _without_request_id(headers: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """A copy of ``headers`` without the app's own ``X-Request-Id``."""
    for name, _ in headers:
        if len(name) == 12 and name.lower() == "x-request-id":
            return [(name, value) for name, value in headers if name.lower() != "x-request-id"]
    return list(headers)


class _LoggedResponse(ClosingResponse):
    """One request: wraps ``start_response`` to echo the id, and the app's response iterable, whose ``close()``
    (called by the server once the body is sent) logs."""

    __slots__ = ("_layer", "_environ", "_path", "_request_id", "_start_response", "_started", "_code", "_iterator")

    def __init__(self, layer: RequestLog, environ: Dict[str, Any], path: str, request_id: str,
                 start_response: StartResponse, started: float) -> None:
        super().__init__()
        self._layer = layer
        self._environ = environ
        self._path = path
        self._request_id = request_id
        self._start_response = start_response
        self._started = started
        self._code: Optional[int] = None
        self._iterator: Optional[Iterator[bytes]] = None

    def start_response(self, status_line: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
        self._code = status_code(status_line)
        headers = _without_request_id(headers)
        headers.append(("X-Request-Id", self._request_id))
        return self._start_response(status_line, headers, exc_info)

    def finish(self, failed: bool) -> None:
        code = 500 if failed or self._code is None else self._code
        self._layer._emit(self._environ, self._path, self._request_id, code, perf_counter() - self._started)

    def __iter__(self) -> Iterator[bytes]:
        if type(self.result) is list:  # iterating a list cannot fail: no need to watch each chunk
            return iter(self.result)
        self._iterator = iter(self.result)
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._iterator)  # type: ignore[arg-type]
        except StopIteration:
            raise
        except BaseException:
            self._failed = True
            raise


filter_factory = make_filter_factory(RequestLog)

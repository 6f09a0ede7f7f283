"""Batch: ``POST /batch`` runs several requests in one round trip (PROTOCOL.md §8).

Use it below the version prefix (so that it answers ``/v1/batch``: ``SCRIPT_NAME=/v1``, ``PATH_INFO=/batch``) and
above authentication, read-only mode and the apps, as ``build_pipeline`` does.  Each sub-request is a copy of the
batch request's environ (headers, ``Authorization`` above all, host, scheme and script name) with its own method,
path, query, headers and body, run through the wrapped app, so it is authenticated, checked and handled by every
layer below exactly as if it had been sent alone.  That works for any WSGI app below: the resource app, a Flask or a
Bottle view, or all of them mounted side by side.

A 4xx sub-response is embedded in the answer and the batch goes on; a 5xx aborts the batch, whose response is then
that error (so a transaction middleware above rolls the whole batch back).  An exception raised by the app (other
than an :class:`~wsgicliquet.errors.HTTPError`) propagates, for the error layers above to report and convert.
The sub-requests share one queue of resource events (:mod:`wsgicliquet.events`), so that a batch of 25 creations is
one event; it is notified when the batch ends, unless a transaction layer above notifies it around its commit.

Do not use it above layers that must run once per client request (request log, StatsD, CORS, end of life): they
stay outside; the sub-requests are listed in the environ (``wsgicliquet.subrequests``) for logging instead.
Settings: ``batch_max_requests`` (default 25, empty or 0 for no limit), ``batch_max_body_size`` (bytes, 413 above),
``trailing_slash_redirect_enabled`` (a sub-request ending with ``/`` that gets a 404 is retried without the slash, as
the version prefix layer above would redirect it).
"""
from __future__ import annotations

import logging
import math
import re
import time
from io import BytesIO
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import quote, unquote_to_bytes, urlsplit

from webob import Request

from wsgicliquet import environ as keys, jsonio
from wsgicliquet.errors import ERRORS, JSON_CONTENT_TYPE, HTTPError, invalid, validation_error
from wsgicliquet.events import EventQueue, request_queue
from wsgicliquet.middleware import answer_options, collect, read_body, status_code
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError

__all__ = ["Batch", "filter_factory", "METHODS"]

logger = logging.getLogger(__name__)

BATCH_PATH = "/batch"
METHODS = ("GET", "HEAD", "DELETE", "TRACE", "POST", "PUT", "PATCH")
"""The methods a sub-request may use, upper case only (§8.1)."""

_ALLOWED = "POST, OPTIONS"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Batch environ keys a sub-request must not inherit: its own body framing, and what the layers below compute anew.
_NOT_INHERITED = frozenset({
    "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_TRANSFER_ENCODING", "HTTP_EXPECT", "REQUEST_URI", "RAW_URI",
    "wsgi.input_terminated", keys.USERID, keys.PRINCIPALS, keys.AUTHN_TYPE, keys.VIEW, keys.ERRNO,
    keys.SUBREQUESTS, keys.LOG_CONTEXT, keys.PARENT_REQUEST,
})
# Environ keys of what the front server and the batch request decide, which a sub-request's headers cannot replace:
# its body framing (given by its ``body``), the host the batch was routed by, the client address and scheme a proxy
# vouches for (an app below behind ``ProxyFix`` would trust them), and the origin the CORS layer above judged.
_PINNED = frozenset({"CONTENT_LENGTH", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "HTTP_HOST", "HTTP_FORWARDED",
                     "HTTP_X_REAL_IP", "HTTP_ORIGIN"})
_PINNED_PREFIXES = ("HTTP_X_FORWARDED_", "HTTP_SEC_FETCH_")


class _SubRequest(NamedTuple):
    """One validated request of the batch, defaults merged in."""

    method: str
    path: str
    headers: Dict[str, str]
    body: Optional[bytes]


class Batch:
    """Serve ``POST /batch``; pass every other path straight to ``app``."""

    def __init__(self, app: Callable, *, max_requests: Optional[int] = 25,
                 max_body_size: int = 10 * 1024 * 1024, trailing_slash_redirect: bool = False) -> None:
        if max_requests is not None and (isinstance(max_requests, bool) or not isinstance(max_requests, int)
                                         or max_requests <= 0):
            raise ConfigurationError(
                f"Setting 'batch_max_requests' has an invalid value {max_requests!r}: expected a positive integer "
                "or nothing for no limit")
        if isinstance(max_body_size, bool) or not isinstance(max_body_size, int) or max_body_size <= 0:
            raise ConfigurationError(
                f"Setting 'batch_max_body_size' has an invalid value {max_body_size!r}: expected a positive number "
                "of bytes")
        self.app = app
        self.max_requests = max_requests
        self.max_body_size = max_body_size
        self.trailing_slash_redirect = bool(trailing_slash_redirect)

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "Batch":
        return cls(app, max_requests=settings["batch_max_requests"], max_body_size=settings["batch_max_body_size"],
                   trailing_slash_redirect=settings["trailing_slash_redirect_enabled"])

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != BATCH_PATH:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method == "OPTIONS":  # as every endpoint: what CORS preflights and clients ask
            return answer_options(start_response, _ALLOWED)
        environ[keys.VIEW] = "batch"
        try:
            if method != "POST":
                raise HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, headers=[("Allow", _ALLOWED)])
            _check_content_type(environ)
            requests = _parse(read_body(environ, self.max_body_size), self.max_requests)
        except HTTPError as error:
            return error(environ, start_response)

        log = environ.get(keys.LOG_CONTEXT)
        if not isinstance(log, dict):
            log = environ[keys.LOG_CONTEXT] = {}
        log["batch_size"] = len(requests)
        subrequests = environ.setdefault(keys.SUBREQUESTS, [])
        events = request_queue(environ)  # shared by the sub-requests; notified here unless a layer above does
        try:
            return self._serve(environ, start_response, requests, subrequests, events)
        finally:
            if events is not None:
                events.discard()

    def _serve(self, environ: Dict[str, Any], start_response: Callable, requests: List["_SubRequest"],
               subrequests: List[Dict[str, Any]], events: Optional[EventQueue]) -> Iterable[bytes]:
        inherited = _inherited(environ)
        decorators = environ.get(keys.SUBRESPONSE_HEADERS) or ()  # what the layers above add to a direct call
        responses: List[Dict[str, Any]] = []
        bodies: List[bytes] = []
        for request in requests:
            status_line, headers, body, sub_environ, path = self._run(environ, inherited, request, subrequests)
            status = status_code(status_line)
            if status >= 500 and not sub_environ.get(keys.NOT_AN_ERROR):  # a report (a failing heartbeat) is an entry
                if events:  # no transaction above to undo the writes already done: they stay, so they are announced
                    _announce(events)
                if keys.ERRNO in sub_environ:
                    environ[keys.ERRNO] = sub_environ[keys.ERRNO]
                headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
                start_response(status_line, headers + [("Content-Length", str(len(body)))])
                return [body]
            for decorate in decorators:
                headers = decorate(headers)
            responses.append({
                "status": status,
                "path": path,
                "headers": _header_dict(headers),
                "body": "" if request.method == "HEAD" else _decode(body),
            })
            bodies.append(body)
        if events:  # no transaction layer above: the writes are done, notify them now
            try:
                events.notify()
            except HTTPError as error:
                return error(environ, start_response)
        try:
            payload = jsonio.dumps({"responses": responses})
        except ValueError:  # a body escaped a lone surrogate (no UTF-8 form): embed that one as its text
            for response, body in zip(responses, bodies):
                if not _encodable(response["body"]):
                    response["body"] = body.decode("utf-8", "replace")
            payload = jsonio.dumps({"responses": responses})
        start_response("200 OK", [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(payload)))])
        return [payload]

    def _run(self, environ: Dict[str, Any], inherited: Dict[str, Any], request: _SubRequest,
             subrequests: List[Dict[str, Any]]) -> Tuple[str, List[Tuple[str, str]], bytes, Dict[str, Any], str]:
        """Run one sub-request (following one redirect) and record it for logging."""
        started = time.perf_counter()
        failed = "500 Internal Server Error"
        status = failed
        sub_environ, path = _sub_environ(environ, inherited, request, request.path)
        path_info, query = sub_environ["PATH_INFO"], sub_environ["QUERY_STRING"]
        views = environ.get(keys.BATCH_VIEWS)
        try:
            status, headers, body = _call(views.get(path_info, self.app) if views else self.app, sub_environ)
            location = _redirect_target(status, headers, environ)
            if location is None and self.trailing_slash_redirect:
                location = _without_trailing_slash(status, environ, path_info, query)
            if location is not None:
                status = failed
                sub_environ, path = _sub_environ(environ, inherited, request, location)
                status, headers, body = _call(self.app, sub_environ)
        finally:
            subrequests.append({"environ": sub_environ, "status": status_code(status),
                                "duration": time.perf_counter() - started})
        return status, headers, body, sub_environ, path


def _announce(events: EventQueue) -> None:
    """Notify the events of the writes a failed batch did and cannot undo; the batch answers its error whatever a
    subscriber does (a refusal cannot undo them either)."""
    try:
        events.notify()
    except Exception:
        logger.exception("A subscriber refused the changes of a failed batch, which stay")


def _check_content_type(environ: Dict[str, Any]) -> None:
    """415 unless the body is declared as JSON, as for every write (PROTOCOL.md §3.1).  A browser sends a
    ``text/plain`` or form POST to another site without asking it first (no preflight), with the Basic credentials
    it remembers for that site: such a body must never run the batch's writes (cross-site request forgery)."""
    media = (environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and (media or environ.get("CONTENT_LENGTH") not in (None, "", "0")
                                       or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
        raise validation_error([{"location": "header", "name": "Content-Type",
                                 "description": "Content-Type header should be one of ['application/json']"}],
                               code=415)


def _parse(raw: bytes, max_requests: Optional[int]) -> List[_SubRequest]:
    """Validate the batch body (§8.1) and build the sub-requests; any problem is a 400 before anything runs."""
    try:
        payload = jsonio.loads(raw)
        _check_values(payload, strings=b"\\u" in raw)
    except (ValueError, RecursionError) as exc:
        raise validation_error([
            {"location": "body", "name": None, "description": f"Invalid JSON request body: {exc}"},
            {"location": "body", "name": "requests", "description": "requests is missing"},
        ])
    if not isinstance(payload, dict):
        raise invalid("body", None, _not_mapping(payload))
    requests = payload.get("requests")
    if requests is None:
        raise invalid("body", "requests", "requests is missing")
    if not isinstance(requests, list):
        raise invalid("body", "requests", f'"{_show(requests)}" is not iterable')
    if max_requests is not None and len(requests) > max_requests:
        raise invalid("body", "requests", f"Number of requests is limited to {max_requests}")

    problems: List[Dict[str, Any]] = []
    defaults = payload.get("defaults")
    if defaults is not None:
        _check(defaults, "defaults", problems, path_required=False)
    try:
        merged = [_merge(dict(item), defaults) if isinstance(item, dict) and isinstance(defaults, dict) else item
                  for item in requests]
        for index, item in enumerate(merged):
            _check(item, f"requests.{index}", problems, path_required=True)
        if problems:
            raise validation_error(problems)
        if any(BATCH_PATH in item["path"] for item in merged):
            raise invalid("body", "requests", "Recursive call on /batch endpoint is forbidden.")
        return [_SubRequest(method=item.get("method") or "GET", path=item["path"],
                            headers=dict(item.get("headers") or {}),
                            body=None if item.get("body") is None else jsonio.dumps(item["body"]))
                for item in merged]
    except RecursionError:
        raise invalid("body", None, "Invalid JSON request body: nested too deeply")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_values(payload: Any, *, strings: bool) -> None:
    """Refuse (``ValueError``) what no sub-request could carry as it was sent, as the resource app refuses it in a
    body: a number out of range (parsed as infinity, it would be re-serialized as ``null``) and, when ``strings``
    (the body has a ``\\u`` escape), a lone surrogate, which has no UTF-8 form (in a path, header or body)."""
    stack = [payload]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            if strings and any(_SURROGATE.search(key) for key in value):
                raise ValueError("invalid unicode escape (lone surrogate)")
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
        elif kind is float:
            if not math.isfinite(value):
                raise ValueError("number out of range")
        elif kind is str and strings and _SURROGATE.search(value):
            raise ValueError("invalid unicode escape (lone surrogate)")


def _merge(request: Dict[str, Any], defaults: Mapping[str, Any], *, top: bool = True) -> Dict[str, Any]:
    """Add the defaults to ``request`` deeply, never overriding a key it has (§8.1).  Header names are compared
    without case, so that a request's ``authorization`` is not overridden by a default ``Authorization``."""
    for key, value in defaults.items():
        if key not in request or request[key] is None:
            request[key] = value
        elif top and key == "headers" and isinstance(value, dict) and isinstance(request[key], dict):
            given = {name.lower() for name in request[key]}
            request[key] = {**{name: text for name, text in value.items() if name.lower() not in given},
                            **request[key]}
        elif isinstance(value, dict) and isinstance(request[key], dict):
            request[key] = _merge(dict(request[key]), value, top=False)
    return request


def _check(item: Any, name: str, problems: List[Dict[str, Any]], *, path_required: bool) -> None:
    """Append the problems of one request (or of ``defaults``) with the messages of §8.1."""
    def problem(field: str, description: str) -> None:
        problems.append({"location": "body", "name": f"{name}.{field}" if field else name,
                         "description": description})

    if not isinstance(item, dict):
        problem("", _not_mapping(item))
        return
    path = item.get("path")
    if path is None:
        if path_required:
            problem("path", f"{name}.path is missing")
    elif not isinstance(path, str):
        problem("path", f'"{_show(path)}" is not a string')
    elif not path.startswith("/"):
        problem("path", "String does not match expected pattern")
    method = item.get("method")
    if method is not None and method not in METHODS:
        problem("method", f'"{_show(method)}" is not one of {", ".join(METHODS)}')
    headers = item.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            problem("headers", _not_mapping(headers))
        elif not all(isinstance(value, str) for value in headers.values()):
            problem("headers", f"{_show(headers)} contains non string value")
    body = item.get("body")
    if body is not None and not isinstance(body, dict):
        problem("body", _not_mapping(body))


def _not_mapping(value: Any) -> str:
    return f'"{_show(value)}" is not a mapping type: Does not implement dict-like functionality.'


def _show(value: Any, limit: int = 80) -> str:
    """The value as the messages quote it, shortened: a 10 MB body must not come back in the error."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _inherited(environ: Dict[str, Any]) -> Dict[str, Any]:
    """What every sub-request copies from the batch environ (computed once per batch)."""
    return {key: value for key, value in environ.items()
            if key not in _NOT_INHERITED and not key.startswith("webob.")}


def _sub_environ(environ: Dict[str, Any], inherited: Dict[str, Any], request: _SubRequest,
                 target: str) -> Tuple[Dict[str, Any], str]:
    """A copy of the batch environ turned into the sub-request for ``target`` (a path, maybe with a query).

    Returns it with the URL-decoded path it is sent to (script name included, query string excluded).
    """
    sub = dict(inherited)
    sub[keys.PARENT_REQUEST] = environ
    sub[keys.LOG_CONTEXT] = {}
    path, _, query = target.partition("?")
    script_name = environ.get("SCRIPT_NAME", "")
    prefixes = [script_name, environ.get(keys.API_PREFIX) or ""]
    for prefix in prefixes:
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix):]
            break
    sub["REQUEST_METHOD"] = request.method
    sub["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")  # WSGI: the UTF-8 bytes, one char per byte
    sub["QUERY_STRING"] = quote(query, safe="!$&'()*+,/:;=?@[]~%")
    if request.headers:
        Request(sub).headers.update({name: value for name, value in request.headers.items() if _settable(name)})
    body = request.body or b""
    if request.body is not None:
        sub["CONTENT_TYPE"] = "application/json; charset=utf-8"
        sub["CONTENT_LENGTH"] = str(len(body))
    sub["wsgi.input"] = BytesIO(body)
    served = (script_name + sub["PATH_INFO"]).encode("latin-1").decode("utf-8", "replace")
    return sub, served


def _settable(name: str) -> bool:
    """Whether a sub-request header may be set, judged by the environ key it lands in (``X_Forwarded_For`` and
    ``X-Forwarded-For`` are both ``HTTP_X_FORWARDED_FOR``)."""
    key = name.upper().replace("-", "_")
    key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
    return key not in _PINNED and not key.startswith(_PINNED_PREFIXES)


def _call(app: Callable, environ: Dict[str, Any]) -> Tuple[str, List[Tuple[str, str]], bytes]:
    """Run ``app`` on the sub-request and collect its whole response (an HTTPError raised below is a response)."""
    try:
        status, headers, body, exc_info = collect(app, environ)
    except HTTPError as error:
        status, headers, body, exc_info = collect(error, environ)
    if exc_info is not None:  # an error after the response had started: the layers above the batch report it
        raise exc_info[1].with_traceback(exc_info[2])
    return status, headers, body


def _redirect_target(status: str, headers: List[Tuple[str, str]], environ: Dict[str, Any]) -> Optional[str]:
    """The path (and query) to follow a redirect to, when it stays on this host under the batch's script name."""
    if status_code(status) not in _REDIRECTS:
        return None
    location = next((value for name, value in headers if name.lower() == "location"), None)
    if not location:
        return None
    parts = urlsplit(location)
    if parts.netloc and parts.hostname != urlsplit("//" + Request(environ).host).hostname:
        return None
    script_name = environ.get("SCRIPT_NAME", "")
    if script_name and not (parts.path == script_name or parts.path.startswith(script_name + "/")):
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _without_trailing_slash(status: str, environ: Dict[str, Any], path_info: str, query: str) -> Optional[str]:
    """Where the version prefix layer would redirect a 404 ending with ``/`` (§1.3): it sits above the batch."""
    stripped = path_info.rstrip("/")
    if status_code(status) != 404 or stripped == path_info or not stripped:
        return None
    target = environ.get("SCRIPT_NAME", "") + stripped
    return quote(target.encode("latin-1"), safe="/") + (f"?{query}" if query else "")


def _header_dict(headers: List[Tuple[str, str]]) -> Dict[str, str]:
    result: Dict[str, str] = {}
    for name, value in headers:
        result[name] = f"{result[name]}, {value}" if name in result else value
    return result


def _encodable(value: Any) -> bool:
    try:
        jsonio.dumps(value)
    except ValueError:
        return False
    return True


def _decode(body: bytes) -> Any:
    """The parsed JSON of a sub-response, or its text when it is not JSON (an HTML 404 page, say)."""
    try:
        return jsonio.loads(body)  # refuses NaN, which would make the batch answer invalid JSON
    except ValueError:
        return body.decode("utf-8", "replace")


filter_factory = make_filter_factory(Batch)

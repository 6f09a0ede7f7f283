"""Give every error of an API the uniform JSON body of PROTOCOL.md §7, whatever produced it.

Use it around any WSGI app that serves an API (the resource app, a Flask or Bottle app, a bare callable):

- an exception escaping the app becomes ``500`` errno 999 with ``info`` (the traceback goes to the log at error
  level, never to the client); a :class:`~wsgicliquet.storage.exceptions.BackendError` becomes ``503`` errno 201
  (logged at critical); a raised :class:`~wsgicliquet.errors.HTTPError` becomes its own response; with the Sentry
  middleware above, both 500 and 503 exceptions are reported to it (``environ["wsgicliquet.report_exception"]``);
- the app's own non-JSON 4xx/5xx (Flask's and Bottle's HTML 404, 405, 500...) are rewritten into the uniform body,
  with the errno of the status, keeping ``Allow``, ``WWW-Authenticate`` and the other non-entity headers; error
  bodies already in the uniform format pass untouched, labelled ``application/json; charset=UTF-8``;
- every 503 and 429 it lets out carries ``Retry-After``.

Only error responses are held back and read (they are small); 2xx and 3xx bodies stream through, and only their
first chunk is read ahead, so that an exception raised when the body starts still becomes a clean 500.

Which paths: the prefixes in ``paths`` (``from_settings``: setting ``json_errors_paths``, by default the API prefix
``/vN`` and the Dockerflow root endpoints), plus any request routed by the version prefix middleware (so ``/v1``
and ``/v2`` side by side are both governed).  Outside them the middleware is transparent: an existing web app keeps
its HTML error pages, and an exception propagates to the server (or to a debugger wrapped around the pipeline)
exactly as without the middleware.  A raised ``HTTPError`` is a response on every path.
"""
from __future__ import annotations

import itertools
import json
import logging
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from wsgicliquet import environ as keys
from wsgicliquet.errors import (ERRNO_OF_STATUS, ERRORS, HEAD_ERROR_KEY, JSON_CONTENT_TYPE, HTTPError,
                                backend_unavailable, is_error_body, report_exception, retry_after_headers)
from wsgicliquet.middleware import status_code
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import SETTINGS, ConfigurationError, api_prefix
from wsgicliquet.storage.exceptions import BackendError

__all__ = ["JsonErrors", "filter_factory", "DOCKERFLOW_PATHS"]

logger = logging.getLogger(__name__)

DOCKERFLOW_PATHS = ("/__heartbeat__", "/__lbheartbeat__", "/__version__")
"""Root endpoints governed by default besides the API prefix."""

Headers = List[Tuple[str, str]]

# Headers that describe the replaced body; every other header of a rewritten error is kept.
_ENTITY_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "content-language",
                             "content-md5", "content-range", "content-disposition", "transfer-encoding"})


class JsonErrors:
    def __init__(self, app: Callable, *, paths: Optional[Sequence[str]] = None, retry_after_seconds: Optional[int] = 30,
                 error_info_link: str = SETTINGS["error_info_link"].default, enabled: bool = True) -> None:
        """``paths=None`` governs every path (a standalone API); a list governs those prefixes only."""
        self.app = app
        self.enabled = enabled
        self.prefixes = None if paths is None else tuple(_prefix(path) for path in paths)
        # governs() in two string operations: a path equal to a prefix, or below one ("" governs every path).
        self._everything = self.prefixes is None or "" in self.prefixes
        self._exact = frozenset(self.prefixes or ())
        self._below = tuple(prefix + "/" for prefix in self.prefixes or ())
        self.retry_after_seconds = retry_after_seconds
        self.error_info_link = error_info_link

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "JsonErrors":
        paths = list(settings["json_errors_paths"]) or [api_prefix(settings), *DOCKERFLOW_PATHS]
        return cls(app, paths=paths, retry_after_seconds=settings["retry_after_seconds"],
                   error_info_link=settings["error_info_link"])

    def governs(self, environ: Mapping[str, Any]) -> bool:
        """True when errors of this request get the JSON format."""
        if self._everything or keys.API_PREFIX in environ:
            return True
        path = environ.get("PATH_INFO") or "/"
        return path in self._exact or path.startswith(self._below)

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if not self.enabled:
            return self.app(environ, start_response)
        # Decided now, as the app below may rewrite PATH_INFO (Werkzeug's dispatcher, the version prefix); a request
        # the version prefix routes (even /v2 beside a governed /v1) is governed from then on.
        governed_path = self.governs(environ)
        held: Optional[Tuple[str, Headers, Any]] = None  # an error response held back for inspection
        written: List[bytes] = []  # what the app wrote through write() while held
        started = False  # the real start_response was called

        def hold_errors(status: str, headers: Headers, exc_info: Any = None) -> Callable[[bytes], Any]:
            nonlocal held, started
            if status_code(status) >= 400 and (governed_path or keys.API_PREFIX in environ):
                held = (status, list(headers), exc_info)
                return written.append
            held, started = None, True
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, hold_errors)
            if held is None and (isinstance(result, (list, tuple)) or type(result) is _Prefetched
                                 or _is_file_wrapper(result, environ)):
                # Nothing can fail when the body starts (its first chunk is already read by an inner JsonErrors,
                # or the server streams the file itself).
                return result
            first, rest = _read_first(result)
            if held is None:
                return _Prefetched(first, rest, result)
            body = b"".join(itertools.chain(written, first, _drained(rest, result)))
        except Exception as exc:
            if not isinstance(exc, HTTPError) and not (governed_path or keys.API_PREFIX in environ):
                raise
            exc_info = (type(exc), exc, exc.__traceback__) if started else None
            return self._respond(self._from_exception(exc, environ), environ, start_response, exc_info)
        status, headers, exc_info = held
        return self._rewrite(status, headers, body, environ, start_response, exc_info if started else None)

    def _from_exception(self, exc: Exception, environ: Mapping[str, Any]) -> HTTPError:
        if isinstance(exc, HTTPError):
            return exc
        if isinstance(exc, BackendError):
            return backend_unavailable(exc, environ, self.retry_after_seconds, logger)
        report_exception(exc, environ)  # Sentry above: the exception ends here, so it is reported here
        logger.error("Unexpected error: %s", exc, exc_info=exc)
        return HTTPError(500, ERRORS.UNDEFINED, info=self.error_info_link)

    def _rewrite(self, status: str, headers: Headers, body: bytes, environ: Dict[str, Any],
                 start_response: Callable, exc_info: Any) -> Iterable[bytes]:
        """Pass a uniform JSON error through; turn anything else into one, keeping the non-entity headers."""
        code = status_code(status)
        if not body and environ.get(HEAD_ERROR_KEY) == (code, _content_length(headers)) \
                and environ.get("REQUEST_METHOD") == "HEAD":
            # The HEAD of a uniform error (an HTTPError): its headers are those of the GET's, Content-Length included.
            start_response(status, self._retry_after(code, headers), exc_info)
            return [body]
        payload = _json(headers, body)
        if environ.get(keys.NOT_AN_ERROR) and (payload is not None or environ.get("REQUEST_METHOD") == "HEAD"):
            start_response(status, headers, exc_info)
            return [body]
        if is_error_body(payload):
            environ[keys.ERRNO] = payload["errno"]
            if _is_utf8(body):  # the media type of every JSON body (§3.1), and of the rewritten HEAD of this error
                headers = [(name, value) for name, value in headers if name.lower() != "content-type"]
                headers.insert(0, ("Content-Type", JSON_CONTENT_TYPE))
            start_response(status, self._retry_after(code, headers), exc_info)
            return [body]
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, str) and code not in ERRNO_OF_STATUS:
            message = _phrase(code)  # not the 500 message: a 418 or 422 is no programming error
        kept = [(name, value) for name, value in headers if name.lower() not in _ENTITY_HEADERS]
        error = HTTPError(code, ERRNO_OF_STATUS.get(code, ERRORS.UNDEFINED),
                          message=message if isinstance(message, str) else None,
                          info=self.error_info_link if code == 500 else None, headers=kept)
        return self._respond(error, environ, start_response, exc_info)

    def _respond(self, error: HTTPError, environ: Dict[str, Any], start_response: Callable,
                 exc_info: Any) -> Iterable[bytes]:
        def finish(status: str, headers: Headers) -> Callable[[bytes], Any]:
            return start_response(status, self._retry_after(error.code, headers), exc_info)

        return error(environ, finish)

    def _retry_after(self, code: int, headers: Headers) -> Headers:
        if code in (503, 429) and not any(name.lower() == "retry-after" for name, _ in headers):
            return list(headers) + retry_after_headers(code, self.retry_after_seconds)
        return headers


class _Prefetched:
    """The app's body with its first chunk already read; ``close()`` reaches the app's iterable."""

    __slots__ = ("_first", "_rest", "_result")

    def __init__(self, first: Sequence[bytes], rest: Iterator[bytes], result: Iterable[bytes]) -> None:
        self._first = first
        self._rest = rest
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain(self._first, self._rest)

    def close(self) -> None:
        _close(self._result)


def _read_first(result: Iterable[bytes]) -> Tuple[Sequence[bytes], Iterator[bytes]]:
    """Read the first chunk, when start_response has surely been called; close the body if that fails."""
    iterator = iter(result)
    try:
        return (next(iterator),), iterator
    except StopIteration:
        return (), iterator
    except BaseException:
        _close(result)
        raise


def _drained(rest: Iterator[bytes], result: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from rest
    finally:
        _close(result)


def _is_file_wrapper(result: Iterable[bytes], environ: Mapping[str, Any]) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(result, wrapper)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _json(headers: Headers, body: bytes) -> Any:
    """The parsed body when the response says it is JSON, else None."""
    content_type = next((value for name, value in headers if name.lower() == "content-type"), "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return None
    try:
        return json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _content_length(headers: Headers) -> Optional[int]:
    value = next((value for name, value in headers if name.lower() == "content-length"), None)
    return int(value) if value is not None and value.isdigit() else None


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _prefix(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"Setting 'json_errors_paths' has an invalid value {path!r}: paths start with '/'")
    return path.rstrip("/")


filter_factory = make_filter_factory(JsonErrors)

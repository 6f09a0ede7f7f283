"""The one JSON error format of the protocol (PROTOCOL.md §7).

Every error the toolkit produces is an :class:`HTTPError`: an exception that is also a WSGI application, so code
can either ``raise`` it (a middleware or the resource app turns it into a response) or return it as the response.
Its body is always ``{code, errno, error, message, info, details}`` with absent optional fields omitted.
"""
from __future__ import annotations

import enum
import json
import logging
from http import HTTPStatus
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from wsgicliquet.environ import ERRNO, HEAD_ERROR, REPORT_EXCEPTION
from wsgicliquet.types import StartResponse

__all__ = ["ERRORS", "HTTPError", "error_body", "validation_error", "json_error_response",
           "MESSAGES", "is_error_body", "ERRNO_KEY", "HEAD_ERROR_KEY", "report_exception", "backend_unavailable"]

logger = logging.getLogger(__name__)


#: The environ keys :class:`HTTPError` writes, under their former names (documented in :mod:`wsgicliquet.environ`).
ERRNO_KEY = ERRNO
HEAD_ERROR_KEY = HEAD_ERROR


class ERRORS(enum.IntEnum):
    """The errno table of PROTOCOL.md §7.2."""

    MISSING_AUTH_TOKEN = 104
    INVALID_AUTH_TOKEN = 105
    BADJSON = 106
    INVALID_PARAMETERS = 107
    MISSING_PARAMETERS = 108
    INVALID_POSTED_DATA = 109
    INVALID_RESOURCE_ID = 110
    MISSING_RESOURCE = 111
    MISSING_CONTENT_LENGTH = 112
    REQUEST_TOO_LARGE = 113
    MODIFIED_MEANWHILE = 114
    METHOD_NOT_ALLOWED = 115
    VERSION_NOT_AVAILABLE = 116
    CLIENT_REACHED_CAPACITY = 117
    FORBIDDEN = 121
    CONSTRAINT_VIOLATED = 122
    BACKEND = 201
    SERVICE_DEPRECATED = 202
    UNDEFINED = 999


# HTTP status of each errno, and the errno that stands for a bare status.
STATUS_OF_ERRNO: Dict[int, int] = {
    104: 401, 105: 401, 106: 400, 107: 400, 108: 400, 109: 400, 110: 404, 111: 404, 112: 411, 113: 413,
    114: 412, 115: 405, 116: 404, 117: 429, 121: 403, 122: 409, 201: 503, 202: 410, 999: 500,
}
ERRNO_OF_STATUS: Dict[int, ERRORS] = {
    400: ERRORS.INVALID_PARAMETERS, 401: ERRORS.MISSING_AUTH_TOKEN, 403: ERRORS.FORBIDDEN,
    404: ERRORS.MISSING_RESOURCE, 405: ERRORS.METHOD_NOT_ALLOWED, 406: ERRORS.INVALID_PARAMETERS,
    409: ERRORS.CONSTRAINT_VIOLATED, 410: ERRORS.SERVICE_DEPRECATED, 411: ERRORS.MISSING_CONTENT_LENGTH,
    412: ERRORS.MODIFIED_MEANWHILE, 413: ERRORS.REQUEST_TOO_LARGE, 415: ERRORS.INVALID_PARAMETERS,
    429: ERRORS.CLIENT_REACHED_CAPACITY, 500: ERRORS.UNDEFINED, 503: ERRORS.BACKEND,
}

# The exact messages of the catalogue, PROTOCOL.md §7.3.
MESSAGES: Dict[int, str] = {
    104: "Please authenticate yourself to use this endpoint.",
    110: "The resource you are looking for could not be found.",
    111: "The resource you are looking for could not be found.",
    113: "Request body too large.",
    114: "Resource was modified meanwhile",
    115: "Method not allowed on this endpoint.",
    116: "The requested protocol version is not available on this server.",
    117: "Too many requests, please retry later.",
    121: "This user cannot access this resource.",
    201: "Service temporary unavailable due to overloading or maintenance, please retry later.",
    202: "The service you are trying to connect no longer exists at this location.",
    999: "A programmatic error occured, developers have been informed.",
}

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"


def error_body(code: int, errno: Optional[int] = None, *, error: Optional[str] = None,
               message: Optional[str] = None, info: Optional[str] = None, details: Any = None) -> Dict[str, Any]:
    """Build the error mapping; the errno defaults from the status, the title from the reason phrase.

    ``message`` defaults to the catalogue text of the errno, else to the reason phrase: every error has one, even
    a bare 400 or 409 (a wrapped app's ``abort(400)``), so clients can always show ``message``.
    """
    if errno is None:
        errno = ERRNO_OF_STATUS.get(code, ERRORS.UNDEFINED)
    errno = int(errno)
    try:
        phrase: Optional[str] = HTTPStatus(code).phrase
    except ValueError:
        phrase = None
    if error is None:
        error = "Invalid parameters" if errno == ERRORS.INVALID_PARAMETERS else phrase or "Unknown Error"
    body: Dict[str, Any] = {"code": code, "errno": errno, "error": error}
    if message is None:
        message = MESSAGES.get(errno) or phrase or error
    body["message"] = message
    if info is not None:
        body["info"] = info
    if details is not None:
        body["details"] = details
    return body


def is_error_body(body: Any) -> bool:
    """True when ``body`` already has the uniform error shape (so middlewares pass it untouched)."""
    return isinstance(body, dict) and isinstance(body.get("code"), int) and isinstance(body.get("errno"), int) \
        and "error" in body


def validation_message(details: Sequence[Mapping[str, Any]]) -> str:
    """The message of a 400, from the first problem sorted by name (PROTOCOL.md §7.4)."""
    first = sorted(details, key=lambda item: item.get("name") or "")[0]
    name, location, description = first.get("name"), first.get("location"), first.get("description", "")
    if name is None:
        return f"{location}: {description}"
    if name in description:
        return description
    return f"{name} in {location}: {description}"


class HTTPError(Exception):
    """An error response; raise it or use it as a WSGI app."""

    def __init__(self, code: int, errno: Optional[int] = None, *, error: Optional[str] = None,
                 message: Optional[str] = None, info: Optional[str] = None, details: Any = None,
                 headers: Iterable[Tuple[str, str]] = ()) -> None:
        self.body = error_body(code, errno, error=error, message=message, info=info, details=details)
        self.code = code
        self.errno = self.body["errno"]
        self.headers: List[Tuple[str, str]] = list(headers)
        super().__init__(self.body.get("message") or self.body["error"])

    @property
    def status(self) -> str:
        return f"{self.code} {self.body['error'] if self.errno != ERRORS.INVALID_PARAMETERS else _phrase(self.code)}"

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.body)

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> List[bytes]:
        environ[ERRNO_KEY] = self.errno
        payload = json.dumps(self.body).encode("utf-8")
        headers = [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(payload)))]
        headers.extend(self.headers)
        start_response(f"{self.code} {_phrase(self.code)}", headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            environ[HEAD_ERROR_KEY] = (self.code, len(payload))
            return [b""]
        return [payload]


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def validation_error(details: Sequence[Mapping[str, Any]], *, code: int = 400,
                     headers: Iterable[Tuple[str, str]] = ()) -> HTTPError:
    """A 400 errno 107 (or 406/415) with every problem in ``details`` and the message of §7.4."""
    details = [dict(item) for item in details]
    return HTTPError(code, ERRORS.INVALID_PARAMETERS, message=validation_message(details), details=details,
                     headers=headers)


def invalid(location: str, name: Optional[str], description: str) -> HTTPError:
    """Shortcut for a 400 with a single problem."""
    return validation_error([{"location": location, "name": name, "description": description}])


def json_error_response(code: int, errno: Optional[int] = None, **kwargs: Any) -> HTTPError:
    """Alias kept for readability at call sites that return rather than raise."""
    return HTTPError(code, errno, **kwargs)


def retry_after_headers(code: int, seconds: Optional[int]) -> List[Tuple[str, str]]:
    """`Retry-After` belongs on every 503 and 429 (PROTOCOL.md §9.2)."""
    if code in (503, 429) and seconds is not None:
        return [("Retry-After", str(seconds))]
    return []


def unauthorized_or_forbidden(principals: Iterable[str], challenges: Optional[Iterable[str]] = None) -> HTTPError:
    """401 for an anonymous request, 403 for an authenticated one (§11.4).

    The 401 carries one ``WWW-Authenticate`` per value of ``challenges``: pass the request's
    ``environ["wsgicliquet.challenges"]`` (the schemes the authentication middleware's policies accept, none for a
    trusted front server alone); None gives the protocol's ``Basic realm="Realm"``.
    """
    if "system.Authenticated" in principals:
        return HTTPError(403, ERRORS.FORBIDDEN)
    if challenges is None:
        challenges = ('Basic realm="Realm"',)
    return HTTPError(401, ERRORS.MISSING_AUTH_TOKEN, headers=[("WWW-Authenticate", value) for value in challenges])


def report_exception(exc: BaseException, environ: Mapping[str, Any]) -> None:
    """Hand an exception that is answered here, instead of raised, to the Sentry middleware above (when there is
    one), with this request's user and request id; reporting never changes the answer."""
    report = environ.get(REPORT_EXCEPTION)
    if report is not None:
        try:
            report(exc, environ)
        except Exception:  # a broken Sentry set-up shows in the log instead of failing silently
            logger.warning("Could not report %r to Sentry", exc, exc_info=True)


def backend_unavailable(exc: BaseException, environ: Mapping[str, Any], retry_after_seconds: Optional[int],
                        log: Optional[logging.Logger] = None) -> HTTPError:
    """The 503 errno 201 of a backend failure answered where it happened: like one that reaches the JSON error
    converter, it is logged (to ``log``) at critical with its traceback (PROTOCOL.md §13.2) and reported to Sentry."""
    report_exception(exc, environ)
    (log or logger).critical("Backend failure: %s", exc, exc_info=exc)
    return HTTPError(503, ERRORS.BACKEND, headers=retry_after_headers(503, retry_after_seconds))

"""CORS headers on every response, errors included, and the answer to preflight requests (PROTOCOL.md §12).

Use it outside everything that can produce a response (the canonical pipeline puts it outside the JSON error
converter), so that a browser can read a 401, a 404 or a 500 as well as a success.  It only adds headers: bodies
stream through untouched.

- ``Access-Control-Allow-Origin``: ``*`` when ``origins`` holds ``*``, else the request's ``Origin`` when it matches
  one of ``origins`` (shell wildcards: ``https://*.example.com``), else nothing.
- ``Access-Control-Expose-Headers``: ``expose_headers`` (always), plus each header of :data:`EXPOSED_IF_PRESENT`
  the response carries, so that ``ETag`` and ``Last-Modified`` are readable wherever they appear (D5); a listing
  (it carries ``Total-Records``) or a read (``ETag`` and ``Cache-Control``) exposes the whole list of §12 for it
  (:data:`LISTING_EXPOSED`, :data:`READ_EXPOSED`), ``Next-Page``, ``Expires`` and ``Pragma`` included.
- ``Vary``: ``vary`` (``Authorization``) merged into the response's own ``Vary``, on every response; ``Origin``
  too when the allowed origin depends on the request (an explicit list).
- Preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``): answered here with 200.  The
  middleware cannot know each endpoint's methods, so it asks the app: the same path is sent down as a plain
  ``OPTIONS`` request and its ``Allow`` header (Flask's automatic OPTIONS, Bottle's or the resource app's 405)
  gives the endpoint's methods; an app that announces nothing gets ``methods`` (the standard ones).  A redirect
  (the version prefix's 307s, any method included), a 404, a 410 (a retired version) or a 5xx answer is returned as
  is, whatever the origin: there is no endpoint whose methods could be announced.  An origin not allowed, or a
  method outside the list, is a 400 errno 107.

Not for: cookie-credentialed CORS (no ``Access-Control-Allow-Credentials``); the protocol authenticates with the
``Authorization`` header.
"""
from __future__ import annotations

import fnmatch
import functools
import operator
import re
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from wsgicliquet import environ as keys
from wsgicliquet.errors import JSON_CONTENT_TYPE, invalid
from wsgicliquet.middleware import collect, status_code
from wsgicliquet.pipeline import make_filter_factory

__all__ = ["Cors", "filter_factory", "ALWAYS_EXPOSED", "EXPOSED_IF_PRESENT", "LISTING_EXPOSED", "READ_EXPOSED",
           "DEFAULT_ALLOW_HEADERS", "STANDARD_METHODS"]

ALWAYS_EXPOSED = ("Backoff", "Retry-After", "Alert", "Content-Length", "Content-Type", "Vary")
"""Exposed on every response (Cliquet's list plus kinto.core's ``Content-Type``)."""

EXPOSED_IF_PRESENT = ("ETag", "Last-Modified", "Next-Page", "Total-Records", "Total-Objects", "Cache-Control",
                      "Expires", "Pragma", "Deprecation", "Sunset")
"""Exposed on the responses that carry them."""

LISTING_EXPOSED = ("Next-Page", "Total-Records", "Last-Modified", "ETag", "Cache-Control", "Expires", "Pragma")
"""Exposed on every listing (a response with ``Total-Records``), as Cliquet does on collection GET/HEAD (§12)."""

READ_EXPOSED = ("Last-Modified", "ETag", "Cache-Control", "Expires", "Pragma")
"""Exposed on every record read (a response with ``ETag`` and ``Cache-Control``), as Cliquet does (§12)."""

DEFAULT_ALLOW_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Match")
"""Request headers a preflight always allows (plus those the client asks for)."""

STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Methods allowed by a preflight when the app does not announce an ``Allow`` list."""

Headers = List[Tuple[str, str]]

_ORDER = {method: index for index, method in enumerate(STANDARD_METHODS)}

_IF_PRESENT = frozenset(name.lower() for name in EXPOSED_IF_PRESENT)
_LISTING = frozenset(name.lower() for name in LISTING_EXPOSED)
_READ = frozenset(name.lower() for name in READ_EXPOSED)


def _with_implied(present: FrozenSet[str]) -> FrozenSet[str]:
    """``present`` plus the headers §12 exposes on a listing or a record read, whether or not this one has them
    (a last page has no ``Next-Page``, a response without cache expiry no ``Expires``)."""
    if "total-records" in present:
        return present | _LISTING
    if "etag" in present and "cache-control" in present:
        return present | _READ
    return present
_OWN_HEADERS = frozenset({"access-control-allow-origin", "access-control-expose-headers", "vary"})
_NAME = operator.itemgetter(0)
_UNKNOWN = object()
_PLANS = 256  # header name lists remembered (each endpoint has a few; an app could make them up)
_PREFLIGHT_KEYS = ("HTTP_ORIGIN", "HTTP_ACCESS_CONTROL_REQUEST_METHOD", "HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
# Headers of the probe's answer that describe it, not the preflight answer built from it.
_PROBE_ONLY = frozenset({"allow", "content-type", "content-length", "content-encoding", "transfer-encoding",
                         "etag", "last-modified", "access-control-allow-methods", "access-control-allow-headers",
                         "access-control-max-age"})


class Cors:
    def __init__(self, app: Callable, *, origins: Sequence[str] = ("*",), max_age: Optional[int] = 3600,
                 allow_headers: Sequence[str] = DEFAULT_ALLOW_HEADERS, expose_headers: Sequence[str] = ALWAYS_EXPOSED,
                 vary: Sequence[str] = ("Authorization",), methods: Sequence[str] = STANDARD_METHODS) -> None:
        """Empty ``origins``: no CORS (preflights reach the app), only ``Vary``; empty ``vary`` too: off."""
        self.app = app
        self.any_origin = "*" in origins
        patterns = [fnmatch.translate(origin) for origin in origins]
        self._origin = re.compile("|".join(f"(?:{pattern})" for pattern in patterns)) if patterns else None
        self.max_age = max_age or None
        self.allow_headers = list(allow_headers)
        self.expose_headers = list(expose_headers)
        self.methods = [method.upper() for method in methods]
        self.vary = list(vary) + (["Origin"] if origins and not self.any_origin else [])
        self.enabled = bool(origins or vary)
        # The merged header values of the common case (the app sent neither Vary nor CORS headers of its own).
        self._vary_value = ", ".join(_unique(self.vary)) or None
        self._exposed_value = ", ".join(_unique(self.expose_headers))
        # One value per combination of EXPOSED_IF_PRESENT headers (at most 2 ** 10 of them).
        self._exposed_with = functools.lru_cache(maxsize=None)(self._exposed_of)
        # What _decorate adds to a response, by the names of its headers (a few lists per endpoint).
        self._plans: Dict[Tuple[str, ...], Optional[str]] = {}
        # The decoration of a request and the tuple of it alone, made once for the values of ``allowed`` that do not
        # name an origin.
        self._decorations: Dict[Optional[str], Tuple[Callable[[Headers], Headers], Tuple[Callable, ...]]] = {}
        for allowed in ("*", None):
            decorate = functools.partial(self._decorate, allowed)
            self._decorations[allowed] = (decorate, (decorate,))

    def _exposed_of(self, present: FrozenSet[str]) -> str:
        present = _with_implied(present)
        found = [name for name in EXPOSED_IF_PRESENT if name.lower() in present]
        return ", ".join(_unique(self.expose_headers + found))

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "Cors":
        return cls(app, origins=settings["cors_origins"], max_age=settings["cors_max_age_seconds"],
                   vary=settings["vary"])

    def allowed_origin(self, origin: Optional[str]) -> Optional[str]:
        """The ``Access-Control-Allow-Origin`` value for a request ``Origin``, or None."""
        if not origin or self._origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if self._origin.match(origin) else None

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if not self.enabled:
            return self.app(environ, start_response)
        origin = environ.get("HTTP_ORIGIN")
        allowed = self.allowed_origin(origin)
        known = self._decorations.get(allowed)
        if known is None:  # an origin of an explicit list
            decorate = functools.partial(self._decorate, allowed)
            alone: Tuple[Callable[[Headers], Headers], ...] = (decorate,)
        else:
            decorate, alone = known

        def add_cors(status: str, headers: Headers, exc_info: Any = None) -> Callable[[bytes], Any]:
            return start_response(status, decorate(headers), exc_info)

        # A batch below gives each sub-response the headers a direct call would get (PROTOCOL.md §8.3).
        decorators = environ.get(keys.SUBRESPONSE_HEADERS)
        environ[keys.SUBRESPONSE_HEADERS] = (*decorators, decorate) if decorators else alone

        if origin and self._origin is not None and environ.get("REQUEST_METHOD") == "OPTIONS" and \
                "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
            return self._preflight(environ, add_cors, origin, allowed)
        return self.app(environ, add_cors)

    def _decorate(self, allowed: Optional[str], headers: Headers) -> Headers:
        """The response headers with ``Vary`` merged and, for an allowed origin, the CORS headers."""
        names = tuple(map(_NAME, headers))
        exposed_value = self._plans.get(names, _UNKNOWN)
        if exposed_value is _UNKNOWN:
            exposed_value = self._plan(names)
        if exposed_value is None:  # the app sent Vary or CORS headers of its own
            return self._merge(headers, allowed)
        result = list(headers)
        if allowed:
            result.append(("Access-Control-Allow-Origin", allowed))
            result.append(("Access-Control-Expose-Headers", exposed_value))
        if self._vary_value:
            result.append(("Vary", self._vary_value))
        return result

    def _plan(self, names: Tuple[str, ...]) -> Optional[str]:
        """The ``Access-Control-Expose-Headers`` value of a response with these header names, None when one of them
        must be merged (``Vary``, CORS headers of the app's own); remembered."""
        lowered = {name.lower() for name in names}
        plan = None if lowered & _OWN_HEADERS else self._exposed_with(frozenset(lowered & _IF_PRESENT))
        if len(self._plans) >= _PLANS:
            self._plans.clear()
        self._plans[names] = plan
        return plan

    def _merge(self, headers: Headers, allowed: Optional[str]) -> Headers:
        """:meth:`_decorate` of a response that has ``Vary`` or CORS headers: each is merged."""
        result: Headers = []
        vary: Optional[List[str]] = None
        exposed: Optional[List[str]] = None  # what the app itself exposes
        present: Optional[Set[str]] = None  # the EXPOSED_IF_PRESENT headers of the response, lowercase
        for name, value in headers:
            lowered = name.lower()
            if lowered not in _OWN_HEADERS:
                result.append((name, value))
                if allowed and lowered in _IF_PRESENT:
                    if present is None:
                        present = set()
                    present.add(lowered)
            elif lowered == "vary":
                vary = (vary or []) + [item.strip() for item in value.split(",") if item.strip()]
            elif lowered == "access-control-expose-headers" and allowed:
                exposed = (exposed or []) + [item.strip() for item in value.split(",") if item.strip()]
        if allowed:
            if exposed:
                implied = _with_implied(frozenset(present or ()))
                found = [name for name in EXPOSED_IF_PRESENT if name.lower() in implied]
                exposed_value = ", ".join(_unique(self.expose_headers + exposed + found))
            elif present is None:
                exposed_value = self._exposed_value
            else:
                exposed_value = self._exposed_with(frozenset(present))
            result.append(("Access-Control-Allow-Origin", allowed))
            result.append(("Access-Control-Expose-Headers", exposed_value))
        if vary is None:
            if self._vary_value:
                result.append(("Vary", self._vary_value))
        else:
            if "*" not in vary:
                vary.extend(self.vary)
            if vary:
                result.append(("Vary", ", ".join(_unique(vary))))
        return result

    def _preflight(self, environ: Dict[str, Any], start_response: Callable, origin: str,
                   allowed: Optional[str]) -> Iterable[bytes]:
        probe = {key: value for key, value in environ.items() if key not in _PREFLIGHT_KEYS}
        status, headers, body, _ = collect(self.app, probe)  # the path, sent down as a plain OPTIONS request
        code = status_code(status)
        if 300 <= code < 400 or code in (404, 410) or code >= 500:
            start_response(status, headers)
            return [body]
        # What the layers on the way added to the probe (Backoff, Alert, Sunset...) belongs on every response.
        kept = [(name, value) for name, value in headers if name.lower() not in _PROBE_ONLY]

        def with_kept(status: str, error_headers: Headers, exc_info: Any = None) -> Callable[[bytes], Any]:
            return start_response(status, list(error_headers) + kept, exc_info)

        if allowed is None:
            return invalid("header", "Origin", f"{origin} not allowed")(environ, with_kept)
        methods = _methods(_allow(headers) or self.methods)
        requested = environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"].strip().upper()
        if requested not in methods:
            return invalid("header", "Access-Control-Request-Method", "Method not allowed")(environ, with_kept)
        asked = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
        allow_headers = _unique(self.allow_headers + [item.strip() for item in asked.split(",") if item.strip()])
        payload = b"{}"
        answer = [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(payload))), *kept,
                  ("Access-Control-Allow-Methods", ",".join(methods)),
                  ("Access-Control-Allow-Headers", ", ".join(allow_headers))]
        if self.max_age:
            answer.append(("Access-Control-Max-Age", str(self.max_age)))
        start_response("200 OK", answer)
        return [payload]


def _allow(headers: Headers) -> List[str]:
    for name, value in headers:
        if name.lower() == "allow":
            return [item.strip() for item in value.split(",") if item.strip()]
    return []


def _methods(methods: Iterable[str]) -> List[str]:
    """In the standard order; a GET endpoint also answers HEAD, and the preflight itself proves OPTIONS."""
    found = {method.upper() for method in methods} | {"OPTIONS"}
    if "GET" in found:
        found.add("HEAD")
    return sorted(found, key=lambda method: (_ORDER.get(method, len(_ORDER)), method))


def _unique(items: Iterable[str]) -> List[str]:
    """Items in order, without case-insensitive duplicates."""
    seen = set()
    result = []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            result.append(item)
    return result


filter_factory = make_filter_factory(Cors)

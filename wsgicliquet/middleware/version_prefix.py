"""Serve API versions under ``/vN`` prefixes, and redirect everything else there (PROTOCOL.md §1.1-§1.3).

Use it as the routing layer of an API: ``/v1/...`` goes to the app of version 1 with ``SCRIPT_NAME`` shifted (the
app sees ``/bookmarks`` under ``SCRIPT_NAME`` ``/v1``), several versions can live side by side, unprefixed URLs get a
``307`` to the current version, an unknown version is a ``404`` errno 116, and an unmatched URL ending with ``/``
gets a ``307`` without the slash.  The Dockerflow endpoints (``/__heartbeat__``...) are also served at the root, by
the current version's app.

Give it a ``fallback`` app (a Flask or Bottle site) and unprefixed paths go to that app untouched instead of being
redirected: the site keeps its pages and gains an API under ``/v1``.  Do not use it when your framework already
routes the versions itself.

The redirects into a version (``/v1`` to ``/v1/``, an unprefixed URL to the current version) are answered through
that version's ``version_layers`` (``build_pipeline`` gives its ``Backoff`` and ``EndOfLife``), so that they carry
``Backoff`` and ``Alert`` and become the 410 of a retired version, as every other response of it (§9.1, §10).
The 404 errno 116 of a version not served goes through the current version's layers (it carries ``Backoff``).

Settings: ``version_prefix_redirect_enabled``, ``trailing_slash_redirect_enabled``, ``http_api_version`` (the
current version), ``http_scheme``, ``http_host``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from webob.exc import HTTPTemporaryRedirect

from wsgicliquet import environ as keys
from wsgicliquet.errors import ERRORS, HTTPError
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError, api_prefix
from wsgicliquet.types import WSGIApp

__all__ = ["VersionPrefix", "filter_factory", "absolute_url", "DOCKERFLOW_PATHS"]


DOCKERFLOW_PATHS = ("/__heartbeat__", "/__lbheartbeat__", "/__version__")

_PREFIX = re.compile(r"^/v(\d+)$")
_VERSIONED_PATH = re.compile(r"^(/v\d+)(/.*)?$", re.DOTALL)
# Characters kept as they are when a (decoded) WSGI path is turned back into a URL path.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
# Headers that describe the body of a 404 replaced by a redirect; the others (Backoff, Alert, Vary...) are kept.
_ENTITY_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "content-language",
                             "content-md5", "content-range", "content-disposition", "transfer-encoding", "location"})
# Environ key of the location a redirect into a version goes to, read by :func:`_answer_redirect`.
_LOCATION = "wsgicliquet.version_prefix.location"


def _unknown_version(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The 404 errno 116 of a path outside every version served."""
    return HTTPError(404, ERRORS.VERSION_NOT_AVAILABLE)(environ, start_response)


def _answer_redirect(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The 307 of a redirect into a version, as the innermost app of that version's ``version_layers``."""
    return HTTPTemporaryRedirect(location=environ[_LOCATION])(environ, start_response)


def absolute_url(environ: Mapping[str, Any], path: str, query_string: str = "", *,
                 http_scheme: Optional[str] = None, http_host: Optional[str] = None) -> str:
    """The absolute URL of ``path`` (a decoded WSGI path) on the server of this request.

    ``http_scheme`` and ``http_host`` (settings of the same names) override what the request says, for services
    behind a proxy.
    """
    from werkzeug.wsgi import get_host

    scheme = http_scheme or environ.get("wsgi.url_scheme", "http")
    # A Host header with characters no host has ("a b", "evil/x?y") is ignored: the server's own name, not "http:///".
    host = http_host or get_host(environ) or get_host({**environ, "HTTP_HOST": None})  # type: ignore[arg-type]
    url = f"{scheme}://{host}{quote(path.encode('latin-1'), safe=_PATH_SAFE)}"
    return f"{url}?{query_string}" if query_string else url


def _normalize_prefix(value: Union[str, int]) -> str:
    """``"/v2"``, ``"v2"``, ``"2"``, ``"2.1"`` and ``2`` all name the prefix ``/v2``."""
    text = str(value).strip().strip("/")
    if text[:1] == "v":
        text = text[1:]
    major = text.split(".")[0]
    if not major.isdigit():
        raise ConfigurationError(f"Invalid API version {value!r}: expected a prefix such as '/v1'")
    return f"/v{int(major)}"


def _version_number(prefix: str) -> int:
    match = _PREFIX.match(prefix)
    assert match is not None
    return int(match.group(1))


class _Chained:
    """An app iterable whose first chunk was already taken; ``close()`` still reaches the app's iterable."""

    def __init__(self, first: List[bytes], iterator: Iterator[bytes], result: Iterable[bytes]) -> None:
        self._first = first
        self._iterator = iterator
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        yield from self._first
        yield from self._iterator

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class VersionPrefix:
    """Route ``/vN/...`` to the app of version N; redirect or refuse the rest (§1.2, §1.3)."""

    def __init__(self, app: Optional[WSGIApp], *, versions: Optional[Mapping[str, WSGIApp]] = None,
                 current: Optional[Union[str, int]] = None, redirect: bool = True,
                 trailing_slash_redirect: bool = True, http_scheme: Optional[str] = None,
                 http_host: Optional[str] = None, root_paths: Sequence[str] = DOCKERFLOW_PATHS,
                 version_layers: Optional[Mapping[str, Callable[[WSGIApp], WSGIApp]]] = None) -> None:
        if versions is None:
            # The wrapped app is the API itself, served under the current (default: first) version.
            if app is None:
                raise ConfigurationError("VersionPrefix needs an app or a mapping of versions")
            versions, app = {_normalize_prefix(current if current is not None else 1): app}, None
        if not versions:
            raise ConfigurationError("VersionPrefix needs at least one version")
        self.app = app  # the fallback of unprefixed paths; None: redirect or 404
        self.versions: Dict[str, WSGIApp] = {}
        for prefix, version_app in versions.items():
            if not _PREFIX.match(prefix):
                raise ConfigurationError(f"Invalid version prefix {prefix!r}: expected '/v<number>', e.g. '/v1'")
            self.versions[prefix] = version_app
        self.current = (_normalize_prefix(current) if current is not None
                        else max(self.versions, key=_version_number))
        if self.current not in self.versions:
            raise ConfigurationError(
                f"Current API version {self.current!r} is not one of the versions served "
                f"({', '.join(sorted(self.versions))})")
        self.redirect = redirect
        self.trailing_slash_redirect = trailing_slash_redirect
        self.http_scheme = http_scheme
        self.http_host = http_host
        self.root_paths = frozenset(root_paths)
        # Per version, what answers a redirect into it: its layers (Backoff, EndOfLife) around the 307.
        self.redirectors: Dict[str, WSGIApp] = {}
        for prefix, wrap in (version_layers or {}).items():
            if prefix not in self.versions:
                raise ConfigurationError(f"Version layers given for {prefix!r}, which is not served")
            self.redirectors[prefix] = wrap(_answer_redirect)
        # A version not served is answered by the current one's layers: its 404 carries Backoff like any answer.
        current_layers = (version_layers or {}).get(self.current)
        self.unknown_version: WSGIApp = current_layers(_unknown_version) if current_layers else _unknown_version

    @classmethod
    def from_settings(cls, app: Optional[WSGIApp], settings: Mapping[str, Any],
                      versions: Optional[Mapping[str, WSGIApp]] = None,
                      version_layers: Optional[Mapping[str, Callable[[WSGIApp], WSGIApp]]] = None
                      ) -> "VersionPrefix":
        """Without ``versions``, ``app`` is the API under ``http_api_version``; with them, ``app`` is the fallback.

        The current version is the one of ``http_api_version`` when it is served, else the highest.
        ``version_layers`` maps a version to the layers its redirects go through (see the module docstring).
        """
        configured = api_prefix(settings)
        if versions is None:
            if app is None:
                raise ConfigurationError("VersionPrefix needs an app or a mapping of versions")
            versions, app = {configured: app}, None
        return cls(app, versions=versions, version_layers=version_layers,
                   current=configured if configured in versions else None,
                   redirect=settings["version_prefix_redirect_enabled"],
                   trailing_slash_redirect=settings["trailing_slash_redirect_enabled"],
                   http_scheme=settings.get("http_scheme"), http_host=settings.get("http_host"))

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        match = _VERSIONED_PATH.match(path)
        if match is None:
            return self._unprefixed(path, environ, start_response)
        prefix, rest = match.groups("")  # no rest: ""
        version_app = self.versions.get(prefix)
        if version_app is None:
            return self.unknown_version(environ, start_response)
        if not rest:  # "/v1" is the hello view without its slash
            if not self.trailing_slash_redirect:
                return HTTPError(404, ERRORS.MISSING_RESOURCE)(environ, start_response)
            return self._redirect(environ, start_response, environ.get("SCRIPT_NAME", "") + prefix + "/",
                                  version=prefix)
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = rest
        environ[keys.API_PREFIX] = prefix
        if self.trailing_slash_redirect and rest.endswith("/") and rest != "/":
            return self._strip_slash_on_404(version_app, environ, start_response)
        return version_app(environ, start_response)

    def _unprefixed(self, path: str, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if path in self.root_paths:
            environ[keys.API_PREFIX] = self.current
            return self.versions[self.current](environ, start_response)
        if self.app is not None:
            return self.app(environ, start_response)
        if self.redirect:
            return self._redirect(environ, start_response, environ.get("SCRIPT_NAME", "") + self.current + path,
                                  version=self.current)
        return self.unknown_version(environ, start_response)

    def _redirect(self, environ: Dict[str, Any], start_response: Callable[..., Any], path: str,
                  headers: Sequence[Tuple[str, str]] = (), version: Optional[str] = None) -> Iterable[bytes]:
        location = absolute_url(environ, path, environ.get("QUERY_STRING", ""),
                                http_scheme=self.http_scheme, http_host=self.http_host)
        redirector = self.redirectors.get(version) if version is not None else None
        if redirector is not None:
            environ[_LOCATION] = location
            return redirector(environ, start_response)
        kept = [(name, value) for name, value in headers if name.lower() not in _ENTITY_HEADERS]
        return HTTPTemporaryRedirect(location=location, headers=kept)(environ, start_response)

    def _strip_slash_on_404(self, app: WSGIApp, environ: Dict[str, Any],
                            start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Call ``app``; if it answers 404, answer a 307 to the path without trailing slashes instead (§1.3).

        Only a 404 is held back (its body is dropped, its other headers, such as the version's ``Backoff`` and
        ``Alert``, go on the redirect); any other response streams through untouched.
        """
        statuses: List[str] = []
        held: List[Tuple[str, str]] = []
        # Taken now: an app may rewrite PATH_INFO while it answers (Bottle stores it decoded, as text).
        path = environ["SCRIPT_NAME"] + environ["PATH_INFO"].rstrip("/")

        def capture(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            statuses.append(status)
            if status[:3] == "404":
                held[:] = headers
                return lambda data: None
            return start_response(status, headers, exc_info)

        def redirect() -> Iterable[bytes]:
            return self._redirect(environ, start_response, path, held)

        try:
            result = app(environ, capture)
            first: List[bytes] = []
            iterator = iter(result)
            try:
                while not statuses:  # start_response deferred to the first chunk (generators)
                    first.append(next(iterator))
            except StopIteration:
                pass
        except HTTPError as exc:
            if exc.code == 404:
                held[:] = exc.headers
                return redirect()
            raise
        if statuses and statuses[-1][:3] == "404":
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return redirect()
        return _Chained(first, iterator, result) if first else result


filter_factory = make_filter_factory(VersionPrefix)

"""The hello view: ``GET /`` of the API describes the service (PROTOCOL.md §1.4).

Place it below the version prefix (so the root of the version, ``/v1/``, reaches it as ``/``) and below
authentication (so it can show the user).  Every other path goes to the wrapped app untouched.  Clients read it to
discover the API version, the public settings (``batch_max_requests``, ``readonly``), the end-of-service date and
the capabilities of the server.

Capabilities are registered by plugins, once, before the pipeline is built::

    from wsgicliquet.middleware.hello import add_capability
    add_capability("attachments", "Add files to records", "https://example.org/attachments", max_size=10)

or on an instance: ``hello.add_capability(...)``.  A duplicate id is a :class:`ConfigurationError`.

Settings: ``project_name``, ``project_version``, ``http_api_version``, ``project_docs``, ``eos``, ``http_scheme``,
``http_host``, and the public settings shown (``batch_max_requests``, ``readonly``, plus :func:`add_public_setting`).
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from wsgicliquet import environ as keys
from wsgicliquet.errors import ERRORS, JSON_CONTENT_TYPE, HTTPError
from wsgicliquet.middleware.version_prefix import absolute_url
from wsgicliquet.middleware import answer_options
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import WSGIApp

__all__ = ["Hello", "filter_factory", "add_capability", "add_public_setting", "CAPABILITIES", "PUBLIC_SETTINGS"]


PROTOCOL_VERSION = "2"

CAPABILITIES: Dict[str, Dict[str, Any]] = {}
"""Capabilities registered with :func:`add_capability`; every Hello built by ``from_settings`` shows them."""

PUBLIC_SETTINGS: List[str] = ["batch_max_requests", "readonly"]
"""Names of the settings shown in ``settings``; ``cliquet.X`` / ``<project>.X`` show setting X under that key."""

_ALLOWED = "GET, HEAD, OPTIONS"
_CACHE_SIZE = 1024


def _capability(description: str, url: str, extra: Mapping[str, Any]) -> Dict[str, Any]:
    return {"description": description, "url": url, **extra}


def _register(registry: Dict[str, Dict[str, Any]], identifier: str, capability: Dict[str, Any]) -> None:
    if identifier in registry:
        raise ConfigurationError(f"The capability {identifier!r} is already registered")
    registry[identifier] = capability


def add_capability(identifier: str, description: str, url: str, **extra: Any) -> None:
    """Announce a capability in the hello view of every pipeline built afterwards."""
    _register(CAPABILITIES, identifier, _capability(description, url, extra))


def add_public_setting(name: str) -> None:
    """Show the setting ``name`` in the hello view of every pipeline built afterwards."""
    if name not in PUBLIC_SETTINGS:
        PUBLIC_SETTINGS.append(name)


def _public_settings(settings: Mapping[str, Any], names: Iterable[str]) -> Dict[str, Any]:
    """``{name: value}``; a name spelled ``cliquet.X`` or ``<project>.X`` shows the value of setting ``X``."""
    prefixes = ["cliquet.", "wsgicliquet."]
    if settings.get("project_name"):
        prefixes.append(f"{settings['project_name']}.")
    shown: Dict[str, Any] = {}
    for name in names:
        base = next((name[len(prefix):] for prefix in prefixes if name.startswith(prefix)), name)
        shown[name] = settings.get(base)
    return shown


class Hello:
    """Answer ``GET /`` (and ``HEAD``) with the service description; pass every other path through."""

    def __init__(self, app: WSGIApp, *, project_name: str = "", project_version: str = "",
                 http_api_version: str = "", project_docs: str = "", eos: Optional[datetime.date] = None,
                 settings: Optional[Mapping[str, Any]] = None,
                 capabilities: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 http_scheme: Optional[str] = None, http_host: Optional[str] = None) -> None:
        self.app = app
        self.http_scheme = http_scheme
        self.http_host = http_host
        self.fields: Dict[str, Any] = {
            "project_name": project_name,
            "project_version": project_version,
            "http_api_version": http_api_version,
            "project_docs": project_docs,
            "cliquet_protocol_version": PROTOCOL_VERSION,
        }
        self.eos = eos.isoformat() if eos is not None else None
        self.settings = dict(settings if settings is not None
                             else {"batch_max_requests": 25, "readonly": False})
        self.capabilities: Dict[str, Dict[str, Any]] = {}
        for identifier, capability in (capabilities or {}).items():
            capability = dict(capability)
            if "description" not in capability or "url" not in capability:
                raise ConfigurationError(f"The capability {identifier!r} needs a description and a url")
            _register(self.capabilities, identifier, capability)
        # Rendered bodies by (URL, user id, principals): nothing else varies between configuration changes.
        self._bodies: Dict[Tuple[Any, ...], bytes] = {}

    @classmethod
    def from_settings(cls, app: WSGIApp, settings: Mapping[str, Any]) -> "Hello":
        return cls(app, project_name=settings["project_name"], project_version=settings["project_version"],
                   http_api_version=settings["http_api_version"], project_docs=settings["project_docs"],
                   eos=settings.get("eos"), settings=_public_settings(settings, PUBLIC_SETTINGS),
                   capabilities=CAPABILITIES, http_scheme=settings.get("http_scheme"),
                   http_host=settings.get("http_host"))

    def add_capability(self, identifier: str, description: str, url: str, **extra: Any) -> None:
        """Announce a capability in this hello view; a duplicate id is a :class:`ConfigurationError`."""
        _register(self.capabilities, identifier, _capability(description, url, extra))
        self._bodies = {}

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/", ""):
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "OPTIONS":  # CORS preflights ask which methods the endpoint has
            return answer_options(start_response, _ALLOWED)
        environ[keys.VIEW] = "hello"
        if method not in ("GET", "HEAD"):
            return HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, headers=[("Allow", _ALLOWED)])(environ, start_response)
        payload = self._payload(environ)
        start_response("200 OK", [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(payload)))])
        return [b""] if method == "HEAD" else [payload]

    def _payload(self, environ: Mapping[str, Any]) -> bytes:
        """The JSON of :meth:`describe`, remembered per URL and user (a subclass's own describe() is not)."""
        if type(self).describe is not Hello.describe:
            return json.dumps(self.describe(environ)).encode("utf-8")
        url = self._url(environ)
        userid = environ.get(keys.USERID)
        key = (url, userid, tuple(environ.get(keys.PRINCIPALS) or ()) if userid else None)
        try:
            payload = self._bodies.get(key)
        except TypeError:  # principals that are not strings
            return json.dumps(self._describe(environ, url)).encode("utf-8")
        if payload is None:
            payload = json.dumps(self._describe(environ, url)).encode("utf-8")
            if len(self._bodies) >= _CACHE_SIZE:
                self._bodies.clear()
            self._bodies[key] = payload
        return payload

    def _url(self, environ: Mapping[str, Any]) -> str:
        return absolute_url(environ, environ.get("SCRIPT_NAME", "") + "/", http_scheme=self.http_scheme,
                            http_host=self.http_host)

    def describe(self, environ: Mapping[str, Any]) -> Dict[str, Any]:
        """The hello body for this request (its URL and user vary per request)."""
        return self._describe(environ, self._url(environ))

    def _describe(self, environ: Mapping[str, Any], url: str) -> Dict[str, Any]:
        body = dict(self.fields)
        body["url"] = url
        if self.eos is not None:
            body["eos"] = self.eos
        body["settings"] = self.settings
        userid = environ.get(keys.USERID)
        if userid:
            body["user"] = {"id": userid, "principals": list(environ.get(keys.PRINCIPALS) or [])}
        body["capabilities"] = self.capabilities
        return body


filter_factory = make_filter_factory(Hello)

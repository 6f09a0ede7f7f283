"""Announce the end of service of an API version, then retire it (PROTOCOL.md §10).

Before the ``eos`` date every response carries ``Alert: {"code": "soft-eol", "message": ..., "url": ...}`` (the
Cliquet header clients already watch) plus the standard ``Deprecation`` (RFC 9745) and ``Sunset`` (RFC 8594)
headers.  From that date on (server local date, as Cliquet compares it), every request is answered
``410 Gone`` errno 202 with ``Alert: {"code": "hard-eol", ...}``.

Both standard headers carry the one date the configuration knows, the end of service (local midnight of ``eos``):
``Sunset: <HTTP-date>`` is when the version stops answering, and ``Deprecation: @<unix seconds>`` uses that same
moment because RFC 9745 needs a date, does not allow one later than the sunset, and the date the deprecation was
announced is not known.  The ``soft-eol`` ``Alert`` is what says "deprecated now".

Use it per version (below the version prefix): a deprecated ``/v1`` and a current ``/v2`` side by side.
Settings: ``eos`` (ISO date), ``eos_message``, ``eos_url`` (default: ``project_docs``).
"""
from __future__ import annotations

import datetime
import json
import time
from email.utils import formatdate
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from wsgicliquet.errors import ERRORS, HTTPError
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError, coerce
from wsgicliquet.types import WSGIApp

__all__ = ["EndOfLife", "filter_factory"]


def _now() -> float:
    """The server clock (a function, so that tests can move it)."""
    return time.time()


def _alert(code: str, message: Optional[str], url: str) -> str:
    return json.dumps({"code": code, "message": message, "url": url})


class EndOfLife:
    """Add the end-of-service headers before ``eos``; answer 410 errno 202 from ``eos`` on."""

    def __init__(self, app: WSGIApp, *, eos: Optional[Union[datetime.date, str]] = None,
                 eos_message: Optional[str] = None, eos_url: Optional[str] = None, project_docs: str = "") -> None:
        self.app = app
        if isinstance(eos, str):
            eos = coerce("eos", eos)
        if isinstance(eos, datetime.datetime):
            eos = eos.date()
        if eos is not None and not isinstance(eos, datetime.date):
            raise ConfigurationError(f"Setting 'eos' has an invalid value {eos!r}: not a date")
        self.eos: Optional[datetime.date] = eos
        self.sunset = float("inf")
        if eos is None:
            return
        url = eos_url or project_docs
        # Local midnight, computed once: comparing the clock to it is the local date reaching ``eos``.
        sunset = self.sunset = datetime.datetime.combine(eos, datetime.time()).timestamp()
        standard = [("Deprecation", f"@{int(sunset)}"), ("Sunset", formatdate(sunset, usegmt=True))]
        self.soft_headers: List[Tuple[str, str]] = [("Alert", _alert("soft-eol", eos_message, url))] + standard
        self.gone = HTTPError(410, ERRORS.SERVICE_DEPRECATED,
                              headers=[("Alert", _alert("hard-eol", eos_message, url))] + standard)

    @classmethod
    def from_settings(cls, app: WSGIApp, settings: Mapping[str, Any]) -> "EndOfLife":
        """``eos`` may still be a string here (a plain dict of settings); it is parsed, or start-up stops."""
        return cls(app, eos=coerce("eos", settings.get("eos")), eos_message=settings.get("eos_message"),
                   eos_url=settings.get("eos_url"), project_docs=settings.get("project_docs") or "")

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.eos is None:
            return self.app(environ, start_response)
        if _now() >= self.sunset:
            return self.gone(environ, start_response)
        extra = self.soft_headers

        def with_alert(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            return start_response(status, list(headers) + extra, exc_info)

        return self.app(environ, with_alert)


filter_factory = make_filter_factory(EndOfLife)

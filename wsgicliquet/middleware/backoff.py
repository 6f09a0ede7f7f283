"""Ask clients to slow down: ``Backoff`` on responses, ``Retry-After`` on 503 and 429 (PROTOCOL.md §9.1, §9.2).

``Backoff: <seconds>`` goes on every response, errors and ``304`` included, or on ``backoff_percentage`` percent of
them (chosen at random: a gentle way to shed load).  ``Retry-After: <retry_after_seconds>`` goes on every 503 and
429 that passes through, unless the app already set one.  Headers only: the body streams through untouched.

Put it per version (below the version prefix), above the app whose responses it should mark.
Settings: ``backoff`` (unset: no header), ``backoff_percentage`` (unset: all responses), ``retry_after_seconds``.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from wsgicliquet.environ import NOT_AN_ERROR
from wsgicliquet.errors import retry_after_headers
from wsgicliquet.middleware import status_code
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import WSGIApp

__all__ = ["Backoff", "filter_factory"]


class Backoff:
    """Add ``Backoff`` and ``Retry-After`` headers; the body is never touched."""

    def __init__(self, app: WSGIApp, *, backoff: Optional[int] = None, backoff_percentage: Optional[int] = None,
                 retry_after_seconds: Optional[int] = 30) -> None:
        if backoff is not None and backoff < 0:
            raise ConfigurationError(f"Setting 'backoff' must not be negative, not {backoff!r}")
        if backoff_percentage is not None and not 0 <= backoff_percentage <= 100:
            raise ConfigurationError(
                f"Setting 'backoff_percentage' must be between 0 and 100, not {backoff_percentage!r}")
        if retry_after_seconds is not None and retry_after_seconds < 0:
            raise ConfigurationError(f"Setting 'retry_after_seconds' must not be negative, not {retry_after_seconds!r}")
        self.app = app
        self.backoff = None if backoff is None else str(backoff)
        self.percentage = backoff_percentage
        self.retry_after_seconds = retry_after_seconds
        self.enabled = backoff is not None or retry_after_seconds is not None

    @classmethod
    def from_settings(cls, app: WSGIApp, settings: Mapping[str, Any]) -> "Backoff":
        return cls(app, backoff=settings.get("backoff"), backoff_percentage=settings.get("backoff_percentage"),
                   retry_after_seconds=settings.get("retry_after_seconds"))

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self.enabled:
            return self.app(environ, start_response)
        backoff = self.backoff
        if backoff is not None and self.percentage is not None and random.random() * 100 >= self.percentage:
            backoff = None

        def with_headers(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            headers = list(headers)
            if backoff is not None:
                headers.append(("Backoff", backoff))
            code = status_code(status)
            if code in (503, 429) and not environ.get(NOT_AN_ERROR) \
                    and not any(name.lower() == "retry-after" for name, _ in headers):
                headers.extend(retry_after_headers(code, self.retry_after_seconds))
            return start_response(status, headers, exc_info)

        return self.app(environ, with_headers)


filter_factory = make_filter_factory(Backoff)

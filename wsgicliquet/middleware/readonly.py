"""Read-only maintenance mode: refuse writes with ``405`` errno 115 (PROTOCOL.md §9.3).

When on, any method other than ``GET``, ``HEAD`` and ``OPTIONS`` is answered ``405 Method Not Allowed`` with
``Allow: GET, HEAD, OPTIONS``, whatever the path, without reaching the app; the ``Allow`` of an ``OPTIONS`` answer
keeps only those methods, so that neither it nor a CORS preflight announces a write that would be refused.  It
looks only at the request it receives: placed below the batch middleware (as ``build_pipeline`` does),
``POST /batch`` is still served and each write sub-request gets its own 405 entry.  Reads are untouched, so the
service keeps answering from a read-only database replica.

Setting: ``readonly`` (default false; the hello view shows it, the heartbeat probes only read).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Tuple

from wsgicliquet.errors import ERRORS, HTTPError
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.types import WSGIApp

__all__ = ["ReadOnly", "filter_factory", "READ_METHODS"]


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ReadOnly:
    """Refuse every write with 405 errno 115 while ``readonly`` is on."""

    def __init__(self, app: WSGIApp, *, readonly: bool = False) -> None:
        self.app = app
        self.readonly = bool(readonly)
        self.refusal = HTTPError(405, ERRORS.METHOD_NOT_ALLOWED, headers=[("Allow", "GET, HEAD, OPTIONS")])

    @classmethod
    def from_settings(cls, app: WSGIApp, settings: Mapping[str, Any]) -> "ReadOnly":
        return cls(app, readonly=settings["readonly"])

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if not self.readonly or method in ("GET", "HEAD"):
            return self.app(environ, start_response)
        if method == "OPTIONS":
            return self.app(environ, _reads_only(start_response))
        return self.refusal(environ, start_response)


def _reads_only(start_response: Callable[..., Any]) -> Callable[..., Any]:
    """``start_response`` with the methods of ``Allow`` cut down to the reads."""

    def filtered(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        result = []
        for name, value in headers:
            if name.lower() == "allow":
                methods = [item.strip() for item in value.split(",") if item.strip().upper() in READ_METHODS]
                value = ", ".join(methods or ["OPTIONS"])
            result.append((name, value))
        return start_response(status, result, exc_info)

    return filtered


filter_factory = make_filter_factory(ReadOnly)

"""Profile every request with Werkzeug's profiler and write one ``pstats`` file per request (PROTOCOL.md §18).

For finding slow code on a development or staging machine, never in production: the profiler slows every
request down and buffers each response.  Place it outermost (as ``build_pipeline`` does) so that it measures
everything.  Files are named ``<METHOD>.<path>.<elapsed>ms.<epoch>.<id>.prof`` (``POST.v1.batch.000176ms...``);
read them with ``python -m pstats <file>`` or render them with ``gprof2dot -f pstats <file> | dot -Tpng``.

Settings: ``profiler_enabled`` (default false: a pass-through), ``profiler_dir`` (default ``/tmp``; empty: the system
temporary directory; created when missing).
"""
from __future__ import annotations

import os
import re
import tempfile
import uuid
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from werkzeug.middleware.profiler import ProfilerMiddleware

from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.types import StartResponse

__all__ = ["Profiler", "profile_filename", "filter_factory"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def profile_filename(environ: Mapping[str, Any]) -> str:
    """``<METHOD>.<path with dots>.<elapsed>ms.<epoch>.<id>.prof``: safe on any file system, never reused.

    The path is SCRIPT_NAME + PATH_INFO, which routers below may have split differently but never changed.
    """
    measures = environ.get("werkzeug.profiler") or {}
    path = (str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))).strip("/")
    path = _UNSAFE.sub("_", path.replace("/", "."))[:100] or "root"
    method = _UNSAFE.sub("_", str(environ.get("REQUEST_METHOD", "")))[:16] or "_"
    return (f"{method}.{path}.{measures.get('elapsed', 0):06.0f}ms.{measures.get('time', 0):.0f}."
            f"{uuid.uuid4().hex[:8]}.prof")


class Profiler:
    """Werkzeug's ``ProfilerMiddleware`` writing to ``profile_dir``, or a pass-through when disabled."""

    def __init__(self, app: Callable, *, enabled: bool = False, profile_dir: Optional[str] = None) -> None:
        self.app = app
        profile_dir = profile_dir or tempfile.gettempdir()
        self.profiled: Optional[Callable] = None
        if enabled:
            try:
                os.makedirs(profile_dir, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"Setting 'profiler_dir' has an invalid value {profile_dir!r}: {exc}") \
                    from None
            if not os.access(profile_dir, os.W_OK):
                raise ConfigurationError(f"Setting 'profiler_dir' has an invalid value {profile_dir!r}: "
                                         "not a writable directory")
            self.profiled = ProfilerMiddleware(app, stream=None, profile_dir=profile_dir,
                                               filename_format=profile_filename)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "Profiler":
        return cls(app, enabled=bool(settings.get("profiler_enabled")),
                   profile_dir=settings.get("profiler_dir") or None)

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.profiled is None:
            return self.app(environ, start_response)
        return self.profiled(environ, start_response)


filter_factory = make_filter_factory(Profiler)

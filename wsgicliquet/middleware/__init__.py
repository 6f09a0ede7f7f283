"""Independent WSGI middlewares, one feature per module; each usable alone around any WSGI app.

Convention: ``Class(app, *, option=default)``, ``Class.from_settings(app, settings)``, and a module-level
PasteDeploy ``filter_factory``.  Configuration is computed once in ``__init__``; per-request state lives in locals.
"""

from typing import Any, Callable, Iterable


def answer_options(start_response: Callable[..., Any], allow: str) -> Iterable[bytes]:
    """``200`` with ``Allow`` to an ``OPTIONS`` request: how the CORS middleware learns an endpoint's methods."""
    start_response("200 OK", [("Allow", allow), ("Content-Length", "0")])
    return [b""]

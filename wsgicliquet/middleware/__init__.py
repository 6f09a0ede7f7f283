"""Independent WSGI middlewares, one feature per module; each usable alone around any WSGI app.

Convention: ``Class(app, *, option=default)``, ``Class.from_settings(app, settings)``, and a module-level
PasteDeploy ``filter_factory``.  Configuration is computed once in ``__init__``; per-request state lives in locals.
"""

from typing import Any, Callable, Iterable, Iterator


def answer_options(start_response: Callable[..., Any], allow: str) -> Iterable[bytes]:
    """``200`` with ``Allow`` to an ``OPTIONS`` request: how the CORS middleware learns an endpoint's methods."""
    start_response("200 OK", [("Allow", allow), ("Content-Length", "0")])
    return [b""]


class ClosingResponse:
    """The app's response iterable, wrapped so that :meth:`finish` runs once, when the server closes it.

    WSGI servers call ``close()`` after the last byte is sent, so work done there (a log line, a metrics packet) sees
    the real duration.  ``failed`` tells whether the app's own ``close()`` raised.
    """

    __slots__ = ("result", "_closed", "_failed")

    def __init__(self) -> None:
        self.result: Iterable[bytes] = ()
        self._closed = False
        self._failed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        except BaseException:
            self._failed = True
            raise
        finally:
            self.finish(self._failed)

    def finish(self, failed: bool) -> None:
        raise NotImplementedError

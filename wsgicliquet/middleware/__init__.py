"""Independent WSGI middlewares, one feature per module; each usable alone around any WSGI app.

Convention: ``Class(app, *, option=default)``, ``Class.from_settings(app, settings)``, and a module-level
PasteDeploy ``filter_factory``.  Configuration is computed once in ``__init__``; per-request state lives in locals.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from wsgicliquet.errors import ERRORS, HTTPError, invalid

_READ_CHUNK = 64 * 1024


@functools.lru_cache(maxsize=256)  # an app answers with a few lines, and several layers read each
def status_code(status: str) -> int:
    """The code of a WSGI status line (``"404 Not Found"``); 500 for a line no server would send on."""
    try:
        return int(status[:3])
    except ValueError:
        return 500


def answer_options(start_response: Callable[..., Any], allow: str) -> Iterable[bytes]:
    """``200`` with ``Allow`` to an ``OPTIONS`` request: how the CORS middleware learns an endpoint's methods."""
    start_response("200 OK", [("Allow", allow), ("Content-Length", "0")])
    return [b""]


def read_body(environ: Mapping[str, Any], max_size: int) -> bytes:
    """The request body: 413 beyond ``max_size`` bytes (told by Content-Length before anything is read, or found
    while reading a chunked upload), 400 for a Content-Length that is not a plain decimal number (``int()`` would
    take ``+5``, ``1_0``, ``-1`` or ``²``)."""
    length = (environ.get("CONTENT_LENGTH") or "").strip()
    if length:
        if not (length.isascii() and length.isdigit()):
            raise invalid("headers", "Content-Length", "Invalid Content-Length")
        expected = int(length)
        if expected > max_size:
            raise HTTPError(413, ERRORS.REQUEST_TOO_LARGE)
    elif environ.get("wsgi.input_terminated"):
        expected = max_size + 1  # chunked: read no more than one byte past the limit
    else:
        return b""
    stream = environ.get("wsgi.input")
    chunks: List[bytes] = []
    total = 0
    while stream is not None and total < expected:  # a stream may return less than asked
        chunk = stream.read(min(_READ_CHUNK, expected - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_size:
        raise HTTPError(413, ERRORS.REQUEST_TOO_LARGE)
    return b"".join(chunks)


def collect(app: Callable[..., Iterable[bytes]], environ: Dict[str, Any]
            ) -> Tuple[str, List[Tuple[str, str]], bytes, Optional[Any]]:
    """Run ``app`` and gather its whole response: ``(status, headers, body, exc_info)``.

    The body holds what the app wrote through ``write()`` followed by its iterable, which is closed afterwards; the
    status and headers are the last ones given to ``start_response`` (an app may replace them, with ``exc_info``,
    before any byte is sent).
    """
    captured: List[Any] = []
    written: List[bytes] = []

    def capture(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        captured[:] = [status, list(headers), exc_info]
        return written.append

    result = app(environ, capture)
    try:
        written.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers, exc_info = captured
    return status, headers, b"".join(written), exc_info


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

"""One storage transaction per request: a request's writes, or a whole batch's, commit or roll back together.

Place it above the batch middleware (as ``build_pipeline`` does) so that a batch is one transaction, rolled back
when the batch ends with a 5xx.  The transaction is committed before the response starts, so an acknowledged
write is durable.  The request's resource events (:mod:`wsgicliquet.events`) are notified around the commit:
``ResourceChanged`` inside the transaction (a subscriber's HTTPError becomes the answer, and rolls back),
``AfterResourceChanged`` once committed.  Backends without transactions (memory) make this a pass-through.
Setting: ``transaction_per_request`` (default true).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping

from wsgicliquet.backends import load_backend
from wsgicliquet.errors import HTTPError
from wsgicliquet.events import request_queue
from wsgicliquet.middleware import collect, status_code
from wsgicliquet.pipeline import make_filter_factory
from wsgicliquet.storage import Storage

__all__ = ["Transaction", "filter_factory"]


class _Rollback(Exception):
    """Raised inside the transaction block to roll back a request that ended with a 5xx."""


class Transaction:
    """Run ``app`` in a transaction of ``storage``; the response is buffered, since the commit must come before the
    status line (a failed commit is a 503, not a 200 that was not durable)."""

    def __init__(self, app: Callable, *, storage: Any = None, enabled: bool = True) -> None:
        self.app = app
        self.storage = storage
        # A backend without transactions (the contract's no-op default, as memory) makes this a pass-through.
        has_transactions = storage is not None and type(storage).transaction is not Storage.transaction
        self.enabled = bool(enabled and has_transactions)

    @classmethod
    def from_settings(cls, app: Callable, settings: Mapping[str, Any]) -> "Transaction":
        return cls(app, storage=load_backend("storage", settings), enabled=settings["transaction_per_request"])

    def __call__(self, environ: Dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if not self.enabled:
            return self.app(environ, start_response)
        events = request_queue(environ)
        try:
            with self.storage.transaction():
                status, headers, body, exc_info = collect(self.app, environ)
                if status_code(status) >= 500:
                    raise _Rollback()
                if events:
                    events.notify_before()
        except _Rollback:
            pass
        except HTTPError as error:  # a subscriber refused the changes (or the app raised its answer): rolled back
            return error(environ, start_response)
        else:
            if events:
                events.notify_after()
        finally:  # rolled back, or notified already: nothing (more) to announce
            if events is not None:
                events.discard()
        start_response(status, headers, exc_info)
        return [body]


filter_factory = make_filter_factory(Transaction)

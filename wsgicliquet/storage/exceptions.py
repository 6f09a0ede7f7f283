"""Exceptions of the backends; the HTTP layer maps them to responses (BackendError is a 503 errno 201)."""
from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["StorageError", "BackendError", "RecordNotFoundError", "UnicityError", "PreconditionFailed"]


class StorageError(Exception):
    """Base of the backend exceptions."""


class BackendError(StorageError):
    """The server behind a backend failed or is unreachable; wraps the original exception."""

    def __init__(self, original: Optional[BaseException] = None, message: Optional[str] = None) -> None:
        self.original = original
        if message is None and original is not None:
            message = f"{type(original).__name__}: {original}"
        super().__init__(message or "Backend failure")


class RecordNotFoundError(StorageError):
    """No live record (or tombstone, when asked for) with that id; ``object_id`` is the id asked for, and the
    message is the same on every backend."""

    def __init__(self, object_id: Optional[str] = None) -> None:
        self.object_id = object_id
        super().__init__("Record not found" if object_id is None else f"Record {object_id!r} not found")


class UnicityError(StorageError):
    """A write would give two live records the same id or the same value of a unique field."""

    def __init__(self, field: str, record: Dict[str, Any]) -> None:
        self.field = field
        self.record = record
        super().__init__(f"Conflict of field {field} on record {record.get('id')}")


class PreconditionFailed(StorageError):
    """A conditional write (``if_match``, ``if_absent``) found the record in another state; nothing was written.

    ``existing`` is what the write found, read under the same lock: the live record, else its tombstone, else None.
    """

    def __init__(self, existing: Optional[Dict[str, Any]]) -> None:
        self.existing = existing
        found = "no record" if existing is None else f"record {existing.get('id')} at {existing.get('last_modified')}"
        super().__init__(f"Precondition failed: found {found}")

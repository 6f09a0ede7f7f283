"""Helpers of the backend tests: their Redis database and PostgreSQL databases are shared with other tests."""
from __future__ import annotations

from typing import Iterator, TypeVar

Backend = TypeVar("Backend")


def emptied(backend: Backend) -> Iterator[Backend]:
    """The body of a fixture: ``backend`` flushed before the test, and after it so the next one starts empty."""
    backend.flush()  # type: ignore[attr-defined]
    yield backend
    backend.flush()  # type: ignore[attr-defined]

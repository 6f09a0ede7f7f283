"""In-process cache: a dict with expiry times on the monotonic clock.  For development and tests.

Values are stored as JSON text, so a value read back is a fresh copy with exactly the types a Redis or PostgreSQL
cache would return (tuples come back as lists).  Expired keys are dropped when they are touched.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, Optional, Tuple

from . import Cache as CacheBase, lifetime

__all__ = ["Cache"]


class Cache(CacheBase):
    """Memory cache backend; every key is prefixed by ``prefix`` (setting ``cache_prefix``)."""

    name = "memory"

    def __init__(self, prefix: str = "") -> None:
        super().__init__(prefix)
        self._store: Dict[str, Tuple[str, Optional[float]]] = {}  # key -> (JSON text, monotonic expiry or None)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "cache") -> "Cache":
        return cls(prefix=settings.get("cache_prefix") or "")

    def flush(self) -> None:
        with self._lock:
            self._store.clear()

    def _live(self, key: str) -> Optional[Tuple[str, Optional[float]]]:
        """The entry of a prefixed key, dropping it when expired; the caller holds the lock."""
        entry = self._store.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= time.monotonic():
            del self._store[key]
            return None
        return entry

    def ttl(self, key: str) -> float:
        with self._lock:
            entry = self._live(self.prefix + key)
            if entry is None or entry[1] is None:
                return -1.0
            return entry[1] - time.monotonic()

    def expire(self, key: str, ttl: float) -> None:
        key, seconds = self.prefix + key, lifetime(ttl)
        with self._lock:
            entry = self._live(key)
            if entry is not None:
                self._store[key] = (entry[0], time.monotonic() + seconds)

    def set(self, key: str, value: Any, ttl: Optional[float] = None) -> None:
        text = json.dumps(value)
        expiry = time.monotonic() + lifetime(ttl) if ttl is not None else None
        with self._lock:
            self._store[self.prefix + key] = (text, expiry)

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._live(self.prefix + key)
        return json.loads(entry[0]) if entry is not None else None

    def delete(self, key: str) -> Any:
        with self._lock:
            entry = self._live(self.prefix + key)
            self._store.pop(self.prefix + key, None)
        return json.loads(entry[0]) if entry is not None else None

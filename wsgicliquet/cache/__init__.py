"""The cache contract (PROTOCOL.md §17.3): JSON values with optional TTLs, every key prefixed by ``cache_prefix``.

``wsgicliquet.cache.testing`` holds the contract suite every backend passes.
"""
from __future__ import annotations

import abc
import math
from typing import Any, Dict, Optional

from wsgicliquet.storage.exceptions import BackendError

__all__ = ["Cache", "BackendError", "MAX_TTL", "lifetime"]

#: Longest lifetime in seconds (about a century): a longer one, infinity included, is capped to it, as Redis and
#: PostgreSQL cannot hold a lifetime of any size.
MAX_TTL = 100 * 365 * 24 * 3600


def lifetime(ttl: Any) -> float:
    """``ttl`` as seconds, the same on every backend: what ``float()`` takes (settings may give text), capped to
    :data:`MAX_TTL`; zero or less (made zero) means already expired.  ``ValueError`` when it is not a number
    (NaN included)."""
    seconds = float(ttl)
    if math.isnan(seconds):
        raise ValueError("a cache lifetime must be a number of seconds, not NaN")
    return min(max(seconds, 0.0), float(MAX_TTL))


class Cache(abc.ABC):
    """Abstract cache backend.  Failures of the server raise :class:`BackendError`; methods are thread-safe."""

    name = "cache"

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "cache") -> "Cache":
        """Build from ``<prefix>_url``, ``<prefix>_pool_size`` and ``cache_prefix``."""

    def initialize_schema(self, dry_run: bool = False) -> None:
        """Create tables where needed; idempotent."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Remove every key of this cache (only keys under its prefix)."""

    @abc.abstractmethod
    def ttl(self, key: str) -> float:
        """Remaining lifetime in seconds (a float); negative when the key has no TTL or does not exist."""

    @abc.abstractmethod
    def expire(self, key: str, ttl: float) -> None:
        """Give an existing key a lifetime of ``ttl`` seconds (see :func:`lifetime`)."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: Optional[float] = None) -> None:
        """Store a JSON-serializable value (``TypeError`` otherwise), for ``ttl`` seconds when given (see
        :func:`lifetime`).  A key is any text."""

    @abc.abstractmethod
    def get(self, key: str) -> Any:
        """The value, or None when absent or expired."""

    @abc.abstractmethod
    def delete(self, key: str) -> Any:
        """Remove the key; return its value (None when absent)."""

    def ping(self, readonly: bool = False) -> bool:
        """Heartbeat probe (the cache stays writable in read-only mode)."""
        try:
            self.set("__heartbeat__", "alive", 3600)
            self.delete("__heartbeat__")
            return True
        except Exception:
            return False

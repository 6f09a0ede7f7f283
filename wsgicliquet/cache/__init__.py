"""The cache contract (PROTOCOL.md §17.3): JSON values with optional TTLs, every key prefixed by ``cache_prefix``.

``wsgicliquet.cache.testing`` holds the contract suite every backend passes.
"""
from __future__ import annotations

import abc
from typing import Any, Dict, Optional

from wsgicliquet.storage.exceptions import BackendError

__all__ = ["Cache", "BackendError"]


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
        """Remaining lifetime in seconds; negative when the key has no TTL or does not exist."""

    @abc.abstractmethod
    def expire(self, key: str, ttl: float) -> None:
        """Give an existing key a lifetime of ``ttl`` seconds."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: Optional[float] = None) -> None:
        """Store a JSON-serializable value, for ``ttl`` seconds when given."""

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

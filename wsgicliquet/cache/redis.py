"""Redis cache (PROTOCOL.md §17.3): JSON values, lifetimes kept by Redis itself (``PSETEX`` / ``PEXPIRE``).

Keys are ``<key prefix>cache:<cache_prefix><key>`` (key prefix ``wsgicliquet:`` by default, see
``docs/redis.md``), so ``flush()`` removes this cache's keys and nothing else in the database.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from wsgicliquet import redis_client
from wsgicliquet.cache import Cache as BaseCache, lifetime
from wsgicliquet.redis_client import wrap_errors

__all__ = ["Cache"]


class Cache(BaseCache):
    name = "redis"

    def __init__(self, client: Any, *, prefix: str = "", key_prefix: str = redis_client.DEFAULT_KEY_PREFIX) -> None:
        super().__init__(prefix)
        self.client = client
        self.namespace = f"{key_prefix}cache:{prefix}"

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "cache") -> "Cache":
        return cls(redis_client.client_from_settings(settings, prefix),
                   prefix=str(settings.get("cache_prefix") or ""),
                   key_prefix=redis_client.key_prefix_from_settings(settings, prefix))

    def _key(self, key: str) -> bytes:
        """Lone surrogates (text decoded with ``surrogateescape``) are kept as their UTF-8-like bytes."""
        return (self.namespace + key).encode("utf-8", "surrogatepass")

    @wrap_errors
    def flush(self) -> None:
        redis_client.unlink_prefix(self.client, self.namespace)

    @wrap_errors
    def ttl(self, key: str) -> float:
        milliseconds = self.client.pttl(self._key(key))
        return milliseconds / 1000.0 if milliseconds >= 0 else -1.0

    @wrap_errors
    def expire(self, key: str, ttl: float) -> None:
        self.client.pexpire(self._key(key), _milliseconds(ttl))

    @wrap_errors
    def set(self, key: str, value: Any, ttl: Optional[float] = None) -> None:
        data = json.dumps(value)
        if ttl is None:
            self.client.set(self._key(key), data)
        elif _milliseconds(ttl) > 0:
            self.client.psetex(self._key(key), _milliseconds(ttl), data)
        else:  # already expired
            self.client.delete(self._key(key))

    @wrap_errors
    def get(self, key: str) -> Any:
        data = self.client.get(self._key(key))
        return None if data is None else json.loads(data)

    @wrap_errors
    def delete(self, key: str) -> Any:
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self._key(key))
        pipe.delete(self._key(key))
        data, _ = pipe.execute()
        return None if data is None else json.loads(data)


def _milliseconds(seconds: float) -> int:
    """Redis lifetimes are in milliseconds (capped, see ``lifetime``); PEXPIRE with zero or less removes the key."""
    return int(round(lifetime(seconds) * 1000))

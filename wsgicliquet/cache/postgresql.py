"""PostgreSQL cache (PROTOCOL.md §17.3): table ``cache(key TEXT PRIMARY KEY, value TEXT, expires_at TIMESTAMPTZ)``.

Values are stored as JSON text (so any JSON value fits, NUL characters included).  Expiry uses the database clock,
so every process sees the same TTLs; expired rows are never returned and are purged on writes, not on reads (a GET
that only reads the cache stays a read).  Shares the connection pool of the other backends configured with the same
URL, but not the request's transaction: each call commits at once, so two concurrent requests caching the same key
never wait for each other's end.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from wsgicliquet.cache import Cache as CacheBase, lifetime
from wsgicliquet.postgresql import Backend, Client, Migration, get_client, settings_options

__all__ = ["Cache", "MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: List[Migration] = [
    (1, """
    CREATE TABLE IF NOT EXISTS cache (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_at TIMESTAMPTZ
    );
    CREATE INDEX IF NOT EXISTS cache_expires_at_idx ON cache (expires_at);
    """),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_LIVE = "(expires_at IS NULL OR expires_at > clock_timestamp())"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_UNSTORABLE = re.compile("[\x00\x01\ud800-\udfff]")


def _stored(text: str) -> str:
    """A key as PostgreSQL text, which holds neither NUL nor lone surrogates: those and the escape character
    U+0001 become U+0001 followed by a code (one-to-one, and a prefix of a key stays a prefix of the stored key,
    so ``flush`` still matches by prefix).  Keys without these characters are stored as they are."""
    return _UNSTORABLE.sub(lambda match: "\x01" + {"\x00": "0", "\x01": "1"}.get(
        match.group(), f"u{ord(match.group()):04x}"), text)


class Cache(Backend, CacheBase):
    """Settings: ``cache_url``, ``cache_pool_size``, ``cache_prefix`` (and optionally ``cache_pool_timeout``)."""

    component, migrations, tables = "cache", MIGRATIONS, ("cache",)

    def __init__(self, client: Client, prefix: str = "") -> None:
        Backend.__init__(self, client)
        CacheBase.__init__(self, prefix=prefix)

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "") -> "Cache":
        return cls(get_client(**settings_options(settings, prefix or cls.component)),
                   prefix=settings.get("cache_prefix") or "")

    def _run(self, query: str, params: Any = None, fetch: Optional[str] = None) -> Any:
        self.client.check_schema("cache", SCHEMA_VERSION, autonomous=True)
        return self.client.execute(query, params, fetch, autonomous=True)

    def flush(self) -> None:
        self._run("DELETE FROM cache WHERE key LIKE %s ESCAPE '\\'", (_escape_like(_stored(self.prefix)) + "%",))

    def ttl(self, key: str) -> float:
        row = self._run(f"SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM cache "
                        f"WHERE key = %s AND expires_at IS NOT NULL AND {_LIVE}", (_stored(self.prefix + key),),
                        fetch="one")
        return float(row[0]) if row else -1.0

    def expire(self, key: str, ttl: float) -> None:
        self._run(f"UPDATE cache SET expires_at = clock_timestamp() + %s * interval '1 second' "
                  f"WHERE key = %s AND {_LIVE}", (lifetime(ttl), _stored(self.prefix + key)))

    def set(self, key: str, value: Any, ttl: Optional[float] = None) -> None:
        # Expired rows are purged here, a few at a time, skipping rows another writer holds: never a wait.
        self._run("""
        WITH purged AS (
            DELETE FROM cache WHERE key IN (
                SELECT key FROM cache WHERE expires_at <= clock_timestamp() AND key <> %(key)s
                LIMIT 100 FOR UPDATE SKIP LOCKED)
        )
        INSERT INTO cache (key, value, expires_at)
        VALUES (%(key)s, %(value)s, clock_timestamp() + %(ttl)s * interval '1 second')
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
        """, {"key": _stored(self.prefix + key), "value": json.dumps(value),
              "ttl": None if ttl is None else lifetime(ttl)})

    def get(self, key: str) -> Any:
        row = self._run(f"SELECT value FROM cache WHERE key = %s AND {_LIVE}", (_stored(self.prefix + key),),
                        fetch="one")
        return json.loads(row[0]) if row else None

    def delete(self, key: str) -> Any:
        row = self._run(f"DELETE FROM cache WHERE key = %s RETURNING value, {_LIVE}", (_stored(self.prefix + key),),
                        fetch="one")
        return json.loads(row[0]) if row and row[1] else None

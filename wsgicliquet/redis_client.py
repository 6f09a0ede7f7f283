"""The Redis connection shared by the storage, cache and permission backends.

One blocking connection pool per URL per process, so that three backends pointing at the same server share their
connections.  Every socket has a timeout, so an outage makes a request fail fast with
:class:`~wsgicliquet.storage.exceptions.BackendError` (a 503) instead of hanging; the pool reconnects by itself
once the server is back.  Every key the backends write starts with a key prefix (``wsgicliquet:`` by default), so
that one Redis database can hold other data, and ``flush()`` removes only the prefixed keys.

Timeouts can be tuned in the URL with redis-py's query options, e.g.
``redis://host:6379/0?socket_timeout=2&socket_connect_timeout=1``.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Dict, Iterable, Mapping, TypeVar
from urllib.parse import urlsplit

from wsgicliquet.backends import missing_extra
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.storage.exceptions import BackendError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - depends on the installation
    redis = None  # type: ignore[assignment]

__all__ = ["DEFAULT_KEY_PREFIX", "get_client", "client_from_settings", "key_prefix_from_settings",
           "wrap_errors", "load_scripts", "unlink_prefix", "escape"]

DEFAULT_KEY_PREFIX = "wsgicliquet:"

#: Defaults of the pool; the URL's query options win.
SOCKET_TIMEOUT = 5.0
SOCKET_CONNECT_TIMEOUT = 2.0
POOL_TIMEOUT = 5.0

_clients: Dict[str, "redis.Redis"] = {}
_lock = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def get_client(url: str, pool_size: int = 25) -> "redis.Redis":
    """The process-wide client of ``url``; the first caller's ``pool_size`` sizes the shared pool."""
    if redis is None:  # pragma: no cover
        raise missing_extra("redis", "redis")
    client = _clients.get(url)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(url)
        if client is None:
            options: Dict[str, Any] = {
                "max_connections": max(1, int(pool_size)),
                "timeout": POOL_TIMEOUT,
                "socket_timeout": SOCKET_TIMEOUT,
                "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
                # No retry, not even on a broken connection: a connection lost after the command was sent (a
                # CLIENT KILL, a crash) may have run it, and running a write again answered a PATCH or DELETE
                # that succeeded with 412 or 404 (a POST with 200).  A pooled socket the server closed while
                # idle (a restart) is replaced when taken from the pool, before anything is sent.
                "retry": Retry(NoBackoff(), 0),
            }
            try:
                pool = redis.BlockingConnectionPool.from_url(url, **options)
            except ValueError as exc:
                raise ConfigurationError(f"Invalid Redis URL {url!r}: {exc}") from exc
            client = _clients[url] = redis.Redis(connection_pool=pool)
    return client


def client_from_settings(settings: Mapping[str, Any], prefix: str) -> "redis.Redis":
    """The client of ``<prefix>_url`` with a pool of ``<prefix>_pool_size`` connections."""
    url = settings.get(f"{prefix}_url") or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(f"Setting '{prefix}_url' has an invalid value {url!r}: not a Redis URL")
    if url.startswith(("redis://", "rediss://")):
        # redis-py silently falls back to database 0 for a path that is not a number (``/sessions``).
        database = urlsplit(url).path.strip("/")
        if database and not database.isdigit():
            raise ConfigurationError(f"Setting '{prefix}_url' has an invalid value {url!r}: "
                                     f"the database {database!r} is not a number")
    try:
        return get_client(url, int(settings.get(f"{prefix}_pool_size") or 25))
    except ConfigurationError as exc:
        raise ConfigurationError(f"Setting '{prefix}_url' has an invalid value {url!r}: {exc.__cause__ or exc}") \
            from None


def key_prefix_from_settings(settings: Mapping[str, Any], prefix: str) -> str:
    """``<prefix>_key_prefix`` when given, else ``redis_key_prefix``, else ``wsgicliquet:``."""
    value = settings.get(f"{prefix}_key_prefix")
    if value is None:
        value = settings.get("redis_key_prefix", DEFAULT_KEY_PREFIX)
    if not value:
        raise ConfigurationError(f"Setting '{prefix}_key_prefix' must not be empty: flush() needs a prefix")
    return str(value)


def wrap_errors(method: F) -> F:
    """Turn every redis-py failure of a backend method (unreachable, timeout, script error) into a BackendError."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise BackendError(exc) from exc

    return wrapper  # type: ignore[return-value]


def load_scripts(client: "redis.Redis", scripts: Iterable[Any]) -> None:
    """``SCRIPT LOAD`` registered scripts ahead of their first use (``initialize_schema``)."""
    for script in scripts:
        script.sha = client.script_load(script.script)


def unlink_prefix(client: "redis.Redis", prefix: str, batch: int = 500) -> int:
    """Remove every key starting with ``prefix`` (SCAN + UNLINK, never FLUSHDB); return how many."""
    pattern = _glob_escape(prefix) + "*"
    removed = 0
    keys = []
    for key in client.scan_iter(match=pattern, count=batch):
        keys.append(key)
        if len(keys) >= batch:
            removed += client.unlink(*keys)
            keys = []
    if keys:
        removed += client.unlink(*keys)
    return removed


def _glob_escape(text: str) -> str:
    """Escape Redis glob characters so that a prefix is matched literally."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def match_pattern(glob: str) -> str:
    """The ``MATCH`` pattern of ``SCAN``/``SSCAN`` for a glob whose only wildcard is ``*`` (the rest literal)."""
    return "*".join(_glob_escape(part) for part in glob.split("*"))


def escape(part: str) -> str:
    """Make a key segment colon-free (``%`` and ``:`` are percent-encoded), so segments never run into each other."""
    return part.replace("%", "%25").replace(":", "%3A")

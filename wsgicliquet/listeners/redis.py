"""Push the payload of every resource event, as JSON, onto a Redis list (``LPUSH``), for workers to ``BRPOP``::

    event_listeners = redis
    event_listeners.redis.use = wsgicliquet.listeners.redis
    event_listeners.redis.url = redis://localhost:6379/0
    event_listeners.redis.listname = cliquet.events
    event_listeners.redis.actions = create update delete
    event_listeners.redis.resources = bookmark

Options (after ``event_listeners.<name>.``): ``url`` (default ``redis://localhost:6379/0``), ``pool_size`` (25),
``listname`` (default ``cliquet.events``, as in Cliquet).  The listener receives events once their transaction
committed; a failure to push (Redis down, a payload JSON cannot encode) is logged and never fails the request.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from wsgicliquet import jsonio
from wsgicliquet.events import ResourceEvent
from wsgicliquet.redis_client import get_client
from wsgicliquet.settings import ConfigurationError

__all__ = ["RedisListener", "load_from_config"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_LISTNAME = "cliquet.events"


class RedisListener:
    def __init__(self, client: Any, listname: str = DEFAULT_LISTNAME) -> None:
        self.client = client
        self.listname = listname

    def __call__(self, event: ResourceEvent) -> None:
        try:
            payload = jsonio.dumps(event.payload)
        except (TypeError, ValueError):
            logger.error("Could not encode the payload of %r", event, exc_info=True)
            return
        try:
            self.client.lpush(self.listname, payload)
        except Exception:
            logger.error("Could not push %r to the Redis list %r", event, self.listname, exc_info=True)


def load_from_config(settings: Mapping[str, Any], prefix: str) -> RedisListener:
    """The listener of the options ``<prefix>url``, ``<prefix>pool_size``, ``<prefix>listname``."""
    url = str(settings.get(prefix + "url") or DEFAULT_URL)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(f"Setting '{prefix}url' has an invalid value {url!r}: not a Redis URL")
    raw_size = settings.get(prefix + "pool_size") or 25
    try:
        pool_size = int(raw_size)
        if pool_size < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigurationError(f"Setting '{prefix}pool_size' has an invalid value {raw_size!r}: "
                                 "expected a positive integer") from None
    listname = str(settings.get(prefix + "listname") or DEFAULT_LISTNAME)
    return RedisListener(get_client(url, pool_size), listname)

"""Resource events (PROTOCOL.md §17.6): what the resource app wrote or read, for code that reacts to it.

::

    def changed(event: AfterResourceChanged) -> None:
        for change in event.impacted_records:
            index(change.get("new"), change.get("old"))

    app = ResourceApp([Bookmark], settings)
    app.events.subscribe(AfterResourceChanged, changed, actions=("create", "update"), resources=("bookmark",))

* Each write of a resource queues an event, with action ``create``, ``update`` or ``delete``; a GET or HEAD queues a
  ``read`` event, only when something subscribed to reads.  Events of the same resource and action within one request
  (a batch included) are merged into one, its ``impacted_records`` listing every record, as long as they concern
  the same partition and user: Cliquet 3.1.5 merged per resource and action alone, so a batch writing under two
  parents (or for two users) gave one event carrying the first one's ids.
* ``ResourceChanged`` (``ResourceRead``) is notified inside the request's transaction, before it commits: a subscriber
  raising :class:`~wsgicliquet.errors.HTTPError` aborts the request with that answer, and the transaction rolls back.
  ``AfterResourceChanged`` (``AfterResourceRead``) is notified once the transaction committed; a subscriber's
  exception is logged, never raised.  Without a transaction (the ``transaction`` layer off, the memory and Redis
  backends), both are notified when the request (or the batch) ends, a failed batch's included: its writes stay.
* ``payload``: ``action``, ``uri`` (path below the version prefix), ``user_id`` (prefixed, or None), ``resource_name``,
  ``timestamp``, ``<resource_name>_id`` on record URLs, and every placeholder of the URL (``id``, parent ids).
  ``impacted_records``: ``{"new": record}`` (create, read), ``{"new": record, "old": before}`` (update),
  ``{"old": tombstone}`` (delete).
* ``timestamp`` is the collection timestamp the event leaves (the largest ``last_modified`` written; for a read, the
  one read), where Cliquet 3.1.5 read the one of the request's start at the cost of a round trip per write.

Listeners from settings (``event_listeners = redis``, ``event_listeners.redis.use = wsgicliquet.listeners.redis``,
``.actions``, ``.resources``, plus the listener's own options) subscribe to the ``After`` events, so that a change
that was rolled back is never announced.  ``use`` names a module with ``load_from_config(settings, prefix)`` or such
a function (``module:function``); it returns the callable that receives the events.  With StatsD on, each call of a
listener is timed as ``listeners.<name>`` (PROTOCOL.md §14).
"""
from __future__ import annotations

import importlib
import logging
from time import perf_counter
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Type

from wsgicliquet.backends import import_string
from wsgicliquet.environ import EVENTS, METRICS
from wsgicliquet.settings import ConfigurationError, coerce

__all__ = ["ACTIONS", "ResourceEvent", "ResourceChanged", "AfterResourceChanged", "ResourceRead",
           "AfterResourceRead", "Notifier", "EventQueue", "request_queue", "load_listeners"]

logger = logging.getLogger(__name__)

ACTIONS = ("create", "update", "delete", "read")
#: What listeners from settings receive when ``.actions`` is not given.
DEFAULT_LISTENER_ACTIONS = ("create", "update", "delete")


class ResourceEvent:
    """``payload`` and ``impacted_records`` of one resource and action within a request; ``environ`` is that
    request's (the batch request's for a batch)."""

    __slots__ = ("payload", "impacted_records", "environ")

    def __init__(self, payload: Dict[str, Any], impacted_records: List[Dict[str, Any]],
                 environ: Dict[str, Any]) -> None:
        self.payload = payload
        self.impacted_records = impacted_records
        self.environ = environ

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.payload.get('action')} {self.payload.get('uri')!r} " \
               f"({len(self.impacted_records)} records)>"


class ResourceChanged(ResourceEvent):
    """Records were created, updated or deleted: notified before the transaction commits."""


class AfterResourceChanged(ResourceEvent):
    """Records were created, updated or deleted, and committed."""


class ResourceRead(ResourceEvent):
    """Records were read: notified before the transaction commits."""


class AfterResourceRead(ResourceEvent):
    """Records were read, and the request's transaction committed."""


_BEFORE = {"change": ResourceChanged, "read": ResourceRead}
_AFTER = {"change": AfterResourceChanged, "read": AfterResourceRead}


class _Subscriber:
    __slots__ = ("event_type", "callback", "actions", "resources")

    def __init__(self, event_type: Type[ResourceEvent], callback: Callable[[Any], Any],
                 actions: Optional[FrozenSet[str]], resources: Optional[FrozenSet[str]]) -> None:
        self.event_type = event_type
        self.callback = callback
        self.actions = actions
        self.resources = resources

    def wants(self, event: ResourceEvent) -> bool:
        payload = event.payload
        return (isinstance(event, self.event_type)
                and (self.actions is None or payload["action"] in self.actions)
                and (self.resources is None or payload["resource_name"] in self.resources))


class Notifier:
    """The subscribers of one resource app's events."""

    def __init__(self) -> None:
        self._subscribers: List[_Subscriber] = []
        #: Whether anything listens to changes, to reads: the handlers build no event otherwise.
        self.changes = False
        self.reads = False

    def subscribe(self, event_type: Type[ResourceEvent], callback: Callable[[Any], Any], *,
                  actions: Optional[Iterable[str]] = None, resources: Optional[Iterable[str]] = None) -> None:
        """Call ``callback(event)`` for every event of ``event_type`` (a subclass of :class:`ResourceEvent`), of
        one of ``actions`` and ``resources`` (names) when given."""
        if not (isinstance(event_type, type) and issubclass(event_type, ResourceEvent)):
            raise TypeError(f"{event_type!r} is not a ResourceEvent class")
        wanted = None if actions is None else frozenset(actions)
        if wanted is not None and not wanted <= set(ACTIONS):
            raise ValueError(f"Unknown actions {sorted(wanted - set(ACTIONS))}: expected some of {list(ACTIONS)}")
        self._subscribers.append(_Subscriber(event_type, callback, wanted,
                                             None if resources is None else frozenset(resources)))
        reading = wanted is None or "read" in wanted
        changing = wanted is None or bool(wanted - {"read"})
        if event_type is ResourceEvent:
            self.reads, self.changes = self.reads or reading, self.changes or changing
        elif issubclass(event_type, (ResourceRead, AfterResourceRead)):
            self.reads = self.reads or reading
        else:
            self.changes = self.changes or changing

    def notify(self, event: ResourceEvent) -> None:
        """Call the subscribers of ``event`` in the order they subscribed; their exceptions propagate."""
        for subscriber in self._subscribers:
            if subscriber.wants(event):
                subscriber.callback(event)

    def notify_logged(self, event: ResourceEvent) -> None:
        """Like :meth:`notify`, for what is committed already: a subscriber's exception is logged, and the next
        subscribers still run, since nothing could undo the change it announces."""
        for subscriber in self._subscribers:
            if subscriber.wants(event):
                try:
                    subscriber.callback(event)
                except Exception:
                    logger.exception("Subscriber %r failed on %r", subscriber.callback, event)


class EventQueue:
    """The events of one request (a batch shares its request's queue), merged by resource, action and group."""

    __slots__ = ("environ", "_events")

    def __init__(self, environ: Dict[str, Any]) -> None:
        self.environ = environ
        # (notifier, kind, resource name, action, group) -> (payload, impacted records)
        self._events: Dict[Tuple[Any, ...], Tuple[Dict[str, Any], List[Dict[str, Any]]]] = {}

    def add(self, notifier: Notifier, payload: Dict[str, Any], impacted: List[Dict[str, Any]],
            group: Tuple[Any, ...] = ()) -> None:
        """Queue an event, merged into a queued one of the same resource, action and ``group`` (what its payload
        says besides: the partition, the user)."""
        action = payload["action"]
        key = (notifier, "read" if action == "read" else "change", payload["resource_name"], action, group)
        queued = self._events.get(key)
        if queued is None:
            self._events[key] = (payload, impacted)
            return
        first, records = queued
        records.extend(impacted)
        if (payload.get("timestamp") or 0) > (first.get("timestamp") or 0):
            first["timestamp"] = payload["timestamp"]

    def __bool__(self) -> bool:
        return bool(self._events)

    def notify_before(self) -> None:
        """``ResourceChanged`` and ``ResourceRead``: an exception (an HTTPError) aborts the request."""
        for (notifier, kind, *_), (payload, impacted) in list(self._events.items()):
            notifier.notify(_BEFORE[kind](payload, impacted, self.environ))

    def notify_after(self) -> None:
        """``AfterResourceChanged`` and ``AfterResourceRead``, once; a subscriber's exception is logged."""
        events, self._events = self._events, {}
        for (notifier, kind, *_), (payload, impacted) in events.items():
            notifier.notify_logged(_AFTER[kind](payload, impacted, self.environ))

    def notify(self) -> None:
        """Both, for a request (or batch) no transaction wraps: its writes are done, so the ``After`` events follow
        at once, unless a ``before`` subscriber raised; then nothing more is notified and the exception propagates."""
        try:
            self.notify_before()
        except BaseException:
            self.discard()
            raise
        self.notify_after()

    def discard(self) -> None:
        """The request failed and rolled back: nothing is notified."""
        self._events = {}


def request_queue(environ: Dict[str, Any]) -> Optional[EventQueue]:
    """A new queue in ``environ`` when it has none yet, for the caller to notify; None when a layer above owns one."""
    if EVENTS in environ:
        return None
    queue = environ[EVENTS] = EventQueue(environ)
    return queue


def load_listeners(settings: Mapping[str, Any], notifier: Notifier) -> None:
    """Subscribe the listeners named by the ``event_listeners`` setting to the ``After`` events of ``notifier``."""
    for name in settings.get("event_listeners") or ():
        prefix = f"event_listeners.{name}."
        use = settings.get(prefix + "use")
        if not use:
            raise ConfigurationError(f"Setting '{prefix}use' is missing: the listener {name!r} needs a module "
                                     "(wsgicliquet.listeners.redis) or a module:function")
        factory = _factory(str(use), prefix + "use")
        listener = factory(settings, prefix)
        if not callable(listener):
            raise ConfigurationError(f"Setting '{prefix}use': {use!r} gave {listener!r}, which is not callable")
        listener = _timed(f"listeners.{name}", listener)
        actions = _names(settings, prefix + "actions") or list(DEFAULT_LISTENER_ACTIONS)
        unknown = sorted(set(actions) - set(ACTIONS))
        if unknown:
            raise ConfigurationError(f"Setting '{prefix}actions' has unknown actions {unknown}: expected some of "
                                     f"{list(ACTIONS)}")
        resources = _names(settings, prefix + "resources")
        changes = [action for action in actions if action != "read"]
        if changes:
            notifier.subscribe(AfterResourceChanged, listener, actions=changes, resources=resources or None)
        if "read" in actions:
            notifier.subscribe(AfterResourceRead, listener, actions=["read"], resources=resources or None)


def _timed(metric: str, listener: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def timed(event: ResourceEvent) -> None:
        started = perf_counter()
        try:
            listener(event)
        finally:
            metrics = event.environ.get(METRICS)
            if metrics is not None:
                metrics.append(("ms", metric, (perf_counter() - started) * 1000))

    timed.__wrapped__ = listener  # type: ignore[attr-defined]
    return timed


def _factory(use: str, setting: str) -> Callable[[Mapping[str, Any], str], Any]:
    if ":" not in use:
        try:
            module = importlib.import_module(use)
        except ImportError as exc:
            # ``use`` may be ``package.module.function``; an import failing inside an existing module (a missing
            # dependency of the listener) is that module's error, which the fallback would hide.
            if exc.name is None or not (use == exc.name or use.startswith(exc.name + ".")):
                raise ConfigurationError(f"Setting {setting!r} has an invalid value {use!r}: cannot import it "
                                         f"({exc})") from exc
            module = None
        if module is not None:
            factory = getattr(module, "load_from_config", None)
            if factory is None:
                raise ConfigurationError(f"Setting {setting!r}: module {use!r} has no load_from_config()")
            return factory  # type: ignore[no-any-return]
    factory = import_string(use, setting)
    if not callable(factory):
        raise ConfigurationError(f"Setting {setting!r} has an invalid value {use!r}: not callable")
    return factory  # type: ignore[no-any-return]


def _names(settings: Mapping[str, Any], name: str) -> List[str]:
    """A list setting, parsed as every list setting is (spaces or commas) when given raw."""
    value = settings.get(name)
    return [] if value is None else coerce(name, value)

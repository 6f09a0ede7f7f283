"""The storage contract: every backend (memory, Redis, PostgreSQL, third-party) implements :class:`Storage`.

The docstrings here are the specification; ``wsgicliquet.storage.testing`` holds the contract suite that every
backend must pass unchanged.

Records live in partitions identified by ``(collection_id, parent_id)``.  Each partition has its own timestamp
counter (PROTOCOL.md Part A, D1): an integer number of milliseconds that strictly increases on every write
(create, update, delete), across threads, processes and hosts sharing the backend.  The value given to a write
is ``max(candidate, counter + 1)`` where ``candidate`` is the current time in milliseconds, or the record's
client-supplied ``last_modified`` on creation (D2).  It is assigned under a per-partition lock (or an atomic
script) that is held until the write is visible, so that commit order equals timestamp order.

Conditional writes (D4, PROTOCOL.md §6): ``update`` and ``delete`` take ``if_match`` (and ``update``
``if_absent``), checked under that same lock or script, against the state the write would replace; ``delete_all``
takes ``if_match`` too, checked against the partition counter.  Two writers presenting the same ``if_match`` can
therefore never both succeed: the second finds the first one's timestamp and gets :class:`PreconditionFailed`.
This is what makes ``If-Match`` safe and what a read-merge-write (PATCH) needs to never lose a concurrent write.
"""
from __future__ import annotations

import abc
import contextlib
import enum
from typing import Any, Callable, ContextManager, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .exceptions import BackendError, PreconditionFailed, RecordNotFoundError, StorageError, UnicityError

__all__ = ["Storage", "Filter", "Sort", "COMPARISON", "BackendError", "PreconditionFailed", "RecordNotFoundError",
           "StorageError", "UnicityError", "Record", "check_conditions"]

Record = Dict[str, Any]


class COMPARISON(str, enum.Enum):
    """Filter operators; the querystring prefix of each is in PROTOCOL.md §4.2 and Part A."""

    EQ = "=="
    NOT = "!="
    LT = "<"
    MAX = "<="
    GT = ">"
    MIN = ">="
    IN = "in"
    EXCLUDE = "exclude"
    HAS = "has"            # value True: the field is present (not null); False: absent or null
    LIKE = "like"          # string match, `*` is a wildcard, case-insensitive
    CONTAINS = "contains"  # the field is a list containing every item of value (a list)
    CONTAINS_ANY = "contains_any"  # the field is a list containing at least one item of value (a list)
    # Keyset pagination only (no querystring spelling): the field is present, not null, and sorts strictly
    # before / after value in the backend's ascending sort order (by JSON type first, then by value).
    SORTS_BEFORE = "sorts_before"
    SORTS_AFTER = "sorts_after"


class Filter(NamedTuple):
    """``field`` may be dotted (``author.name``) to reach into nested objects; ``value`` is a JSON value."""

    field: str
    value: Any
    operator: COMPARISON


class Sort(NamedTuple):
    """``direction`` is 1 (ascending) or -1 (descending); ``field`` may be dotted."""

    field: str
    direction: int


class Storage(abc.ABC):
    """Abstract storage backend.

    Common rules:

    * Records are JSON objects; the backend owns ``id`` (kept when supplied) and ``last_modified`` (integer ms).
    * Tombstones are ``{"id", "last_modified", "deleted": True}``; they are returned only when asked for.
    * Comparisons follow JSON semantics: numbers compare with numbers, strings with strings; a record whose
      field is missing never matches a comparison on it (except ``!=``, ``exclude`` and ``has=False``).
      Sorting puts missing (or null) values after every present value in ascending order (before in descending),
      and orders values of different JSON types by type: null < boolean < number < string < array < object.
    * Every failure of the underlying server raises :class:`BackendError` (the HTTP layer answers 503).
    * Every method is thread-safe.
    """

    #: Name shown in heartbeat results and metrics.
    name = "storage"

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "storage") -> "Storage":
        """Build the backend from settings (``<prefix>_url``, ``<prefix>_pool_size``...)."""

    def initialize_schema(self, dry_run: bool = False) -> None:
        """Create tables, indexes, scripts; idempotent; migrates an older schema.  No-op where nothing is needed."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Remove every record, tombstone and counter of this backend (and only this backend's data)."""

    def transaction(self) -> ContextManager[None]:
        """Group the writes of one request (or one batch) so that they commit together.

        Re-entrant: an inner ``transaction()`` joins the outer one.  An exception leaving the outermost block rolls
        everything back; a normal exit commits.  Methods called outside any transaction commit on their own.
        Backends without transactions return a no-op context (the default).
        """
        return contextlib.nullcontext()

    def ping(self, readonly: bool = False) -> bool:
        """Heartbeat probe: True when the backend answers (writes a little unless ``readonly``)."""
        try:
            if readonly:
                self.get_all("__heartbeat__", "__heartbeat__", limit=1)
            else:
                record = self.create("__heartbeat__", "__heartbeat__", {"__heartbeat__": True})
                self.delete("__heartbeat__", "__heartbeat__", record["id"], with_deleted=False)
            return True
        except Exception:
            return False

    @abc.abstractmethod
    def collection_timestamp(self, collection_id: str, parent_id: str) -> int:
        """The partition counter: the highest timestamp ever assigned in it.

        Never writes (a read-only replica can serve it).  A partition that was never written has timestamp 0, so
        two reads of an empty collection return the same value.
        """

    @abc.abstractmethod
    def create(self, collection_id: str, parent_id: str, record: Record, *,
               id_generator: Optional[Callable[[], str]] = None,
               unique_fields: Sequence[str] = ()) -> Record:
        """Store a new record and return it as stored (with ``id`` and ``last_modified``).

        ``id`` is kept when present, else made by ``id_generator`` (default: uuid4 string).  A ``last_modified``
        present in ``record`` is the candidate timestamp (replication, D2): the stored value is
        ``max(candidate, counter + 1)``.  A tombstone with the same id is removed.
        Raises :class:`UnicityError` (with the existing record) when a live record has the same id, or the same
        non-null value of one of ``unique_fields``; nothing is written then.
        """

    @abc.abstractmethod
    def get(self, collection_id: str, parent_id: str, object_id: str, *,
            include_deleted: bool = False) -> Record:
        """The live record; with ``include_deleted``, its tombstone when only that exists.

        Raises :class:`RecordNotFoundError` otherwise.
        """

    @abc.abstractmethod
    def update(self, collection_id: str, parent_id: str, object_id: str, record: Record, *,
               unique_fields: Sequence[str] = (), if_match: Optional[int] = None,
               if_absent: bool = False) -> Record:
        """Replace (or create) the record ``object_id`` with ``record``; a fresh timestamp is always assigned.

        Removes a tombstone with the same id.  Conditions, checked atomically with the write (under the partition
        lock or in the write script), before unicity:

        * ``if_match``: write only when a live record ``object_id`` exists with ``last_modified == if_match``;
        * ``if_absent``: write only when no live record ``object_id`` exists (a tombstone does not count).

        A failed condition raises :class:`PreconditionFailed` carrying the live record, else its tombstone, else
        None; nothing is written and the counter does not move.  (Both conditions together are never met.)
        Raises :class:`UnicityError` when another live record has the same value of one of ``unique_fields``.
        Returns the stored record.
        """

    @abc.abstractmethod
    def delete(self, collection_id: str, parent_id: str, object_id: str, *, with_deleted: bool = True,
               last_modified: Optional[int] = None, if_match: Optional[int] = None) -> Record:
        """Delete a live record and return its tombstone (kept unless ``with_deleted`` is false).

        ``last_modified`` is the candidate timestamp of the deletion (same ``max`` rule as creation).
        With ``if_match``, delete only when the live record has ``last_modified == if_match``, else raise
        :class:`PreconditionFailed` (with the live record, else its tombstone, else None), atomically as in
        :meth:`update`.  Without it, raises :class:`RecordNotFoundError` when there is no live record.
        """

    @abc.abstractmethod
    def delete_all(self, collection_id: str, parent_id: str, filters: Sequence[Filter] = (), *,
                   with_deleted: bool = True, if_match: Optional[int] = None) -> List[Record]:
        """Delete every live record matching ``filters``, oldest first (by ``last_modified``, then ``id``), so
        that the order of the tombstones is the same on every backend; each gets its own increasing timestamp.

        With ``if_match``, delete only when the partition's timestamp (:meth:`collection_timestamp`, 0 for a
        partition never written) equals ``if_match``, checked atomically with the deletion as in :meth:`update`:
        the records deleted are exactly those matching at that timestamp, and no write can come in between.
        Otherwise raise :class:`PreconditionFailed` (with None) and change nothing.
        Returns the tombstones, in increasing ``last_modified`` order.
        """

    @abc.abstractmethod
    def purge_deleted(self, collection_id: str, parent_id: str, before: Optional[int] = None) -> int:
        """Drop tombstones (only those with ``last_modified < before`` when given); return how many."""

    @abc.abstractmethod
    def get_all(self, collection_id: str, parent_id: str, *, filters: Sequence[Filter] = (),
                sorting: Sequence[Sort] = (), pagination_rules: Sequence[Sequence[Filter]] = (),
                limit: Optional[int] = None, include_deleted: bool = False) -> Tuple[List[Record], int]:
        """Return ``(records, total)`` in one round trip.

        ``filters`` are ANDed.  ``pagination_rules`` is a list of filter lists: a record is kept when it matches
        every filter of at least one list (keyset pagination; an empty list of rules keeps everything).  Their
        ``SORTS_BEFORE``/``SORTS_AFTER`` filters compare in the order ``sorting`` uses, so that the rules
        :func:`wsgicliquet.storage.query.keyset_rules` builds from a page's last record select exactly the
        records sorted after it, whatever mix of types a field holds.
        ``sorting`` is applied, then ``limit``.  Tombstones are included (and filtered, sorted, paginated like
        records: only ``id``, ``last_modified`` and ``deleted`` fields exist on them) when ``include_deleted``.
        ``total`` counts the live records matching ``filters``, ignoring pagination, limit and tombstones.
        Never truncates: without ``limit`` every matching record is returned.
        """


def check_conditions(current: Optional[Record], if_match: Optional[int], if_absent: bool = False) -> None:
    """Raise :class:`PreconditionFailed` unless ``current`` meets the conditions of :meth:`Storage.update`.

    For backends that read the target under their partition lock; ``current`` is the live record, else its
    tombstone, else None.
    """
    live = current if current is not None and not current.get("deleted") else None
    if if_match is not None and (live is None or live["last_modified"] != if_match):
        raise PreconditionFailed(current)
    if if_absent and live is not None:
        raise PreconditionFailed(current)

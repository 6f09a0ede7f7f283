"""Redis storage: every write is one Lua script, so record, tombstone and counter change together (D1, §21.4).

Per partition ``(collection_id, parent_id)`` four keys (layout in ``docs/redis.md``):

* ``records`` a hash ``id -> record JSON``;
* ``modified`` a sorted set ``id -> last_modified`` of the live records;
* ``deleted`` a sorted set ``id -> last_modified`` of the tombstones (a tombstone has no other data);
* ``timestamp`` the counter.

A write script reads the counter, stamps the record with ``max(candidate, counter + 1)``, writes it, removes a
tombstone of the same id and stores the counter, all inside one ``EVALSHA``: Redis runs scripts one at a time, so
timestamps strictly increase across processes and hosts, and a reader can never see a counter without the record
that produced it.  Because every write takes a fresh counter value, ``last_modified`` is unique in a partition.
The conditions of a write (``if_match``, ``if_absent``) are checked by the same script, so nothing can come between
the check and the write.  A ``delete_all`` with ``if_match`` checks the counter before reading the ids to delete, and
deletes them all in one script that finds the counter still at ``if_match`` (else deletes nothing).

Reads: listings sorted by ``last_modified`` (the default order) whose filters only bound ``last_modified`` (``_since``,
``_before``, keyset pagination) are served from the sorted sets: a range of scores, ``limit`` items, and a
``ZCOUNT`` for the total.  Any other listing reads one snapshot of the records its filters name by id (``in_id``,
as a shareable resource restricts a listing), else of those within the timestamp bounds of its filters (the whole
partition when there are none), and filters, sorts and pages it in Python with
:mod:`wsgicliquet.storage.query`; its cost grows with what it reads (see ``docs/redis.md``).
"""
from __future__ import annotations

import heapq
import json
import math
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from wsgicliquet import jsonio, redis_client
from wsgicliquet.ids import uuid4
from wsgicliquet.redis_client import escape, wrap_errors

from . import (COMPARISON, Filter, PreconditionFailed, Record, RecordNotFoundError, Sort, Storage as StorageBase,
               UnicityError)
from .query import MISSING, apply, compile_filters, compile_rules, named_ids, resolve

__all__ = ["Storage"]

# Canonical text of a JSON value, computed the same way by Python (_canonical) and Lua (canonical) so that the
# write script can compare unique fields with JSON equality.  Strings are length-prefixed, numbers go through a
# double (as cjson decodes them), object keys are sorted bytewise; an empty object reads as an empty array in Lua
# (cjson cannot tell them apart), so both are written "[]".
_LUA_CANONICAL = """
local function bytewise(left, right)  -- string "<" follows the server locale; keys must sort by bytes
  for i = 1, math.min(#left, #right) do
    local a, b = string.byte(left, i), string.byte(right, i)
    if a ~= b then return a < b end
  end
  return #left < #right
end

local function canonical(value)
  local kind = type(value)
  if value == cjson.null then return "n" end
  if kind == "boolean" then return value and "t" or "f" end
  if kind == "number" then return "d" .. string.format("%.17g", value) end
  if kind == "string" then return "s" .. #value .. ":" .. value end
  local keys, n = {}, 0
  for key in pairs(value) do keys[#keys + 1] = key end
  for i = 1, #value do n = i end
  local parts = {}
  if n == #keys then
    for i = 1, n do parts[i] = canonical(value[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  table.sort(keys, bytewise)
  for i, key in ipairs(keys) do parts[i] = "s" .. #key .. ":" .. key .. "=" .. canonical(value[key]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function resolve(record, field)
  local value = record[field]
  if value ~= nil or not string.find(field, ".", 1, true) then return value end
  value = record
  for part in string.gmatch(field, "[^.]+") do
    if type(value) ~= "table" then return nil end
    value = value[part]
    if value == nil then return nil end
  end
  return value
end
"""

# Condition of a write on one id: "" (none), "absent" (no live record), or the last_modified the live record must
# have.  Returns nothing when met, else {"precondition", live record JSON or "", tombstone timestamp or ""}.
_LUA_CONDITION = """
local function unmet(records, modified, deleted, id, condition)
  if condition == "" then return nil end
  local live = redis.call("HGET", records, id)
  if live then
    if condition ~= "absent" and tonumber(redis.call("ZSCORE", modified, id)) == tonumber(condition) then
      return nil
    end
    return {"precondition", live, ""}
  end
  if condition == "absent" then return nil end
  return {"precondition", "", redis.call("ZSCORE", deleted, id) or ""}
end
"""

# KEYS: records, modified, deleted, counter.
# ARGV: mode ("create" | "update"), id, record JSON without last_modified, candidate ms, condition (see
#       _LUA_CONDITION), n unique fields, the n field names, the n canonical values (empty string: null or missing,
#       never in conflict), the n needles (text that the stored JSON of a record holding the value must contain;
#       empty: no such text).
# Returns {"ok", last_modified}, {"conflict", field, existing record JSON} or the answer of an unmet condition.
# The unique check reads the whole partition; the needles let it decode only the records that may conflict.
_WRITE = _LUA_CANONICAL + _LUA_CONDITION + """
local records, modified, deleted, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, id, body, candidate = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = tonumber(ARGV[6])
local failed = unmet(records, modified, deleted, id, ARGV[5])
if failed then return failed end
if mode == "create" then
  local existing = redis.call("HGET", records, id)
  if existing then return {"conflict", "id", existing} end
end
if n > 0 then
  local values, decoded = redis.call("HVALS", records), {}
  local own = redis.call("HGET", records, id)  -- the record being replaced is no conflict
  for f = 1, n do
    local field, wanted, needle = ARGV[6 + f], ARGV[6 + n + f], ARGV[6 + 2 * n + f]
    if wanted ~= "" then
      for i, raw in ipairs(values) do
        if (needle == "" or string.find(raw, needle, 1, true)) and raw ~= own then
          decoded[i] = decoded[i] or cjson.decode(raw)
          local value = resolve(decoded[i], field)
          if value ~= nil and canonical(value) == wanted then return {"conflict", field, raw} end
        end
      end
    end
  end
end
local stamp = string.format("%.0f", math.max(candidate, tonumber(redis.call("GET", counter) or "0") + 1))
redis.call("HSET", records, id, '{"last_modified":' .. stamp .. "," .. string.sub(body, 2))
redis.call("ZADD", modified, stamp, id)
redis.call("ZREM", deleted, id)
redis.call("SET", counter, stamp)
return {"ok", stamp}
"""

# KEYS: records, modified, deleted, counter.
# ARGV: candidate ms, keep tombstones ("1" | "0"), condition (see _LUA_CONDITION; only with a single id), the value
#       the counter must have ("": any), ids...
# Deletes the ids that are live, each with the next timestamp; returns {"ok", {id, last_modified, id, ...}} or the
# answer of an unmet condition ({"precondition", "", ""} for the counter).
_DELETE = _LUA_CONDITION + """
local records, modified, deleted, counter = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local candidate, keep = tonumber(ARGV[1]), ARGV[2] == "1"
local previous = tonumber(redis.call("GET", counter) or "0")
if ARGV[4] ~= "" and previous ~= tonumber(ARGV[4]) then return {"precondition", "", ""} end
local failed = unmet(records, modified, deleted, ARGV[5], ARGV[3])
if failed then return failed end
local current, result = previous, {}
for i = 5, #ARGV do
  local id = ARGV[i]
  if redis.call("HDEL", records, id) == 1 then
    current = math.max(candidate, current + 1)
    local stamp = string.format("%.0f", current)
    redis.call("ZREM", modified, id)
    if keep then redis.call("ZADD", deleted, stamp, id) end
    result[#result + 1] = id
    result[#result + 1] = stamp
  end
end
if current ~= previous then redis.call("SET", counter, string.format("%.0f", current)) end
return {"ok", result}
"""

# KEYS: records, modified, deleted.
# ARGV: descending ("1" | "0"), low bound, high bound (ZRANGEBYSCORE syntax), count (-1: all),
#       include tombstones ("1" | "0"), total low bound, total high bound ("" : no total wanted).
# Returns {{id, score, ...} live, {record JSON...}, {id, score, ...} tombstones, total}: one consistent snapshot.
_RANGE = """
local records, modified, deleted = KEYS[1], KEYS[2], KEYS[3]
local descending, low, high, count = ARGV[1] == "1", ARGV[2], ARGV[3], ARGV[4]
local function range(key)
  if descending then
    return redis.call("ZREVRANGEBYSCORE", key, high, low, "WITHSCORES", "LIMIT", 0, count)
  end
  return redis.call("ZRANGEBYSCORE", key, low, high, "WITHSCORES", "LIMIT", 0, count)
end
local live, bodies, tombstones, total = range(modified), {}, {}, -1
-- HMGET in chunks: unpack() of more than about 8,000 values fails ("too many results to unpack").
for first = 1, #live, 2 * 1000 do
  local ids = {}
  for i = first, math.min(first + 2 * 1000 - 1, #live), 2 do ids[#ids + 1] = live[i] end
  local chunk = redis.call("HMGET", records, unpack(ids))
  for i = 1, #chunk do bodies[#bodies + 1] = chunk[i] end
end
if ARGV[5] == "1" then tombstones = range(deleted) end
if ARGV[6] ~= "" then total = redis.call("ZCOUNT", modified, ARGV[6], ARGV[7]) end
return {live, bodies, tombstones, total}
"""

# KEYS: records, deleted.
# ARGV: the ids to read (none: the whole partition).
# Returns {bodies, tombstones}: with ids, the JSON of each id's record and the score of each id's tombstone (nil when
# there is none); without, every record JSON and {id, score, ...} of every tombstone.  A script rather than a MULTI:
# a full server (maxmemory, noeviction) refuses every command queued in a MULTI, reads included, but runs a script
# that writes nothing.
_SNAPSHOT = """
local records, deleted = KEYS[1], KEYS[2]
if #ARGV == 0 then
  return {redis.call("HVALS", records), redis.call("ZRANGE", deleted, 0, -1, "WITHSCORES")}
end
local bodies, scores = {}, {}
-- In chunks: unpack() of more than about 8,000 values fails ("too many results to unpack").
for first = 1, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local chunk = redis.call("HMGET", records, unpack(ARGV, first, last))
  for i = 1, #chunk do bodies[#bodies + 1] = chunk[i] end
  chunk = redis.call("ZMSCORE", deleted, unpack(ARGV, first, last))
  for i = 1, #chunk do scores[#scores + 1] = chunk[i] end
end
return {bodies, scores}
"""

_BOUND_OPERATORS = (COMPARISON.EQ, COMPARISON.GT, COMPARISON.MIN, COMPARISON.LT, COMPARISON.MAX)
#: Ids deleted per script call by delete_all, so that a huge deletion does not block Redis in one go.
_DELETE_BATCH = 500


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _canonical(value: Any) -> str:
    """The Python twin of the Lua ``canonical`` function above."""
    if value is None:
        return "n"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (int, float)):
        return "d" + "%.17g" % float(value)
    if isinstance(value, str):
        return f"s{len(value.encode('utf-8'))}:{value}"
    if isinstance(value, (list, tuple)) or not value:
        return "[" + ",".join(_canonical(item) for item in value) + "]"
    keys = sorted(value, key=lambda key: key.encode("utf-8"))
    return "{" + ",".join(f"{_canonical(key)}={_canonical(value[key])}" for key in keys) + "}"


def _load(data: bytes) -> Any:
    """Decode a stored record (NaN is accepted: what a backend holds is read back as it is)."""
    return jsonio.loads(data, allow_nan=True)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_live(record: Record) -> bool:
    return not record.get("deleted")


def _condition(if_match: Optional[int], if_absent: bool = False) -> str:
    """The condition argument of the write scripts (see ``_LUA_CONDITION``)."""
    if if_match is not None and if_absent:
        return "-1"  # never met: a live record cannot both exist and not exist
    if if_match is not None:
        return str(int(if_match))
    return "absent" if if_absent else ""


def _precondition_failed(reply: List[Any], object_id: str) -> PreconditionFailed:
    """The exception of an unmet condition, from the ``{"precondition", record, tombstone}`` script answer."""
    live, buried = reply[1], reply[2]
    if live:
        return PreconditionFailed(_load(live))
    if buried:
        return PreconditionFailed({"id": object_id, "last_modified": int(float(buried)), "deleted": True})
    return PreconditionFailed(None)


class _Bounds:
    """A closed-or-open interval of ``last_modified`` values, written in ZRANGEBYSCORE syntax."""

    __slots__ = ("low", "low_open", "high", "high_open")

    def __init__(self) -> None:
        self.low, self.low_open = -math.inf, False
        self.high, self.high_open = math.inf, False

    def narrow(self, filter_: Filter) -> None:
        value, operator = filter_.value, COMPARISON(filter_.operator)
        if operator in (COMPARISON.GT, COMPARISON.MIN, COMPARISON.EQ):
            self._raise_low(value, operator == COMPARISON.GT)
        if operator in (COMPARISON.LT, COMPARISON.MAX, COMPARISON.EQ):
            self._lower_high(value, operator == COMPARISON.LT)

    def _raise_low(self, value: float, is_open: bool) -> None:
        if value > self.low or (value == self.low and is_open):
            self.low, self.low_open = value, is_open

    def _lower_high(self, value: float, is_open: bool) -> None:
        if value < self.high or (value == self.high and is_open):
            self.high, self.high_open = value, is_open

    def widen(self, other: "_Bounds") -> None:
        """Grow to cover ``other`` too (the union of pagination rules)."""
        if other.low < self.low or (other.low == self.low and not other.low_open):
            self.low, self.low_open = other.low, other.low_open
        if other.high > self.high or (other.high == self.high and not other.high_open):
            self.high, self.high_open = other.high, other.high_open

    def intersect(self, other: "_Bounds") -> None:
        self._raise_low(other.low, other.low_open)
        self._lower_high(other.high, other.high_open)

    @staticmethod
    def _text(value: float, is_open: bool) -> str:
        if math.isinf(value):
            return "+inf" if value > 0 else "-inf"
        return ("(" if is_open else "") + repr(value)

    @property
    def low_text(self) -> str:
        return self._text(self.low, self.low_open)

    @property
    def high_text(self) -> str:
        return self._text(self.high, self.high_open)


def _bounds_timestamp(filter_: Filter) -> bool:
    """True for a filter that bounds ``last_modified`` by a number (a range of sorted-set scores)."""
    value = filter_.value
    return (filter_.field == "last_modified" and COMPARISON(filter_.operator) in _BOUND_OPERATORS
            and not isinstance(value, bool) and isinstance(value, (int, float)))


def _timestamp_bounds(filters: Sequence[Filter]) -> Optional[_Bounds]:
    """The interval of ``filters`` when they all bound ``last_modified`` by a number, else None."""
    bounds = _Bounds()
    for filter_ in filters:
        if not _bounds_timestamp(filter_):
            return None
        bounds.narrow(filter_)
    return bounds


def _rules_bounds(pagination_rules: Sequence[Sequence[Filter]]) -> _Bounds:
    """An interval holding every record that some rule may keep (exact matching happens afterwards)."""
    if not pagination_rules:
        return _Bounds()
    union: Optional[_Bounds] = None
    for rule in pagination_rules:
        bounds = _timestamp_bounds([f for f in rule if f.field == "last_modified"]) or _Bounds()
        if union is None:
            union = bounds
        else:
            union.widen(bounds)
    return union or _Bounds()


class Storage(StorageBase):
    """Redis backend; see the module docstring.  Thread-safe (redis-py clients are)."""

    name = "redis"

    def __init__(self, client: Any, *, key_prefix: str = redis_client.DEFAULT_KEY_PREFIX) -> None:
        self.client = client
        self.namespace = f"{key_prefix}storage:"
        self._write = client.register_script(_WRITE)
        self._delete = client.register_script(_DELETE)
        self._range = client.register_script(_RANGE)
        self._snapshot = client.register_script(_SNAPSHOT)

    @classmethod
    def from_settings(cls, settings: Dict[str, Any], prefix: str = "storage") -> "Storage":
        return cls(redis_client.client_from_settings(settings, prefix),
                   key_prefix=redis_client.key_prefix_from_settings(settings, prefix))

    def _keys(self, collection_id: str, parent_id: str) -> List[str]:
        """records, modified, deleted, timestamp keys of a partition."""
        partition = f"{escape(collection_id)}:{parent_id}"
        return [f"{self.namespace}{kind}:{partition}" for kind in ("records", "modified", "deleted", "timestamp")]

    @wrap_errors
    def initialize_schema(self, dry_run: bool = False) -> None:
        """Load the scripts (they are also loaded on first use, and again after a server restart)."""
        if not dry_run:
            redis_client.load_scripts(self.client, [self._write, self._delete, self._range, self._snapshot])

    @wrap_errors
    def flush(self) -> None:
        redis_client.unlink_prefix(self.client, self.namespace)

    @wrap_errors
    def collection_timestamp(self, collection_id: str, parent_id: str) -> int:
        value = self.client.get(self._keys(collection_id, parent_id)[3])
        return int(value) if value is not None else 0

    # Writes

    def _store(self, mode: str, collection_id: str, parent_id: str, record: Record, candidate: int,
               unique_fields: Sequence[str], condition: str = "") -> Record:
        body = {key: value for key, value in record.items() if key != "last_modified"}
        fields = list(unique_fields)
        values, needles = [], []
        for field in fields:
            value = resolve(body, field)
            values.append("" if value is MISSING or value is None else _canonical(value))
            needles.append(_dumps(value) if isinstance(value, str) else "")
        args = [mode, body["id"], _dumps(body), candidate, condition, len(fields), *fields, *values, *needles]
        result = self._write(keys=self._keys(collection_id, parent_id), args=args)
        if result[0] == b"precondition":
            raise _precondition_failed(result, body["id"])
        if result[0] == b"conflict":
            raise UnicityError(result[1].decode("utf-8"), _load(result[2]))
        stored = _load(args[2])  # a copy: the caller may mutate what it gets back
        stored["last_modified"] = int(result[1])
        return stored

    @wrap_errors
    def create(self, collection_id: str, parent_id: str, record: Record, *,
               id_generator: Optional[Callable[[], str]] = None,
               unique_fields: Sequence[str] = ()) -> Record:
        record = dict(record)
        if record.get("id") is None:
            record["id"] = id_generator() if id_generator is not None else uuid4()
        candidate = record.get("last_modified")
        if isinstance(candidate, bool) or not isinstance(candidate, (int, float)):
            candidate = _now_ms()
        return self._store("create", collection_id, parent_id, record, int(candidate), unique_fields)

    @wrap_errors
    def update(self, collection_id: str, parent_id: str, object_id: str, record: Record, *,
               unique_fields: Sequence[str] = (), if_match: Optional[int] = None,
               if_absent: bool = False) -> Record:
        record = dict(record, id=object_id)
        return self._store("update", collection_id, parent_id, record, _now_ms(), unique_fields,
                           _condition(if_match, if_absent))

    def _bury(self, collection_id: str, parent_id: str, object_ids: Sequence[str], with_deleted: bool,
              candidate: Optional[int], condition: str = "", counter: Optional[int] = None) -> List[Record]:
        result = self._delete(keys=self._keys(collection_id, parent_id),
                              args=[_now_ms() if candidate is None else int(candidate), int(with_deleted), condition,
                                    "" if counter is None else int(counter), *object_ids])
        if result[0] == b"precondition":
            raise _precondition_failed(result, object_ids[0] if object_ids else "")
        flat = result[1]
        return [{"id": flat[i].decode("utf-8"), "last_modified": int(flat[i + 1]), "deleted": True}
                for i in range(0, len(flat), 2)]

    @wrap_errors
    def delete(self, collection_id: str, parent_id: str, object_id: str, *, with_deleted: bool = True,
               last_modified: Optional[int] = None, if_match: Optional[int] = None) -> Record:
        tombstones = self._bury(collection_id, parent_id, [object_id], with_deleted, last_modified,
                                _condition(if_match))
        if not tombstones:
            raise RecordNotFoundError(object_id)
        return tombstones[0]

    @wrap_errors
    def delete_all(self, collection_id: str, parent_id: str, filters: Sequence[Filter] = (), *,
                   with_deleted: bool = True, if_match: Optional[int] = None) -> List[Record]:
        if if_match is not None and self.collection_timestamp(collection_id, parent_id) != if_match:
            raise PreconditionFailed(None)
        if filters:
            doomed, _ = apply(self._candidates(collection_id, parent_id, filters, False), filters=filters)
            object_ids = [record["id"] for record in sorted(doomed, key=lambda r: (r["last_modified"], r["id"]))]
        else:
            # Oldest first, as the other backends bury them (ties of a score are ordered by id).
            object_ids = [key.decode("utf-8") for key in self.client.zrange(self._keys(collection_id, parent_id)[1],
                                                                            0, -1)]
        if if_match is not None:
            # The counter was if_match before the ids were read and the script finds it unchanged, so no write came
            # in between: the ids are exactly the matching records.  One script, so that all go or none.
            return self._bury(collection_id, parent_id, object_ids, with_deleted, None, counter=if_match)
        tombstones: List[Record] = []
        for start in range(0, len(object_ids), _DELETE_BATCH):
            batch = object_ids[start:start + _DELETE_BATCH]
            tombstones.extend(self._bury(collection_id, parent_id, batch, with_deleted, None))
        return tombstones

    @wrap_errors
    def purge_deleted(self, collection_id: str, parent_id: str, before: Optional[int] = None) -> int:
        high = "+inf" if before is None else f"({int(before)}"
        return int(self.client.zremrangebyscore(self._keys(collection_id, parent_id)[2], "-inf", high))

    # Reads

    @wrap_errors
    def get(self, collection_id: str, parent_id: str, object_id: str, *,
            include_deleted: bool = False) -> Record:
        if not include_deleted:
            data = self.client.hget(self._keys(collection_id, parent_id)[0], object_id)
            score = None
        else:
            (data,), (score,) = self._read(collection_id, parent_id, [object_id], True)
        if data is not None:
            return _load(data)
        if score is not None:
            return {"id": object_id, "last_modified": int(score), "deleted": True}
        raise RecordNotFoundError(object_id)

    @wrap_errors
    def get_all(self, collection_id: str, parent_id: str, *, filters: Sequence[Filter] = (),
                sorting: Sequence[Sort] = (), pagination_rules: Sequence[Sequence[Filter]] = (),
                limit: Optional[int] = None, include_deleted: bool = False) -> Tuple[List[Record], int]:
        if limit is not None and limit <= 0:
            limit = 0
        bounds = _timestamp_bounds(filters)
        if bounds is not None and (not sorting or sorting[0].field == "last_modified"):
            # last_modified is unique in a partition: later sort keys cannot change the order.
            descending = not sorting or sorting[0].direction < 0
            return self._ranged(collection_id, parent_id, bounds, filters, pagination_rules, limit,
                                include_deleted, descending)
        candidates = self._candidates(collection_id, parent_id, filters, include_deleted)
        return apply(candidates, filters=filters, sorting=sorting or [Sort("last_modified", -1)],
                     pagination_rules=pagination_rules, limit=limit, count=_is_live if include_deleted else None)

    def _candidates(self, collection_id: str, parent_id: str, filters: Sequence[Filter], include_deleted: bool
                    ) -> Iterator[Record]:
        """What ``filters`` may match: the records they name by id (a shareable listing's ``in_id``), else those
        inside their timestamp bounds, else the whole partition."""
        object_ids = named_ids(filters)
        if object_ids is not None:
            return self._fetch(collection_id, parent_id, object_ids, include_deleted)
        bounding = [filter_ for filter_ in filters if _bounds_timestamp(filter_)]
        if bounding:
            return self._scan_range(collection_id, parent_id, _timestamp_bounds(bounding) or _Bounds(),
                                    include_deleted)
        return self._scan(collection_id, parent_id, include_deleted)

    def _scan(self, collection_id: str, parent_id: str, include_deleted: bool) -> Iterator[Record]:
        """Every record (and tombstone) of the partition, read in one snapshot, decoded one at a time."""
        bodies, tombstones = self._read(collection_id, parent_id, [], include_deleted)
        for data in bodies:
            yield _load(data)
        for i in range(0, len(tombstones), 2):
            yield {"id": tombstones[i].decode("utf-8"), "last_modified": int(tombstones[i + 1]), "deleted": True}

    def _fetch(self, collection_id: str, parent_id: str, object_ids: List[str], include_deleted: bool
               ) -> Iterator[Record]:
        """The records (and tombstones) of these ids, read in one snapshot: HMGET (and ZMSCORE) of the ids only."""
        if not object_ids:
            return iter(())
        bodies, scores = self._read(collection_id, parent_id, object_ids, include_deleted)
        found: List[Record] = [_load(data) for data in bodies if data is not None]
        found.extend({"id": object_id, "last_modified": int(score), "deleted": True}
                     for object_id, score in zip(object_ids, scores) if score is not None)
        return iter(found)

    def _read(self, collection_id: str, parent_id: str, object_ids: Sequence[str], include_deleted: bool
              ) -> Tuple[List[Optional[bytes]], List[Optional[bytes]]]:
        """One snapshot of records (and tombstones): of these ids, else of the whole partition.  The records alone
        are one command; with the tombstones, one read-only script (see ``_SNAPSHOT``)."""
        records, _, deleted, _ = self._keys(collection_id, parent_id)
        if not include_deleted:
            return (self.client.hmget(records, object_ids) if object_ids else self.client.hvals(records)), []
        bodies, tombstones = self._snapshot(keys=[records, deleted], args=object_ids)
        return bodies, tombstones

    def _scan_range(self, collection_id: str, parent_id: str, bounds: _Bounds, include_deleted: bool
                    ) -> Iterator[Record]:
        """The records (and tombstones) whose timestamps are within ``bounds``, read in one snapshot."""
        args = [0, bounds.low_text, bounds.high_text, -1, int(include_deleted), "", ""]
        live, bodies, tombstones, _ = self._range(keys=self._keys(collection_id, parent_id)[:3], args=args)
        return self._merge(live, bodies, tombstones, descending=False)

    def _ranged(self, collection_id: str, parent_id: str, bounds: _Bounds, filters: Sequence[Filter],
                pagination_rules: Sequence[Sequence[Filter]], limit: Optional[int], include_deleted: bool,
                descending: bool) -> Tuple[List[Record], int]:
        """Walk the sorted sets in timestamp order from the bound, ``limit`` items at a time."""
        keys = self._keys(collection_id, parent_id)[:3]
        window = _rules_bounds(pagination_rules)
        window.intersect(bounds)
        keep = compile_filters(filters)
        page_filter = compile_rules(pagination_rules)
        count = -1 if limit is None else max(limit, 1)
        page: List[Record] = []
        total: Optional[int] = None
        while True:
            args = [int(descending), window.low_text, window.high_text, count, int(include_deleted)]
            args += [bounds.low_text, bounds.high_text] if total is None else ["", ""]
            live, bodies, tombstones, found = self._range(keys=keys, args=args)
            if total is None:
                total = int(found)
            batch = list(self._merge(live, bodies, tombstones, descending))
            # Complete only when neither range was cut and the merged batch fits: records dropped by the
            # truncation below lie after batch[-1] and are fetched by the next round.
            complete = count < 0 or (len(live) < 2 * count and len(tombstones) < 2 * count and len(batch) <= count)
            if count > 0:
                del batch[count:]
            for record in batch:
                if (keep is None or keep(record)) and (page_filter is None or page_filter(record)):
                    page.append(record)
            if limit is not None and len(page) >= limit:
                del page[limit:]
                break
            if complete or not batch:
                break
            last = batch[-1]["last_modified"]
            if descending:
                window.high, window.high_open = last, True
            else:
                window.low, window.low_open = last, True
        return page, total or 0

    @staticmethod
    def _merge(live: List[bytes], bodies: List[Optional[bytes]], tombstones: List[bytes],
               descending: bool) -> Iterator[Record]:
        """Records and tombstones of one range answer, in timestamp order."""
        records = [_load(body) for body in bodies if body is not None]
        buried = [{"id": tombstones[i].decode("utf-8"), "last_modified": int(tombstones[i + 1]), "deleted": True}
                  for i in range(0, len(tombstones), 2)]
        key = _last_modified
        return heapq.merge(records, buried, key=key, reverse=descending)


def _last_modified(record: Record) -> int:
    return record["last_modified"]

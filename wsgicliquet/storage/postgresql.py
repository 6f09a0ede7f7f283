"""PostgreSQL storage: records and tombstones as JSONB rows, a per-partition timestamp counter, queries in SQL.

Tables (created by ``wsgicliquet migrate``; see docs/postgresql.md):

* ``records(collection_id, parent_id, id, last_modified BIGINT, deleted BOOLEAN, data JSONB)``: live records and
  tombstones (``deleted`` true, ``data = {"deleted": true}``) in one table, so a ``_since`` listing is one index scan.
* ``timestamps(collection_id, parent_id, last_modified BIGINT, live BIGINT)``: the partition counter (PROTOCOL.md
  D1) and the partition's number of live records, so that ``Total-Records`` of an unfiltered listing is one row
  read instead of a count of the partition (which costs as much as the partition is large).

Timestamps: every write first holds the partition's counter row locked (taken by the first write of the partition
in a transaction), then checks its conditions (``if_match``, ``if_absent``: the row read after the lock is the
latest committed one; for ``delete_all``, ``if_match`` against the counter value the locking upsert returns) and
unicity, then bumps the counter to ``GREATEST(counter + 1, candidate)`` and writes the row; for one record all of
this is one call of the ``wsgicliquet_write()`` function (one round trip, plans cached per connection).  The row
lock is held until the transaction commits, so writers of one partition are serialized and commit order equals
timestamp order; no two writes can ever get the same value (PROTOCOL.md §21.2-21.4).  Reads never write (§21.6).
The same UPDATE that bumps the counter adds the write's change to the number of live records (+1 for a record
created or revived, -1 per record deleted), from the rows read under the lock; it commits or rolls back with them.
Purging tombstones leaves it alone.

Queries: filters, sorting and keyset pagination are SQL on ``data -> key -> ...`` with JSON semantics (numbers compare
with numbers, strings with strings in code point order, other types never match); the page and the total come back
in one round trip; nothing is ever truncated (§21.12).  Every value and field name from a request reaches SQL as a
``psycopg2.sql.Literal``, never by string formatting.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from wsgicliquet.ids import uuid4
from wsgicliquet.postgresql import Backend, Json, Migration, sql
from wsgicliquet.storage import COMPARISON, Filter, Record, Sort, Storage as StorageBase, check_conditions
from wsgicliquet.storage.exceptions import PreconditionFailed, RecordNotFoundError, UnicityError

# wsgicliquet_write(), the single-record write of migration step 2; step 3 replaces it with the same body plus the
# count of live records in its counter UPDATE ({live}), step 4 with _WRITE_FUNCTION_4, step 5 with
# _WRITE_FUNCTION_5.  Migrations that already ran are never edited: the SQL of each step stays what it was.
_WRITE_FUNCTION = """\
    CREATE OR REPLACE FUNCTION wsgicliquet_write(
        p_action TEXT, p_cid TEXT, p_pid TEXT, p_id TEXT, p_data JSONB, p_candidate BIGINT,
        p_if_match BIGINT, p_if_absent BOOLEAN, p_if_live BOOLEAN, p_paths JSONB, p_values JSONB)
    RETURNS TABLE (tag INT, id TEXT, last_modified BIGINT, deleted BOOLEAN, data JSONB)
    LANGUAGE plpgsql VOLATILE AS $$
    #variable_conflict use_column
    DECLARE
        cur RECORD;
        found_live BOOLEAN;
        stamp BIGINT;
        clash RECORD;
    BEGIN
        INSERT INTO timestamps AS t (collection_id, parent_id, last_modified) VALUES (p_cid, p_pid, 0)
        ON CONFLICT (collection_id, parent_id) DO UPDATE SET last_modified = t.last_modified;
        SELECT r.id, r.last_modified, r.deleted, r.data INTO cur FROM records r
        WHERE r.collection_id = p_cid AND r.parent_id = p_pid AND r.id = p_id;
        found_live := FOUND AND NOT cur.deleted;
        IF (p_if_match IS NOT NULL AND NOT (found_live AND cur.last_modified = p_if_match))
           OR (p_if_absent AND found_live) OR (p_if_live AND NOT found_live) THEN
            IF cur.id IS NOT NULL THEN
                RETURN QUERY SELECT -1, cur.id, cur.last_modified, cur.deleted, cur.data;
            END IF;
            RETURN QUERY SELECT 0, NULL::TEXT, NULL::BIGINT, NULL::BOOLEAN, NULL::JSONB;
            RETURN;
        END IF;
        FOR i IN 1 .. coalesce(jsonb_array_length(p_values), 0) LOOP
            EXECUTE format('SELECT id, last_modified, deleted, data FROM records WHERE collection_id = $1 '
                           'AND parent_id = $2 AND NOT deleted AND id <> $3 AND data #> %L = $4 '
                           'ORDER BY last_modified LIMIT 1',
                           ARRAY(SELECT jsonb_array_elements_text(p_paths -> (i - 1))))
            INTO clash USING p_cid, p_pid, p_id, p_values -> (i - 1);
            IF clash.id IS NOT NULL THEN
                RETURN QUERY SELECT i, clash.id, clash.last_modified, clash.deleted, clash.data;
                RETURN;
            END IF;
        END LOOP;
        UPDATE timestamps t SET last_modified = GREATEST(t.last_modified + 1,
            COALESCE(p_candidate, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)){live}
        WHERE t.collection_id = p_cid AND t.parent_id = p_pid
        RETURNING t.last_modified INTO stamp;
        IF p_action = 'write' THEN
            INSERT INTO records AS r (collection_id, parent_id, id, last_modified, deleted, data)
            VALUES (p_cid, p_pid, p_id, stamp, FALSE, p_data)
            ON CONFLICT (collection_id, parent_id, id) DO UPDATE
            SET last_modified = EXCLUDED.last_modified, deleted = FALSE, data = EXCLUDED.data;
        ELSIF p_action = 'tombstone' THEN
            UPDATE records r SET last_modified = stamp, deleted = TRUE, data = '{"deleted": true}'
            WHERE r.collection_id = p_cid AND r.parent_id = p_pid AND r.id = p_id;
        ELSE
            DELETE FROM records r WHERE r.collection_id = p_cid AND r.parent_id = p_pid AND r.id = p_id;
        END IF;
        RETURN QUERY SELECT -2, NULL::TEXT, stamp, NULL::BOOLEAN, NULL::JSONB;
    END
    $$;
"""
_COUNT_LIVE = """,
            live = t.live + CASE WHEN p_action = 'write' THEN (NOT found_live)::int ELSE -found_live::int END"""

# Step 4: the same function, cheaper when a transaction writes a partition many times (a batch).
#
# * The partition lock is taken once per transaction: the first write of the partition locks its counter row (FOR NO
#   KEY UPDATE, as the counter UPDATE itself would; the upsert only when the row is missing) and notes it in the
#   transaction-local setting wsgicliquet.locked_partition; the following writes of that partition find it there
#   and skip the lock, which they hold already.  The setting goes back with the lock: at the end of the transaction,
#   and when a savepoint taken before the lock is rolled back.  It names the transaction, so that a value set for a
#   whole session by hand can never stand for a lock.  Step 3 locked with an upsert that rewrote the row at every
#   write: each write of a batch added two versions of that row, which every later statement of the batch reading
#   it walked through (none can be pruned before the commit).
# * The record is inserted, or updated when the read under the lock found it, instead of an INSERT ... ON CONFLICT
#   (a speculative insertion: one more index probe and WAL record).  Only writers holding the partition lock insert
#   a partition's records, so no insert can race this one; purge_deleted() deletes tombstones without it, so an
#   update that finds its tombstone gone inserts instead.
# * The timestamp written comes back with RETURN NEXT instead of a query.
_WRITE_FUNCTION_4 = """\
    CREATE OR REPLACE FUNCTION wsgicliquet_write(
        p_action TEXT, p_cid TEXT, p_pid TEXT, p_id TEXT, p_data JSONB, p_candidate BIGINT,
        p_if_match BIGINT, p_if_absent BOOLEAN, p_if_live BOOLEAN, p_paths JSONB, p_values JSONB)
    RETURNS TABLE (tag INT, id TEXT, last_modified BIGINT, deleted BOOLEAN, data JSONB)
    LANGUAGE plpgsql VOLATILE AS $$
    #variable_conflict use_column
    DECLARE
        cur RECORD;
        found_row BOOLEAN;
        found_live BOOLEAN;
        stamp BIGINT;
        clash RECORD;
        held TEXT := txid_current() || ' ' || length(p_cid) || ' ' || p_cid || p_pid;
    BEGIN
        IF current_setting('wsgicliquet.locked_partition', TRUE) IS DISTINCT FROM held THEN
            PERFORM FROM timestamps t WHERE t.collection_id = p_cid AND t.parent_id = p_pid FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                INSERT INTO timestamps AS t (collection_id, parent_id, last_modified) VALUES (p_cid, p_pid, 0)
                ON CONFLICT (collection_id, parent_id) DO UPDATE SET last_modified = t.last_modified;
            END IF;
            PERFORM set_config('wsgicliquet.locked_partition', held, TRUE);
        END IF;
        SELECT r.id, r.last_modified, r.deleted, r.data INTO cur FROM records r
        WHERE r.collection_id = p_cid AND r.parent_id = p_pid AND r.id = p_id;
        found_row := FOUND;
        found_live := found_row AND NOT cur.deleted;
        IF (p_if_match IS NOT NULL AND NOT (found_live AND cur.last_modified = p_if_match))
           OR (p_if_absent AND found_live) OR (p_if_live AND NOT found_live) THEN
            IF found_row THEN
                RETURN QUERY SELECT -1, cur.id, cur.last_modified, cur.deleted, cur.data;
            END IF;
            RETURN QUERY SELECT 0, NULL::TEXT, NULL::BIGINT, NULL::BOOLEAN, NULL::JSONB;
            RETURN;
        END IF;
        FOR i IN 1 .. coalesce(jsonb_array_length(p_values), 0) LOOP
            EXECUTE format('SELECT id, last_modified, deleted, data FROM records WHERE collection_id = $1 '
                           'AND parent_id = $2 AND NOT deleted AND id <> $3 AND data #> %L = $4 '
                           'ORDER BY last_modified LIMIT 1',
                           ARRAY(SELECT jsonb_array_elements_text(p_paths -> (i - 1))))
            INTO clash USING p_cid, p_pid, p_id, p_values -> (i - 1);
            IF clash.id IS NOT NULL THEN
                RETURN QUERY SELECT i, clash.id, clash.last_modified, clash.deleted, clash.data;
                RETURN;
            END IF;
        END LOOP;
        UPDATE timestamps t SET last_modified = GREATEST(t.last_modified + 1,
            COALESCE(p_candidate, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)),
            live = t.live + CASE WHEN p_action = 'write' THEN (NOT found_live)::int ELSE -found_live::int END
        WHERE t.collection_id = p_cid AND t.parent_id = p_pid
        RETURNING t.last_modified INTO stamp;
        IF p_action = 'write' THEN
            IF found_row THEN
                UPDATE records r SET last_modified = stamp, deleted = FALSE, data = p_data
                WHERE r.collection_id = p_cid AND r.parent_id = p_pid AND r.id = p_id;
            END IF;
            IF NOT found_row OR NOT FOUND THEN
                INSERT INTO records (collection_id, parent_id, id, last_modified, deleted, data)
                VALUES (p_cid, p_pid, p_id, stamp, FALSE, p_data);
            END IF;
        ELSIF p_action = 'tombstone' THEN
            UPDATE records r SET last_modified = stamp, deleted = TRUE, data = '{"deleted": true}'
            WHERE r.collection_id = p_cid AND r.parent_id = p_pid AND r.id = p_id;
        ELSE
            DELETE FROM records r WHERE r.collection_id = p_cid AND r.parent_id = p_pid AND r.id = p_id;
        END IF;
        tag := -2;
        last_modified := stamp;
        RETURN NEXT;
    END
    $$;
"""


def _rewritten(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` part replaced (a migration's SQL derived from the previous step's)."""
    if text.count(old) != 1:
        raise RuntimeError("The SQL to rewrite is not in the previous step")  # pragma: no cover
    return text.replace(old, new)


# Step 5: a counter row missing when the function bumps it is an error instead of a write without a timestamp.  Every
# path locks or creates the row first, and since step 4 a transaction that noted the lock skips that; only a row it
# deleted itself by hand (flush() clears the note) could be missing, and a removal would then have answered no
# timestamp.
_WRITE_FUNCTION_5 = _rewritten(_WRITE_FUNCTION_4, """
        RETURNING t.last_modified INTO stamp;
        IF p_action = 'write' THEN""", """
        RETURNING t.last_modified INTO stamp;
        IF stamp IS NULL THEN
            RAISE EXCEPTION 'wsgicliquet_write(): partition (%, %) has no counter row', p_cid, p_pid;
        END IF;
        IF p_action = 'write' THEN""")

__all__ = ["Storage", "MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: List[Migration] = [
    (1, """
    CREATE TABLE IF NOT EXISTS records (
        collection_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        id TEXT NOT NULL,
        last_modified BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        data JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (collection_id, parent_id, id)
    );
    CREATE INDEX IF NOT EXISTS records_partition_last_modified_idx
        ON records (collection_id, parent_id, last_modified DESC, id);
    CREATE TABLE IF NOT EXISTS timestamps (
        collection_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        last_modified BIGINT NOT NULL,
        PRIMARY KEY (collection_id, parent_id)
    );
    """),
    # One round trip per write (see _WRITE_ONE), and a partial index of the live records: counts for
    # Total-Records become index-only scans and live pages skip tombstones.
    (2, """
    CREATE INDEX IF NOT EXISTS records_live_idx
        ON records (collection_id, parent_id, last_modified DESC, id) WHERE NOT deleted;
""" + _WRITE_FUNCTION.replace("{live}", "")),
    # Total-Records of an unfiltered listing without a count(*) of the partition: each partition's number of live
    # records, kept by every write in the statement that bumps its counter (under the partition lock, so in write
    # order).  The backfill also gives a counter row to a partition holding records without one (rows loaded by
    # hand), so that a missing row always means 0.  The function is step 2's with ``live`` in its counter UPDATE.
    (3, """
    ALTER TABLE timestamps ADD COLUMN live BIGINT NOT NULL DEFAULT 0;
    INSERT INTO timestamps AS t (collection_id, parent_id, last_modified, live)
    SELECT collection_id, parent_id, max(last_modified), count(*) FILTER (WHERE NOT deleted)
    FROM records GROUP BY collection_id, parent_id
    ON CONFLICT (collection_id, parent_id) DO UPDATE SET live = EXCLUDED.live;
""" + _WRITE_FUNCTION.replace("{live}", _COUNT_LIVE)),
    # The partition lock once per transaction, and the record written without a speculative insertion (see
    # _WRITE_FUNCTION_4); the tables are unchanged.
    (4, _WRITE_FUNCTION_4),
    # A missing counter row fails the write (see _WRITE_FUNCTION_5).
    (5, _WRITE_FUNCTION_5),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_TOMBSTONE_DATA = '{"deleted": true}'

# Takes the partition lock (held until commit) without changing the counter; returns the counter, read under the
# lock (the latest committed value, even when the upsert waited for another writer; 0 for a new row).
_LOCK = """
INSERT INTO timestamps (collection_id, parent_id, last_modified) VALUES (%(cid)s, %(pid)s, 0)
ON CONFLICT (collection_id, parent_id) DO UPDATE SET last_modified = timestamps.last_modified
RETURNING last_modified
"""
# Bumps the counter by ``count`` values and adds ``live`` to the count of live records; returns the last value.
# Only ever run after _LOCK.
_BUMP = f"""
UPDATE timestamps SET last_modified = GREATEST(last_modified + %(count)s,
                                               COALESCE(%(candidate)s::bigint, {_NOW_MS}) + %(count)s - 1),
                      live = live + %(live)s
WHERE collection_id = %(cid)s AND parent_id = %(pid)s
RETURNING last_modified
"""
# Every single-record write is one round trip: wsgicliquet_write() (migrations 2 to 5) takes the partition lock
# (once per transaction since step 4), reads the target row, checks the conditions and unique fields, and only when
# nothing blocks bumps the counter (and the count of live records) and writes.  A VOLATILE plpgsql function takes a fresh snapshot for each of its
# statements (READ COMMITTED), so everything read after the lock is the latest committed state; its plans are cached
# per connection.  It answers tagged rows: written (the new timestamp), else the target row and "refused" (a
# condition failed), or the unique field clash.
_TAG_WRITTEN, _TAG_CURRENT, _TAG_REFUSED = -2, -1, 0
# Its arguments are positional (action, cid, pid, id, data, candidate, if_match, if_absent, if_live, paths, values),
# the JSONB ones sent as their JSON text (json.dumps, as psycopg2's Json adapter spells them; the string literal
# becomes the JSONB parameter): a tuple and plain strings cost psycopg2 less to adapt than a dict and adapter objects.
_WRITE_ONE = """
SELECT tag, id, last_modified, deleted, data FROM wsgicliquet_write(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_GET = """
SELECT id, last_modified, deleted, data FROM records
WHERE collection_id = %(cid)s AND parent_id = %(pid)s AND id = %(id)s
"""

_TYPE_RANK = ("CASE jsonb_typeof({e}) WHEN 'boolean' THEN 1 WHEN 'number' THEN 2 WHEN 'string' THEN 3 "
              "WHEN 'array' THEN 4 WHEN 'object' THEN 5 ELSE 6 END")
_COMPARATORS = {COMPARISON.LT: "<", COMPARISON.MAX: "<=", COMPARISON.GT: ">", COMPARISON.MIN: ">="}
_TRUE, _FALSE = sql.SQL("TRUE"), sql.SQL("FALSE")
_Literal = sql.Literal


def _as_ms(value: Any) -> Optional[int]:
    """A client-supplied timestamp as integer ms, or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def _storable(value: Any) -> bool:
    """False for values PostgreSQL cannot hold (NUL characters, lone surrogates, NaN): no stored value equals them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_storable(item) for item in value)
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    return True


def _json(value: Any) -> sql.Composable:
    return sql.SQL("{}::jsonb").format(_Literal(Json(value)))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, (list, tuple)) else "object"


def _like_pattern(value: Any) -> str:
    """``*`` globs to a LIKE pattern (escaping ``\\ % _``); without ``*`` the value matches anywhere."""
    text = value if isinstance(value, str) else Json(value).dumps(value)
    text = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return text.replace("*", "%") if "*" in text else f"%{text}%"


def _field(name: str) -> Tuple[sql.Composable, Optional[str]]:
    """The JSONB expression of a (dotted) field, and the column name when it is ``id`` or ``last_modified``."""
    if name in ("id", "last_modified"):
        return sql.SQL("to_jsonb({})").format(sql.Identifier(name)), name
    path = name.split(".")
    if not _storable(path):
        return sql.SQL("NULL::jsonb"), None  # no stored key can be spelled like that
    # ``->`` with a text key looks it up in an object and gives NULL on anything else (an array included, "0"
    # being no index there), which is the contract's "a path crossing a non-object is missing"; and one key lookup
    # costs about half of ``#>`` with a one-key path array, which it rebuilds for every row.
    chain = sql.SQL(" -> ").join([sql.SQL("data"), *(_Literal(part) for part in path)])  # flat: no nesting
    return sql.Composed([sql.SQL("("), chain, sql.SQL(")")]), None


def _items(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _condition(filter_: Filter, fields: Optional[Dict[str, sql.Composable]] = None) -> sql.Composable:
    """One filter as a SQL boolean; follows the contract's JSON semantics (see the module docstring)."""
    operator, value = COMPARISON(filter_.operator), filter_.value
    if fields is not None and filter_.field in fields:
        e, column = fields[filter_.field], None  # a column holding the field's value, extracted beforehand
    else:
        e, column = _field(filter_.field)
    fmt = sql.SQL

    if operator in (COMPARISON.EQ, COMPARISON.NOT):
        if not _storable(value):
            return _FALSE if operator is COMPARISON.EQ else _TRUE
        if _fits_column(column, value):
            test = fmt("{} = {}").format(sql.Identifier(column), _Literal(value))
        else:
            test = fmt("{} = {}").format(e, _json(value))
        return test if operator is COMPARISON.EQ else fmt("({} IS NOT TRUE)").format(test)

    if operator in (COMPARISON.IN, COMPARISON.EXCLUDE):
        values = [item for item in _items(value) if _storable(item)]
        if not values:
            return _FALSE if operator is COMPARISON.IN else _TRUE
        if all(_fits_column(column, item) for item in values):
            test = fmt("{} = ANY({})").format(sql.Identifier(column), _Literal(values))
        else:
            test = fmt("{} IN (SELECT jsonb_array_elements({}))").format(e, _json(values))
        return test if operator is COMPARISON.IN else fmt("({} IS NOT TRUE)").format(test)

    if operator in _COMPARATORS:
        return _comparison(e, column, _COMPARATORS[operator], value)

    if operator in (COMPARISON.SORTS_BEFORE, COMPARISON.SORTS_AFTER):
        return _sorts(e, column, ">" if operator is COMPARISON.SORTS_AFTER else "<", value)

    if operator is COMPARISON.HAS:
        if column:
            return _TRUE if _wants_presence(value) else _FALSE
        present = fmt("({0} IS NOT NULL AND {0} <> 'null'::jsonb)").format(e)
        return present if _wants_presence(value) else fmt("NOT {}").format(present)

    if operator is COMPARISON.LIKE:
        if not _storable(value):
            return _FALSE
        pattern = _Literal(_like_pattern(value))
        if column == "id":
            return fmt("id ILIKE {} ESCAPE '\\'").format(pattern)
        return fmt("(jsonb_typeof({0}) = 'string' AND ({0} #>> '{{}}') ILIKE {1} ESCAPE '\\')").format(e, pattern)

    if operator in (COMPARISON.CONTAINS, COMPARISON.CONTAINS_ANY):
        values = _items(value)
        is_array = fmt("jsonb_typeof({}) = 'array'").format(e)
        if operator is COMPARISON.CONTAINS:
            if not _storable(values):
                return _FALSE
            return fmt("({0} AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements({1}) AS wanted(value) "
                       "WHERE wanted.value NOT IN (SELECT jsonb_array_elements({2}))))").format(
                is_array, _json(values), e)
        values = [item for item in values if _storable(item)]
        if not values:
            return _FALSE
        return fmt("({0} AND EXISTS (SELECT 1 FROM jsonb_array_elements({1}) AS item(value) "
                   "WHERE item.value IN (SELECT jsonb_array_elements({2}))))").format(is_array, e, _json(values))

    raise ValueError(f"Unknown filter operator {operator!r}")


def _wants_presence(value: Any) -> bool:
    """``has`` value: false, 0, null, "false", "0" and "" ask for absence (as the querystring spells them)."""
    return not (value is None or value is False or value in (0, "false", "0", ""))


def _fits_column(column: Optional[str], value: Any) -> bool:
    """True when ``value`` can be compared with the column directly (and its index used)."""
    if column == "id":
        return isinstance(value, str)
    if column == "last_modified":
        return isinstance(value, int) and not isinstance(value, bool)
    return False


def _comparison(e: sql.Composable, column: Optional[str], op: str, value: Any) -> sql.Composable:
    """``<``, ``<=``, ``>``, ``>=``: numbers with numbers, strings with strings (code point order), booleans with
    booleans; arrays, objects and null have no order and match nothing."""
    fmt, kind = sql.SQL, _json_type(value)
    if kind == "string" and "\x00" in value and _storable(value.partition("\x00")[0]):
        # Stored strings hold no NUL, so s < prefix + NUL + rest exactly when s <= prefix.
        op, value = ("<=" if op in ("<", "<=") else ">"), value.partition("\x00")[0]
    if kind not in ("number", "string", "boolean") or not _storable(value):
        return _FALSE
    if column is not None:
        if kind != ("string" if column == "id" else "number"):
            return _FALSE
        collate = ' COLLATE "C"' if column == "id" else ""
        return fmt("{}" + collate + " " + op + " {}").format(sql.Identifier(column), _Literal(value))
    if kind == "string":
        return fmt("(jsonb_typeof({0}) = 'string' AND ({0} #>> '{{}}') COLLATE \"C\" " + op + " {1})").format(
            e, _Literal(value))
    # CASE, not AND: SQL does not promise to evaluate AND left to right, and the cast fails on other types.
    cast = "numeric" if kind == "number" else "boolean"
    return fmt("(CASE WHEN jsonb_typeof({0}) = {1} THEN ({0})::" + cast + " END " + op + " {2}::" + cast + ")"
               ).format(e, _Literal(kind), _Literal(value))


_RANKS = {"boolean": 1, "number": 2, "string": 3, "array": 4, "object": 5}  # as _TYPE_RANK; 6: null, missing


def _sorts(e: sql.Composable, column: Optional[str], op: str, value: Any) -> sql.Composable:
    """Present, not null, and before (``<``) or after (``>``) ``value`` in the order of :func:`_sort_keys`: by
    type rank, then numbers as numeric, strings in code point order, the rest in JSONB order."""
    kind = _json_type(value)
    if kind == "null" or not _storable(value.partition("\x00")[0] if kind == "string" else value):
        return _FALSE
    rank = _RANKS[kind]
    if column is not None:  # one type in every row
        own = _RANKS["string" if column == "id" else "number"]
        if own != rank:
            return _TRUE if (own > rank) == (op == ">") else _FALSE
        return _comparison(e, column, op, value)
    if kind == "number":
        same = sql.SQL("({})::numeric " + op + " {}::numeric").format(e, _Literal(value))
    elif kind == "string":
        same = _comparison(e, None, op, value)
    else:
        same = sql.SQL("{} " + op + " {}").format(e, _json(value))
    other = sql.SQL("{0} > {1} AND {0} < 6" if op == ">" else "{0} < {1}").format(
        sql.SQL(_TYPE_RANK).format(e=e), _Literal(rank))
    return sql.SQL("(CASE {} WHEN {} THEN {} ELSE {} END)").format(
        sql.SQL(_TYPE_RANK).format(e=e), _Literal(rank), same, other)


def _conjunction(filters: Sequence[Filter], fields: Optional[Dict[str, sql.Composable]] = None) -> sql.Composable:
    """The filters ANDed; exactly ``_TRUE`` when every one of them is always true (see :func:`_live_count`)."""
    conditions = [condition for condition in (_condition(f, fields) for f in filters) if condition is not _TRUE]
    if not conditions:
        return _TRUE
    return sql.SQL("({})").format(sql.SQL(" AND ").join(conditions))


def _live_count(collection_id: str, parent_id: str) -> sql.Composable:
    """Total-Records when no filter restricts it: the partition's count of live records (migration 3), kept by
    every write; a partition never written has no counter row and no record."""
    return sql.SQL("SELECT coalesce((SELECT live FROM timestamps WHERE collection_id = {} AND parent_id = {}), 0) "
                   "AS n").format(_Literal(collection_id), _Literal(parent_id))


def _pagination(rules: Sequence[Sequence[Filter]], fields: Optional[Dict[str, sql.Composable]] = None
                ) -> sql.Composable:
    if not rules:
        return _TRUE
    ored = sql.SQL("({})").format(sql.SQL(" OR ").join(_conjunction(rule, fields) for rule in rules))
    return sql.SQL("({} AND {})").format(_timestamp_range(rules), ored)


def _timestamp_range(rules: Sequence[Sequence[Filter]]) -> sql.Composable:
    """The ``last_modified`` range every rule implies, stated plainly so that the index bounds the scan.

    Keyset rules for a sort starting with ``last_modified`` look like ``lm < v OR (lm = v AND id < x)``; PostgreSQL
    cannot turn that OR into an index range, so page 1,000 would scan the 20,000 rows before it.  The redundant
    ``lm <= v`` lets it start right there.
    """
    uppers: List[Optional[int]] = []
    lowers: List[Optional[int]] = []
    for rule in rules:
        upper = [f.value for f in rule if f.field == "last_modified" and _fits_column("last_modified", f.value)
                 and COMPARISON(f.operator) in (COMPARISON.LT, COMPARISON.MAX, COMPARISON.EQ)]
        lower = [f.value for f in rule if f.field == "last_modified" and _fits_column("last_modified", f.value)
                 and COMPARISON(f.operator) in (COMPARISON.GT, COMPARISON.MIN, COMPARISON.EQ)]
        uppers.append(min(upper) if upper else None)
        lowers.append(max(lower) if lower else None)
    bounds: List[sql.Composable] = []
    if None not in uppers:
        bounds.append(sql.SQL("last_modified <= {}").format(_Literal(max(v for v in uppers if v is not None))))
    if None not in lowers:
        bounds.append(sql.SQL("last_modified >= {}").format(_Literal(min(v for v in lowers if v is not None))))
    return sql.SQL(" AND ").join(bounds) if bounds else _TRUE


_Key = Tuple[sql.Composable, bool, str]  # a sort key: expression, compared in code point order, ASC or DESC


def _sort_keys(sorting: Sequence[Sort], fields: Optional[Dict[str, sql.Composable]] = None) -> List[_Key]:
    """The keys of the ORDER BY; data fields order by JSON type first, missing and null last (first when
    descending).

    ``last_modified`` is unique in a partition, so it ends the keys (and is appended, descending, when absent).
    ``fields`` names columns that already hold the values of data fields.
    """
    keys: List[_Key] = []
    for sort in sorting:
        direction = "DESC" if sort.direction < 0 else "ASC"
        if sort.field == "last_modified":
            keys.append((sql.SQL("last_modified"), False, direction))
            break
        if sort.field == "id":
            keys.append((sql.SQL("id"), True, direction))
            continue
        e = fields[sort.field] if fields is not None else _field(sort.field)[0]
        keys.extend((sql.SQL(template).format(e=e), collate, direction) for template, collate in (
            (_TYPE_RANK, False),
            ("CASE WHEN jsonb_typeof({e}) = 'number' THEN ({e})::numeric END", False),
            ("CASE WHEN jsonb_typeof({e}) = 'string' THEN ({e} #>> '{{}}') END", True),
            ("CASE WHEN jsonb_typeof({e}) IN ('boolean', 'array', 'object') THEN {e} END", False),
        ))
    else:
        keys.append((sql.SQL("last_modified"), False, "DESC"))
    return keys


def _order_by(keys: Sequence[_Key], names: Optional[Sequence[sql.Composable]] = None) -> sql.Composable:
    """ORDER BY ``keys``, or by columns ``names`` that hold their values."""
    return sql.SQL(", ").join(
        sql.SQL("{}{} {}").format(names[i] if names is not None else expression,
                                  sql.SQL(' COLLATE "C"' if collate else ""), sql.SQL(direction))
        for i, (expression, collate, direction) in enumerate(keys))


def _record(object_id: str, last_modified: int, deleted: bool, data: Dict[str, Any]) -> Record:
    if deleted:
        return {"id": object_id, "last_modified": last_modified, "deleted": True}
    record = dict(data)
    record["id"] = object_id
    record["last_modified"] = last_modified
    return record


def _dig(record: Record, path: str) -> Any:
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


class Storage(Backend, StorageBase):
    """Storage on PostgreSQL ≥ 11; settings ``storage_url`` (``postgresql://user@host:5432/db``),
    ``storage_pool_size`` and optionally ``storage_pool_timeout`` (seconds to wait for a free connection)."""

    name = "postgresql"
    component, migrations, tables = "storage", MIGRATIONS, ("records", "timestamps")

    def transaction(self) -> Any:
        return self.client.transaction()

    def _ready(self) -> None:
        self.client.check_schema("storage", SCHEMA_VERSION)

    def _execute(self, query: Any, params: Any = None, fetch: Optional[str] = None) -> Any:
        return self.client.execute(query, params, fetch)

    def flush(self) -> None:
        # The counter rows go, those this transaction locked too: its next writes must create and lock them again.
        with self.client.transaction():
            self._ready()
            self._execute("DELETE FROM records; DELETE FROM timestamps; "
                          "SELECT set_config('wsgicliquet.locked_partition', '', TRUE);")

    def collection_timestamp(self, collection_id: str, parent_id: str) -> int:
        with self.client.transaction():
            self._ready()
            row = self._execute("SELECT last_modified FROM timestamps WHERE collection_id = %s AND parent_id = %s",
                                (collection_id, parent_id), fetch="one")
        return row[0] if row else 0

    # Writes -------------------------------------------------------------------------------------------------------

    def _lock(self, collection_id: str, parent_id: str) -> int:
        """Take the partition lock; return the partition counter."""
        return self._execute(_LOCK, {"cid": collection_id, "pid": parent_id}, fetch="one")[0]

    def _write_one(self, action: str, collection_id: str, parent_id: str, object_id: str, *,
                   data: Optional[Record] = None, candidate: Optional[int] = None, if_match: Optional[int] = None,
                   if_absent: bool = False, if_live: bool = False, unique_fields: Sequence[str] = (),
                   refused: Callable[[Optional[Record]], None]) -> int:
        """Run ``wsgicliquet_write()`` and return the new timestamp; when the write was refused, ``refused`` is
        called with the target row (live record, tombstone or None) and must raise, else the oldest holder of
        the first clashing unique field raises :class:`UnicityError`."""
        fields: List[str] = []
        paths: List[List[str]] = []
        values: List[Any] = []
        for field in unique_fields:
            value = _dig(data, field) if data is not None else None
            path = field.split(".")
            if field in ("id", "last_modified") or value is None or not _storable(path) or not _storable(value):
                continue  # no stored value can clash (the write itself refuses what PostgreSQL cannot hold)
            fields.append(field)
            paths.append(path)
            values.append(value)
        params = (action, collection_id, parent_id, object_id, json.dumps(data), candidate, if_match, if_absent,
                  if_live, json.dumps(paths) if fields else None, json.dumps(values) if fields else None)
        # One statement, in the thread's transaction or committed alone: no transaction block of its own around the
        # schema check and the write (the check reads, once per process), which would cost every write of a batch.
        self._ready()
        rows = self._execute(_WRITE_ONE, params, fetch="all")
        if rows[0][0] == _TAG_WRITTEN:  # the one row of a write done
            return rows[0][2]
        tags = {row[0]: row for row in rows}
        current = tags.get(_TAG_CURRENT)
        if _TAG_REFUSED in tags:
            refused(_record(*current[1:]) if current is not None else None)
            raise AssertionError("A refused write must raise")  # pragma: no cover
        tag = min(tags.keys() - {_TAG_CURRENT})
        raise UnicityError(fields[tag - 1], _record(*tags[tag][1:]))

    def create(self, collection_id: str, parent_id: str, record: Record, *,
               id_generator: Optional[Callable[[], str]] = None,
               unique_fields: Sequence[str] = ()) -> Record:
        data = dict(record)
        object_id = data.pop("id", None)
        if object_id is None:
            object_id = (id_generator or uuid4)()
        candidate = _as_ms(data.pop("last_modified", None))

        def refused(existing: Optional[Record]) -> None:
            raise UnicityError("id", existing)

        timestamp = self._write_one("write", collection_id, parent_id, object_id, data=data, candidate=candidate,
                                    if_absent=True, unique_fields=unique_fields, refused=refused)
        return _record(object_id, timestamp, False, data)

    def get(self, collection_id: str, parent_id: str, object_id: str, *,
            include_deleted: bool = False) -> Record:
        with self.client.transaction():
            self._ready()
            row = self._execute(_GET, {"cid": collection_id, "pid": parent_id, "id": object_id}, fetch="one")
        if row is None or (row[2] and not include_deleted):
            raise RecordNotFoundError(object_id)
        return _record(*row)

    def update(self, collection_id: str, parent_id: str, object_id: str, record: Record, *,
               unique_fields: Sequence[str] = (), if_match: Optional[int] = None,
               if_absent: bool = False) -> Record:
        data = dict(record)
        data.pop("id", None)
        data.pop("last_modified", None)

        def refused(current: Optional[Record]) -> None:
            check_conditions(current, if_match, if_absent)

        timestamp = self._write_one("write", collection_id, parent_id, object_id, data=data, if_match=if_match,
                                    if_absent=if_absent, unique_fields=unique_fields, refused=refused)
        return _record(object_id, timestamp, False, data)

    def delete(self, collection_id: str, parent_id: str, object_id: str, *, with_deleted: bool = True,
               last_modified: Optional[int] = None, if_match: Optional[int] = None) -> Record:
        def refused(current: Optional[Record]) -> None:
            if if_match is not None:
                check_conditions(current, if_match)
            raise RecordNotFoundError(object_id)

        timestamp = self._write_one("tombstone" if with_deleted else "remove", collection_id, parent_id, object_id,
                                    candidate=_as_ms(last_modified), if_match=if_match,
                                    if_live=if_match is None, refused=refused)
        return _record(object_id, timestamp, True, {})

    def delete_all(self, collection_id: str, parent_id: str, filters: Sequence[Filter] = (), *,
                   with_deleted: bool = True, if_match: Optional[int] = None) -> List[Record]:
        partition = {"cid": collection_id, "pid": parent_id}
        with self.client.transaction():
            self._ready()
            counter = self._lock(collection_id, parent_id)
            if if_match is not None and counter != if_match:
                raise PreconditionFailed(None)
            query = sql.SQL("SELECT id FROM records WHERE collection_id = {} AND parent_id = {} AND NOT deleted "
                            "AND {} ORDER BY last_modified, id").format(
                _Literal(collection_id), _Literal(parent_id), _conjunction(filters))
            ids = [row[0] for row in self._execute(query, fetch="all")]
            if not ids:
                return []
            last = self._execute(_BUMP, dict(partition, candidate=None, count=len(ids), live=-len(ids)),
                                 fetch="one")[0]
            timestamps = list(range(last - len(ids) + 1, last + 1))
            if with_deleted:
                self._execute(f"""
                UPDATE records SET deleted = TRUE, data = '{_TOMBSTONE_DATA}', last_modified = v.ts
                FROM unnest(%(ids)s::text[], %(ts)s::bigint[]) AS v(id, ts)
                WHERE collection_id = %(cid)s AND parent_id = %(pid)s AND records.id = v.id
                """, dict(partition, ids=ids, ts=timestamps))
            else:
                self._execute("DELETE FROM records WHERE collection_id = %(cid)s AND parent_id = %(pid)s "
                              "AND id = ANY(%(ids)s)", dict(partition, ids=ids))
        return [_record(object_id, ts, True, {}) for object_id, ts in zip(ids, timestamps)]

    def purge_deleted(self, collection_id: str, parent_id: str, before: Optional[int] = None) -> int:
        # Tombstones only, so the count of live records stays as it is, and no partition lock is needed: a
        # tombstone revived meanwhile is live again when the DELETE rechecks ``deleted`` on the row it waited for.
        query = "DELETE FROM records WHERE collection_id = %s AND parent_id = %s AND deleted"
        params: List[Any] = [collection_id, parent_id]
        if before is not None:
            query += " AND last_modified < %s"
            params.append(before)
        with self.client.transaction():
            self._ready()
            return self._execute(query, params, fetch="rowcount")

    # Reads --------------------------------------------------------------------------------------------------------

    def list_query(self, collection_id: str, parent_id: str, *, filters: Sequence[Filter] = (),
                   sorting: Sequence[Sort] = (), pagination_rules: Sequence[Sequence[Filter]] = (),
                   limit: Optional[int] = None, include_deleted: bool = False) -> sql.Composable:
        """The one query behind :meth:`get_all` (public so that it can be EXPLAINed).

        The total and the page come back together: a LATERAL join of the page to the total.  Without filters the
        total is the partition's count of live records, read from its counter row; filtered, the matching live
        records are counted (tombstones never are, even with ``include_deleted``).  A join does not
        promise to keep the page's order, so the outer query orders again: with a limit it re-sorts the few rows
        of the page (the inner sort stays a bounded top-N sort or an index scan); without one, a ``row_number()``
        computed in the page's order avoids sorting every row twice.
        """
        partition = sql.SQL("collection_id = {} AND parent_id = {}").format(_Literal(collection_id),
                                                                           _Literal(parent_id))
        where = _conjunction(filters)
        keys = _sort_keys(sorting)
        if limit is not None and not include_deleted and keys[0][0] != sql.SQL("last_modified"):
            return self._sorted_page_query(collection_id, parent_id, where, sorting, pagination_rules, int(limit))
        if where is _TRUE:
            total = _live_count(collection_id, parent_id)
        else:
            total = sql.SQL("SELECT count(*) AS n FROM records WHERE {} AND NOT deleted AND {}").format(partition,
                                                                                                        where)
        order = _order_by(keys)
        if limit is None:
            position = sql.SQL(", row_number() OVER (ORDER BY {}) AS position").format(order)
            limit_clause, outer_order = sql.SQL(""), sql.SQL("page.position")
        else:
            position, outer_order = sql.SQL(""), order
            limit_clause = sql.SQL("LIMIT {}").format(_Literal(max(int(limit), 0)))
        return sql.SQL("""
        WITH total AS ({total})
        SELECT total.n, page.id, page.last_modified, page.deleted, page.data
        FROM total LEFT JOIN LATERAL (
            SELECT id, last_modified, deleted, data {position}
            FROM records
            WHERE {partition} {live} AND {where} AND {pagination}
            ORDER BY {order} {limit}
        ) AS page ON TRUE
        ORDER BY {outer_order}
        """).format(total=total, partition=partition, where=where, order=order,
                    pagination=_pagination(pagination_rules),
                    live=sql.SQL("" if include_deleted else "AND NOT deleted"), position=position,
                    limit=limit_clause, outer_order=outer_order)

    @staticmethod
    def _sorted_page_query(collection_id: str, parent_id: str, where: sql.Composable, sorting: Sequence[Sort],
                           pagination_rules: Sequence[Sequence[Filter]], limit: int) -> sql.Composable:
        """A page sorted on something else than ``last_modified`` (no index serves it): one scan of the matching
        rows extracts each sorted data field once (``OFFSET 0`` keeps the planner from inlining it again); the
        sort keys and whether the row is past the previous page are computed from these values; the count (when
        filtered) and a top-N sort of these small rows both read that, and only the page's bodies are fetched at
        the end."""
        data_fields = [sort.field for sort in sorting] + [f.field for rule in pagination_rules for f in rule]
        data_fields = [name for name in data_fields if name not in ("id", "last_modified")]
        fields = {name: sql.Identifier(f"f{i}") for i, name in enumerate(dict.fromkeys(data_fields))}
        keys = _sort_keys(sorting, fields)
        partition, records_partition = (
            sql.SQL("{}collection_id = {} AND {}parent_id = {}").format(
                sql.SQL(table), _Literal(collection_id), sql.SQL(table), _Literal(parent_id))
            for table in ("", "records."))
        names = [sql.Identifier(f"k{i}") for i in range(len(keys))]
        page_names = [sql.SQL("page.{}").format(name) for name in names]
        return sql.SQL("""
        WITH matching AS (
            SELECT id, {columns}, {pagination} AS on_page FROM (
                SELECT id, last_modified {extracted}
                FROM records WHERE {partition} AND NOT deleted AND {where} OFFSET 0
            ) AS extracted
        ), page AS (
            SELECT * FROM matching WHERE on_page ORDER BY {order} LIMIT {limit}
        )
        SELECT total.n, records.id, records.last_modified, records.deleted, records.data
        FROM ({total}) AS total
        LEFT JOIN page ON TRUE
        LEFT JOIN records ON {records_partition} AND records.id = page.id
        ORDER BY {outer_order}
        """).format(
            total=_live_count(collection_id, parent_id) if where is _TRUE else sql.SQL(
                "SELECT count(*) AS n FROM matching"),
            columns=sql.SQL(", ").join(sql.SQL("{} AS {}").format(expression, name)
                                       for (expression, _, _), name in zip(keys, names)),
            extracted=sql.SQL("").join(sql.SQL(", {} AS {}").format(_field(name)[0], column)
                                      for name, column in fields.items()),
            pagination=_pagination(pagination_rules, fields), partition=partition, where=where, order=_order_by(keys, names),
            limit=_Literal(max(limit, 0)), outer_order=_order_by(keys, page_names),
            records_partition=records_partition)

    def get_all(self, collection_id: str, parent_id: str, *, filters: Sequence[Filter] = (),
                sorting: Sequence[Sort] = (), pagination_rules: Sequence[Sequence[Filter]] = (),
                limit: Optional[int] = None, include_deleted: bool = False) -> Tuple[List[Record], int]:
        query = self.list_query(collection_id, parent_id, filters=filters, sorting=sorting,
                                pagination_rules=pagination_rules, limit=limit, include_deleted=include_deleted)
        with self.client.transaction():
            self._ready()
            rows = self._execute(query, fetch="all")
        total = rows[0][0] if rows else 0
        return [_record(*row[1:]) for row in rows if row[1] is not None], total

"""Listing parameters of collection endpoints (PROTOCOL.md Part A "Querystring", §4).

Pure functions: they take the decoded ``(name, value)`` pairs and a predicate telling which fields exist, and
return storage :class:`~wsgicliquet.storage.Filter` / :class:`~wsgicliquet.storage.Sort` values, or raise a 400
errno 107 with the exact texts of §4.

* ``_since``, ``_before`` (and ``_to``, a deprecated alias of ``_before``) filter on ``last_modified``; any filter
  on ``last_modified`` brings tombstones into the result.
* ``[op_]field=value`` with the operators of :data:`OPERATORS`; dotted sub-fields (``author.name``); values are
  read as JSON when they parse (``2``, ``"2"``, ``true``, ``null``), else kept as strings; ``in_``/``exclude_``
  take comma separated values; ``id`` values are always strings (``"abc"`` or ``abc``) and ``last_modified`` values
  integers (``"123"`` or ``123``).
* At most :data:`MAX_FILTERS` filters.
* ``_sort`` (at most :data:`MAX_SORT_FIELDS` keys, ``-`` for descending) always ends with ``last_modified`` then
  ``id`` (Part A D3).
* ``_limit`` (capped by the setting ``paginate_by``), ``_token``, ``_fields``.
* Any other name starting with ``_`` is ignored (cache busters such as ``_=123``).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import parse_qsl

from wsgicliquet import jsonio
from wsgicliquet.errors import invalid
from wsgicliquet.resource.body import MAX_DEPTH
from wsgicliquet.storage import COMPARISON, Filter, Sort

__all__ = ["ListQuery", "OPERATORS", "parse_query_string", "parse_list", "parse_filters", "parse_sort",
           "parse_limit", "parse_fields", "native_value", "valid_field", "project", "sort_key", "MAX_LIMIT",
           "MAX_SORT_FIELDS", "MAX_FILTERS"]

Params = Sequence[Tuple[str, str]]
IsKnown = Callable[[str], bool]

#: Querystring prefixes, longest first where one is the start of another.
OPERATORS: Tuple[Tuple[str, COMPARISON], ...] = (
    ("contains_any_", COMPARISON.CONTAINS_ANY),
    ("contains_", COMPARISON.CONTAINS),
    ("exclude_", COMPARISON.EXCLUDE),
    ("min_", COMPARISON.MIN),
    ("max_", COMPARISON.MAX),
    ("not_", COMPARISON.NOT),
    ("eq_", COMPARISON.EQ),
    ("lt_", COMPARISON.LT),
    ("gt_", COMPARISON.GT),
    ("in_", COMPARISON.IN),
    ("has_", COMPARISON.HAS),
    ("like_", COMPARISON.LIKE),
)
_LISTS = (COMPARISON.IN, COMPARISON.EXCLUDE)
_ORDERED = (COMPARISON.EQ, COMPARISON.NOT, COMPARISON.LT, COMPARISON.GT, COMPARISON.MIN, COMPARISON.MAX,
            COMPARISON.IN, COMPARISON.EXCLUDE)

#: Field names: ASCII words separated by dots (no quotes, operators, spaces or other characters).
_FIELD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*")
_SORT_ITEM = re.compile(r"([-+]?)(.*)", re.DOTALL)
_TIMESTAMP = re.compile(r'"([0-9]{1,19})"|([0-9]{1,19})')
_INTEGER = re.compile(r"[0-9]{1,30}")

#: Most ``_sort`` fields a request may give (the implicit tie-breakers not counted): a keyset query grows with the
#: square of the sort keys, and PostgreSQL refuses a few hundred of them (a client mistake, not a server failure).
MAX_SORT_FIELDS = 20

#: Most filters a request may give (``_since``/``_before`` not counted): PostgreSQL plans a query with thousands of
#: conditions in seconds, and a batch sub-request's querystring has no length limit of the HTTP server.
MAX_FILTERS = 100

#: Largest page size honoured (larger ``_limit`` values are clamped; a backend may use 32-bit limits).
MAX_LIMIT = 2 ** 31 - 2

_RESERVED_FILTERS = {"_since": COMPARISON.GT, "_before": COMPARISON.LT, "_to": COMPARISON.LT}
_DEFAULT_SORT = (Sort("last_modified", -1),)


class ListQuery(NamedTuple):
    filters: List[Filter]
    sorting: List[Sort]
    limit: Optional[int]
    token: Optional[str]
    fields: Optional[List[str]]
    include_deleted: bool
    deprecated_to: bool


def parse_query_string(query_string: str) -> List[Tuple[str, str]]:
    """Decode ``QUERY_STRING`` (as a WSGI server gives it) into pairs; invalid UTF-8 is a 400."""
    if not query_string:
        return []
    try:
        raw = query_string.encode("latin-1").decode("utf-8")
        pairs = parse_qsl(raw, keep_blank_values=True, errors="strict")
    except (UnicodeError, ValueError):
        raise invalid("querystring", None, "Invalid encoding of the querystring (UTF-8 expected)") from None
    if "\x00" in raw or "%00" in raw:
        raise invalid("querystring", None, "The NUL character is not allowed in the querystring")
    return pairs


def valid_field(field: str) -> bool:
    """True when ``field`` is a syntactically acceptable (possibly dotted) field name, no deeper than a body can
    nest: PostgreSQL nests one ``->`` per part, and a few hundred parts overflowed the stack (a 500)."""
    return field.count(".") < MAX_DEPTH and _FIELD.fullmatch(field) is not None


def _known(field: str, is_known: IsKnown) -> bool:
    return valid_field(field) and is_known(field)


def _loads(raw: str) -> Any:
    value = jsonio.loads(raw)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def native_value(raw: str) -> Any:
    """The JSON value of ``raw`` when it parses (``2``, ``"2"``, ``true``, ``null``, ``[1]``), else ``raw``."""
    try:
        return _loads(raw)
    except (ValueError, RecursionError):
        return raw


def _filter_value(param: str, field: str, operator: COMPARISON, raw: str) -> Any:
    """Convert a raw value for ``operator`` on ``field``; 400 ``Invalid value for <param>`` when it cannot be."""
    if operator == COMPARISON.LIKE:
        return raw
    if operator == COMPARISON.HAS:
        value = native_value(raw)
        if value in (True, 1, "1"):
            return True
        if value in (False, 0, "0"):
            return False
        raise invalid("querystring", param, f"Invalid value for {param}")
    items = raw.split(",") if operator in _LISTS else [raw]
    if field == "id":
        values: List[Any] = [_id_value(item) for item in items]
    elif field == "last_modified" and operator in _ORDERED:
        values = []
        for item in items:
            found = _TIMESTAMP.fullmatch(item)
            if found is None:
                raise invalid("querystring", param, f"Invalid value for {param}")
            values.append(int(found.group(1) or found.group(2)))
    else:
        values = [native_value(item) for item in items]
    if operator in _LISTS:
        return values
    value = values[0]
    if operator in (COMPARISON.CONTAINS, COMPARISON.CONTAINS_ANY) and not isinstance(value, list):
        return [value]
    return value


def _id_value(raw: str) -> str:
    """An ``id`` filter value: a JSON string (``"abc"``) is that string, anything else the text as given (``123`` is
    the id ``"123"``, never a number)."""
    if raw.startswith('"'):
        value = native_value(raw)
        if isinstance(value, str):
            return value
    return raw


def _parse_timestamp(param: str, raw: str) -> Optional[int]:
    if raw == "null":
        return None
    found = _TIMESTAMP.fullmatch(raw)
    if found is None:
        raise invalid("querystring", param, f"Invalid value for {param}")
    return int(found.group(1) or found.group(2))


def _parse_filter_name(param: str, is_known: IsKnown) -> Tuple[str, COMPARISON]:
    for prefix, operator in OPERATORS:
        if param.startswith(prefix) and _known(param[len(prefix):], is_known):
            return param[len(prefix):], operator
    if _known(param, is_known):
        return param, COMPARISON.EQ
    raise invalid("querystring", param, f"Unknown filter field '{param}'")


def parse_filters(params: Params, is_known: IsKnown) -> Tuple[List[Filter], bool, bool]:
    """Return ``(filters, include_deleted, deprecated_to)`` from every non-reserved parameter and ``_since``...

    ``include_deleted`` is true when a filter targets ``last_modified`` (tombstones then belong in the result).
    """
    filters: List[Filter] = []
    include_deleted = deprecated_to = False
    given = 0
    for param, raw in params:
        if param.startswith("_"):
            operator = _RESERVED_FILTERS.get(param)
            if operator is None:
                continue
            value = _parse_timestamp(param, raw)
            deprecated_to = deprecated_to or param == "_to"
            if value is not None:
                filters.append(Filter("last_modified", value, operator))
                include_deleted = True
            continue
        field, operator = _parse_filter_name(param, is_known)
        given += 1
        if given > MAX_FILTERS:
            raise invalid("querystring", None, f"At most {MAX_FILTERS} filters are accepted")
        filters.append(Filter(field, _filter_value(param, field, operator, raw), operator))
        include_deleted = include_deleted or field == "last_modified"
    return filters, include_deleted, deprecated_to


def parse_sort(raw: Optional[str], is_known: IsKnown) -> List[Sort]:
    """``_sort`` keys, completed with ``last_modified`` (descending unless given) and ``id`` as tie-breakers."""
    sorting: List[Sort] = []
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        sign, field = _SORT_ITEM.fullmatch(item).groups()  # type: ignore[union-attr]
        if not _known(field, is_known):
            raise invalid("querystring", None, f"Unknown sort field '{item}'")
        if all(sort.field != field for sort in sorting):
            if len(sorting) == MAX_SORT_FIELDS:
                raise invalid("querystring", "_sort", f"_sort accepts at most {MAX_SORT_FIELDS} fields")
            sorting.append(Sort(field, -1 if sign == "-" else 1))
    fields = {sort.field for sort in sorting}
    if "last_modified" not in fields:
        sorting.extend(_DEFAULT_SORT)
    if "id" not in fields:
        direction = next(sort.direction for sort in sorting if sort.field == "last_modified")
        sorting.append(Sort("id", direction))
    return sorting


def sort_key(sorting: Sequence[Sort]) -> str:
    """The canonical text of a sort (``title,-last_modified,-id``), stored in pagination tokens."""
    return ",".join(("-" if sort.direction < 0 else "") + sort.field for sort in sorting)


def parse_limit(raw: Optional[str], paginate_by: Optional[int]) -> Optional[int]:
    """The page size: ``_limit``, capped by ``paginate_by`` when both are set; None for no limit."""
    limit = None
    if raw is not None:
        if _INTEGER.fullmatch(raw.strip()) is None:
            raise invalid("querystring", "_limit", "_limit should be an integer")
        limit = int(raw)
        if limit < 1:
            raise invalid("querystring", "_limit", "_limit should be a positive integer")
    if paginate_by:
        limit = paginate_by if limit is None else min(limit, paginate_by)
    return None if limit is None else min(limit, MAX_LIMIT)


def parse_fields(raw: Optional[str], is_known: IsKnown) -> Optional[List[str]]:
    """``_fields``: the (dotted) fields to return; unknown root names are a 400."""
    if raw is None:
        return None
    fields = [field.strip() for field in raw.split(",") if field.strip()]
    unknown = [field for field in fields if not _known(field, is_known)]
    if unknown:
        raise invalid("querystring", "Invalid _fields parameter", f"Fields {','.join(unknown)} do not exist")
    return fields


def parse_list(params: Params, is_known: IsKnown, *, paginate_by: Optional[int] = None) -> ListQuery:
    """Every listing parameter of a collection GET (a collection DELETE uses :func:`parse_filters` only)."""
    filters, include_deleted, deprecated_to = parse_filters(params, is_known)
    single = {}
    for name, value in params:
        if name in ("_sort", "_limit", "_token", "_fields"):
            single[name] = value
    return ListQuery(
        filters=filters,
        sorting=parse_sort(single.get("_sort"), is_known),
        limit=parse_limit(single.get("_limit"), paginate_by),
        token=single.get("_token"),
        fields=parse_fields(single.get("_fields"), is_known),
        include_deleted=include_deleted,
        deprecated_to=deprecated_to,
    )


_META = ("id", "last_modified", "deleted")


def project(record: dict, fields: Sequence[str]) -> dict:
    """Keep only ``fields`` (dotted paths select nested keys) plus ``id``, ``last_modified`` and ``deleted``."""
    result = {key: record[key] for key in _META if key in record}
    for field in fields:
        parts = field.split(".")
        source: Any = record
        for part in parts:
            if not isinstance(source, dict) or part not in source:
                break
            source = source[part]
        else:
            target = result
            for part in parts[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    break
            else:
                target[parts[-1]] = source
    return result

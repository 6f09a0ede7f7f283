"""One function per endpoint and verb (PROTOCOL.md §3), each taking a :class:`Call` and returning a response.

The router (:mod:`wsgicliquet.resource.app`) has already checked the method, content negotiation, the URL
placeholders and the record id, and computed the partition (``parent_id``, which authenticates the request).
Storage round trips are kept to what each verb needs: a record GET is one ``get``; a list is
``collection_timestamp`` plus one ``get_all`` (page and ``Total-Records`` together); writes look the target up
first only when a precondition or PUT semantics need it.

Preconditions are checked twice: against what the handler read (for the exact 404/412 answers of §3), then by the
storage, atomically with the write (``if_match``: PROTOCOL.md Part A D4, §6); a collection DELETE leaves its
``If-Match`` to the storage alone.  Two requests presenting the same ``If-Match`` can never both succeed, and a
PATCH without ``If-Match`` writes only over the version it merged into, re-reading and re-applying its changes
when a concurrent write came first, so that no change is lost.
"""
from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from webob import Request, Response

from wsgicliquet.environ import EVENTS, USERID
from wsgicliquet.errors import ERRORS, HTTPError, invalid
from wsgicliquet.events import Notifier
from wsgicliquet.resource import pagination, preconditions, querystring
from wsgicliquet.resource.body import empty_response, json_response, read_body
from wsgicliquet.resource.preconditions import etag_headers
from wsgicliquet.resource.resource import Record, Resource, ResourceSpec
from wsgicliquet.resource.schema import META_FIELDS
from wsgicliquet.storage import PreconditionFailed, RecordNotFoundError, Storage, UnicityError
from wsgicliquet.storage.query import MISSING, json_equal

__all__ = ["Options", "Call", "HANDLERS"]

#: ``Alert`` of the deprecated ``_to`` parameter (§4.4).
TO_ALERT = json.dumps({"code": "soft-eol", "message": "_to is now deprecated, you should use _before instead",
                       "url": "http://cliquet.rtfd.org/en/2.4.0/api/resource.html"
                              "#list-of-available-url-parameters"})

#: How many times a PATCH without ``If-Match`` merges its changes into the current record before giving up with a
#: 412; each failed attempt means another write to the record succeeded meanwhile.
PATCH_ATTEMPTS = 10


class Options(NamedTuple):
    """Settings of the app, read once at start-up."""

    storage: Storage
    max_request_size: int
    last_modified_margin_ms: int
    paginate_by: Optional[int]
    http_scheme: Optional[str]
    http_host: Optional[str]
    events: Notifier


class Call:
    """Everything a handler needs about one request."""

    __slots__ = ("environ", "request", "resource", "spec", "options", "storage", "parent_id", "object_id", "log")

    def __init__(self, environ: Dict[str, Any], request: Request, resource: Resource, spec: ResourceSpec,
                 options: Options, parent_id: str, object_id: Optional[str], log: Dict[str, Any]) -> None:
        self.environ = environ
        self.request = request
        self.resource = resource
        self.spec = spec
        self.options = options
        self.storage = resource.bind_storage(options.storage)
        self.parent_id = parent_id
        self.object_id = object_id
        self.log = log

    def params(self) -> List[Tuple[str, str]]:
        return querystring.parse_query_string(self.environ.get("QUERY_STRING", ""))

    def body(self) -> bytes:
        return read_body(self.environ, self.options.max_request_size)


# -- helpers ------------------------------------------------------------------------------------------------------

def not_found(call: Call, object_id: Optional[str]) -> HTTPError:
    return HTTPError(404, ERRORS.INVALID_RESOURCE_ID, details={"id": object_id, "resource_name": call.spec.name})


def conflict(error: UnicityError) -> HTTPError:
    existing = error.record
    return HTTPError(409, ERRORS.CONSTRAINT_VIOLATED,
                     message=f"Conflict of field {error.field} on record {existing.get('id')}",
                     details={"field": error.field, "existing": existing})


def _precondition_failed(call: Call, failed: PreconditionFailed) -> HTTPError:
    """The 412 of a write whose condition the storage found unmet: what it found instead, and its ETag."""
    existing = failed.existing
    if existing is None:
        return _missing_target_failed(call)
    return preconditions.modified_meanwhile(existing, existing["last_modified"])


def _missing_target_failed(call: Call) -> HTTPError:
    """The 412 of ``If-Match`` on a record that never existed: ``details: {}`` and, as every 412 (§5.6), the
    current ETag, here the collection's (what a client compares its cached ETags with)."""
    return preconditions.modified_meanwhile(
        None, call.storage.collection_timestamp(call.spec.collection_id, call.parent_id))


def _get(call: Call, object_id: str, *, include_deleted: bool = False) -> Optional[Record]:
    try:
        return call.storage.get(call.spec.collection_id, call.parent_id, object_id, include_deleted=include_deleted)
    except RecordNotFoundError:
        return None


def _get_live(call: Call) -> Record:
    record = _get(call, call.object_id)  # type: ignore[arg-type]
    if record is None:
        raise not_found(call, call.object_id)
    return record


def _cache_headers(call: Call) -> List[Tuple[str, str]]:
    expires = call.spec.cache_expires
    if expires and not call.environ.get(USERID):
        return [("Cache-Control", f"max-age={expires}"), ("Expires", formatdate(time.time() + expires, usegmt=True))]
    return [("Cache-Control", "no-cache")]


def _record_response(call: Call, status: int, record: Record, data: Any = None,
                     written: bool = True) -> Response:
    timestamp = record["last_modified"]
    if written:
        call.log["collection_timestamp"] = timestamp
    body = call.resource.record_body(record, record if data is None else data)
    return json_response(status, body, etag_headers(timestamp))


def _forced_timestamp(call: Call, value: Any) -> int:
    """A client ``last_modified`` on creation (Part A D2): an integer, not beyond now + the clock margin."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid("body", "data.last_modified", "last_modified should be a positive integer")
    margin = call.options.last_modified_margin_ms
    if value > time.time() * 1000 + margin:
        raise invalid("body", "data.last_modified",
                      f"last_modified cannot be more than {margin} ms in the future")
    return value


def _new_record(call: Call, data: Mapping[str, Any], *, forced: bool) -> Record:
    """Validated record of a creation; ``last_modified`` kept (checked) when ``forced``."""
    record = call.spec.schema.validate(data)
    if forced and data.get("last_modified") is not None:
        record["last_modified"] = _forced_timestamp(call, data["last_modified"])
    return record


def _check_body_id(call: Call, data: Mapping[str, Any]) -> None:
    """Part A D6: a body ``id`` must be the URL id, whatever the schema."""
    if "id" in data and data["id"] != call.object_id:
        raise invalid("body", "id", "Record id does not match existing record")


def _process(call: Call, record: Record, old: Optional[Record]) -> Record:
    """The resource's ``process_record`` hook, whose forgotten ``return`` is named in the log of the 500."""
    processed = call.resource.process_record(record, old)
    if not isinstance(processed, dict):
        raise TypeError(f"{type(call.resource).__name__}.process_record() must return the record, "
                        f"not {type(processed).__name__}")
    return processed


def _without_timestamp(record: Record) -> Record:
    return {key: value for key, value in record.items() if key != "last_modified"}


def _queue_event(call: Call, action: str, impacted: List[Dict[str, Any]], timestamp: Any) -> None:
    """Queue the event of ``action`` for the layer that notifies the request's events (callers check first that
    something listens: no work otherwise)."""
    queue = call.environ.get(EVENTS)
    if queue is None:
        return
    path = call.environ.get("PATH_INFO", "")
    try:
        uri = path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        uri = path
    spec = call.spec
    payload: Dict[str, Any] = dict(call.request.matchdict)
    payload.update(action=action, uri=uri, user_id=call.environ.get(USERID), resource_name=spec.name,
                   timestamp=timestamp)
    if call.object_id is not None:
        payload[f"{spec.name}_id"] = call.object_id
    queue.add(call.options.events, payload, impacted, group=(call.parent_id, payload["user_id"]))


# -- collection ---------------------------------------------------------------------------------------------------

def collection_get(call: Call) -> Response:
    """List (and HEAD: count) the records; ETag is the collection timestamp (§3.3)."""
    params = call.params()
    query = querystring.parse_list(params, call.resource.is_known_field, paginate_by=call.options.paginate_by)
    pre = preconditions.parse(call.environ)
    call.resource.authorize("read")
    spec = call.spec
    timestamp = call.storage.collection_timestamp(spec.collection_id, call.parent_id)
    call.log["collection_timestamp"] = timestamp
    headers = etag_headers(timestamp)
    if pre.not_modified(timestamp):
        return empty_response(304, headers)
    pre.check(timestamp)
    rules: List[Any] = []
    offset = 0
    if query.token is not None:
        values, offset = pagination.decode_token(query.token, query.sorting)
        rules = pagination.pagination_rules(values, query.sorting)
    limit = query.limit
    records, total = call.storage.get_all(
        spec.collection_id, call.parent_id, filters=query.filters + call.resource.listing_filters("read"),
        sorting=query.sorting, pagination_rules=rules, limit=None if limit is None else limit + 1,
        include_deleted=query.include_deleted)
    if limit is not None and len(records) > limit:
        del records[limit:]
        token = pagination.encode_token(records[-1], query.sorting, offset + len(records))
        host = pagination.base_url(call.environ, call.options.http_scheme, call.options.http_host)
        path = call.environ.get("SCRIPT_NAME", "") + call.environ.get("PATH_INFO", "")
        headers.append(("Next-Page", pagination.next_page_url(host, path, params, limit, token)))
    headers.append(("Total-Records", str(total)))
    headers.extend(_cache_headers(call))
    if query.deprecated_to:
        headers.append(("Alert", TO_ALERT))
    if query.fields is not None:
        records = [querystring.project(record, query.fields) for record in records]
    if call.options.events.reads:
        _queue_event(call, "read", [{"new": record} for record in records], timestamp)
    call.log["nb_records"] = len(records)
    call.log["limit"] = limit
    return json_response(200, {"data": records}, headers)


def collection_post(call: Call) -> Response:
    """Create; an existing id or a unique-field conflict answers 200 with the existing record (§3.4)."""
    pre = preconditions.parse(call.environ)
    spec = call.spec
    data = call.resource.parse_body(call.body(), data_required=not spec.schema.accepts_empty) or {}
    object_id = data.get("id")
    if object_id is not None and not spec.generator.match(object_id):
        raise invalid("path", None, "Invalid record id")
    record = _new_record(call, data, forced=True)
    if object_id is not None:
        record["id"] = object_id
    call.resource.authorize("create")
    if pre.needs_target:
        existing = _get(call, object_id) if object_id is not None else None
        if existing is not None:
            call.resource.authorize("read", object_id)  # the answer shows the existing record
            timestamp = existing["last_modified"]
        elif pre.if_match is not None:
            timestamp = call.storage.collection_timestamp(spec.collection_id, call.parent_id)
        else:
            timestamp = None
        pre.check(timestamp, existing, exists=existing is not None)
    record = _process(call, record, None)
    try:
        stored = call.storage.create(spec.collection_id, call.parent_id, record, id_generator=spec.generator,
                                     unique_fields=spec.unique_fields)
    except UnicityError as error:
        call.resource.authorize("read", error.record["id"])
        return _record_response(call, 200, error.record, written=False)
    if call.options.events.changes:
        _queue_event(call, "create", [{"new": stored}], stored["last_modified"])
    return _record_response(call, 201, stored)


def collection_delete(call: Call) -> Response:
    """Delete every matching record; the answer lists their tombstones (§3.5).

    The listing parameters (``_sort``, ``_limit``, ``_token``, ``_fields``) are validated like a GET's, so that a
    typo is a 400 rather than a deletion of everything, but do not apply: every matching record is deleted.
    ``If-Match`` is checked by the storage against the collection timestamp, atomically with the deletion, so two
    requests presenting the same ETag cannot both delete and nothing written since that ETag is deleted.
    """
    filters = querystring.parse_list(call.params(), call.resource.is_known_field).filters
    pre = preconditions.parse(call.environ)
    call.resource.authorize("write")
    spec = call.spec
    try:
        tombstones = call.storage.delete_all(spec.collection_id, call.parent_id,
                                             filters + call.resource.listing_filters("write"), if_match=pre.if_match)
    except PreconditionFailed:
        current = call.storage.collection_timestamp(spec.collection_id, call.parent_id)
        raise preconditions.modified_meanwhile(None, current) from None
    if tombstones:
        timestamp = call.log["collection_timestamp"] = tombstones[-1]["last_modified"]  # buried oldest first
        if call.options.events.changes:
            _queue_event(call, "delete", [{"old": tombstone} for tombstone in tombstones], timestamp)
    return json_response(200, {"data": tombstones})


# -- record -------------------------------------------------------------------------------------------------------

def record_get(call: Call) -> Response:
    """One record; ETag is its ``last_modified`` (§3.6)."""
    raw_fields = None
    for name, value in call.params():
        if name == "_fields":
            raw_fields = value
    fields = querystring.parse_fields(raw_fields, call.resource.is_known_field)
    pre = preconditions.parse(call.environ)
    call.resource.authorize("read", call.object_id)
    record = _get_live(call)
    timestamp = record["last_modified"]
    headers = etag_headers(timestamp)
    if pre.not_modified(timestamp):
        return empty_response(304, headers)
    pre.check(timestamp, record, exists=True)
    headers.extend(_cache_headers(call))
    data = record if fields is None else querystring.project(record, fields)
    if call.options.events.reads:
        _queue_event(call, "read", [{"new": record}], timestamp)
    return json_response(200, call.resource.record_body(record, data), headers)


def record_put(call: Call) -> Response:
    """Create (201) or replace (200) the record of the URL (§3.7, Part A D4, D6)."""
    pre = preconditions.parse(call.environ)
    spec = call.spec
    data = call.resource.parse_body(call.body(), data_required=not spec.schema.accepts_empty) or {}
    _check_body_id(call, data)
    record = spec.schema.validate(data)
    record["id"] = call.object_id
    existing = _get(call, call.object_id, include_deleted=True)  # type: ignore[arg-type]
    live = existing if existing is not None and not existing.get("deleted") else None
    if live is not None:
        call.resource.authorize("write", call.object_id)
    else:
        call.resource.authorize("create")
    if existing is None and pre.if_match is not None:
        raise _missing_target_failed(call)
    pre.check(None if existing is None else existing["last_modified"], existing, exists=live is not None)
    if live is None and data.get("last_modified") is not None:
        record["last_modified"] = _forced_timestamp(call, data["last_modified"])
    record = _process(call, record, live)
    try:
        if live is None:
            try:
                stored = call.storage.create(spec.collection_id, call.parent_id, record,
                                             unique_fields=spec.unique_fields)
            except UnicityError as error:
                if error.field != "id" or not pre.none:
                    raise
                live = error.record  # created concurrently: replace it, as if it had been there
                call.resource.authorize("write", call.object_id)
                stored = call.storage.update(spec.collection_id, call.parent_id, call.object_id,
                                             _without_timestamp(record), unique_fields=spec.unique_fields)
        else:
            stored = call.storage.update(spec.collection_id, call.parent_id, call.object_id,
                                         _without_timestamp(record), unique_fields=spec.unique_fields,
                                         if_match=pre.if_match)
    except PreconditionFailed as failed:
        raise _precondition_failed(call, failed) from None
    except UnicityError as error:
        call.resource.authorize("read", error.record["id"])  # the answer shows the conflicting record
        if error.field == "id":
            raise preconditions.modified_meanwhile(error.record, error.record.get("last_modified")) from None
        raise conflict(error) from None
    if call.options.events.changes:
        if live is None:
            _queue_event(call, "create", [{"new": stored}], stored["last_modified"])
        else:
            _queue_event(call, "update", [{"new": stored, "old": live}], stored["last_modified"])
    return _record_response(call, 200 if live is not None else 201, stored)


def record_patch(call: Call) -> Response:
    """Shallow merge of ``data`` into the record; no write when nothing changes (§3.8)."""
    pre = preconditions.parse(call.environ)
    changes = call.resource.parse_body(call.body(), data_required=True)
    assert changes is not None
    _check_body_id(call, changes)
    changes = {key: value for key, value in changes.items() if key not in META_FIELDS}
    call.resource.authorize("write", call.object_id)
    existing = _get_live(call)
    pre.check(existing["last_modified"], existing, exists=True)
    stored, base, written = _merge_and_write(call, existing, changes, retry=pre.if_match is None)
    if written and call.options.events.changes:
        _queue_event(call, "update", [{"new": stored, "old": base}], stored["last_modified"])
    behavior = (call.environ.get("HTTP_RESPONSE_BEHAVIOR") or "full").lower()
    data: Any = None
    if behavior in ("light", "diff"):
        # Only the sent fields the PATCH changed (§3.8): a field sent with its stored value, or one the server set
        # back to it, is not shown; ``diff`` also leaves out the fields stored as sent.
        changed = [key for key in changes if key in stored
                   and not json_equal(stored[key], base.get(key, MISSING))]
        data = {key: stored[key] for key in changed
                if behavior == "light" or not json_equal(stored[key], changes[key])}
    return _record_response(call, 200, stored, data, written=written)


def _merge_and_write(call: Call, existing: Record, changes: Mapping[str, Any], *, retry: bool
                     ) -> Tuple[Record, Record, bool]:
    """Merge ``changes`` into ``existing`` and write the result over that very version; ``(stored, base,
    written)``, ``base`` being the version the changes were finally merged into.

    The storage refuses the write when another one came first (``if_match``).  That is a 412 when the client sent
    ``If-Match``; otherwise (``retry``) the changes are merged again into the record the storage found, up to
    :data:`PATCH_ATTEMPTS` times, so concurrent PATCHes of different fields all land.  The hooks
    (``apply_changes``, ``process_record``) may therefore run more than once.
    """
    attempts = 1
    while True:
        merged = call.resource.apply_changes(existing, changes)
        merged = _process(call, merged, existing)
        if _same_content(merged, existing) and not call.resource.has_pending_changes():
            return existing, existing, False
        try:
            stored = call.storage.update(call.spec.collection_id, call.parent_id, call.object_id,  # type: ignore
                                         _without_timestamp(merged), unique_fields=call.spec.unique_fields,
                                         if_match=existing["last_modified"])
        except UnicityError as error:
            call.resource.authorize("read", error.record["id"])  # the answer shows the conflicting record
            raise conflict(error) from None
        except PreconditionFailed as failed:
            if not retry or attempts >= PATCH_ATTEMPTS:
                raise _precondition_failed(call, failed) from None
            if failed.existing is None or failed.existing.get("deleted"):
                raise not_found(call, call.object_id) from None
            existing, attempts = failed.existing, attempts + 1
            continue
        return stored, existing, True


def _same_content(left: Record, right: Record) -> bool:
    return json_equal(_without_timestamp(left), _without_timestamp(right))


def record_delete(call: Call) -> Response:
    """Delete; the answer is the tombstone, with its timestamp as ETag (§3.9, Part A D5)."""
    pre = preconditions.parse(call.environ)
    call.resource.authorize("write", call.object_id)
    if pre.needs_target:
        existing = _get_live(call)
        pre.check(existing["last_modified"], existing, exists=True)
    try:
        tombstone = call.storage.delete(call.spec.collection_id, call.parent_id, call.object_id,  # type: ignore
                                        if_match=pre.if_match)
    except RecordNotFoundError:
        raise not_found(call, call.object_id) from None
    except PreconditionFailed as failed:
        raise _precondition_failed(call, failed) from None
    if call.options.events.changes:
        _queue_event(call, "delete", [{"old": tombstone}], tombstone["last_modified"])
    return _record_response(call, 200, tombstone)


Handler = Callable[[Call], Response]

HANDLERS: Dict[Tuple[str, str], Handler] = {
    ("collection", "GET"): collection_get,
    ("collection", "HEAD"): collection_get,
    ("collection", "POST"): collection_post,
    ("collection", "DELETE"): collection_delete,
    ("record", "GET"): record_get,
    ("record", "HEAD"): record_get,
    ("record", "PUT"): record_put,
    ("record", "PATCH"): record_patch,
    ("record", "DELETE"): record_delete,
}

"""Shareable resources: one collection for everybody, every record with its own permissions (PROTOCOL.md §11.6).

::

    class Note(ShareableResource):
        schema = {"type": "object", "properties": {"text": {"type": "string"}}}

A :class:`ShareableResource` keeps its records in one shared partition (``parent_id`` ``""``, or the parent path
of a nested URL) and asks the permission backend before every operation:

==============================  ==============================  ======================
request                         permission object               permission
==============================  ==============================  ======================
GET/HEAD collection             ``/notes``                      ``read``
POST collection                 ``/notes``                      ``note:create``
DELETE collection               ``/notes``                      ``write``
GET/HEAD record                 ``/notes/<id>``                 ``read``
PATCH, DELETE record            ``/notes/<id>``                 ``write``
PUT record that exists          ``/notes/<id>``                 ``write``
PUT record that does not exist  ``/notes``                      ``note:create``
==============================  ==============================  ======================

A permission is granted when the request's principals (``system.Everyone``, ``system.Authenticated``, the user
id, the user's groups) meet the setting ``<resource>_<permission>_principals`` (the backend is then not asked),
or when the backend grants it on the object or, through :meth:`ShareableResource.get_bound_permissions`, on a
related one (by default: the same permission on the collection).  A collection read or bulk delete that is not
granted as a whole is restricted to the records the user may read (or write).  Refusals are 401 for an anonymous
request, 403 otherwise; a record the user may not read answers exactly like a missing one (403), so ids do not
leak.  Bodies carry the records' ``permissions`` (§2.4).  The user guide is ``docs/permissions.md``.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any, ClassVar, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from wsgicliquet.environ import CHALLENGES, PERMISSION, PRINCIPALS, USERID
from wsgicliquet.errors import invalid, unauthorized_or_forbidden, validation_error
from wsgicliquet.permission import MAX_PRINCIPAL_LENGTH, Permission
from wsgicliquet.resource.body import envelope_data, parse_json
from wsgicliquet.resource.resource import Record, Resource, ResourceSpec
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.storage import COMPARISON, Filter, Storage

__all__ = ["ShareableResource", "ShareableSpec", "SharedStorage", "ACL", "validate_permissions"]

EVERYONE = "system.Everyone"

#: permission name -> principals.
ACL = Dict[str, Set[str]]

_RULE_PLACEHOLDER = re.compile(r"<(\w+)>")


@dataclasses.dataclass(frozen=True)
class ShareableSpec(ResourceSpec):
    """The compiled resource, plus what sharing needs: the permissions and the settings that grant them."""

    #: Permissions a record's ACL may hold (``permissions`` in bodies).
    record_permissions: Tuple[str, ...] = ("read", "write")
    #: ``read``/``write``/``create`` -> principals of the setting ``<resource>_<permission>_principals``.
    bypass: Mapping[str, FrozenSet[str]] = dataclasses.field(default_factory=dict)
    #: ``/notes`` or ``/buckets/{bucket_id}/notes``: the permission object id of the collection.
    collection_template: str = ""


class ShareableResource(Resource):
    """A resource whose records are shared between users through per-record permissions; see the module doc."""

    #: The permissions a record's ACL may hold; the author always gets ``write``.
    record_permissions: ClassVar[Sequence[str]] = ("read", "write")
    needs_permission_backend: ClassVar[bool] = True
    spec: ShareableSpec

    def __init__(self, request: Any, spec: ResourceSpec, matchdict: Dict[str, str]) -> None:
        super().__init__(request, spec, matchdict)
        self.collection_uri = self.spec.collection_template.format(**matchdict)
        #: ``permissions`` of the request body, validated (None when absent).
        self.body_permissions: Optional[Dict[str, List[str]]] = None
        self._restricted: Dict[str, Optional[Set[str]]] = {}  # collection permission -> shared ids (None: to read)
        self._acls: Dict[str, ACL] = {}                         # object id -> ACL known in this request
        self._granted: Dict[Tuple[str, str], bool] = {}

    @classmethod
    def compile(cls, settings: Mapping[str, Any]) -> ShareableSpec:
        spec = ShareableSpec.build(cls, settings)
        permissions = tuple(cls.record_permissions)
        if "write" not in permissions or any(not isinstance(perm, str) or not perm for perm in permissions):
            raise ConfigurationError(f"Resource {spec.name!r}: record_permissions must be names and include 'write'")
        bypass = {perm: frozenset(settings.get(f"{spec.name}_{perm}_principals") or ())
                  for perm in set(permissions) | {"read", "write", "create"}}
        return dataclasses.replace(spec, record_permissions=permissions, bypass=bypass,
                                   collection_template=_RULE_PLACEHOLDER.sub(r"{\1}", spec.collection_rule))

    # -- who, and against what -------------------------------------------------------------------------------

    @property
    def principals(self) -> List[str]:
        return list(self.request.environ.get(PRINCIPALS) or (EVERYONE,))

    @property
    def permission(self) -> Permission:
        """The permission backend (the app puts it in the environ)."""
        return self.request.environ[PERMISSION]

    def get_parent_id(self, request: Any) -> str:
        """Records are not partitioned per user: ``""``, or the parent path of a nested collection."""
        if not self.spec.placeholders:
            return ""
        return self.spec.parent_template.format(**self.matchdict)

    def record_uri(self, object_id: str) -> str:
        return f"{self.collection_uri}/{object_id}"

    def get_bound_permissions(self, object_id: str, permission: str) -> List[Tuple[str, str]]:
        """The ``(object, permission)`` pairs whose principals also grant ``permission`` on ``object_id``.

        ``object_id`` is a record URI, the collection URI, or the glob ``<collection>/*`` when listing.  By default
        a record inherits the same permission from its collection, and no permission implies another (§11.6).
        Override to make ``write`` imply ``read``, or to inherit from a parent object (``docs/permissions.md``).
        """
        pairs = [(object_id, permission)]
        if object_id != self.collection_uri:
            pairs.append((self.collection_uri, permission))
        return pairs

    def _backend_permission(self, permission: str) -> str:
        return f"{self.spec.name}:create" if permission == "create" else permission

    def is_granted(self, permission: str, object_id: str) -> bool:
        """Whether the request holds ``permission`` (``read``, ``write``, ``create``) on the object URI."""
        key = (permission, object_id)
        if key not in self._granted:
            principals = self.principals
            allowed = self.spec.bypass.get(permission, frozenset())
            self._granted[key] = bool(allowed.intersection(principals)) or self.permission.check_permission(
                object_id, self._backend_permission(permission), principals, self.get_bound_permissions)
        return self._granted[key]

    def shared_ids(self, permission: str) -> Set[str]:
        """Ids of the records of this collection on which the user holds ``permission`` (from the backend)."""
        prefix = self.collection_uri + "/"
        objects = self.permission.principals_accessible_objects(
            self.principals, permission, object_id_match=prefix + "*", get_bound_permissions=self.get_bound_permissions)
        return {object_id[len(prefix):] for object_id in objects
                if object_id.startswith(prefix) and "/" not in object_id[len(prefix):]}

    def has_shared(self, permission: str) -> bool:
        """Whether the user holds ``permission`` on some object below this collection, found without listing them
        all (an object nested deeper below a record counts too: the listing is then empty, never forbidden)."""
        return self.permission.has_accessible_objects(
            self.principals, permission, object_id_match=self.collection_uri + "/*",
            get_bound_permissions=self.get_bound_permissions)

    # -- authorization seam ----------------------------------------------------------------------------------

    def authorize(self, permission: str, object_id: Optional[str] = None) -> None:
        """401/403 unless the request may ``permission`` the record ``object_id`` (None: the collection).

        A collection read or bulk delete not granted as a whole is allowed when the user holds the permission on
        some records (the listing is then restricted to them); a read is also allowed, and answers an empty list,
        to a user who may create records.
        """
        uri = self.collection_uri if object_id is None else self.record_uri(object_id)
        if self.is_granted(permission, uri):
            return
        if object_id is None and permission in ("read", "write"):
            if permission == "read":
                # A listing reads the shared ids after the collection timestamp (see listing_filters): here, only
                # whether there are any.
                if self.is_granted("create", self.collection_uri) or self.has_shared("read"):
                    self._restricted[permission] = None
                    return
            else:
                ids = self.shared_ids(permission)
                if ids:
                    self._restricted[permission] = ids
                    return
        raise unauthorized_or_forbidden(self.principals, self.request.environ.get(CHALLENGES))

    def listing_filters(self, permission: str) -> List[Filter]:
        """An ``in_id`` filter when the collection is not readable (writable) as a whole.

        For a read, the shared ids are read after the collection timestamp (the ETag): a record whose sharing is
        not visible yet has a timestamp above the ETag, so the next ``_since`` poll gets it (docs/permissions.md).
        """
        if permission not in self._restricted:
            return []
        ids = self._restricted[permission]
        if ids is None:
            ids = self.shared_ids(permission)
        return [Filter("id", sorted(ids), COMPARISON.IN)]

    # -- bodies ----------------------------------------------------------------------------------------------

    def parse_body(self, body: bytes, *, data_required: bool) -> Optional[Dict[str, Any]]:
        """``data`` and ``permissions`` (§2.4); a PATCH may carry only one of them."""
        patch = self.request.method == "PATCH"
        if patch and not body.strip():
            raise invalid("body", "data", "Provide at least one of data or permissions")
        payload = parse_json(body) if body.strip() else {}
        if isinstance(payload, dict) and "permissions" in payload:
            payload = dict(payload)
            self.body_permissions = validate_permissions(payload.pop("permissions"), self.spec.record_permissions)
        if patch:
            return envelope_data(payload, data_required=False, data_problems=self.data_problems) or {}
        return envelope_data(payload, data_required=data_required, data_problems=self.data_problems)

    def record_body(self, record: Record, data: Any) -> Dict[str, Any]:
        """``data`` and, except for tombstones, the record's ``permissions`` (empty unless the user may write)."""
        if record.get("deleted"):
            return {"data": data}
        uri = self.record_uri(record["id"])
        permissions: Dict[str, List[str]] = {}
        if self._is_author_of(uri) or self.is_granted("write", uri):
            acl = self._acls.get(uri)
            if acl is None:
                acl = self.permission.object_permissions(uri)
            permissions = {perm: sorted(principals) for perm, principals in sorted(acl.items()) if principals}
        return {"data": data, "permissions": permissions}

    def _is_author_of(self, uri: str) -> bool:
        userid = self.request.environ.get(USERID)
        return bool(userid) and userid in self._acls.get(uri, {}).get("write", ())

    # -- ACLs of writes ---------------------------------------------------------------------------------------

    def bind_storage(self, storage: Storage) -> Storage:
        return SharedStorage(storage, self)  # type: ignore[return-value]

    def current_acl(self, uri: str) -> ACL:
        if uri not in self._acls:
            self._acls[uri] = self.permission.object_permissions(uri)
        return self._acls[uri]

    def remember_acl(self, uri: str, acl: ACL) -> None:
        """What this request wrote to the ACL of ``uri``, so that its answer shows it without reading it back."""
        self._acls[uri] = {**self._acls.get(uri, {}), **acl}

    def forget_acl(self, uri: str) -> None:
        """The ACL of ``uri`` may have changed meanwhile: read it again when next needed."""
        self._acls.pop(uri, None)

    def new_acl(self, current: Mapping[str, Iterable[str]], replace: bool) -> ACL:
        """The ACL after this write: body permissions replace theirs (all, on ``replace``); the author writes."""
        declared = self.spec.record_permissions
        acl = {perm: set() if replace else set(current.get(perm, ())) for perm in declared}
        for perm, principals in (self.body_permissions or {}).items():
            acl[perm] = set(principals)
        userid = self.request.environ.get(USERID)
        if userid:
            acl["write"].add(userid)
        return acl

    def has_pending_changes(self) -> bool:
        """A PATCH writes when the record's ACL changes, so that the change reaches ``_since`` pollers."""
        uri = self.record_uri(self.matchdict["id"])
        current = self.current_acl(uri)
        return _differs(current, self.new_acl(current, replace=False))


class SharedStorage:
    """The storage of one request to a shareable resource: writes keep the records' ACLs in step.

    Order matters for ``_since`` pollers, whose listing reads the ACLs after the collection timestamp: an ACL is
    written *before* the record version it belongs to, so that a record becomes visible to a new reader with a
    timestamp above any ETag that reader got without it.  A record created under an id the client chose is
    created first (an existing record's ACL is never touched), then given its ACL, then rewritten once (a fresh
    timestamp, same content).  When both backends share one PostgreSQL transaction, the ACL and the record commit
    together, so the record is written first: every request then locks the collection before any ACL row, and
    concurrent writes cannot deadlock.  Reads go straight to the storage.
    """

    def __init__(self, storage: Storage, resource: ShareableResource) -> None:
        self._storage = storage
        self._resource = resource
        self._atomic = _one_transaction(storage, resource.permission)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def _write_acl(self, uri: str, acl: ACL) -> None:
        self._resource.permission.replace_object_permissions(uri, {perm: sorted(p) for perm, p in acl.items()})
        self._resource.remember_acl(uri, acl)

    def create(self, collection_id: str, parent_id: str, record: Record, *, id_generator: Any = None,
               unique_fields: Sequence[str] = (), **options: Any) -> Record:
        resource, storage = self._resource, self._storage
        acl = resource.new_acl({}, replace=True)
        with storage.transaction():
            if self._atomic:
                stored = storage.create(collection_id, parent_id, record, id_generator=id_generator,
                                        unique_fields=unique_fields, **options)
                self._write_acl(resource.record_uri(stored["id"]), acl)
                return stored
            if record.get("id") is None and id_generator is not None:
                record = {**record, "id": id_generator()}  # a fresh id: nobody else can hold its ACL
                uri = resource.record_uri(record["id"])
                self._write_acl(uri, acl)
                try:
                    return storage.create(collection_id, parent_id, record, unique_fields=unique_fields, **options)
                except Exception:
                    resource.permission.delete_object_permissions(uri)
                    resource.forget_acl(uri)
                    raise
            stored = storage.create(collection_id, parent_id, record, id_generator=id_generator,
                                    unique_fields=unique_fields, **options)
            self._write_acl(resource.record_uri(stored["id"]), acl)
            return storage.update(collection_id, parent_id, stored["id"], _without_timestamp(stored))

    def update(self, collection_id: str, parent_id: str, object_id: str, record: Record, *,
               unique_fields: Sequence[str] = (), **options: Any) -> Record:
        resource, storage = self._resource, self._storage
        uri = resource.record_uri(object_id)
        current = {perm: set(principals) for perm, principals in resource.current_acl(uri).items()}
        acl = resource.new_acl(current, replace=resource.request.method == "PUT")
        changed = _differs(current, acl)
        with storage.transaction():
            try:
                if self._atomic:
                    stored = storage.update(collection_id, parent_id, object_id, record,
                                            unique_fields=unique_fields, **options)
                    if changed:
                        self._write_acl(uri, acl)
                    return stored
                if changed:
                    self._write_acl(uri, acl)
                try:
                    return storage.update(collection_id, parent_id, object_id, record,
                                          unique_fields=unique_fields, **options)
                except Exception:
                    if changed:  # the write failed (409, 412...): the ACL goes back to what it was
                        self._undo_acl(uri, current, acl)
                    raise
            except Exception:
                resource.forget_acl(uri)  # a retried PATCH reads the ACL again: another write came first
                raise

    def _undo_acl(self, uri: str, before: ACL, written: ACL) -> None:
        """Put ``before`` back, unless another request changed the ACL after this one wrote ``written``."""
        permission = self._resource.permission
        if not _differs(permission.object_permissions(uri, list(written)), written):
            permission.replace_object_permissions(uri, {perm: sorted(before.get(perm, ())) for perm in written})

    def delete(self, collection_id: str, parent_id: str, object_id: str, **options: Any) -> Record:
        with self._storage.transaction():
            tombstone = self._storage.delete(collection_id, parent_id, object_id, **options)
            self._resource.permission.delete_object_permissions(self._resource.record_uri(object_id))
        return tombstone

    def delete_all(self, collection_id: str, parent_id: str, filters: Sequence[Filter] = (),
                   **options: Any) -> List[Record]:
        with self._storage.transaction():
            tombstones = self._storage.delete_all(collection_id, parent_id, filters, **options)
            if tombstones:
                self._resource.permission.delete_object_permissions(
                    *(self._resource.record_uri(tombstone["id"]) for tombstone in tombstones))
        return tombstones


def validate_permissions(value: Any, declared: Sequence[str]) -> Dict[str, List[str]]:
    """The ``permissions`` of a body: a mapping of declared permission names to lists of principals (§2.4)."""
    if not isinstance(value, dict):
        raise invalid("body", "permissions", f"{_show(value)} is not a mapping")
    problems = []
    permissions: Dict[str, List[str]] = {}
    for name, principals in value.items():
        if name not in declared:
            problems.append(("permissions", f"{_show(name)} is not one of {', '.join(declared)}"))
        elif not isinstance(principals, list):
            problems.append((f"permissions.{name}", f"{_show(principals)} is not iterable"))
        else:
            bad = [item for item in principals if not isinstance(item, str) or not item.strip()]
            long = [item for item in principals if isinstance(item, str) and len(item) > MAX_PRINCIPAL_LENGTH]
            if bad:
                problems.append((f"permissions.{name}", f"{_show(bad[0])} is not a principal"))
            elif long:
                problems.append((f"permissions.{name}", f"{_show(long[0][:20] + '...')} is longer than "
                                                        f"{MAX_PRINCIPAL_LENGTH} characters"))
            else:
                permissions[name] = sorted(set(principals))
    if problems:
        raise validation_error([{"location": "body", "name": name, "description": description}
                                for name, description in problems])
    return permissions


def _one_transaction(storage: Any, permission: Any) -> bool:
    """Whether the storage and the permission backend write in one transaction (PostgreSQL, one shared pool)."""
    module = sys.modules.get("wsgicliquet.postgresql")  # not loaded: no PostgreSQL backend in use
    client = getattr(storage, "client", None)
    return module is not None and isinstance(client, module.Client) and client is getattr(permission, "client", None)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _differs(current: Mapping[str, Iterable[str]], acl: Mapping[str, Set[str]]) -> bool:
    return any(set(current.get(perm, ())) != principals for perm, principals in acl.items())


def _without_timestamp(record: Record) -> Record:
    return {key: value for key, value in record.items() if key != "last_modified"}

"""The user-facing :class:`Resource`: declare a record type with a JSON schema and hooks.

Example::

    class Bookmark(Resource):
        schema = {"type": "object",
                  "properties": {"url": {"type": "string", "format": "uri"}, "device": {"type": "string",
                                                                                    "default": ""}},
                  "required": ["url"]}
        readonly_fields = ("device",)
        unique_fields = ("url",)

        def process_record(self, new, old=None):
            new = super().process_record(new, old)
            # Set by the server on creation; a PUT replaces the record, so keep the stored value.
            new["device"] = old.get("device", "") if old else (self.request.user_agent or "")
            return new

Class attributes configure the resource and are compiled once, when the app starts (:meth:`Resource.compile`);
an instance lives for one request (``self.request`` is the WebOb request, ``self.matchdict`` the URL
placeholders), so hooks may look at the request.  Records are private per user by default (PROTOCOL.md §11.5): the
partition (``parent_id``) is the authenticated user id, and other users' records simply do not exist.

Authorization seam: every handler calls :meth:`Resource.authorize` with the permission the request needs
(:data:`PERMISSIONS`) before touching the storage, and adds :meth:`Resource.listing_filters` to collection reads
and bulk deletes.  A private resource allows everything to the owner of the partition; a shareable resource
(per-record permissions) overrides these two methods.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from webob import Request

from wsgicliquet.backends import import_string
from wsgicliquet.environ import CHALLENGES, PRINCIPALS, USERID
from wsgicliquet.errors import invalid, unauthorized_or_forbidden
from wsgicliquet.resource.generators import MAX_ID_LENGTH, Generator
from wsgicliquet.resource.schema import RecordSchema, check_readonly
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.resource.body import parse_envelope
from wsgicliquet.storage import Filter, Storage

__all__ = ["Resource", "ResourceSpec", "PERMISSIONS", "Record"]

Record = Dict[str, Any]

#: Permission needed by each (endpoint, method); HEAD is a GET.
PERMISSIONS: Mapping[Tuple[str, str], str] = {
    ("collection", "GET"): "read", ("collection", "HEAD"): "read", ("collection", "POST"): "create",
    ("collection", "DELETE"): "write",
    ("record", "GET"): "read", ("record", "HEAD"): "read", ("record", "PUT"): "write",
    ("record", "PATCH"): "write", ("record", "DELETE"): "write",
}

_PLACEHOLDER = re.compile(r"\{\{?(\w+)\}?\}")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class Resource:
    """Base class of resources; see the module docstring."""

    #: Name in URLs (``/{name}s``), settings and view names; default: the lower-cased class name.
    name: ClassVar[Optional[str]] = None
    #: Storage namespace; default: the lower-cased class name.
    collection_id: ClassVar[Optional[str]] = None
    #: JSON Schema of the records (``id`` and ``last_modified`` are not part of it).
    schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    #: Keep fields the schema does not declare (else they are dropped); also allows filtering on any field.
    preserve_unknown: ClassVar[bool] = False
    #: Fields PATCH may not change (they come from creation, defaults or process_record).
    readonly_fields: ClassVar[Sequence[str]] = ()
    #: Fields whose non-null values are unique among the live records of a partition.
    unique_fields: ClassVar[Sequence[str]] = ()
    #: URL paths; placeholders are written ``{name}`` (``/buckets/{bucket_id}/records``), the record path ends
    #: with ``{id}``.  Default: ``/{name}s`` and ``/{name}s/{id}``.
    collection_path: ClassVar[Optional[str]] = None
    record_path: ClassVar[Optional[str]] = None
    collection_methods: ClassVar[Sequence[str]] = ("GET", "POST", "DELETE")
    record_methods: ClassVar[Sequence[str]] = ("GET", "PUT", "PATCH", "DELETE")
    #: A generator class or instance (see :mod:`wsgicliquet.resource.generators`); default: setting id_generator.
    id_generator: ClassVar[Any] = None
    #: What URL placeholder values (other than the record id) must look like.
    placeholder_pattern: ClassVar[str] = r"[a-zA-Z0-9][a-zA-Z0-9_-]*"
    #: Whether the app must give this resource a permission backend (shareable resources do).
    needs_permission_backend: ClassVar[bool] = False

    def __init__(self, request: Request, spec: "ResourceSpec", matchdict: Dict[str, str]) -> None:
        self.request = request
        self.spec = spec
        self.matchdict = matchdict

    # -- hooks -----------------------------------------------------------------------------------------------

    @property
    def userid(self) -> Optional[str]:
        return self.request.environ.get(USERID)

    def get_parent_id(self, request: Request) -> str:
        """The partition of the request: the user id, followed by the parent path for nested URLs.

        Anonymous requests are refused here (401), since a private resource has nothing to show them.
        """
        userid = request.environ.get(USERID)
        if not userid:
            raise unauthorized_or_forbidden(request.environ.get(PRINCIPALS, ("system.Everyone",)),
                                            request.environ.get(CHALLENGES))
        if not self.spec.placeholders:
            return userid
        return userid + self.spec.parent_template.format(**self.matchdict)

    def process_record(self, new: Record, old: Optional[Record] = None) -> Record:
        """Last hook before storage on POST, PUT and PATCH (``old`` is None on creation); return the record."""
        return new

    def apply_changes(self, record: Record, changes: Mapping[str, Any]) -> Record:
        """PATCH merge: refuse read-only changes, replace top-level keys, validate the result as a whole."""
        check_readonly(self.spec.readonly_fields, record, changes)
        merged = self.spec.schema.validate({**record, **changes})
        merged["id"] = record["id"]
        return merged

    def is_known_field(self, field: str) -> bool:
        """Whether ``field`` may be used in filters, ``_sort`` and ``_fields``."""
        return self.spec.schema.is_known_field(field)

    # -- authorization seam ----------------------------------------------------------------------------------

    def authorize(self, permission: str, object_id: Optional[str] = None) -> None:
        """Raise 401/403 unless the request may ``permission`` the record ``object_id`` (None: the collection).

        A private resource has nothing to check: :meth:`get_parent_id` already confined the request to the
        user's own partition.
        """

    def listing_filters(self, permission: str) -> List[Filter]:
        """Extra filters restricting collection reads and bulk deletes to the records the user may access."""
        return []

    # -- body and storage seam (a shareable resource adds its ``permissions``) --------------------------------

    def parse_body(self, body: bytes, *, data_required: bool) -> Optional[Dict[str, Any]]:
        """The ``data`` of a write request (:func:`~wsgicliquet.resource.body.parse_envelope`)."""
        return parse_envelope(body, data_required=data_required, data_problems=self.data_problems)

    def data_problems(self, data: Mapping[str, Any]) -> List[Dict[str, Any]]:
        """The schema problems of a body's ``data``, listed with those of its envelope (PROTOCOL.md §7.4)."""
        return self.spec.schema.problems(data, partial=self.request.method == "PATCH")

    def record_body(self, record: Record, data: Any) -> Dict[str, Any]:
        """The JSON body of a record response (``data`` is ``record``, projected or reduced)."""
        return {"data": data}

    def bind_storage(self, storage: Storage) -> Storage:
        """The storage the handlers of this request write through (a shareable resource adds the ACLs)."""
        return storage

    def has_pending_changes(self) -> bool:
        """Whether a PATCH must write even when the record's fields do not change."""
        return False

    # -- start-up ----------------------------------------------------------------------------------------------

    @classmethod
    def compile(cls, settings: Mapping[str, Any]) -> "ResourceSpec":
        """Everything about this resource that does not change per request, checked once."""
        return ResourceSpec.build(cls, settings)


@dataclass(frozen=True)
class ResourceSpec:
    """The compiled, immutable configuration of one resource (built at start-up)."""

    cls: type
    name: str
    collection_id: str
    schema: RecordSchema
    generator: Generator
    readonly_fields: Tuple[str, ...]
    unique_fields: Tuple[str, ...]
    collection_rule: str
    record_rule: str
    placeholders: Tuple[str, ...]
    placeholder_match: Any
    parent_template: str
    collection_methods: FrozenSet[str]
    record_methods: FrozenSet[str]
    cache_expires: Optional[int]

    @classmethod
    def build(cls, resource: type, settings: Mapping[str, Any]) -> "ResourceSpec":
        class_name = resource.__name__.lower()
        name = _name(resource, "name", class_name)
        check = _Checker(resource, name)
        collection_id = check.string("collection_id") or class_name
        collection_path = _normalize_path(check.string("collection_path") or f"/{name}s")
        record_path = _normalize_path(check.string("record_path") or collection_path + "/{id}")
        placeholders = tuple(_PLACEHOLDER.findall(collection_path))
        record_placeholders = _PLACEHOLDER.findall(record_path)
        if "id" in placeholders or sorted(record_placeholders) != sorted(placeholders + ("id",)):
            raise ConfigurationError(
                f"Resource {name!r}: the record path {record_path!r} must have the placeholders of the collection "
                f"path {collection_path!r} plus {{id}}")
        schema = RecordSchema(resource.schema, preserve_unknown=check.boolean("preserve_unknown"), name=name)
        if resource.id_generator is None:
            generator = _generator(settings.get("id_generator"), "Setting 'id_generator'", "id_generator")
        else:
            generator = _generator(resource.id_generator, f"Resource {name!r}: id_generator")
        return cls(
            cls=resource, name=name, collection_id=collection_id, schema=schema, generator=generator,
            readonly_fields=check.fields("readonly_fields", schema), unique_fields=check.fields("unique_fields", schema),
            collection_rule=_PLACEHOLDER.sub(r"<\1>", collection_path),
            record_rule=_PLACEHOLDER.sub(r"<\1>", record_path),
            placeholders=placeholders,
            placeholder_match=check.pattern("placeholder_pattern"),
            parent_template=_parent_template(collection_path),
            collection_methods=_enabled(settings, "collection", name, check.strings("collection_methods")),
            record_methods=_enabled(settings, "record", name, check.strings("record_methods")),
            cache_expires=settings.get(f"{name}_cache_expires_seconds"),
        )

    def check_placeholders(self, matchdict: Mapping[str, str]) -> None:
        """400 when a URL placeholder (other than the id) has an unacceptable value (or a longer one than ids)."""
        for key in self.placeholders:
            value = matchdict[key]
            if len(value) > MAX_ID_LENGTH or self.placeholder_match(value) is None:
                raise invalid("path", key, f"Invalid {key}")


def _normalize_path(path: str) -> str:
    path = "/" + path.strip("/")
    return _PLACEHOLDER.sub(r"{\1}", path)


def _parent_template(collection_path: str) -> str:
    """The parent path of a nested collection (``/buckets/{b}/collections/{c}`` of ``.../{c}/records``).

    When the last segment is itself a placeholder, it is part of the parent: every value is a partition of its own.
    """
    head, _, last = collection_path.rpartition("/")
    return collection_path if _PLACEHOLDER.search(last) else head


#: What resource names look like: they appear in URLs, view names and setting names (``collection_<name>_...``).
_NAME = re.compile(r"\w+")


def _name(resource: type, attribute: str, default: str) -> str:
    value = getattr(resource, attribute)
    if value is None:
        return default
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigurationError(f"Resource {resource.__name__!r}: {attribute} must be a non-empty string of letters, "
                                 f"digits and _, not {value!r}")
    return value


class _Checker:
    """Type checks of the class attributes of one resource, so that a mistake stops start-up naming it (a string
    given for a list of fields would otherwise be read as a list of one-letter fields)."""

    def __init__(self, resource: type, name: str) -> None:
        self.resource = resource
        self.prefix = f"Resource {name!r}:"

    def _fail(self, attribute: str, expected: str, value: Any) -> ConfigurationError:
        return ConfigurationError(f"{self.prefix} {attribute} must be {expected}, not {value!r}")

    def string(self, attribute: str) -> Optional[str]:
        value = getattr(self.resource, attribute)
        if value is not None and not isinstance(value, str):
            raise self._fail(attribute, "a string", value)
        return value

    def boolean(self, attribute: str) -> bool:
        value = getattr(self.resource, attribute)
        if not isinstance(value, bool):
            raise self._fail(attribute, "True or False", value)
        return value

    def strings(self, attribute: str) -> Tuple[str, ...]:
        value = getattr(self.resource, attribute)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)) or not all(
                isinstance(item, str) for item in value):
            raise self._fail(attribute, "a list or tuple of strings", value)
        return tuple(value)

    def fields(self, attribute: str, schema: RecordSchema) -> Tuple[str, ...]:
        """Field names of the records: a field the schema does not declare would be dropped from every record
        (unless ``preserve_unknown``), so naming one is a typo."""
        fields = self.strings(attribute)
        for field in fields:
            if not schema.is_known_field(field):
                raise ConfigurationError(f"{self.prefix} {attribute} names {field!r}, which is not a property of the "
                                         f"schema")
        return fields

    def pattern(self, attribute: str) -> Any:
        value = getattr(self.resource, attribute)
        if not isinstance(value, str):
            raise self._fail(attribute, "a regular expression (string)", value)
        try:
            return re.compile(value).fullmatch
        except re.error as exc:
            raise ConfigurationError(f"{self.prefix} {attribute} {value!r} is not a regular expression: {exc}") \
                from None


def _generator(value: Any, label: str, setting: Optional[str] = None) -> Generator:
    """An id generator instance from a class, an instance or a dotted path; ``label`` says where it came from
    (``setting``: the name of the setting that gave it)."""
    if isinstance(value, str):
        try:
            value = import_string(value, setting)
        except ConfigurationError as exc:
            if setting:
                raise
            raise ConfigurationError(f"{label}: {exc}") from None
    try:
        if isinstance(value, type):
            value = value()
    except re.error as exc:
        raise ConfigurationError(f"{label} has an invalid regexp: {exc}") from None
    if not callable(value) or not hasattr(value, "match"):
        raise ConfigurationError(f"{label} has an invalid value {value!r}: not a generator")
    return value


def _enabled(settings: Mapping[str, Any], endpoint: str, name: str, methods: Sequence[str]) -> FrozenSet[str]:
    enabled = set()
    for method in methods:
        method = method.upper()
        if method not in _METHODS:
            raise ConfigurationError(f"Resource {name!r}: unsupported {endpoint} method {method!r}")
        if settings.get(f"{endpoint}_{name}_{method.lower()}_enabled", True):
            enabled.add(method)
    if "GET" in enabled:
        enabled.add("HEAD")
    return frozenset(enabled)

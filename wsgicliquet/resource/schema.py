"""Record validation with JSON Schema (PROTOCOL.md §2.2, §3.4-§3.8).

A :class:`RecordSchema` is compiled once per resource at start-up: the jsonschema validator (with format
checking), the declared fields, their defaults, and for schemas made of the common keywords only (types, lengths,
bounds, ``items``, ``properties``, ``required``) a plain-Python check that can only say "valid": a record it
accepts skips jsonschema (about 28 µs for a four-field record), anything else goes through jsonschema, whose
messages are the ones reported.  ``validate()`` then drops the fields the schema does not declare
(unless ``preserve_unknown``), applies the defaults of the top-level properties and reports *every* problem in one
400 errno 107, each named by its dotted path (``data.url``).

``id``, ``last_modified`` and ``deleted`` are not schema fields: the handlers take them out of the data before
validation and put the server's values back.
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from jsonschema import (Draft4Validator, Draft6Validator, Draft7Validator, Draft201909Validator,
                        Draft202012Validator, FormatChecker, ValidationError)
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as META_SCHEMAS
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

from wsgicliquet.errors import invalid, validation_error
from wsgicliquet.settings import ConfigurationError
from wsgicliquet.storage.query import json_equal

__all__ = ["RecordSchema", "META_FIELDS", "FORMAT_CHECKER", "check_readonly", "STRIP_WHITESPACE", "URL"]

#: Fields owned by the server, present on every record whatever the schema.
META_FIELDS = frozenset({"id", "last_modified", "deleted"})

#: Keyword of a top-level property whose string value loses its leading and trailing whitespace before validation
#: (what Cliquet's ``URL`` node did): ``"  http://a.org "`` is stored as ``"http://a.org"``.
STRIP_WHITESPACE = "x-strip-whitespace"

#: Cliquet's ``URL`` schema node: an absolute URI of 1 to 2048 characters, whitespace stripped.
URL: Dict[str, Any] = {"type": "string", "format": "uri", "minLength": 1, "maxLength": 2048, STRIP_WHITESPACE: True}

_MAX_DESCRIPTION = 200
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_URI_FORBIDDEN = re.compile(r'[\s<>"{}|\\^`\x00-\x1f\x7f]')


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    if "uri" not in checker.checkers:
        # jsonschema checks "uri" only when the optional rfc3987 package is installed: keep a strict fallback, so
        # that ``"format": "uri"`` always means an absolute URI.
        @checker.checks("uri")
        def is_uri(value: object) -> bool:
            if not isinstance(value, str):
                return True
            if _URI_FORBIDDEN.search(value):
                return False
            try:
                parts = urlsplit(value)
            except ValueError:
                return False
            return bool(_SCHEME.fullmatch(parts.scheme)) and bool(parts.netloc or parts.path)
    return checker


FORMAT_CHECKER = _format_checker()


class RecordSchema:
    """The compiled schema of one resource."""

    def __init__(self, schema: Mapping[str, Any], *, preserve_unknown: bool = False, name: str = "") -> None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(part) for part in exc.absolute_path)  # the keyword at fault, in the schema
            problem = f"at {where}: {exc.message}" if where else exc.message
            raise ConfigurationError(f"Resource {name!r} has an invalid schema: {problem}") from None
        if schema.get("type", "object") != "object":
            raise ConfigurationError(f"Resource {name!r} has an invalid schema: records are objects")
        self.validator = cls(schema, format_checker=FORMAT_CHECKER, registry=META_SCHEMAS)
        _check_references(schema, cls, name)
        self._surely_valid = _compile(schema) if cls in _FAST_DIALECTS else None
        properties = schema.get("properties") or {}
        self.fields = frozenset(properties)
        self.defaults = [(key, spec["default"]) for key, spec in properties.items()
                         if isinstance(spec, dict) and "default" in spec]
        self.stripped = tuple(key for key, spec in properties.items()
                              if isinstance(spec, dict) and spec.get(STRIP_WHITESPACE) is True)
        self.preserve_unknown = preserve_unknown
        problems = self._problems(self.complete({}))
        self.accepts_empty = not problems
        defaulted = {key for key, _ in self.defaults}
        for problem in problems:
            # A default the schema refuses would make every creation without that field a 400 to the client.
            parts = problem["name"].split(".")
            if len(parts) > 1 and parts[1] in defaulted:
                raise ConfigurationError(f"Resource {name!r} has an invalid schema: the default of {parts[1]!r} does "
                                         f"not validate ({problem['name']}: {problem['description']})")

    def is_known_field(self, field: str) -> bool:
        """Whether ``field`` (possibly dotted) may be filtered, sorted or selected: its root must be declared."""
        if self.preserve_unknown:
            return True
        root = field.split(".", 1)[0]
        return root in self.fields or root in META_FIELDS

    def complete(self, data: Mapping[str, Any]) -> Dict[str, Any]:
        """``data`` without server fields (and undeclared ones unless ``preserve_unknown``), defaults applied,
        :data:`STRIP_WHITESPACE` properties stripped."""
        if self.preserve_unknown:
            record = {key: value for key, value in data.items() if key not in META_FIELDS}
        else:
            record = {key: value for key, value in data.items() if key in self.fields}
        for key, default in self.defaults:
            if key not in record:
                record[key] = default if type(default) in _IMMUTABLE else copy.deepcopy(default)
        for key in self.stripped:
            value = record.get(key)
            if type(value) is str:
                record[key] = value.strip()
        return record

    def validate(self, data: Mapping[str, Any]) -> Dict[str, Any]:
        """The record to store, or a 400 listing every problem."""
        record = self.complete(data)
        if self._surely_valid is not None and self._surely_valid(record):
            return record
        problems = self._problems(record)
        if problems:
            raise validation_error(problems)
        return record

    def problems(self, data: Mapping[str, Any], *, partial: bool = False) -> List[Dict[str, Any]]:
        """The problems :meth:`validate` would list; ``partial`` (a PATCH's changes) keeps only those of the
        fields given, as the others come from the stored record."""
        problems = self._problems(self.complete(data))
        if partial:
            problems = [problem for problem in problems if problem["name"].split(".")[1:2] in ([key] for key in data)]
        return problems

    def _problems(self, record: Dict[str, Any]) -> List[Dict[str, Any]]:
        return _details(self.validator.iter_errors(record))


def _check_references(schema: Mapping[str, Any], cls: Any, name: str) -> None:
    """Stop start-up when a ``$ref`` does not resolve: jsonschema would raise on every record reaching it (a 500).

    References resolve within the schema and to the meta-schemas only: a record write never fetches a URL.
    """
    specification = specification_with(cls.ID_OF(cls.META_SCHEMA) or "", default=DRAFT202012)
    root = specification.create_resource(schema)
    pending = [(root, META_SCHEMAS.resolver_with_root(root))]
    while pending:
        resource, resolver = pending.pop()
        reference = resource.contents.get("$ref") if isinstance(resource.contents, dict) else None
        if isinstance(reference, str):
            try:
                resolver.lookup(reference)
            except Unresolvable:
                raise ConfigurationError(f"Resource {name!r} has an invalid schema: $ref {reference!r} does not "
                                         f"resolve (references are followed within the schema and to the JSON "
                                         f"Schema meta-schemas only)") from None
        pending.extend((sub, resolver.in_subresource(sub)) for sub in resource.subresources())


# -- the fast path: a conservative check of the common keywords --------------------------------------------------

Check = Callable[[Any], bool]

_FAST_DIALECTS = (Draft4Validator, Draft6Validator, Draft7Validator, Draft201909Validator, Draft202012Validator)
#: Exact Python types that every dialect accepts for a JSON type ("integer" 1.0 is left to jsonschema).
_TYPES: Dict[str, tuple] = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
                            "array": (list,), "object": (dict,), "null": (type(None),)}
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "$schema", "readOnly",
                          "writeOnly", "deprecated", STRIP_WHITESPACE})
_LIMITS: Dict[str, Callable[[Any, Any], bool]] = {
    "maxLength": lambda value, limit: type(value) is not str or len(value) <= limit,
    "minLength": lambda value, limit: type(value) is not str or len(value) >= limit,
    "maxItems": lambda value, limit: type(value) is not list or len(value) <= limit,
    "minItems": lambda value, limit: type(value) is not list or len(value) >= limit,
    "maximum": lambda value, limit: type(value) not in (int, float) or value <= limit,
    "minimum": lambda value, limit: type(value) not in (int, float) or value >= limit,
}


def _compile(schema: Any) -> Optional[Check]:
    """A check that returns True only for values jsonschema finds valid (False means "ask jsonschema"); None when
    ``schema`` uses a keyword it does not know."""
    if schema is True or schema == {}:
        return lambda value: True
    if not isinstance(schema, dict):
        return None
    checks: List[Check] = []
    for keyword, argument in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        check = _keyword_check(keyword, argument, schema)
        if check is None:
            return None
        checks.append(check)
    if not checks:  # annotations only
        return lambda value: True
    return functools.reduce(_both, checks)


def _both(first: Check, second: Check) -> Check:
    return lambda value: first(value) and second(value)


def _keyword_check(keyword: str, argument: Any, schema: Dict[str, Any]) -> Optional[Check]:
    if keyword == "type":
        names = [argument] if isinstance(argument, str) else argument
        if not isinstance(names, list) or not all(isinstance(name, str) and name in _TYPES for name in names):
            return None
        types = frozenset(kind for name in names for kind in _TYPES[name])
        return lambda value: type(value) in types
    if keyword in _LIMITS:
        if type(argument) not in ((int,) if "Length" in keyword or "Items" in keyword else (int, float)):
            return None
        test = _LIMITS[keyword]
        return lambda value: test(value, argument)
    if keyword == "items":
        item = _compile(argument)
        if item is None:
            return None
        def items(value: Any) -> bool:
            if type(value) is list:
                for element in value:
                    if not item(element):
                        return False
            return True
        return items
    if keyword == "properties":
        if not isinstance(argument, dict):
            return None
        properties = {name: _compile(sub) for name, sub in argument.items()}
        if any(check is None for check in properties.values()):
            return None
        pairs = list(properties.items())

        def declared(value: Any) -> bool:
            if type(value) is dict:
                for name, check in pairs:
                    if name in value and not check(value[name]):  # type: ignore[misc]
                        return False
            return True
        return declared
    if keyword == "required":
        if not isinstance(argument, list) or not all(isinstance(name, str) for name in argument):
            return None
        return lambda value: type(value) is not dict or all(name in value for name in argument)
    if keyword == "additionalProperties" and argument is False and isinstance(schema.get("properties", {}), dict):
        declared = frozenset(schema.get("properties", {}))
        return lambda value: type(value) is not dict or declared.issuperset(value)
    if keyword == "additionalProperties" and argument is True:
        return lambda value: True
    if keyword == "enum" and isinstance(argument, list) and argument and all(type(item) is str for item in argument):
        choices = frozenset(argument)
        return lambda value: type(value) is str and value in choices
    return None


def _details(errors: Iterable[ValidationError]) -> List[Dict[str, Any]]:
    details: List[Dict[str, Any]] = []
    seen = set()
    for error in errors:
        name = ".".join(["data", *(str(part) for part in error.absolute_path)])
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [f"{name}.{key}" for key in error.validator_value if key not in error.instance]
            for field in missing:
                if field not in seen:
                    seen.add(field)
                    details.append({"location": "body", "name": field, "description": "Required"})
            continue
        if name in seen:
            continue
        seen.add(name)
        message = error.message
        if len(message) > _MAX_DESCRIPTION:
            message = message[:_MAX_DESCRIPTION - 3] + "..."
        details.append({"location": "body", "name": name, "description": message})
    return details


def check_readonly(readonly_fields: Sequence[str], stored: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """400 ``Cannot modify <field>`` when ``changes`` gives a read-only field a new value (the same is fine)."""
    for field in readonly_fields:
        if field in changes and (field not in stored or not json_equal(changes[field], stored[field])):
            raise invalid("body", field, f"Cannot modify {field}")

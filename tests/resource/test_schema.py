"""Record validation with JSON Schema: unknown fields, defaults, every problem reported (§2.2, §7.4)."""
from __future__ import annotations

import pytest

from wsgicliquet.errors import HTTPError
from wsgicliquet.resource.generators import UUID4, Generator
from wsgicliquet.resource.schema import STRIP_WHITESPACE, URL, RecordSchema, check_readonly
from wsgicliquet.settings import ConfigurationError

SCHEMA = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "title": {"type": "string", "maxLength": 5},
        "device": {"type": "string", "default": ""},
        "tags": {"type": "array", "items": {"type": "string"}, "default": []},
    },
    "required": ["url", "title"],
}


def problems(schema: RecordSchema, data) -> list:
    with pytest.raises(HTTPError) as info:
        schema.validate(data)
    assert (info.value.code, info.value.errno) == (400, 107)
    return info.value.body["details"]


def test_unknown_fields_dropped_and_defaults_applied():
    schema = RecordSchema(SCHEMA)
    record = schema.validate({"url": "http://a.org", "title": "A", "extra": 1, "id": "x", "last_modified": 3})
    assert record == {"url": "http://a.org", "title": "A", "device": "", "tags": []}
    first, second = schema.validate({"url": "http://a", "title": "A"}), schema.validate({"url": "u:x", "title": "B"})
    first["tags"].append("x")
    assert second["tags"] == []  # defaults are copied


def test_preserve_unknown_keeps_fields_but_not_server_ones():
    schema = RecordSchema(SCHEMA, preserve_unknown=True)
    record = schema.validate({"url": "http://a.org", "title": "A", "extra": 1, "deleted": True, "id": "x"})
    assert record == {"url": "http://a.org", "title": "A", "extra": 1, "device": "", "tags": []}


def test_every_problem_is_reported_with_dotted_names():
    details = problems(RecordSchema(SCHEMA), {"url": "not a url", "tags": ["a", 3]})
    by_name = {item["name"]: item for item in details}
    assert set(by_name) == {"data.url", "data.title", "data.tags.1"}
    assert by_name["data.title"]["description"] == "Required"
    assert all(item["location"] == "body" for item in details)


@pytest.mark.parametrize("value, valid", [
    pytest.param("http://a.org/x?y=1", True, id="http"),
    pytest.param("mailto:ada@example.org", True, id="mailto"),
    pytest.param("notaurl", False, id="no-scheme"),
    pytest.param("http://a b.org", False, id="space"),
    pytest.param("1http://a.org", False, id="bad-scheme"),
    pytest.param("http://a.org/<script>", False, id="angle-brackets"),
])
def test_uri_format_is_checked(value, valid):
    schema = RecordSchema(SCHEMA)
    data = {"url": value, "title": "A"}
    if valid:
        assert schema.validate(data)["url"] == value
    else:
        assert problems(schema, data)[0]["name"] == "data.url"


def test_long_descriptions_are_cut():
    details = problems(RecordSchema(SCHEMA), {"url": "http://a", "title": "x" * 10000})
    assert len(details[0]["description"]) <= 200


def test_accepts_empty_and_known_fields():
    strict, loose = RecordSchema(SCHEMA), RecordSchema({"type": "object"}, preserve_unknown=True)
    assert not strict.accepts_empty and loose.accepts_empty
    assert strict.is_known_field("url") and strict.is_known_field("last_modified")
    assert strict.is_known_field("tags.0") and not strict.is_known_field("foo")
    assert loose.is_known_field("anything.at.all")


@pytest.mark.parametrize("schema", [
    pytest.param({"type": "object", "properties": {"a": {"type": "nope"}}}, id="invalid-type"),
    pytest.param({"type": "array"}, id="not-an-object"),
])
def test_bad_schema_fails_at_start_up(schema):
    with pytest.raises(ConfigurationError):
        RecordSchema(schema, name="thing")


@pytest.mark.parametrize("schema, message", [
    pytest.param({"type": "object", "properties": {"a": {"type": "strng"}}}, "at properties/a/type: 'strng'",
                 id="nested-keyword"),
    pytest.param({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}},
                 "at properties/a/pattern: '\\(' is not a 'regex'", id="pattern"),
    pytest.param({"type": "object", "required": "a"}, "at required: 'a' is not of type 'array'", id="required"),
    pytest.param({"type": "object", "properties": {"a": {"type": "string", "default": 5}}},
                 "the default of 'a' does not validate \\(data.a: 5 is not of type 'string'\\)", id="bad-default"),
    pytest.param({"type": "object", "properties": {"a": {"type": "object", "required": ["b"], "default": {}}}},
                 "the default of 'a' does not validate \\(data.a.b: Required\\)", id="bad-nested-default"),
    pytest.param({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}},
                 "\\$ref '#/\\$defs/nope' does not resolve", id="missing-definition"),
    pytest.param({"type": "object", "properties": {"a": {"$ref": "https://example.invalid/a.json"}}},
                 "\\$ref 'https://example.invalid/a.json' does not resolve", id="remote"),
    pytest.param({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                  "properties": {"a": {"items": {"$ref": "#/definitions/item"}}}},
                 "\\$ref '#/definitions/item' does not resolve", id="draft-7-deep"),
])
def test_bad_schema_error_says_where(schema, message):
    """The error names the resource and the place in the schema; a ``$ref`` that does not resolve is found at
    start-up (jsonschema raised on the first record reaching it, a 500 on every such write)."""
    with pytest.raises(ConfigurationError, match="Resource 'thing' has an invalid schema: " + message):
        RecordSchema(schema, name="thing")


def test_references_within_the_schema_are_followed():
    schema = RecordSchema({
        "$id": "https://example.org/thing.json", "type": "object",
        "$defs": {"email": {"type": "string", "format": "email"}, "other": {"$id": "other.json", "type": "integer"},
                  "named": {"$anchor": "named", "type": "boolean"}},
        "properties": {"email": {"$ref": "#/$defs/email"}, "n": {"$ref": "other.json"}, "b": {"$ref": "#named"},
                       "child": {"$ref": "#"}}}, name="thing")
    assert schema.validate({"email": "a@b.org", "n": 1, "b": True, "child": {"n": 2}})["n"] == 1
    with pytest.raises(HTTPError) as error:
        schema.validate({"email": "nope", "child": {"n": "x"}})
    assert {detail["name"] for detail in error.value.body["details"]} == {"data.email", "data.child.n"}


def test_readonly():
    check_readonly(["device"], {"device": "a"}, {"device": "a", "title": "x"})
    with pytest.raises(HTTPError) as info:
        check_readonly(["device"], {"device": "a"}, {"device": "b"})
    assert info.value.body["message"] == "Cannot modify device"
    assert info.value.body["details"] == [{"location": "body", "name": "device", "description": "Cannot modify device"}]
    with pytest.raises(HTTPError):
        check_readonly(["count"], {"count": 1}, {"count": True})  # JSON equality: true is not 1


@pytest.mark.parametrize("generator, value, ok", [
    pytest.param(UUID4(), "8c42b0ad-7a1c-4b53-9c30-1c5e6e7ba9d5", True, id="uuid"),
    pytest.param(UUID4(), "8C42B0AD-7A1C-4B53-9C30-1C5E6E7BA9D5", False, id="uuid-upper"),
    pytest.param(UUID4(), "8c42b0ad-7a1c-4b53-9c30-1c5e6e7ba9d5\n", False, id="uuid-newline"),
    pytest.param(Generator(), "abc_1-2", True, id="base"),
    pytest.param(Generator(), "-abc", False, id="base-leading-dash"),
    pytest.param(Generator(), "a b", False, id="base-space"),
    pytest.param(Generator(), "é", False, id="base-unicode"),
    pytest.param(Generator(), 12, False, id="not-a-string"),
])
def test_generator_match(generator, value, ok):
    assert generator.match(value) is ok


def test_uuid4_generates_matching_ids():
    generator = UUID4()
    ids = {generator() for _ in range(50)}
    assert len(ids) == 50 and all(generator.match(value) for value in ids)


FAST_SCHEMAS = [
    pytest.param({"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 3, "minLength": 1}, "position": {"type": "integer"},
        "done": {"type": "boolean", "default": False}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["title"]}, id="task"),
    pytest.param({"type": "object", "properties": {
        "n": {"type": ["number", "null"], "minimum": 0, "maximum": 2.5}, "note": {"description": "anything"},
        "kind": {"enum": ["a", "b"]},
        "list": {"type": "array", "minItems": 1, "maxItems": 2}, "o": {"type": "object", "properties": {
            "x": {"type": "integer"}}, "required": ["x"], "additionalProperties": False}},
        "additionalProperties": False}, id="bounds-enum-nested"),
    pytest.param({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                  "properties": {"n": {"type": "integer", "maximum": 3}}}, id="draft-4"),
    pytest.param({"type": "object", "properties": {"u": {"type": "string", "format": "uri"},
                                                   "p": {"type": "string", "pattern": "^a"}}}, id="not-compiled"),
]

_JSON_VALUES = [None, True, False, 0, 1, 1.0, 2.5, 3, -1, 10**20, "", "a", "abcd", "ab", [], ["a"], ["a", 1],
                ["a", "b", "c"], {}, {"x": 1}, {"x": 1.0}, {"x": "1"}, {"x": 1, "y": 2}]


@pytest.mark.parametrize("schema", FAST_SCHEMAS)
def test_fast_path_answers_exactly_like_jsonschema(schema):
    """Every record, valid or not, gets the same answer (record or problems) with and without the fast path."""
    import itertools

    fast, slow = RecordSchema(schema, preserve_unknown=True), RecordSchema(schema, preserve_unknown=True)
    assert (fast._surely_valid is None) == ("format" in str(schema))
    slow._surely_valid = None
    fields = ["title", "position", "done", "tags", "n", "note", "kind", "list", "o", "u", "p", "extra"]
    for field, other in itertools.product(fields, fields[::3]):
        for value in _JSON_VALUES:
            data = {field: value, other: "a"}
            outcomes = []
            for compiled in (fast, slow):
                try:
                    outcomes.append(("valid", compiled.validate(data)))
                except HTTPError as error:
                    outcomes.append(("invalid", error.body["details"]))
            assert outcomes[0] == outcomes[1], data


def test_marked_properties_are_stripped_before_validation():
    schema = RecordSchema({"type": "object", "properties": {
        "url": URL, "name": {"type": "string", STRIP_WHITESPACE: True, "minLength": 1},
        "count": {"type": "integer", STRIP_WHITESPACE: True}, "note": {"type": "string"}}}, name="bookmark")
    assert schema.validate({"url": " http://a.org\n", "name": "\tbob ", "count": 3, "note": " as is "}) == {
        "url": "http://a.org", "name": "bob", "count": 3, "note": " as is "}
    assert sorted(problem["name"] for problem in problems(schema, {"url": "  ", "name": "  "})) == ["data.name", "data.url"]
    assert schema.problems({"url": "  http://b.org  "}, partial=True) == []

"""The fast JSON paths decode and encode exactly what the json module does, with or without orjson."""
import json

import pytest

from wsgicliquet import jsonio

SAMPLES = [
    "{}", "[]", "0", "-0", "1.5", "1E5", "1e-400", '"text"', '"caf\\u00e9 \\ud83d\\ude00"', '"\\u0000"',
    '{"a": 1, "a": 2}', " [1, 2.0, null, true, false] ", '{"nested": {"list": [{"x": "y"}]}}',
    "1e400", "9223372036854775807", "-9223372036854775808", "18446744073709551616", "123456789012345678901234567890",
    '[1.5, 12345678901234567890123]', '"1234567890123456789012345"', '"\\ud800"',
]
NOT_JSON = ["", "[1,]", "{'a': 1}", "\ufeff[1]", "nul", "[1", "NaN", "-Infinity", "[NaN]"]


@pytest.fixture(params=["orjson", "json"])
def backend(request, monkeypatch):
    if request.param == "json":
        monkeypatch.setattr(jsonio, "_orjson", None)
    elif jsonio._orjson is None:
        pytest.skip("orjson is not installed")
    return request.param


@pytest.mark.parametrize("text", SAMPLES)
def test_loads_decodes_as_the_json_module(backend, text):
    expected = json.loads(text)
    for data in (text, text.encode("utf-8", "surrogatepass")):
        value = jsonio.loads(data)
        assert value == expected and type(value) is type(expected)


def test_integers_beyond_64_bits_stay_exact(backend):
    """orjson would turn them into floats: they must come back as the exact integers."""
    assert jsonio.loads(b'{"n": 18446744073709551616, "m": -99999999999999999999}') == {
        "n": 18446744073709551616, "m": -99999999999999999999}


@pytest.mark.parametrize("text", NOT_JSON)
def test_loads_refuses_what_is_not_json(backend, text):
    with pytest.raises(ValueError):
        jsonio.loads(text.encode("utf-8"))


def test_nan_only_when_allowed(backend):
    value = jsonio.loads(b"[NaN, Infinity]", allow_nan=True)
    assert value[0] != value[0] and value[1] == float("inf")


def test_invalid_utf8_is_a_value_error(backend):
    with pytest.raises(ValueError):
        jsonio.loads(b'"\xff"')


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, None, True], "b": "caf\u00e9"}, [], "\u2603", 2 ** 70, {"big": -(2 ** 65)},
])
def test_dumps_is_compact_utf8_json_that_reads_back(backend, value):
    payload = jsonio.dumps(value)
    assert isinstance(payload, bytes)
    assert payload == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert json.loads(payload) == value


@pytest.mark.parametrize("text", [
    '[12, 345, 123456789012345678901234]', '{"a": "٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣", "b": -18446744073709551617}',
    '{"id": "00000000-0000-4000-8000-000000000912", "n": 99999999999999999999.0e0, "m": 100000000000000000000}',
])
def test_long_integers_are_exact_in_text_and_bytes(backend, text):
    expected = json.loads(text)
    for data in (text, text.encode("utf-8")):
        value = jsonio.loads(data)
        assert value == expected and [type(item) for item in _leaves(value)] == [type(item) for item in
                                                                                  _leaves(expected)]


def _leaves(value):
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_loads_numeric_reads_integers_beyond_64_bits_as_the_floats_they_were(backend):
    text = ('{"big": 100000000000000000000, "edge": 9223372036854775808, "top": 9223372036854775807, '
            '"bottom": -9223372036854775808, "below": -9223372036854775809, "f": 2.0, "s": "123456789012345678901"}')
    for data in (text, text.encode("utf-8")):
        value = jsonio.loads_numeric(data)
        assert value == {"big": 1e20, "edge": 2.0 ** 63, "top": 2 ** 63 - 1, "bottom": -(2 ** 63),
                         "below": -(2.0 ** 63), "f": 2.0, "s": "123456789012345678901"}
        assert [type(value[key]) for key in ("big", "edge", "top", "bottom", "below", "f")] == [
            float, float, int, int, float, float]
    assert jsonio.loads_numeric('{"n": [1, -2, 3.5]}') == {"n": [1, -2, 3.5]}

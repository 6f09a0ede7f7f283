"""JSON in and out on the hot paths: orjson when it is installed (several times faster), the json module otherwise.

The choice changes speed, never results: whatever orjson refuses (a lone surrogate, text that is not JSON) or
would decode differently (it turns integers beyond 64 bits into floats) goes through the json module, which then
decodes it exactly or raises its own, readable error.
"""
from __future__ import annotations

import json
from typing import Any, Union

try:  # pragma: no cover - depends on the installation
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

__all__ = ["dumps", "loads", "loads_numeric"]

# 19 digits in a row may be an integer beyond 64 bits (and may not: a long string of digits is simply decoded by
# the json module).  They are found by turning every digit into "0" and searching for nineteen of them: the regular
# expression \d{19} costs several times what orjson's decoding of the same body costs.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def _long_digits(data: Union[bytes, str]) -> bool:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return _NINETEEN_DIGITS in data.translate(_DIGITS_AS_ZERO)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value)
        except TypeError:  # e.g. an integer beyond 64 bits
            pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: Union[bytes, str], *, allow_nan: bool = False) -> Any:
    """Decode UTF-8 JSON; ``ValueError`` (``UnicodeDecodeError`` included) when it is not.

    ``NaN`` and ``Infinity`` are refused unless ``allow_nan``: they are not JSON, and a value holding them could not be
    written back as JSON.
    """
    if _orjson is not None and not _long_digits(data):
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text) if allow_nan else json.loads(text, parse_constant=_reject_constant)


def _int64_or_float(text: str) -> Any:
    value = int(text)
    return value if -(2 ** 63) <= value < 2 ** 63 else float(text)


def loads_numeric(data: Union[bytes, str]) -> Any:
    """Decode JSON that a database printed with numbers in full: PostgreSQL's jsonb writes the float ``1e20`` as
    ``100000000000000000000``.  An integer outside the signed 64-bit range, which no record can hold (the resource
    app refuses one), is read back as the float it was stored as."""
    if _orjson is not None and not _long_digits(data):
        return _orjson.loads(data)  # no integer can be beyond 64 bits
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, parse_int=_int64_or_float)

"""Request bodies in, JSON out.

Bodies are read up to ``storage_max_request_size`` (413 errno 113 beyond), parsed strictly (UTF-8, no ``NaN`` or
``Infinity``, no lone surrogates or NUL characters (PostgreSQL cannot store them), integers within 64 bits, at most :data:`MAX_DEPTH` levels of nesting) and checked
against the envelope of §2.1.  Every problem is a 400 errno 107; nothing malformed reaches the storage.

Responses are compact JSON, ``application/json; charset=UTF-8``; orjson is used when installed (it is several
times faster than the standard library on record lists), the standard library otherwise.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from webob import Response

from wsgicliquet import jsonio
from wsgicliquet.errors import JSON_CONTENT_TYPE, HTTPError, invalid, validation_error
from wsgicliquet.middleware import read_body  # re-exported: the handlers read bodies through this module

__all__ = ["MAX_DEPTH", "read_body", "parse_json", "parse_envelope", "envelope_data", "render", "json_response",
           "empty_response"]

#: Deepest nesting accepted in a request body (the envelope counts as one level).
MAX_DEPTH = 64
_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 63 - 1
_FLOAT_INT_MIN, _FLOAT_INT_MAX = float(-(2 ** 63)), float(2 ** 63)


def _invalid_json(reason: str) -> HTTPError:
    return validation_error([
        {"location": "body", "name": None, "description": f"Invalid JSON request body: {reason}"},
        {"location": "body", "name": "data", "description": "data is missing"},
    ])


def parse_json(body: bytes) -> Any:
    """Decode a request body; 400 (with the two problems of §7.4) when it is not acceptable JSON."""
    try:
        value = jsonio.loads(body)
    except UnicodeDecodeError:
        raise _invalid_json("the body is not UTF-8") from None
    except ValueError as exc:
        raise _invalid_json(str(exc)) from None
    except RecursionError:
        raise _invalid_json(f"nested more than {MAX_DEPTH} levels") from None
    big_floats = _check_values(value, check_strings=b"\\u" in body)
    if big_floats or b"-0" in body:
        _normalize_numbers(value)
    return value


def _normalize_numbers(value: Any) -> None:
    """Write, in place, the numbers PostgreSQL would read back otherwise as they read back there, so that every
    backend answers alike: -0.0 becomes 0.0 (its numbers have no negative zero), and a float from 1e16 to the 64-bit
    limit becomes the integer it is (its jsonb writes ``1e16`` as ``10000000000000000``, read back as an integer)."""
    stack = [value] if isinstance(value, (dict, list)) else []
    while stack:
        item = stack.pop()
        pairs: Iterable[Tuple[Any, Any]] = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            if isinstance(child, (dict, list)):
                stack.append(child)
            elif type(child) is float:
                if _integral_float(child):
                    item[key] = int(child)
                elif child == 0.0 and math.copysign(1.0, child) < 0:
                    item[key] = 0.0


def _integral_float(value: float) -> bool:
    """True for a float PostgreSQL reads back as an integer: written ``1e+16`` and beyond by ``repr`` (so an integer
    value), within the 64-bit range that the reader keeps as an integer."""
    return _FLOAT_INT_MIN <= value < _FLOAT_INT_MAX and abs(value) >= 1e16


def _check_values(value: Any, check_strings: bool) -> bool:
    """One iterative walk: nesting depth, finite numbers, 64-bit integers, encodable strings; True when some float
    must become an integer (:func:`_normalize_numbers`)."""
    big_floats = False
    stack: List[Tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                raise _invalid_json(f"nested more than {MAX_DEPTH} levels")
            if check_strings:
                for key in item:
                    _check_scalar(key, True)
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                raise _invalid_json(f"nested more than {MAX_DEPTH} levels")
            children = item
        else:
            _check_scalar(item, check_strings)
            continue
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            elif _check_scalar(child, check_strings):
                big_floats = True
    return big_floats


def _check_scalar(value: Any, check_strings: bool) -> bool:
    """Raise the 400 of a value no backend can store; True for a float to store as an integer."""
    kind = type(value)
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _invalid_json("integer out of the 64-bit range")
    elif kind is float:
        if not math.isfinite(value):
            raise _invalid_json("number out of range")
        return _integral_float(value)
    elif kind is str and check_strings:
        if "\x00" in value:
            raise _invalid_json("the NUL character (\\u0000) is not allowed")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid_json("invalid unicode escape (lone surrogate)") from None
    return False


def parse_envelope(body: bytes, *, data_required: bool, allowed: Tuple[str, ...] = ("data",),
                   data_problems: Optional[Callable[[dict], List[Dict[str, Any]]]] = None) -> Optional[dict]:
    """The ``data`` object of a write request; None when absent and not required.

    Any other top-level key than ``allowed`` is a 400 ``<key> is not allowed`` (``permissions`` included, on
    resources that are not shareable).
    """
    return envelope_data(parse_json(body) if body.strip() else {}, data_required=data_required, allowed=allowed,
                         data_problems=data_problems)


def envelope_data(payload: Any, *, data_required: bool, allowed: Tuple[str, ...] = ("data",),
                  data_problems: Optional[Callable[[dict], List[Dict[str, Any]]]] = None) -> Optional[dict]:
    """:func:`parse_envelope` of an already decoded body (a shareable resource takes ``permissions`` out first).

    Unknown keys are refused before anything else runs, but with the full list of problems of §7.4: those of
    ``data`` too (``data_problems`` gives its schema problems).
    """
    if not isinstance(payload, dict):
        raise invalid("body", None, "The request body must be a JSON object")
    extra = [key for key in payload if key not in allowed]
    problems = [{"location": "body", "name": key, "description": f"{key} is not allowed"} for key in extra]
    data = payload.get("data")
    if data is None:
        if data_required:
            problems.append({"location": "body", "name": "data", "description": "data is missing"})
    elif not isinstance(data, dict):
        problems.append({"location": "body", "name": "data", "description": "data should be an object"})
    elif extra and data_problems is not None:
        problems.extend(data_problems(data))
    if problems:
        raise validation_error(problems)
    return data


def render(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return jsonio.dumps(value)


def json_response(status: int, value: Any, headers: Optional[List[Tuple[str, str]]] = None) -> Response:
    payload = render(value)
    headerlist = [("Content-Type", JSON_CONTENT_TYPE), ("Content-Length", str(len(payload)))]
    if headers:
        headerlist.extend(headers)
    return Response(status=status, headerlist=headerlist, app_iter=[payload])


def empty_response(status: int, headers: Optional[List[Tuple[str, str]]] = None) -> Response:
    """A response without body (304, OPTIONS)."""
    headerlist = list(headers or [])
    if status != 304:
        headerlist.append(("Content-Length", "0"))
    return Response(status=status, headerlist=headerlist, app_iter=[])

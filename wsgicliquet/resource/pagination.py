"""Keyset pagination: ``_token`` and ``Next-Page`` (PROTOCOL.md Part A D3, §4.7).

A token is standard base64 of ``{"last_record": {<sort field>: <value>...}, "offset": <n>, "sort": "<sort>"}``.
The sort always ends with ``last_modified`` and ``id`` (unique), so the records after ``last_record`` are exactly
those not yet returned, whatever is inserted or deleted meanwhile.  ``sort`` is the canonical sort of the request
that produced the token: a token presented with another ``_sort`` (or malformed in any way) is a 400
``_token has invalid content``.  Whether there is a next page is decided by fetching one record more than the
page, never from a count.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode

from werkzeug.wsgi import get_host

from wsgicliquet.errors import HTTPError, invalid
from wsgicliquet.resource.body import parse_json
from wsgicliquet.resource.querystring import sort_key
from wsgicliquet.storage import Filter, Sort
from wsgicliquet.storage.query import MISSING, keyset_rules, resolve

__all__ = ["encode_token", "decode_token", "pagination_rules", "next_page_url", "base_url"]

_TOKEN_KEYS = {"last_record", "offset", "sort"}
_MAX_TOKEN_LENGTH = 16 * 1024


def _token_error() -> Exception:
    return invalid("querystring", "_token", "_token has invalid content")


def encode_token(last_record: Dict[str, Any], sorting: Sequence[Sort], offset: int) -> str:
    """The token that continues a listing after ``last_record`` (``offset`` = records returned so far)."""
    values = {}
    for sort in sorting:
        value = resolve(last_record, sort.field)
        values[sort.field] = None if value is MISSING else value
    payload = {"last_record": values, "offset": offset, "sort": sort_key(sorting)}
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode("utf-8")).decode("ascii")


def decode_token(token: str, sorting: Sequence[Sort]) -> Tuple[Dict[str, Any], int]:
    """``(last_record values, offset)`` of a token made for ``sorting``; 400 when it is not such a token."""
    if len(token) > _MAX_TOKEN_LENGTH:
        raise _token_error()
    try:
        # As strict as a request body: a value no record can hold (lone surrogate, NUL, NaN, integer beyond 64
        # bits) is no record's sort value, and the backends would each compare it their own way.
        payload = parse_json(base64.b64decode(token.encode("ascii"), validate=True))
    except (binascii.Error, UnicodeError, HTTPError):
        raise _token_error() from None
    if not isinstance(payload, dict) or set(payload) != _TOKEN_KEYS:
        raise _token_error()
    values, offset = payload["last_record"], payload["offset"]
    if (payload["sort"] != sort_key(sorting) or not isinstance(values, dict)
            or set(values) != {sort.field for sort in sorting}
            or not _is_int(offset) or offset < 0
            or not _is_int(values.get("last_modified")) or not isinstance(values.get("id"), str)):
        raise _token_error()
    return values, offset


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pagination_rules(values: Dict[str, Any], sorting: Sequence[Sort]) -> List[List[Filter]]:
    """Storage ``pagination_rules`` selecting the records sorted after the token's record."""
    return keyset_rules(values, sorting)


def next_page_url(host_url: str, path: str, params: Sequence[Tuple[str, str]], limit: int, token: str) -> str:
    """Absolute URL of the next page: the same request with ``_limit`` and ``_token`` replaced.

    ``path`` is ``SCRIPT_NAME + PATH_INFO`` as the WSGI server gives them (bytes decoded as latin-1).
    """
    kept = [(name, value) for name, value in params if name not in ("_limit", "_token")]
    kept += [("_limit", str(limit)), ("_token", token)]
    return f"{host_url}{quote(path.encode('latin-1', 'replace'))}?{urlencode(kept)}"


def base_url(environ: Dict[str, Any], http_scheme: Optional[str], http_host: Optional[str]) -> str:
    """``scheme://host`` of generated URLs: the request's, unless the settings force them."""
    scheme = http_scheme or environ.get("wsgi.url_scheme", "http")
    if http_host:
        return f"{scheme}://{http_host}"
    # As the version prefix's redirects: a Host no host could have ("a b", "evil/x?y") gives way to the server's.
    environ = {"SERVER_NAME": "localhost", **environ, "wsgi.url_scheme": scheme}
    host = get_host(environ) or get_host({**environ, "HTTP_HOST": None})
    return f"{scheme}://{host}"

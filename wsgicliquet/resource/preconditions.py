"""``If-Match`` / ``If-None-Match`` with strict equality (PROTOCOL.md Part A D4, §5.6, §6).

Values are exactly a double-quoted integer (an ETag as sent by the server); ``If-None-Match`` also takes ``*``.
Anything else is a 400.  ``If-Match: "<n>"`` fails with 412 unless the target's timestamp equals n, including
when the target does not exist; ``If-None-Match: "<n>"`` on a read answers 304 when the timestamp equals n;
``If-None-Match: *`` fails with 412 when the target exists.
"""
from __future__ import annotations

import functools
import re
from email.utils import formatdate
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from wsgicliquet.errors import ERRORS, HTTPError, invalid

__all__ = ["ANY", "Preconditions", "parse", "etag_headers", "modified_meanwhile"]

ANY = "*"
_ETAG = re.compile(r'"([0-9]{1,20})"')

_IF_MATCH_ERROR = "Invalid value for If-Match. The value should be integer between double quotes."
_IF_NONE_MATCH_ERROR = "Invalid value for If-None-Match"


class Preconditions(NamedTuple):
    if_match: Optional[int] = None
    if_none_match: Union[None, int, str] = None

    @property
    def none(self) -> bool:
        """True when the request has no precondition (handlers then skip the lookups they need)."""
        return self.if_match is None and self.if_none_match is None

    @property
    def needs_target(self) -> bool:
        """True when checking needs the target's current state (a write then looks the record up first)."""
        return self.if_match is not None or self.if_none_match == ANY

    def not_modified(self, timestamp: int) -> bool:
        """For GET/HEAD: True when the client's copy is current (answer 304)."""
        return self.if_none_match is not None and self.if_none_match == timestamp

    def check(self, timestamp: Optional[int], existing: Optional[Dict[str, Any]] = None, *,
              exists: bool = False) -> None:
        """Raise the 412 when a precondition fails.

        ``timestamp`` is the target's current timestamp (None: the target does not exist); ``existing`` the record
        or tombstone shown in ``details.existing``; ``exists`` whether a live target exists (for ``*``).
        """
        if self.if_match is not None and timestamp != self.if_match:
            raise modified_meanwhile(existing, timestamp)
        if self.if_none_match == ANY and exists:
            raise modified_meanwhile(existing, timestamp)


def parse(headers: Mapping[str, str]) -> Preconditions:
    """Read the two headers from a WSGI environ (``HTTP_IF_MATCH``...); 400 on a malformed value."""
    raw_match = headers.get("HTTP_IF_MATCH")
    raw_none = headers.get("HTTP_IF_NONE_MATCH")
    if raw_match is None and raw_none is None:
        return _NONE
    if_match = None
    if raw_match is not None:
        found = _ETAG.fullmatch(raw_match)
        if found is None:
            raise invalid("headers", "If-Match", _IF_MATCH_ERROR)
        if_match = int(found.group(1))
    if_none_match: Union[None, int, str] = None
    if raw_none is not None:
        if raw_none == ANY:
            if_none_match = ANY
        else:
            found = _ETAG.fullmatch(raw_none)
            if found is None:
                raise invalid("headers", "If-None-Match", _IF_NONE_MATCH_ERROR)
            if_none_match = int(found.group(1))
    return Preconditions(if_match, if_none_match)


_NONE = Preconditions()


def etag_headers(timestamp: int) -> List[Tuple[str, str]]:
    """``ETag`` and ``Last-Modified`` of a timestamp in milliseconds (HTTP-date, sub-second part dropped)."""
    return [("ETag", f'"{timestamp}"'), ("Last-Modified", _http_date(timestamp // 1000))]


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    """HTTP-date of a second (2 µs to format; records read together were often written in the same second)."""
    return formatdate(seconds, usegmt=True)


def modified_meanwhile(existing: Optional[Dict[str, Any]], timestamp: Optional[int]) -> HTTPError:
    """The 412 of §6.2: ``details.existing`` when a record (or tombstone) was involved, else ``{}``."""
    details: Dict[str, Any] = {"existing": existing} if existing is not None else {}
    headers = etag_headers(timestamp) if timestamp is not None else []
    return HTTPError(412, ERRORS.MODIFIED_MEANWHILE, details=details, headers=headers)

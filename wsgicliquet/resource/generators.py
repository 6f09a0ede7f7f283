"""Record id generators: make new ids, and say which ids a resource accepts (PROTOCOL.md §1.10).

The setting ``id_generator`` names the default class; a resource may set its own ``id_generator`` attribute.
A generator is a callable returning a new id, with a ``regexp`` that every id of the resource must match (ids in
URLs and in POST bodies are checked against it).
"""
from __future__ import annotations

import re

from wsgicliquet.ids import uuid4

__all__ = ["Generator", "UUID4", "MAX_ID_LENGTH"]

#: Longest record id (and URL placeholder value) accepted, whatever the generator's pattern allows: PostgreSQL's
#: indexes hold at most about 2,700 bytes per entry (collection, parent and id together), and memory and Redis
#: must refuse what it refuses.
MAX_ID_LENGTH = 256


class Generator:
    """Base generator: accepts any id made of ASCII letters, digits, ``_`` and ``-`` (not starting with those two)."""

    regexp = r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$"

    def __init__(self) -> None:
        self._fullmatch = re.compile(self.regexp.lstrip("^").rstrip("$")).fullmatch

    def match(self, object_id: object) -> bool:
        """True when ``object_id`` is an acceptable id (a string of the expected shape, not too long)."""
        return (isinstance(object_id, str) and len(object_id) <= MAX_ID_LENGTH
                and self._fullmatch(object_id) is not None)

    def __call__(self) -> str:
        raise NotImplementedError("Generators must implement __call__")


class UUID4(Generator):
    """Lower-case UUID4 strings, the default of Cliquet."""

    regexp = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

    def __call__(self) -> str:
        return uuid4()

"""Random UUID4 strings for record and request ids, made 256 at a time.

``str(uuid.uuid4())`` reads 16 bytes from ``os.urandom`` on every call, a system call that costs more than the rest
of creating a record on a loaded virtual machine, and formatting one id in Python costs as much again.  Here the
same source is read 4 KiB at a time and the 256 ids it holds are written as text in one go, a column of hex digits
at a time (C loops over the batch, instead of a dozen Python steps per id).  The ids wait in a list that every
thread pops from (popping is atomic); a forked child (a gunicorn worker) empties it, so it never reuses its parent's.
"""
from __future__ import annotations

import binascii
import os
from typing import List

__all__ = ["uuid4"]

_BATCH = 256  # ids per read of os.urandom (4 KiB)
_ROW = 37  # the 36 characters of an id and a line break
# Where each of the 32 hex digits of an id goes in its row (8-4-4-4-12 digits between the dashes).
_PLACES = [*range(0, 8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)]
# Version 4 and the RFC 4122 variant, as uuid.UUID(version=4) sets them: the 13th digit is always 4 (the template
# has it), the 17th keeps its two low bits and becomes 8, 9, a or b.
_TEMPLATE = b"00000000-0000-4000-0000-000000000000\n" * _BATCH
_VERSION_DIGIT, _VARIANT_DIGIT = 12, 16
_COLUMNS = [(slice(place, None, _ROW), slice(digit, None, 32)) for digit, place in enumerate(_PLACES)
            if digit != _VERSION_DIGIT]
_VARIANT_COLUMN = slice(_PLACES[_VARIANT_DIGIT], None, _ROW)
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")

_ready: List[str] = []
os.register_at_fork(after_in_child=_ready.clear)


def _batch() -> List[str]:
    """256 new ids: each digit column of the rows copied from the hex digits of the random bytes at once."""
    digits = binascii.hexlify(os.urandom(16 * _BATCH))
    rows = bytearray(_TEMPLATE)
    for row_column, digit_column in _COLUMNS:
        rows[row_column] = digits[digit_column]
    rows[_VARIANT_COLUMN] = rows[_VARIANT_COLUMN].translate(_VARIANT)
    return rows.decode("ascii").split()


def uuid4() -> str:
    """A random UUID4 in the ``str(uuid.uuid4())`` form, from ``os.urandom``."""
    while True:
        try:
            return _ready.pop()
        except IndexError:  # empty (another thread may have taken the last ones meanwhile: loop)
            _ready.extend(_batch())

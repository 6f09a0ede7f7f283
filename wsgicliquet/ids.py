"""Random UUID4 strings for record and request ids, without a system call for each.

``str(uuid.uuid4())`` reads 16 bytes from ``os.urandom`` on every call, a system call that costs more than the rest
of creating a record on a loaded virtual machine.  The same source is read 4 KiB at a time here (256 ids per call),
into a buffer of each thread; a forked child (a gunicorn worker) never reuses its parent's buffer.
"""
from __future__ import annotations

import os
import threading

__all__ = ["uuid4"]

_CHUNK = 4096


class _Buffer(threading.local):
    def __init__(self) -> None:
        self.data = b""
        self.offset = 0
        self.generation = -1


_buffer = _Buffer()
_generation = 0  # bumped in every forked child: each thread's buffer then refills before use


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)

# Version 4 and the RFC 4122 variant, as uuid.UUID(version=4) sets them.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET = (0x4000 << 64) | (0x8000 << 48)


def uuid4() -> str:
    """A random UUID4 in the ``str(uuid.uuid4())`` form, from ``os.urandom``."""
    buffer = _buffer
    offset = buffer.offset
    if offset >= len(buffer.data) or buffer.generation != _generation:
        buffer.data, buffer.generation, offset = os.urandom(_CHUNK), _generation, 0
    buffer.offset = offset + 16
    bits = (int.from_bytes(buffer.data[offset:offset + 16], "big") & _CLEAR) | _SET
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

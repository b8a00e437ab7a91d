"""The backlog table in an inbox file's header: how many messages each ``!`` channel has been
sent and not yet received.

A ``!`` channel's capacity counts what waits for it in its process's inbox file *and* what that
process drained into its memory and no receive took yet. Senders check the count and raise it
in the critical section that appends, so a channel at capacity is skipped every time, however
far its owner has got with draining; the owner lowers it as its receives take messages (and as
messages expire unread). The IPC layer's counterpart of the Redis layer's ``:backlog`` hash.

Layout, at byte 224 of an inbox file (the header's room up to the records is free in an
inbox, which has no waiter slots)::

    224    n u32, crc u32 (CRC-32 of the entries), n x (channel hash u64, count u32)

The head lies inside the 256 bytes every operation reads anyway, so an empty table costs no
read. A torn table (a writer killed mid-write) fails its CRC and reads as empty: counts are
lost, never invented, so a channel can only look emptier than it is. The table is written after
the metadata that makes a record visible, for the same reason. At most :data:`TABLE_MAX`
channels are counted at once; a message for another channel while the table is full is
delivered without being counted (as before there was a table).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping
from typing import Final

__all__ = ["TABLE_AT", "TABLE_MAX", "adjust", "read_table", "write_table"]

TABLE_AT: Final = 224
_HEAD = struct.Struct("<II")
_ENTRY = struct.Struct("<QI")
_HEADER_SIZE = 16384
TABLE_MAX: Final = (_HEADER_SIZE - TABLE_AT - _HEAD.size) // _ENTRY.size


def read_table(fd: int, probe: bytes) -> dict[int, int]:
    """The table of the inbox open as ``fd``, whose first 256 bytes are ``probe``."""
    count, crc = _HEAD.unpack_from(probe, TABLE_AT)
    if not count:
        return {}
    if count > TABLE_MAX:
        return {}
    body = os.pread(fd, count * _ENTRY.size, TABLE_AT + _HEAD.size)
    if len(body) != count * _ENTRY.size or zlib.crc32(body) != crc:
        return {}
    return {key: value for key, value in _ENTRY.iter_unpack(body)}


def write_table(fd: int, table: Mapping[int, int]) -> None:
    """Write ``table`` (entries of count 0 or less are left out), in one ``pwrite``."""
    entries = [(key, value) for key, value in table.items() if value > 0][:TABLE_MAX]
    body = b"".join(_ENTRY.pack(key, min(value, 0xFFFFFFFF)) for key, value in entries)
    os.pwrite(fd, _HEAD.pack(len(entries), zlib.crc32(body)) + body, TABLE_AT)


def adjust(table: dict[int, int], deltas: Mapping[int, int]) -> None:
    """Add ``deltas`` to ``table`` in place; a count falling to zero or below is removed. A new
    channel is counted only while the table has room."""
    for key, delta in deltas.items():
        value = table.get(key, 0) + delta
        if value > 0:
            if key in table or len(table) < TABLE_MAX:
                table[key] = value
        else:
            table.pop(key, None)

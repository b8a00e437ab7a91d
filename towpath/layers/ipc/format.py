"""The on-disk format of the IPC layer's queue files: what every process, and ``check.py``,
reads and writes the same way.

A queue file holds the messages of one normal channel (``q-<name>``) or of one process's ``!``
channels (its inbox, ``i-<name>``): a 16 KiB header followed by the records, oldest first,
from ``head`` to ``tail``. Header layout (little-endian)::

    0      magic "TPIPCQ1\\0", kind (u32: 1 normal channel, 2 inbox)
    64     metadata slot 0: seq u64, head u64, tail u64, count u32, flags u32, hw u32, crc u32
    128    metadata slot 1
    192    inbox owner: its wake token (28 bytes) + crc
    224    inbox backlog table, up to the records (``backlog.py``): per ``!`` channel, the
           messages sent to it and not received yet
    4096   waiter slots (normal channels): 256 x (token 28 bytes + crc)
    16384  records: data length u32, names length u32, expires at (epoch s) f64, names, data

The current metadata is the valid slot (its CRC-32 matches) with the higher sequence number
(:func:`pick_meta`); ``queues.py`` explains why that makes a kill at any point harmless. A
normal channel's records have no names; an inbox record names the ``!`` channels it is for,
comma-separated.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Final

__all__ = [
    "EMPTY_SLOT",
    "FLAG_DEAD",
    "FLAG_SLEEPING",
    "HEADER_SIZE",
    "INBOX",
    "KIND",
    "MAGIC",
    "META",
    "META_AT",
    "META_CRC",
    "NORMAL",
    "OWNER_AT",
    "PROBE",
    "RECORD",
    "RECORD_OVERHEAD",
    "SLOT",
    "TOKEN_MAX",
    "WAITERS_AT",
    "WAITER_SLOTS",
    "Meta",
    "channel_hash",
    "pick_meta",
    "queue_path",
    "slot_token",
    "waiter_slot",
]

#: the kinds of queue file
NORMAL: Final = 1
INBOX: Final = 2

#: the header's size: where the records begin
HEADER_SIZE: Final = 16384
#: waiter slots of a normal channel's file
WAITER_SLOTS: Final = 256

MAGIC: Final = b"TPIPCQ1\x00"
#: the kind, after the magic
KIND: Final = struct.Struct("<I")
#: a metadata slot without, and with, its CRC: seq, head, tail, count, flags, hw (, crc)
META: Final = struct.Struct("<QQQIII")
META_CRC: Final = struct.Struct("<QQQIIII")
#: where the two metadata slots are
META_AT: Final = (64, 128)
#: how much of the header to read to find the current metadata
PROBE: Final = 256
#: the inbox owner's wake token slot
OWNER_AT: Final = 192
#: a token slot: the token padded to TOKEN_MAX bytes, and its CRC-32
SLOT: Final = 32
TOKEN_MAX: Final = 28
EMPTY_SLOT: Final = bytes(SLOT)
#: where the waiter slots begin
WAITERS_AT: Final = 4096
#: a record's header: data length, names length, expires at (epoch seconds)
RECORD: Final = struct.Struct("<IId")
RECORD_OVERHEAD: Final = RECORD.size

#: metadata flags of an inbox: its owner drained it and waits for a wake-up
FLAG_SLEEPING: Final = 1
#: its owner is gone; the file is (being) removed
FLAG_DEAD: Final = 2


def channel_hash(channel: str) -> int:
    """A 64-bit hash of a channel name that every process computes alike."""
    return zlib.crc32(channel.encode()) << 32 | zlib.adler32(channel.encode())


def queue_path(directory: str, name: str, kind: int) -> str:
    """The path of the queue file of ``name`` (a normal channel or an inbox)."""
    return os.path.join(directory, ("q-" if kind == NORMAL else "i-") + name)


class Meta:
    """One metadata slot: the queue's state."""

    __slots__ = ("count", "flags", "head", "hw", "seq", "tail")

    def __init__(self, seq: int, head: int, tail: int, count: int, flags: int, hw: int) -> None:
        self.seq, self.head, self.tail, self.count, self.flags, self.hw = (
            seq,
            head,
            tail,
            count,
            flags,
            hw,
        )


def pick_meta(probe: bytes) -> Meta | None:
    """The current metadata in a header probe (its first :data:`PROBE` bytes): the valid slot
    with the higher sequence (the other one when that one was torn by a kill)."""
    if probe[:8] != MAGIC or len(probe) < PROBE:
        return None
    first, second = META_AT
    one = META_CRC.unpack_from(probe, first)
    two = META_CRC.unpack_from(probe, second)
    if two[0] > one[0]:
        first, second, one, two = second, first, two, one
    for at, fields in ((first, one), (second, two)):
        if fields[0] and fields[6] == zlib.crc32(probe[at : at + 36]):
            return Meta(*fields[:6])
    return None


def waiter_slot(token: bytes) -> bytes:
    """The slot that holds ``token`` (a waiter's, or an inbox owner's)."""
    padded = token.ljust(TOKEN_MAX, b"\x00")
    return padded + zlib.crc32(padded).to_bytes(4, "little")


def slot_token(slot: bytes) -> bytes | None:
    """The token a slot holds; None for an empty or torn one."""
    if len(slot) < SLOT or not slot[0]:
        return None
    if zlib.crc32(slot[:TOKEN_MAX]) != int.from_bytes(slot[TOKEN_MAX:SLOT], "little"):
        return None
    return slot[:TOKEN_MAX].rstrip(b"\x00")

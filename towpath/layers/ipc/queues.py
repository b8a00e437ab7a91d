"""Queue files: the messages of one normal channel, or of one process's ``!`` channels.

A queue file is a 16 KiB header followed by the queue's records, oldest first, from ``head``
to ``tail``. Every reader and writer holds the file's ``flock`` and uses ``pread``/``pwrite``
(never ``mmap``: a write into a full tmpfs is then an ``ENOSPC`` error, not a SIGBUS).

Crash safety rests on one rule: **nothing becomes visible until the metadata says so, and the
metadata changes in one step that a kill cannot tear.** The header holds two metadata slots;
each holds (sequence number, head, tail, count, flags, waiter high-water mark) and a CRC-32,
and a write goes to the slot the current state is *not* in. A reader takes the valid slot with
the higher sequence number. So a writer killed

* before its metadata write: its record lies beyond ``tail``, invisible, overwritten later;
* during it: that slot's CRC fails and the previous state, untouched, stays current;
* after it: the operation happened.

Records are only ever written beyond ``tail`` or, when messages are given back, just before
``head``; compaction copies the live records into space no current state points at before it
switches the metadata. A half-done operation therefore never damages what others see.

The layout of the header and of the records is in ``format.py``.
"""

from __future__ import annotations

import errno
import logging
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from towpath.layers.base import ChannelFull
from towpath.layers.ipc.backlog import adjust, read_table, write_table
from towpath.layers.ipc.format import (
    EMPTY_SLOT,
    FLAG_DEAD,
    FLAG_SLEEPING,
    HEADER_SIZE,
    INBOX,
    KIND,
    MAGIC,
    META,
    META_AT,
    NORMAL,
    OWNER_AT,
    PROBE,
    RECORD,
    RECORD_OVERHEAD,
    SLOT,
    WAITER_SLOTS,
    WAITERS_AT,
    Meta,
    channel_hash,
    pick_meta,
    queue_path,
    slot_token,
    waiter_slot,
)
from towpath.layers.ipc.locks import (
    checkpoint,
    hold_owner_lock,
    lock,
    owner_alive,
    unlock,
)

__all__ = [
    "DEAD",
    "FULL",
    "HEADER_SIZE",
    "INBOX",
    "NORMAL",
    "OK",
    "RECORD_OVERHEAD",
    "STORE_FULL",
    "WAITER_SLOTS",
    "InboxTaken",
    "QueueFile",
    "StoreFull",
    "Wake",
    "channel_hash",
    "queue_path",
]

logger = logging.getLogger("towpath.layers.ipc")

# outcomes of a push
OK: Final = 0
FULL: Final = 1  # capacity reached (or every named channel at its capacity)
STORE_FULL: Final = 2  # queue_bytes reached
DEAD: Final = 3  # the inbox's owner is gone

# A queue that empties after its tail passed this is truncated back to the header, so a burst
# does not keep its memory; a queue whose consumed prefix passes _COMPACT is compacted.
_TRUNCATE = 1 << 18
_COMPACT = 1 << 20
_READ_ONE = 8192
_READ_MANY = 1 << 18

#: ``wake(token, hint) -> alive``: write a wake-up to the process owning ``token``.
Wake = Callable[[bytes, bytes], bool]


class StoreFull(ChannelFull):
    """A queue reached ``queue_bytes``, or the store's file system is out of space. Nothing
    was sent. Raised by ``send``; ``group_send`` counts it as a full member."""


class InboxTaken(Exception):
    """Another live process (or layer instance) reads this inbox."""


def _space_error(exc: OSError, path: str) -> StoreFull:
    return StoreFull(
        f"no space left for the IPC store file {path} ({exc.strerror}): enlarge the file "
        "system (a tmpfs: mount -o remount,size=...), or lower queue_bytes; nothing was sent"
    )


class QueueFile:
    """One open queue file. Each method takes and releases the file's lock itself; none
    blocks for longer than a few system calls."""

    __slots__ = ("_hint", "discarded", "fd", "kind", "name", "owned", "path", "slot")

    def __init__(self, fd: int, path: str, name: str, kind: int) -> None:
        self.fd = fd
        self.path = path
        self.name = name
        self.kind = kind
        #: this instance owns the inbox (holds its owner lock)
        self.owned = False
        #: the waiter slot this instance registered in (normal channels), -1: none
        self.slot = -1
        #: records dropped because they could not be framed (see :meth:`_unframed`), not yet
        #: reported by the layer
        self.discarded = 0
        self._hint = name.encode() + b"\n" if kind == NORMAL else b"!\n"

    @classmethod
    def open(cls, directory: str, name: str, kind: int, *, create: bool) -> QueueFile | None:
        """Open the queue file of ``name``; ``None`` when it does not exist and ``create`` is
        false (an inbox whose owner is gone)."""
        path = queue_path(directory, name, kind)
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        return cls(fd, path, name, kind)

    @classmethod
    def claim(cls, directory: str, name: str, token: bytes) -> QueueFile:
        """Open (creating it if needed) the inbox ``name`` as its owner: take its owner lock,
        write ``token`` as the address of its wake-ups. Raises :class:`InboxTaken` when a live
        owner has it."""
        for _ in range(8):
            queue = cls.open(directory, name, INBOX, create=True)
            assert queue is not None  # created
            try:
                if not hold_owner_lock(queue.fd):
                    raise InboxTaken(name)
                queue.owned = True
                if queue._take_ownership(token):
                    return queue
            except BaseException:
                queue.close()
                raise
            queue.close()  # a previous owner's, being buried: start afresh
        raise InboxTaken(name)  # pragma: no cover - eight owners dying in a row

    def _take_ownership(self, token: bytes) -> bool:
        """Write the owner's wake token and clear the backlog table (a new owner has received
        nothing); False when the file turns out to be a dead owner's (it is unlinked, and the
        caller makes a new one)."""
        lock(self.fd, "queue.locked")
        try:
            meta = self._meta()
            if meta is not None and meta.flags & FLAG_DEAD:
                self._unlink_if_same()
                return False
            if meta is None:
                meta = self._initialise()
            try:
                os.pwrite(self.fd, waiter_slot(token), OWNER_AT)
                write_table(self.fd, {})
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise _space_error(exc, self.path) from exc
                raise
            meta.flags |= FLAG_SLEEPING
            self._write_meta(meta)
            return True
        finally:
            unlock(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- metadata ------------------------------------------------------------------------------

    def _meta(self) -> Meta | None:
        return pick_meta(os.pread(self.fd, PROBE, 0))

    def _initialise(self) -> Meta:
        """Make this file an empty queue (it is new, or its creator died before finishing)."""
        try:
            os.ftruncate(self.fd, 0)
            os.ftruncate(self.fd, HEADER_SIZE)
            meta = Meta(0, HEADER_SIZE, HEADER_SIZE, 0, 0, 0)
            self._write_meta(meta)
            os.pwrite(self.fd, MAGIC + KIND.pack(self.kind), 0)  # last: now it is a queue
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _space_error(exc, self.path) from exc
            raise
        return meta

    def _meta_or_create(self) -> Meta:
        probe = os.pread(self.fd, PROBE, 0)
        meta = pick_meta(probe)
        if meta is None:
            if probe[:8] == MAGIC:  # cannot happen by the write rules above; never stay stuck
                logger.error("IPC queue file %s had no valid metadata; it was emptied", self.path)
            meta = self._initialise()
        return meta

    def _write_meta(self, meta: Meta) -> None:
        meta.seq += 1
        raw = META.pack(meta.seq, meta.head, meta.tail, meta.count, meta.flags, meta.hw)
        os.pwrite(self.fd, raw + zlib.crc32(raw).to_bytes(4, "little"), META_AT[meta.seq & 1])

    def _append(self, meta: Meta, parts: Sequence[bytes], size: int) -> None:
        try:
            written = os.pwritev(self.fd, parts, meta.tail)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _space_error(exc, self.path) from exc
            raise
        if written != size:
            raise _space_error(OSError(errno.ENOSPC, "short write"), self.path)

    def _tidy(self, meta: Meta, committed_head: int, old_tail: int) -> int:
        """After taking: an empty queue starts again at the header; a long consumed prefix is
        reclaimed by copying the live records down. Returns the size to truncate the file to
        *after* the caller wrote the metadata (0: leave it), so that no state a kill could
        leave current ever points past the end of the file.

        The copy must land where the *committed* state (``committed_head``, still current
        until the caller's metadata write) points at nothing: a kill before that write falls
        back to it, records intact."""
        if meta.count == 0:
            meta.head = meta.tail = HEADER_SIZE
            return HEADER_SIZE if old_tail > _TRUNCATE else 0
        live = meta.tail - meta.head
        if meta.head - HEADER_SIZE >= _COMPACT and HEADER_SIZE + live <= committed_head:
            data = os.pread(self.fd, live, meta.head)
            try:
                os.pwrite(self.fd, data, HEADER_SIZE)  # into space no state points at
            except OSError:
                return 0  # no room to compact: keep the queue as it is
            checkpoint("queue.compacting")
            meta.head, meta.tail = HEADER_SIZE, HEADER_SIZE + live
            return HEADER_SIZE + live
        return 0

    def _commit(self, meta: Meta, truncate: int) -> None:
        """Write the metadata, then cut the file if :meth:`_tidy` asked for it."""
        self._write_meta(meta)
        if truncate:
            os.ftruncate(self.fd, truncate)

    # -- normal channels -----------------------------------------------------------------------

    def push(
        self,
        data: bytes,
        expires_at: float,
        capacity: int,
        limit: int,
        now: float,
        wake: Wake,
    ) -> tuple[int, int]:
        """Append one message to a normal channel. Returns (OK | FULL | STORE_FULL, how many
        expired messages were shed to make room)."""
        size = RECORD.size + len(data)
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            meta = self._meta_or_create()
            shed = 0
            if meta.count >= capacity:
                shed, truncate = self._shed(meta, now)
                if shed:
                    self._commit(meta, truncate)
                if meta.count >= capacity:
                    return FULL, shed
            if meta.tail - meta.head + size > limit:
                return STORE_FULL, shed
            if meta.hw:
                # Wake-ups go out before the metadata write that publishes the message: a
                # woken receiver blocks on the lock until it is there, and a sender killed in
                # between costs a spurious wake-up, never a lost one.
                self._wake_waiters(meta, wake)
            self._append(meta, (RECORD.pack(len(data), 0, expires_at), data), size)
            checkpoint("queue.written")
            meta.tail += size
            meta.count += 1
            self._write_meta(meta)
            return OK, shed
        finally:
            unlock(fd)

    def take(
        self, want: int, now: float, token: bytes, *, wait_if_short: bool, others: bool
    ) -> tuple[list[tuple[float, bytes]], int, bool]:
        """Take up to ``want`` live messages from the head of a normal channel.

        In the same critical section (so that no send slips between the check and the
        registration) ``token`` is then registered as a waiter of this channel if
        ``wait_if_short`` and fewer than ``want`` were there, or if ``others`` (other
        receivers of this process wait on it), and unregistered otherwise. Returns (messages
        as (expires_at, data), expired messages dropped, whether a wanted registration holds:
        False when every waiter slot is taken)."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            meta = self._meta_or_create()
            head, count, tail = meta.head, meta.count, meta.tail
            taken: list[tuple[float, bytes]] = []
            expired = 0
            if count and want > 0:
                expired = self._read_head(meta, want, now, taken)
            if meta.count != count:
                truncate = self._tidy(meta, head, tail)
                checkpoint("queue.taking")
                self._commit(meta, truncate)
            if others or (wait_if_short and len(taken) < want):
                return taken, expired, self._register(meta, token)
            if self.slot >= 0:
                self._unregister(meta, token)
            return taken, expired, True
        finally:
            unlock(fd)

    def give_back(self, entries: Sequence[tuple[float, bytes]], wake: Wake) -> None:
        """Put messages taken but never received back at the head, first in line, in order
        (``stop_receiving`` and ``close``)."""
        if not entries:
            return
        parts: list[bytes] = []
        for expires_at, data in entries:
            parts.append(RECORD.pack(len(data), 0, expires_at))
            parts.append(data)
        blob = b"".join(parts)
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            meta = self._meta_or_create()
            if meta.head - HEADER_SIZE >= len(blob):
                try:
                    os.pwrite(fd, blob, meta.head - len(blob))
                except OSError as exc:
                    raise _space_error(exc, self.path) from exc
                meta.head -= len(blob)
            else:  # no room before the head: write ours and the live records after the tail
                live = os.pread(fd, meta.tail - meta.head, meta.head)
                self._append(meta, (blob, live), len(blob) + len(live))
                meta.head, meta.tail = meta.tail, meta.tail + len(blob) + len(live)
            meta.count += len(entries)
            if meta.hw:
                self._wake_waiters(meta, wake)
            self._write_meta(meta)
        finally:
            unlock(fd)

    def _read_head(
        self, meta: Meta, want: int, now: float, taken: list[tuple[float, bytes]]
    ) -> int:
        """Move ``meta.head`` past up to ``want`` live records (appended to ``taken``) and the
        expired ones before them; returns how many expired."""
        fd, pos, end = self.fd, meta.head, meta.tail
        chunk = _READ_ONE if want == 1 else _READ_MANY
        buf = os.pread(fd, min(end - pos, chunk), pos)
        off = expired = 0
        record = RECORD
        while meta.count and len(taken) < want:
            if end - pos < 16:
                pos = self._unframed(meta, end)
                break
            if off + 16 > len(buf):
                buf, off = os.pread(fd, min(end - pos, chunk), pos), 0
            size, names, expires_at = record.unpack_from(buf, off)
            total = 16 + names + size
            if pos + total > end:
                pos = self._unframed(meta, end)
                break
            if off + total > len(buf):
                buf, off = os.pread(fd, max(total, min(end - pos, chunk)), pos), 0
            start = off + 16 + names
            data = buf[start : start + size]
            pos += total
            off += total
            meta.count -= 1
            if expires_at <= now:
                expired += 1
            else:
                taken.append((expires_at, data))
        meta.head = pos
        return expired

    def _unframed(self, meta: Meta, end: int) -> int:
        """The record at the head runs past the tail: written by no towpath process (they
        write whole records under the lock), so nothing after it can be framed either. Those
        ``meta.count`` records are dropped (counted in ``discarded``) so that the queue goes on
        with what is sent next; returns the new head, ``end``."""
        logger.debug("IPC queue file %s: %d records cannot be framed", self.path, meta.count)
        self.discarded += meta.count
        meta.count = 0
        return end

    def _shed(self, meta: Meta, now: float) -> tuple[int, int]:
        """Drop expired records from the head (a full channel nobody reads). Returns (how
        many, the size to truncate to after the metadata write)."""
        fd, pos, end = self.fd, meta.head, meta.tail
        buf = os.pread(fd, min(end - pos, _READ_MANY), pos)
        off = shed = 0
        while meta.count:
            if end - pos < 16:
                break  # cannot be framed: left to the reader (_unframed)
            if off + 16 > len(buf):
                buf, off = os.pread(fd, min(end - pos, _READ_MANY), pos), 0
            size, names, expires_at = RECORD.unpack_from(buf, off)
            total = 16 + names + size
            if expires_at > now or pos + total > end:
                break
            pos += total
            off += total
            meta.count -= 1
            shed += 1
        if not shed:
            return 0, 0
        committed_head, meta.head = meta.head, pos
        return shed, self._tidy(meta, committed_head, meta.tail)

    # -- waiters (normal channels) -------------------------------------------------------------

    def _wake_waiters(self, meta: Meta, wake: Wake) -> None:
        raw = os.pread(self.fd, meta.hw * SLOT, WAITERS_AT)
        hint = self._hint
        changed = False
        for index in range(meta.hw):
            token = slot_token(raw[index * SLOT : (index + 1) * SLOT])
            if token is not None and not wake(token, hint):
                os.pwrite(self.fd, EMPTY_SLOT, WAITERS_AT + index * SLOT)
                changed = True
        if changed:
            meta.hw = self._high_water(meta.hw)

    def _high_water(self, hw: int) -> int:
        raw = os.pread(self.fd, hw * SLOT, WAITERS_AT)
        while hw and slot_token(raw[(hw - 1) * SLOT : hw * SLOT]) is None:
            hw -= 1
        return hw

    def _register(self, meta: Meta, token: bytes) -> bool:
        """Take a waiter slot. The high-water mark senders scan up to is raised before the
        slot is written and lowered after it is cleared, so a kill in between leaves at worst
        an empty slot inside the mark, never a live one outside it."""
        if self.slot >= 0:
            at = WAITERS_AT + self.slot * SLOT
            if slot_token(os.pread(self.fd, SLOT, at)) == token:
                return True
            self.slot = -1
        raw = os.pread(self.fd, WAITER_SLOTS * SLOT, WAITERS_AT)
        for index in range(WAITER_SLOTS):
            if slot_token(raw[index * SLOT : (index + 1) * SLOT]) is None:
                if index >= meta.hw:
                    meta.hw = index + 1
                    self._write_meta(meta)
                os.pwrite(self.fd, waiter_slot(token), WAITERS_AT + index * SLOT)
                self.slot = index
                return True
        return False

    def _unregister(self, meta: Meta, token: bytes) -> None:
        at = WAITERS_AT + self.slot * SLOT
        if slot_token(os.pread(self.fd, SLOT, at)) == token:
            os.pwrite(self.fd, EMPTY_SLOT, at)
            if self.slot + 1 == meta.hw:
                meta.hw = self._high_water(meta.hw)
                self._write_meta(meta)
        self.slot = -1

    # -- inboxes -------------------------------------------------------------------------------

    def deliver(
        self,
        channels: Sequence[str],
        capacities: Sequence[int],
        data: bytes,
        expires_at: float,
        capacity: int,
        limit: int,
        wake: Wake,
    ) -> tuple[int, list[str]]:
        """Append one message for ``channels`` (all ``!`` channels of this inbox). A channel
        with ``capacities[i]`` messages sent and not received yet (the backlog table) is
        skipped. Returns (OK | FULL | STORE_FULL | DEAD, the ``channels`` skipped as full:
        none when DEAD)."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            probe = os.pread(fd, PROBE, 0)
            meta = pick_meta(probe)
            if meta is None or meta.flags & FLAG_DEAD:
                return DEAD, []
            if not meta.flags & FLAG_SLEEPING and not owner_alive(fd):
                self._bury(meta)
                return DEAD, []
            table = read_table(fd, probe)
            hashes = [channel_hash(c) for c in channels]
            kept: list[int] = []
            skipped: list[int] = []
            for i, (key, cap) in enumerate(zip(hashes, capacities, strict=True)):
                (kept if table.get(key, 0) < cap else skipped).append(i)
            if not kept:
                return FULL, list(channels)
            names = ",".join(channels[i] for i in kept).encode()
            size = RECORD.size + len(names) + len(data)
            if meta.count >= capacity:
                return FULL, list(channels)
            if meta.tail - meta.head + size > limit:
                return STORE_FULL, list(channels)
            if meta.flags & FLAG_SLEEPING:
                owner = slot_token(os.pread(fd, SLOT, OWNER_AT))
                if owner is None or not wake(owner, self._hint):
                    self._bury(meta)
                    return DEAD, []
                meta.flags &= ~FLAG_SLEEPING
            self._append(meta, (RECORD.pack(len(data), len(names), expires_at), names, data), size)
            checkpoint("queue.written")
            meta.tail += size
            meta.count += 1
            self._write_meta(meta)
            adjust(table, {hashes[i]: 1 for i in kept})
            write_table(fd, table)  # after the metadata: a kill between undercounts
            return OK, [channels[i] for i in skipped]
        finally:
            unlock(fd)

    def drain(self, now: float) -> tuple[list[tuple[bytes, float, bytes]], int]:
        """The owner takes every record of its inbox and goes back to sleep (the next sender
        wakes it). Returns ([(names, expires_at, data)], expired deliveries dropped)."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            meta = self._meta()
            if meta is None:
                return [], 0
            records: list[tuple[bytes, float, bytes]] = []
            expired = 0
            lapsed: dict[int, int] = {}  # backlog of what expired unread, to take off
            if meta.count:
                buf = os.pread(fd, meta.tail - meta.head, meta.head)
                off, end, left = 0, len(buf), meta.count
                while off < end:
                    if end - off < 16:
                        meta.count = left
                        self._unframed(meta, end)
                        break
                    size, names, expires_at = RECORD.unpack_from(buf, off)
                    start = off + 16
                    off = start + names + size
                    if off > end:
                        meta.count = left
                        self._unframed(meta, end)
                        break
                    left -= 1
                    if expires_at <= now:
                        try:
                            gone = buf[start : start + names].decode("ascii").split(",")
                        except UnicodeDecodeError:  # no towpath process wrote it
                            gone = [""]
                        expired += len(gone)
                        for channel in gone:
                            key = channel_hash(channel)
                            lapsed[key] = lapsed.get(key, 0) - 1
                    else:
                        names_end = start + names
                        records.append((buf[start:names_end], expires_at, buf[names_end:off]))
            elif meta.flags & FLAG_SLEEPING:
                return records, 0  # nothing came and nothing to change
            meta.count = 0
            meta.flags |= FLAG_SLEEPING
            truncate = self._tidy(meta, meta.head, meta.tail)
            checkpoint("queue.draining")
            self._commit(meta, truncate)
            if lapsed:
                self._adjust(lapsed)
            return records, expired
        finally:
            unlock(fd)

    def adjust_backlog(self, deltas: Mapping[int, int]) -> None:
        """Change channels' counts in the backlog table (``{channel_hash: delta}``): the owner
        takes off what its receives took (or what expired in its memory), and adds what it
        put into its own channels itself."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            self._adjust(deltas)
        finally:
            unlock(fd)

    def _adjust(self, deltas: Mapping[int, int]) -> None:
        probe = os.pread(self.fd, PROBE, 0)
        if pick_meta(probe) is None:
            return
        table = read_table(self.fd, probe)
        adjust(table, deltas)
        write_table(self.fd, table)

    def backlog(self) -> dict[int, int]:
        """The backlog table: ``{channel_hash: messages sent and not received yet}``."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            return read_table(fd, os.pread(fd, PROBE, 0))
        finally:
            unlock(fd)

    def bury(self) -> None:
        """The owner closes its inbox: senders from now on drop what they would send."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            meta = self._meta()
            if meta is not None:
                self._bury(meta)
        finally:
            unlock(fd)

    def _bury(self, meta: Meta) -> None:
        meta.flags |= FLAG_DEAD
        self._write_meta(meta)
        self._unlink_if_same()

    def _unlink_if_same(self) -> None:
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def owner_gone(self) -> bool:
        """Bury this inbox if its owner is gone (a sweep); True when it was."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            meta = self._meta()
            if owner_alive(fd) and (meta is None or not meta.flags & FLAG_DEAD):
                return False  # alive, or a new owner still setting it up
            if meta is None:
                meta = Meta(0, HEADER_SIZE, HEADER_SIZE, 0, 0, 0)
            self._bury(meta)
            return True
        finally:
            unlock(fd)

    # -- both ----------------------------------------------------------------------------------

    def reset(self) -> int:
        """Drop every message (``flush``); returns how many there were."""
        fd = self.fd
        lock(fd, "queue.locked")
        try:
            meta = self._meta()
            if meta is None or meta.flags & FLAG_DEAD:
                return 0
            dropped = meta.count
            meta.count = 0
            self._commit(meta, self._tidy(meta, meta.head, meta.tail))
            if self.kind == INBOX:
                write_table(fd, {})
            return dropped
        finally:
            unlock(fd)

    def __repr__(self) -> str:
        kind = "inbox" if self.kind == INBOX else "channel"
        return f"<QueueFile {kind} {self.name!r} fd={self.fd}>"

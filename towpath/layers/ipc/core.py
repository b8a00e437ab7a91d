"""``IPCChannelLayer``: processes on one machine exchange messages with no server at all.

Where things live (all in one store directory, ``/dev/shm/towpath-ipc-<prefix>/``):

* ``q-<channel>``: the queue file of a normal channel (``queues.py``); any process appends,
  any process takes from the head.
* ``i-<prefix>.<id>!``: the inbox of one layer instance's ``!`` channels; any process appends,
  only its owner reads, and it is gone when the owner is.
* ``w-<id>``: the owner's wake-up FIFO. A sender that adds a message someone is waiting for
  writes one short line to it (the channel name, or ``!`` for the inbox); the owner's event
  loop watches it with ``add_reader``, so an idle process sleeps in the kernel and uses no CPU.
  A FIFO rather than a datagram socket: Linux queues at most ``net.unix.max_dgram_qlen`` (10)
  datagrams per socket, a pipe 64 KiB of lines, and a write to a FIFO whose reader died fails
  at once (``EPIPE``), which is how a dead receiver is found.
* ``groups.sqlite3`` and ``lock``: group memberships, and the lock every group operation holds
  (``groups.py``).

Receives are cancel-safe: what is taken from a queue file goes either straight back to the
receive that took it (no ``await`` in between) or into the local mailbox, from which only a
receive takes it. Normal channels are taken only as far as receivers are waiting; what a
cancelled receive leaves taken is served to the next receive, or put back at the head of its
queue by ``stop_receiving`` and ``close``.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import re
import secrets
import struct
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence

from towpath.layers._group_wait import DEFAULT_GROUP_SEND_TIMEOUT, GroupWaits, MemberLeft, Retry
from towpath.layers._readers import ReaderGuard
from towpath.layers.base import (
    ChannelCapacity,
    ChannelFull,
    ChannelLayerError,
    InvalidChannelLayerError,
    LayerOptions,
    LayerStats,
    Message,
    MessageTooLarge,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
    validate_message,
)
from towpath.layers.ipc.queues import (
    DEAD,
    FULL,
    INBOX,
    OK,
    InboxTaken,
    QueueFile,
    StoreFull,
    channel_hash,
)
from towpath.layers.ipc.reading import Readers
from towpath.layers.ipc.state import LoopState
from towpath.layers.ipc.store import default_directory, prepare_directory, require_directory
from towpath.layers.kernel import LoopStates, MailboxReceiving
from towpath.layers.serializers import build_serializer

__all__ = ["IPCChannelLayer", "IPCLayerStats"]

logger = logging.getLogger("towpath.layers.ipc")

_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


#: the layer's counters (one stats type for every layer; the name stays importable)
IPCLayerStats = LayerStats


class IPCChannelLayer(Readers, MailboxReceiving[LoopState, bytes]):
    """A channel layer for the processes of one machine (an interface server and its
    workers) that needs no Redis or other server: queue files on a tmpfs, guarded by file
    locks, with FIFOs as wake-ups. See ``docs/ipc.md``.

    Options: ``prefix`` (``"towpath"``; applications with different prefixes never see each
    other), ``expiry``, ``group_expiry``, ``capacity``, ``channel_capacity``,
    ``symmetric_encryption_keys``, ``serializer_format`` as in the other layers, and:

    * ``directory`` (``/dev/shm``, else the temporary directory): the existing directory in
      which the store directory ``towpath-ipc-<prefix>`` is made (a missing one is an
      ``InvalidChannelLayerError``, never created); every process must name the same;
    * ``max_message_bytes`` (1 MiB): a larger serialised message raises ``MessageTooLarge``;
    * ``queue_bytes`` (64 MiB): the most bytes of messages one channel or one process's inbox
      holds; a send beyond it raises ``StoreFull`` (a ``ChannelFull``);
    * ``inbox_capacity`` (``INBOX_CAPACITY_FACTOR`` = 10,000 times ``capacity``, a guard):
      messages a process's inbox may hold unread
      (a process that stopped reading); each ``!`` channel still has its own ``capacity``;
    * ``group_send_timeout`` (5 s): how long a ``group_send`` waits for a full member before
      it skips it (``towpath/layers/_group_wait.py``); 0 skips at once;
    * ``clock`` (``time.time``): a callable returning epoch seconds, what expiry is computed
      by; a test gives one it moves instead of sleeping (every process must agree on it).
    """

    def __init__(
        self,
        prefix: str = "towpath",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: ChannelCapacity | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        *,
        directory: str | os.PathLike[str] | None = None,
        max_message_bytes: int = 1 << 20,
        queue_bytes: int = 64 << 20,
        inbox_capacity: int | None = None,
        group_send_timeout: float = DEFAULT_GROUP_SEND_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(LayerOptions.pick(locals()))
        #: epoch seconds, what expiry is computed by (every process must agree: injectable
        #: for tests, whose processes then share one)
        self.clock: Callable[[], float] = time.time if clock is None else clock
        if not supported():
            raise InvalidChannelLayerError(
                "IPCChannelLayer needs 64-bit Linux ≥ 3.15 (open-file-description locks, "
                f"pipe sizes); this is {sys.platform}: use RedisChannelLayer here"
            )
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise InvalidChannelLayerError(
                f"prefix must be 1 to 64 ASCII letters, digits, '_', '.' or '-', not {prefix!r}"
            )
        if not _whole(queue_bytes) or queue_bytes < 4096:
            raise InvalidChannelLayerError(
                f"queue_bytes must be a whole number of bytes ≥ 4096, not {queue_bytes!r}"
            )
        if not _whole(max_message_bytes) or not 1 <= max_message_bytes <= queue_bytes:
            raise InvalidChannelLayerError(
                f"max_message_bytes must be a whole number of bytes from 1 to queue_bytes "
                f"({queue_bytes}), not {max_message_bytes!r}"
            )
        self.prefix = prefix
        base = os.fspath(directory) if directory is not None else default_directory()
        require_directory(base)
        self.path = os.path.join(os.path.abspath(base), f"towpath-ipc-{prefix}")
        self.max_message_bytes = max_message_bytes
        self.queue_bytes = queue_bytes
        self.inbox_capacity = self.options.inbox_limit
        self.stats = LayerStats(kept=("dead",))
        self._group_waits = GroupWaits(group_send_timeout, memory=self.group_expiry)
        self._guard = ReaderGuard(self.stats, logger)
        self._serializer = build_serializer(
            self.options.serializer_format, self.options.symmetric_encryption_keys
        )
        self._serial = itertools.count()
        self._ready = False
        self._swept = False
        self._states: LoopStates[LoopState] = LoopStates(self, self._new_state)
        _INSTANCES.add(self)

    # -- per-loop state ------------------------------------------------------------------------

    def _new_state(self, loop: asyncio.AbstractEventLoop) -> LoopState:
        if not self._ready:
            prepare_directory(self.path)
            self._ready = True
        token = f"{self.client_prefix}-{next(self._serial)}".encode()
        state = LoopState.open(
            self.path,
            token,
            sweep_first=not self._swept,
            on_expired=self._expired,
            clock=self.clock,
        )
        self._swept = True
        state.next_sweep = self.clock() + self.expiry
        loop.add_reader(state.wake_fd, self._on_wake, state)
        return state

    def _state(self) -> LoopState:
        return self._states.current()

    def _claim(self, state: LoopState, inbox: str) -> QueueFile:
        try:
            queue = QueueFile.claim(self.path, inbox, state.token)
        except InboxTaken:
            raise ChannelLayerError(
                f"the process-specific channels {inbox}... are read by another process: a "
                "'!' channel is received only by the process (and event loop) whose "
                "new_channel() made it"
            ) from None
        state.own_inbox(queue)
        return queue

    # -- sending -------------------------------------------------------------------------------

    def _encode(self, channel: str, message: Message) -> bytes:
        data = self._serializer.serialize(validate_message(message))
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(
                f"message for {channel!r} is {len(data)} bytes serialised, over "
                f"max_message_bytes={self.max_message_bytes} of the IPC layer; send large "
                "bodies in chunks (more_body) or raise max_message_bytes; nothing was sent"
            )
        return data

    async def send(self, channel: str, message: Message) -> None:
        require_valid_channel_name(channel)
        data = self._encode(channel, message)
        status = self._deliver(self._state(), channel, data, self.clock())
        if status == OK:
            return
        if status == DEAD:
            self.stats.dead += 1
            return
        self.stats.full += 1
        if status == FULL:
            raise ChannelFull(channel)
        raise self._store_full(channel)

    def _store_full(self, channel: str) -> StoreFull:
        return StoreFull(
            f"{channel!r} holds queue_bytes={self.queue_bytes} bytes of messages nobody "
            "received; raise queue_bytes or receive faster; nothing was sent"
        )

    def _deliver(self, state: LoopState, channel: str, data: bytes, now: float) -> int:
        """Queue ``data`` on ``channel``: OK, FULL, STORE_FULL, or DEAD (a ``!`` channel whose
        process is gone). A file system out of space raises ``StoreFull``."""
        expires_at = now + self.expiry
        if "!" not in channel:
            queue = state.queue(channel)
            capacity = self.get_capacity(channel)
            status, shed = queue.push(
                data, expires_at, capacity, self.queue_bytes, now, state.waker
            )
            if shed:
                self.stats.expired += shed
            return status
        inbox = non_local_name(channel)
        own = state.own.get(inbox)
        if own is not None:
            # Ours: whatever other processes sent first goes ahead, then this, locally.
            self._drain(state, own, now)
            if not self._put_own(state, channel, expires_at, data):
                return FULL
            own.adjust_backlog({channel_hash(channel): 1})
            return OK
        other = state.inbox(inbox)
        if other is None:
            return DEAD
        status, _ = other.deliver(
            (channel,),
            (self.get_capacity(channel),),
            data,
            expires_at,
            self.inbox_capacity,
            self.queue_bytes,
            state.waker,
        )
        if status == DEAD:
            state.forget_inbox(inbox)
        return status

    def _put_own(self, state: LoopState, channel: str, expires_at: float, data: bytes) -> bool:
        """Queue a message for one of this loop's own ``!`` channels, its inbox just drained
        (so what waits locally is its whole backlog); False when full. The caller counts it
        in the inbox's backlog table, for other processes' senders."""
        return state.mailbox.put_within(channel, self.get_capacity(channel), expires_at, data)

    # -- capacity of own ! channels ------------------------------------------------------------

    def _release(self, state: LoopState, channel: str, count: int) -> None:
        """``count`` messages of the own ``!`` channel ``channel`` left the backlog (received,
        or expired unread): lower its count in the inbox's backlog table at the end of this
        tick, with every other such change of the tick in one write per inbox."""
        inbox = non_local_name(channel)
        if inbox not in state.own:
            return
        deltas = state.released.setdefault(inbox, {})
        key = channel_hash(channel)
        deltas[key] = deltas.get(key, 0) - count
        if not state.release_scheduled:
            state.release_scheduled = True
            asyncio.get_running_loop().call_soon(self._release_now, state)

    def _release_now(self, state: LoopState) -> None:
        state.release_scheduled = False
        released, state.released = state.released, {}
        if state.closed:
            return
        for inbox, deltas in released.items():
            queue = state.own.get(inbox)
            if queue is not None:
                queue.adjust_backlog(deltas)

    def _expired(self, state: LoopState, channel: str, count: int) -> None:
        self.stats.expired += count
        if "!" in channel:
            self._release(state, channel, count)

    # -- receiving -----------------------------------------------------------------------------

    def _taken(self, state: LoopState, channel: str, data: bytes) -> Message | None:
        """A message just taken from the mailbox or a queue file, decoded (None: undecodable,
        dropped); a ``!`` channel's backlog goes down by one."""
        if "!" in channel:
            self._release(state, channel, 1)
        try:
            return self._serializer.deserialize(data)
        except Exception as exc:
            self._guard.dropped(self._reader_of(channel), exc, data)
            return None

    async def stop_receiving(self, channels: Iterable[str]) -> None:
        """This loop will not receive the normal ``channels`` again: leave their waiter lists
        and put what was taken for them and not received back at the head of each queue."""
        state = self._states.get()
        if state is None:
            return
        now = self.clock()
        for channel in {c for c in channels if "!" not in c}:
            entries = state.mailbox.take(channel)
            queue = state.queues.get(channel)
            if queue is None:
                continue
            queue.take(0, now, state.token, wait_if_short=False, others=False)
            state.registered.discard(channel)
            state.starved.discard(channel)
            if entries:
                queue.give_back(list(entries), state.waker)

    # -- names and groups ----------------------------------------------------------------------

    def owns_inbox(self, inbox: str) -> bool:
        """``prefix.<client-id>-<loop>!``: made by this instance, in any of its event loops."""
        marker = f".{self.client_prefix}-"
        at = inbox.rfind(marker)
        return at >= 0 and inbox.endswith("!") and inbox[at + len(marker) : -1].isdigit()

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new ``!`` channel of this process and event loop,
        ``prefix.<client-id>-<loop>!<random>``. Its inbox is created now, so that what other
        processes send to it is kept from the start."""
        state = self._state()
        name = f"{prefix}.{state.token.decode()}!{os.urandom(8).hex()}"
        require_valid_channel_name(name)
        inbox = non_local_name(name)
        if inbox not in state.own:
            self._drain(state, self._claim(state, inbox), self.clock())
        return name

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        now = self.clock()
        with state.store.locked():
            state.store.add(group, channel, now + self.group_expiry, now)

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        with state.store.locked():
            state.store.discard(group, channel)
        self._group_waits.left(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Deliver ``message`` to every member in one critical section under the store's lock:
        every member sees the group's messages in the same order, and a member added before
        the call began gets it (the handback cut relies on both). A full member is waited for
        (``towpath/layers/_group_wait.py``); a member whose process is gone is counted as
        ``dead``."""
        require_valid_group_name(group)
        data = self._encode(group, message)
        state = self._state()
        waits = self._group_waits
        began = waits.clock()
        now = self.clock()
        full: list[str] = []
        dead = 0
        with state.store.locked():
            members = state.store.members(group, now)
            if not members:
                return
            inboxes: dict[str, list[str]] = {}
            for channel in members:
                if "!" in channel:
                    inboxes.setdefault(non_local_name(channel), []).append(channel)
                elif self._deliver_or_full(state, channel, data, now) != OK:
                    full.append(channel)
            for inbox, channels in inboxes.items():
                own = state.own.get(inbox)
                if own is not None:
                    full += self._put_own_many(state, own, channels, data, now)
                    continue
                queue = state.inbox(inbox)
                if queue is None:
                    dead += len(channels)
                    continue
                try:
                    status, skipped = queue.deliver(
                        channels,
                        [self.get_capacity(channel) for channel in channels],
                        data,
                        now + self.expiry,
                        self.inbox_capacity,
                        self.queue_bytes,
                        state.waker,
                    )
                except StoreFull:
                    status, skipped = FULL, channels
                if status == DEAD:
                    state.forget_inbox(inbox)
                    dead += len(channels)
                else:
                    full += skipped
        if dead:
            self.stats.dead += dead
        if full or group in waits.stalled:
            retry = self._member_retry(group, data)
            await waits.settle(group, message, full, len(members), began, retry, self.stats, logger)

    def _put_own_many(
        self, state: LoopState, own: QueueFile, channels: list[str], data: bytes, now: float
    ) -> list[str]:
        """A group message for ``channels``, this loop's own ``!`` channels of inbox ``own``;
        returns those that were full."""
        self._drain(state, own, now)
        full, added = [], {}
        for channel in channels:
            if self._put_own(state, channel, now + self.expiry, data):
                added[channel_hash(channel)] = 1
            else:
                full.append(channel)
        if added:
            own.adjust_backlog(added)
        return full

    def _deliver_or_full(self, state: LoopState, channel: str, data: bytes, now: float) -> int:
        """:meth:`_deliver`, with a file system out of space answered as FULL."""
        try:
            return self._deliver(state, channel, data, now)
        except StoreFull:
            return FULL

    def _member_retry(self, group: str, data: bytes) -> Retry:
        """group_send's delivery of ``data`` to one member found full: under the store's lock,
        if it is still a member (see ``_group_wait``)."""

        async def retry(channel: str, message: Message) -> None:
            state = self._state()
            now = self.clock()
            with state.store.locked():
                if not state.store.is_member(group, channel, now):
                    raise MemberLeft(channel)
                status = self._deliver_or_full(state, channel, data, now)
            if status == DEAD:
                self.stats.dead += 1
                raise MemberLeft(channel)
            if status != OK:
                raise ChannelFull(channel)

        return retry

    # -- housekeeping --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Drop every message and membership under this prefix, in every process's queues;
        what other processes had already taken into their own memory stays theirs."""
        state = self._state()
        state.mailbox.clear()
        state.released.clear()
        self._group_waits.clear()
        with state.store.locked():
            state.store.clear()
            with os.scandir(self.path) as entries:
                names = [entry.name for entry in entries]
            for name in names:
                if name.startswith("q-"):
                    state.queue(name[2:]).reset()
                elif name.startswith("i-"):
                    mine = state.own.get(name[2:])
                    if mine is not None:
                        mine.reset()
                        continue
                    other = QueueFile.open(self.path, name[2:], INBOX, create=False)
                    if other is not None:
                        try:
                            other.reset()
                        finally:
                            other.close()

    async def close(self) -> None:
        """Leave every waiter list, put fetched-but-unreceived messages of normal channels
        back at the head of their queues, close this loop's inboxes (later sends to their
        channels are dropped and counted as ``dead``) and release every file."""
        loop = asyncio.get_running_loop()
        state = self._states.pop(loop)
        if state is None:
            return
        state.closed = True
        loop.remove_reader(state.wake_fd)
        if state.poll is not None:
            state.poll.cancel()
        try:
            now = self.clock()
            for channel, entries in state.mailbox.clear().items():
                if "!" not in channel and entries:
                    state.queue(channel).give_back(list(entries), state.waker)
            for channel in state.registered | state.starved:
                state.queues[channel].take(0, now, state.token, wait_if_short=False, others=False)
            for queue in state.own.values():
                queue.bury()
        finally:
            state.release()

    def _abandon(self) -> None:
        """In a child process after ``fork()``: let go of the parent's files without touching
        its locks, and start afresh with new names."""
        for state in self._states.values():
            _ABANDONED.append(state.abandon())
        self._states.clear()
        self.client_prefix = secrets.token_hex(6)

    def __repr__(self) -> str:
        return (
            f"<IPCChannelLayer store={self.path} capacity={self.capacity} "
            f"expiry={self.expiry:g}s max_message_bytes={self.max_message_bytes}>"
        )


def supported() -> bool:
    """Whether this platform has what the IPC layer relies on."""
    return (
        sys.platform.startswith("linux")
        and struct.calcsize("P") == 8
        and hasattr(fcntl, "F_OFD_GETLK")
        and hasattr(fcntl, "F_GETPIPE_SZ")
    )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_INSTANCES: weakref.WeakSet[IPCChannelLayer] = weakref.WeakSet()
# What a forked child must not close (a SQLite connection closing could touch the parent's
# database state); kept referenced for the child's lifetime.
_ABANDONED: list[object] = []


def _after_fork_in_child() -> None:
    for layer in list(_INSTANCES):
        layer._abandon()


os.register_at_fork(after_in_child=_after_fork_in_child)

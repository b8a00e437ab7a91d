"""The in-memory channel layer: the whole contract inside one process.

For tests, ``towpath runserver`` and single-process hosting. ``runworker`` refuses it: nothing
crosses a process boundary.

Messages are serialised on send and deserialised on receive, exactly as a networked layer does
it, so a message that would not survive Redis does not survive here either, a receiver never
shares a mutable dict with its sender, and a ``group_send`` encodes once however many members
it reaches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence

from towpath.layers.base import (
    BaseChannelLayer,
    ChannelCapacity,
    ChannelFull,
    Message,
    require_valid_channel_name,
    require_valid_group_name,
    validate_message,
)
from towpath.layers.serializers import build_serializer

__all__ = ["InMemoryChannelLayer"]

logger = logging.getLogger("towpath.layers.memory")

_Queue = deque[tuple[float, bytes]]


class InMemoryChannelLayer(BaseChannelLayer):
    """A channel layer that lives in this process's memory.

    Same options as the networked layers: ``expiry``, ``group_expiry``, ``capacity``,
    ``channel_capacity``, ``symmetric_encryption_keys``, ``serializer_format``.
    """

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: ChannelCapacity | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer_format: str = "msgpack",
    ) -> None:
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self._serializer = build_serializer(serializer_format, symmetric_encryption_keys)
        self._queues: dict[str, _Queue] = {}
        # Receivers waiting per channel, oldest first; a dict is an ordered set of futures.
        self._waiters: dict[str, dict[asyncio.Future[None], None]] = {}
        # group -> {channel: membership expires at}
        self._groups: dict[str, dict[str, float]] = {}
        self._next_sweep = time.monotonic() + self.expiry
        self._turn = 0

    # -- sending -------------------------------------------------------------------------------

    def _push(self, channel: str, expires_at: float, data: bytes) -> bool:
        """Queue ``data`` on ``channel`` and wake one receiver; False when it is full."""
        queue = self._queues.get(channel)
        if queue is None:
            queue = self._queues[channel] = deque()
        elif len(queue) >= self.get_capacity(channel):
            self._drop_expired(queue, time.monotonic())
            if len(queue) >= self.get_capacity(channel):
                return False
        queue.append((expires_at, data))
        waiters = self._waiters.get(channel)
        if waiters:
            self._wake_one(waiters)
        return True

    @staticmethod
    def _wake_one(waiters: dict[asyncio.Future[None], None]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    async def send(self, channel: str, message: Message) -> None:
        require_valid_channel_name(channel)
        data = self._serializer.serialize(validate_message(message))
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        if not self._push(channel, now + self.expiry, data):
            self.stats.full += 1
            raise ChannelFull(channel)

    # -- receiving -----------------------------------------------------------------------------

    def _drop_expired(self, queue: _Queue, now: float) -> None:
        while queue and queue[0][0] <= now:
            queue.popleft()
            self.stats.expired += 1

    def _pop(self, channels: Sequence[str]) -> tuple[str, bytes] | None:
        """Take the next live message from the first non-empty channel, starting at a turn
        that moves on every call so that busy channels share the receiver fairly."""
        count = len(channels)
        start = self._turn % count
        self._turn += 1
        now = time.monotonic()
        for offset in range(count):
            channel = channels[(start + offset) % count]
            queue = self._queues.get(channel)
            if not queue:
                continue
            self._drop_expired(queue, now)
            if queue:
                data = queue.popleft()[1]
                if not queue and not self._waiters.get(channel):
                    del self._queues[channel]
                return channel, data
        return None

    async def receive_many(self, channels: Iterable[str]) -> tuple[str, Message]:
        names = tuple(channels)
        if not names:
            raise TypeError("receive_many() needs at least one channel name")
        for name in names:
            require_valid_channel_name(name, receive=True)
        while True:
            # Taking a message and returning it happen with no await in between, so a
            # cancelled receive can never have taken a message it did not hand out.
            found = self._pop(names)
            if found is not None:
                return found[0], self._serializer.deserialize(found[1])
            await self._wait(names)

    async def _wait(self, channels: Sequence[str]) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for channel in channels:
            self._waiters.setdefault(channel, {})[waiter] = None
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # We were woken for a message but cancelled before taking it: pass the
                # wake-up on so the message does not wait for the next send.
                self._hand_on(channels, waiter)
            raise
        finally:
            for channel in channels:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.pop(waiter, None)
                    if not waiters:
                        del self._waiters[channel]

    def _hand_on(self, channels: Sequence[str], waiter: asyncio.Future[None]) -> None:
        for channel in channels:
            if self._queues.get(channel):
                others = {w: None for w in self._waiters.get(channel, {}) if w is not waiter}
                if others:
                    self._wake_one(others)
                    return

    # -- names and groups ----------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        name = self._random_channel_name(prefix)
        require_valid_channel_name(name)
        return name

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        self._groups.setdefault(group, {})[channel] = time.monotonic() + self.group_expiry

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]

    async def group_send(self, group: str, message: Message) -> None:
        require_valid_group_name(group)
        data = self._serializer.serialize(validate_message(message))
        members = self._groups.get(group)
        if not members:
            return
        now = time.monotonic()
        expires_at = now + self.expiry
        stale: list[str] = []
        full = 0
        for channel, member_until in members.items():
            if member_until <= now:
                stale.append(channel)
            elif not self._push(channel, expires_at, data):
                full += 1
        for channel in stale:
            del members[channel]
        if full:
            self.stats.group_full += full
            logger.info("group_send to %r skipped %d full member channel(s)", group, full)

    # -- housekeeping --------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Drop expired messages everywhere, so channels nobody reads do not pile up."""
        self._next_sweep = now + self.expiry
        for channel in list(self._queues):
            queue = self._queues[channel]
            self._drop_expired(queue, now)
            if not queue and channel not in self._waiters:
                del self._queues[channel]
        for group in list(self._groups):
            members = self._groups[group]
            for channel in [c for c, until in members.items() if until <= now]:
                del members[channel]
            if not members:
                del self._groups[group]

    async def flush(self) -> None:
        self._queues.clear()
        self._groups.clear()

    async def close(self) -> None:
        await self.flush()

    def __repr__(self) -> str:
        return (
            f"<InMemoryChannelLayer channels={len(self._queues)} groups={len(self._groups)} "
            f"waiting={len(self._waiters)} expiry={self.expiry:g}s capacity={self.capacity}>"
        )

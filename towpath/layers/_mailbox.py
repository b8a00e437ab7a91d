"""Per-channel FIFO buffers with waiting receivers: the receive side every layer shares.

The in-memory layer keeps its channels here; networked layers keep here what their readers
fetched for this process. Taking an item and returning it happen with no ``await`` in between,
so a receive cancelled while waiting has taken nothing, and a waiter woken for an item but
cancelled before taking it passes the wake-up on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Channels of ``(expires_at, item)`` entries and the receivers waiting on them."""

    def __init__(
        self,
        clock: Callable[[], float],
        on_expired: Callable[[str, int], None] | None = None,
    ) -> None:
        self.clock = clock
        self.on_expired = on_expired
        self.queues: dict[str, deque[tuple[float, T]]] = {}
        # Receivers waiting per channel, oldest first; a dict is an ordered set of futures.
        self.waiters: dict[str, dict[asyncio.Future[None], None]] = {}
        self._turn = 0

    def length(self, channel: str) -> int:
        queue = self.queues.get(channel)
        return len(queue) if queue else 0

    def put(self, channel: str, expires_at: float, item: T) -> int:
        """Append an entry and wake one receiver waiting on ``channel``; returns how many
        entries the channel holds now."""
        queue = self.queues.get(channel)
        if queue is None:
            queue = self.queues[channel] = deque()
        queue.append((expires_at, item))
        waiters = self.waiters.get(channel)
        if waiters:
            _wake_one(waiters)
        return len(queue)

    def put_within(
        self, channel: str, capacity: int, expires_at: float, item: T, now: float | None = None
    ) -> bool:
        """:meth:`put`, if ``channel`` holds fewer than ``capacity`` entries (expired ones,
        as of ``now`` or the clock, shed first); False when it is full. Every layer's delivery
        to a channel read by this very process goes through here: exact capacity, no server."""
        queue = self.queues.get(channel)
        if queue is not None and len(queue) >= capacity:
            self.drop_expired(channel, self.clock() if now is None else now)
            if len(queue) >= capacity:
                return False
        self.put(channel, expires_at, item)
        return True

    def put_many(
        self, channels: Iterable[str], expires_at: float, item: T, capacity: Callable[[str], int]
    ) -> list[str]:
        """Append ``item`` to each channel holding fewer than ``capacity(channel)`` entries
        (expired ones shed first); returns the channels that were full."""
        queues, waiters, now = self.queues, self.waiters, self.clock()
        full: list[str] = []
        for channel in channels:
            queue = queues.get(channel)
            if queue is None:
                queue = queues[channel] = deque()
            elif len(queue) >= capacity(channel):
                self.drop_expired(channel, now)
                if len(queue) >= capacity(channel):
                    full.append(channel)
                    continue
            queue.append((expires_at, item))
            waiting = waiters.get(channel)
            if waiting:
                _wake_one(waiting)
        return full

    def drop_expired(self, channel: str, now: float) -> int:
        queue = self.queues.get(channel)
        dropped = 0
        while queue and queue[0][0] <= now:
            queue.popleft()
            dropped += 1
        if dropped and self.on_expired is not None:
            self.on_expired(channel, dropped)
        return dropped

    def pop(self, channels: Sequence[str]) -> tuple[str, T] | None:
        """Take the next live entry from the first non-empty channel, starting at a turn that
        moves on every call, so that busy channels share the receiver fairly."""
        count = len(channels)
        start = self._turn % count
        self._turn += 1
        for offset in range(count):
            channel = channels[(start + offset) % count]
            item = self.pop_one(channel)
            if item is not None:
                return channel, item
        return None

    def pop_one(self, channel: str) -> T | None:
        """The next live entry of one channel (``None``: none), the common ``receive``. Items
        are never ``None`` themselves (layers keep bytes here)."""
        queue = self.queues.get(channel)
        if not queue:
            return None
        now = self.clock()
        if queue[0][0] <= now:
            self.drop_expired(channel, now)
            if not queue:
                return None
        item = queue.popleft()[1]
        if not queue and channel not in self.waiters:
            del self.queues[channel]
        return item

    async def wait(self, channels: Sequence[str]) -> None:
        """Wait until an entry may be available on one of ``channels``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for channel in channels:
            self.waiters.setdefault(channel, {})[waiter] = None
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Woken for an entry but cancelled before taking it: pass the wake-up on so
                # the entry does not wait for the next put.
                self._hand_on(channels, waiter)
            raise
        finally:
            for channel in channels:
                waiters = self.waiters.get(channel)
                if waiters is not None:
                    waiters.pop(waiter, None)
                    if not waiters:
                        del self.waiters[channel]
                        if channel in self.queues and not self.queues[channel]:
                            del self.queues[channel]

    def _hand_on(self, channels: Sequence[str], waiter: asyncio.Future[None]) -> None:
        for channel in channels:
            if self.queues.get(channel):
                others = {w: None for w in self.waiters.get(channel, {}) if w is not waiter}
                if others:
                    _wake_one(others)
                    return

    def waiting(self, channel: str) -> int:
        """How many receivers wait on ``channel`` right now."""
        waiters = self.waiters.get(channel)
        return len(waiters) if waiters else 0

    def wake_all(self) -> None:
        """Wake every waiter (they re-check and wait again): used after a reconnect."""
        for waiters in self.waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def sweep(self, now: float) -> None:
        """Drop expired entries everywhere and forget empty channels nobody waits on."""
        for channel in list(self.queues):
            self.drop_expired(channel, now)
            if not self.queues[channel] and channel not in self.waiters:
                del self.queues[channel]

    def take(self, channel: str) -> deque[tuple[float, T]]:
        """Empty one channel; returns what was there."""
        return self.queues.pop(channel, None) or deque()

    def clear(self) -> dict[str, deque[tuple[float, T]]]:
        """Empty every channel; returns what was there."""
        queues, self.queues = self.queues, {}
        return queues


def _wake_one(waiters: dict[asyncio.Future[None], None]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
            return

"""The in-memory channel layer: the whole contract inside one process.

For tests, ``towpath runserver`` and single-process hosting. ``runworker`` refuses it: nothing
crosses a process boundary.

Messages are serialised on send and deserialised on receive, exactly as a networked layer does
it, so a message that would not survive Redis does not survive here either, a receiver never
shares a mutable dict with its sender, and a ``group_send`` encodes once however many members
it reaches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from towpath.layers._group_wait import DEFAULT_GROUP_SEND_TIMEOUT, GroupWaits, MemberLeft, Retry
from towpath.layers._mailbox import Mailbox
from towpath.layers.base import (
    BaseChannelLayer,
    ChannelCapacity,
    ChannelFull,
    LayerOptions,
    Message,
    require_valid_channel_name,
    require_valid_group_name,
    validate_message,
)
from towpath.layers.serializers import build_serializer

__all__ = ["InMemoryChannelLayer"]

logger = logging.getLogger("towpath.layers.memory")


class InMemoryChannelLayer(BaseChannelLayer):
    """A channel layer that lives in this process's memory.

    Same options as the networked layers: ``expiry``, ``group_expiry``, ``capacity``,
    ``channel_capacity``, ``symmetric_encryption_keys``, ``serializer_format``,
    ``group_send_timeout`` (5 s: how long a ``group_send`` waits for a full member before it
    skips it; 0 skips at once), and ``clock`` (a callable returning seconds, ``time.monotonic``
    by default): what expiry is computed by, so a test can move time instead of sleeping.
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
        group_send_timeout: float = DEFAULT_GROUP_SEND_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(LayerOptions.pick(locals()))
        #: seconds (monotonic by default), what expiry is computed by: injectable for tests
        self.clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._serializer = build_serializer(
            self.options.serializer_format, self.options.symmetric_encryption_keys
        )
        self._mailbox: Mailbox[bytes] = Mailbox(self.clock, self._count_expired)
        # group -> {channel: membership expires at}
        self._groups: dict[str, dict[str, float]] = {}
        self._next_sweep = self.clock() + self.expiry
        self._group_waits = GroupWaits(group_send_timeout, memory=self.group_expiry)

    def _count_expired(self, channel: str, count: int) -> None:
        self.stats.expired += count

    # -- sending -------------------------------------------------------------------------------

    def _push(self, channel: str, expires_at: float, data: bytes) -> bool:
        """Queue ``data`` on ``channel`` and wake one receiver; False when it is full."""
        return self._mailbox.put_within(channel, self.get_capacity(channel), expires_at, data)

    async def send(self, channel: str, message: Message) -> None:
        require_valid_channel_name(channel)
        data = self._serializer.serialize(validate_message(message))
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        if not self._push(channel, now + self.expiry, data):
            self.stats.full += 1
            raise ChannelFull(channel)

    # -- receiving -----------------------------------------------------------------------------

    async def _receive(self, names: tuple[str, ...]) -> tuple[str, Message]:
        mailbox = self._mailbox
        while True:
            found = mailbox.pop(names)
            if found is not None:
                return found[0], self._serializer.deserialize(found[1])
            await mailbox.wait(names)

    # -- names and groups ----------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        name = self._random_channel_name(prefix)
        require_valid_channel_name(name)
        return name

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        self._groups.setdefault(group, {})[channel] = self.clock() + self.group_expiry

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]
        self._group_waits.left(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        require_valid_group_name(group)
        data = self._serializer.serialize(validate_message(message))
        members = self._groups.get(group)
        if not members:
            return
        waits = self._group_waits
        began = waits.clock()
        now = self.clock()
        stale = [channel for channel, until in members.items() if until <= now]
        for channel in stale:
            del members[channel]
        full = self._mailbox.put_many(members, now + self.expiry, data, self.get_capacity)
        if full or group in waits.stalled:
            retry = self._member_retry(group, data)
            await waits.settle(group, message, full, len(members), began, retry, self.stats, logger)

    def _member_retry(self, group: str, data: bytes) -> Retry:
        """group_send's delivery of ``data`` to one member found full (see ``_group_wait``)."""

        async def retry(channel: str, message: Message) -> None:
            now = self.clock()
            if self._groups.get(group, {}).get(channel, now) <= now:
                raise MemberLeft(channel)
            if not self._push(channel, now + self.expiry, data):
                raise ChannelFull(channel)

        return retry

    # -- housekeeping --------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Drop expired messages everywhere, so channels nobody reads do not pile up."""
        self._next_sweep = now + self.expiry
        self._mailbox.sweep(now)
        for group in list(self._groups):
            members = self._groups[group]
            for channel in [c for c, until in members.items() if until <= now]:
                del members[channel]
            if not members:
                del self._groups[group]

    async def flush(self) -> None:
        self._mailbox.clear()
        self._groups.clear()
        self._group_waits.clear()

    async def close(self) -> None:
        await self.flush()

    def __repr__(self) -> str:
        return (
            f"<InMemoryChannelLayer channels={len(self._mailbox.queues)} "
            f"groups={len(self._groups)} waiting={len(self._mailbox.waiters)} "
            f"expiry={self.expiry:g}s capacity={self.capacity}>"
        )

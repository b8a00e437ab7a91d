"""Per-event-loop state of a RabbitMQ layer: its links, channels, local buffer and bookkeeping.

A layer instance keeps one :class:`LoopState` per event loop it is used in (``async_to_sync``
runs each call in a new loop), exactly as the Redis layer does.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import aiormq.abc

from towpath.layers._mailbox import Mailbox
from towpath.layers.rabbitmq.link import Link, Slot

__all__ = ["DROPPED", "Consumer", "Fetcher", "Item", "LocalMailbox", "LoopState", "spawn"]

logger = logging.getLogger("towpath.layers.rabbitmq")

#: A buffered message: its serialised data, and for a normal channel the consumer that received
#: it and the delivery tag to acknowledge when a receiver takes it (None, 0 for ``!`` channels,
#: which the broker forgets as soon as it delivers them).
Item: TypeAlias = "tuple[bytes, Consumer | None, int]"

#: The data of a placeholder for a delivery dropped as undecodable (and counted so): it stays
#: in the buffer, already expired, only so that its acknowledgement goes out in turn, and is
#: not counted as expired again. Told apart by identity.
DROPPED: Final = b"\x00towpath: dropped as undecodable\x00"


@dataclass(eq=False)
class Consumer:
    """One subscription to a normal channel's queue, on an AMQP channel of its own: giving
    back what nobody took is closing that channel (the broker requeues every unacknowledged
    message, in order), and a consumer the broker cancels (its queue was deleted) ends
    nothing else. A lost subscription is replaced by a new ``Consumer``, never reused, so an
    acknowledgement can only ever reach the channel its delivery tag belongs to."""

    slot: Slot
    #: deliveries are buffered only while live; what arrives after is the broker's again
    live: bool = True
    #: set when it ended: cancelled by the broker, its channel or connection closed
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: highest delivery tag taken or dropped and not yet acknowledged (0: none)
    ack_upto: int = 0
    ack_scheduled: bool = False
    #: set once it is consuming and has delivered its first message, if its queue had any
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def ack(self, tag: int) -> None:
        """Acknowledge up to ``tag`` soon (one ``multiple`` ack per event-loop tick). Takes
        happen in delivery order (FIFO per channel), so every lower tag is settled too."""
        if tag > self.ack_upto:
            self.ack_upto = tag
        if not self.ack_scheduled:
            self.ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_acks)

    def _send_acks(self) -> None:
        self.ack_scheduled = False
        channel = self.slot.ready()
        tag, self.ack_upto = self.ack_upto, 0
        if channel is None or not tag:
            return  # the channel closed: the broker requeued what it had not been told of
        task = asyncio.get_running_loop().create_task(_ack(channel, tag))
        task.add_done_callback(_retrieve)

    async def flush_acks(self) -> None:
        """Send the pending acknowledgement now (before the channel is closed)."""
        channel = self.slot.ready()
        tag, self.ack_upto = self.ack_upto, 0
        if channel is not None and tag:
            try:
                await channel.basic_ack(tag, multiple=True, wait=False)
            except Exception:  # the channel closed meanwhile: the broker requeues it all
                return


@dataclass(eq=False)
class Fetcher:
    """Keeps a :class:`Consumer` on one normal channel while receivers here want it."""

    channel: str
    queue: str
    task: asyncio.Task[None] | None = None
    consumer: Consumer | None = None
    #: ``stop_receiving``/``close``: fetch nothing more
    stopping: bool = False
    #: loop time of the last receive that wanted this channel
    last_wanted: float = 0.0
    #: set once it made its first consumer (or gave up)
    started: asyncio.Event = field(default_factory=asyncio.Event)


async def _ack(channel: aiormq.abc.AbstractChannel, tag: int) -> None:
    await channel.basic_ack(tag, multiple=True, wait=False)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a closed channel: nothing to acknowledge any more


class LocalMailbox(Mailbox[Item]):
    """The shared :class:`Mailbox`, acknowledging the normal-channel messages it drops as
    expired (an unacknowledged message would hold a prefetch slot for good)."""

    def drop_expired(self, channel: str, now: float) -> int:
        queue = self.queues.get(channel)
        dropped = 0
        while queue and queue[0][0] <= now:
            _, (data, consumer, tag) = queue.popleft()
            if consumer is not None:
                consumer.ack(tag)
            if data is not DROPPED:
                dropped += 1
        if dropped and self.on_expired is not None:
            self.on_expired(channel, dropped)
        return dropped


@dataclass(eq=False)
class LoopState:
    """Everything of one layer bound to one event loop."""

    links: list[Link]
    #: declarations, bindings, deletions: one at a time (an AMQP channel error closes the
    #: channel, and must fail only the call that caused it)
    admin: Slot
    admin_lock: asyncio.Lock
    #: consumes the inboxes (no acknowledgements: the broker forgets what it delivered)
    inbox: Slot
    #: sends: ``channel_pool_size`` per link; a destination always uses the same one (FIFO)
    publishers: list[Slot]
    #: group sends, apart: publishing to a deleted exchange closes the channel it used
    group_publishers: list[Slot]
    mailbox: LocalMailbox
    #: what names this event loop's inbox: the client id, ``-<n>`` after it in the instance's
    #: later event loops (each loop consumes an inbox of its own)
    segment: str
    #: this event loop's own inbox queue, and every inbox consumed here -> consumer tag
    own_inbox: str
    inboxes: dict[str, str] = field(default_factory=dict)
    inbox_setup: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: inbox channels whose closing is watched (a weak set: closed ones go away)
    watched: weakref.WeakSet[aiormq.abc.AbstractChannel] = field(default_factory=weakref.WeakSet)
    #: group -> {``!`` channel read here: membership ends at (epoch seconds)}
    members: dict[str, dict[str, float]] = field(default_factory=dict)
    #: group messages this loop sent to groups with members here, until their copy arrives
    echoes: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)
    #: normal queues declared -> loop time of the declaration (redeclared to renew x-expires)
    declared: dict[str, float] = field(default_factory=dict)
    declaring: dict[str, asyncio.Task[int]] = field(default_factory=dict)
    #: link epoch in which the groups exchange was declared (0: not in this one)
    groups_epoch: int = 0
    fetchers: dict[str, Fetcher] = field(default_factory=dict)
    #: ``!`` channels of other processes whose owner said they are full -> until
    blocked: dict[str, float] = field(default_factory=dict)
    #: own ``!`` channels at capacity -> inbox segments of the senders told so
    marked: dict[str, set[str]] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    next_sweep: float = 0.0
    closing: bool = False


def spawn(state: LoopState, coroutine: Awaitable[object]) -> None:
    """Run ``coroutine`` in the background of ``state``'s loop; the layer's ``close()``
    cancels it. Failures are logged (unless the layer is closing)."""

    async def run() -> None:
        await coroutine

    task = asyncio.get_running_loop().create_task(run())
    state.background.add(task)
    task.add_done_callback(_background_done(state))


def _background_done(state: LoopState) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        state.background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not state.closing:
            logger.warning("RabbitMQ layer background task failed: %r", exc)

    return done

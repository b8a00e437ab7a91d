"""The receiving side of the RabbitMQ layer: inboxes, fetchers and the local buffer.

**Inboxes.** A process's ``!`` channels share one queue it alone consumes, without
acknowledgements (the broker forgets what it delivered; nobody else could read it anyway) and
demultiplexed here: direct messages name their channel, group messages arrive once per process
and go to every local member of the group, and membership changes made by other processes
arrive as control entries ahead of any message they route (``wire.py``). ``group_expiry`` is
applied here, when a group message is delivered and in periodic sweeps.

**Capacity of ``!`` channels** is known only here. A direct message that takes a channel to
its capacity is kept (it was already on its way), and its sender, if it has an inbox of its
own, is told ``full`` there; it then refuses further sends to that channel with
``ChannelFull`` without asking the broker, until told ``free`` (when the backlog is down to
half the capacity) or until ``expiry`` passes. A group message for a full member is skipped and
counted in ``stats.group_full`` here, where the member is.

**Fetchers.** A normal channel is consumed only while a receiver here waits on it: a consumer
with ``prefetch`` unacknowledged messages at most, acknowledged when a receiver takes them
(one ``multiple`` ack per tick). With no receiver waiting for ``fetch_idle`` seconds, on
``stop_receiving`` and on ``close``, its AMQP channel is closed, which hands every
unacknowledged message back to the broker, at the head of the queue, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence

import aiormq.abc
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity

from towpath.layers._readers import ReaderGuard, parse_expiry
from towpath.layers.backoff import Backoff
from towpath.layers.base import (
    ChannelLayerError,
    LayerConnectionError,
    LayerStats,
    Message,
    log_group_full,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
)
from towpath.layers.kernel import reconnect_backoff
from towpath.layers.rabbitmq import wire
from towpath.layers.rabbitmq.broker import Broker
from towpath.layers.rabbitmq.link import FAILURES, Link, Slot
from towpath.layers.rabbitmq.state import DROPPED, Consumer, Fetcher, Item, LoopState, spawn
from towpath.layers.serializers import Serializer

__all__ = ["Receiver"]

logger = logging.getLogger("towpath.layers.rabbitmq")

_FAILURES: tuple[type[BaseException], ...] = (*FAILURES, LayerConnectionError)
_RESTORE_FAILURES: tuple[type[BaseException], ...] = (*_FAILURES, ChannelLayerError)


class Receiver:
    """What a RabbitMQ layer does to receive; one per layer instance, given what it uses:
    the ``broker`` (names and calls), the layer's ``stats`` and ``serializer``, ``owns_inbox``
    (whether a ``!`` channel's name is one this layer instance made) and the settings."""

    def __init__(
        self,
        broker: Broker,
        stats: LayerStats,
        serializer: Serializer,
        owns_inbox: Callable[[str], bool],
        *,
        expiry: float,
        group_expiry: float,
        prefetch: int,
        fetch_idle: float,
        retry_timeout: float,
        connect_timeout: float,
    ) -> None:
        self.broker = broker
        self.stats = stats
        self.serializer = serializer
        self.owns_inbox = owns_inbox
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.prefetch = prefetch
        self.fetch_idle = fetch_idle
        self.retry_timeout = retry_timeout
        self.connect_timeout = connect_timeout
        #: drops what the readers cannot read; restarts a fetcher that died of a bug
        self.guard = ReaderGuard(stats, logger)

    # -- the local buffer ----------------------------------------------------------------------

    def deliver_local(self, state: LoopState, channel: str, expires_at: float, data: bytes) -> bool:
        """A message for a ``!`` channel read by this process, from this process: no broker,
        exact capacity. False when the channel is full."""
        capacity = self.broker.capacity_of(channel)
        return state.mailbox.put_within(channel, capacity, expires_at, (data, None, 0))

    def taken(self, state: LoopState, channel: str, item: Item) -> Message | None:
        """A message a receiver just took: acknowledge it, maybe tell senders the channel has
        room again, decode it (None: undecodable, dropped)."""
        data, consumer, tag = item
        if consumer is not None:
            consumer.ack(tag)
        elif channel in state.marked:
            self._maybe_free(state, channel)
        try:
            return self.serializer.deserialize(data)
        except Exception as exc:
            self.guard.dropped(self._reader_of(channel), exc, data)
            return None

    def _reader_of(self, channel: str) -> str:
        """What read ``channel``'s messages (its process's inbox, or its queue), as logged."""
        if "!" in channel:
            return f"the RabbitMQ inbox {self.broker.inbox_of(channel)!r}"
        return f"the RabbitMQ queue {self.broker.queue_of(channel)!r}"

    def expired(self, state: LoopState, channel: str, count: int) -> None:
        self.stats.expired += count
        if channel in state.marked:
            self._maybe_free(state, channel)

    def want(self, state: LoopState, names: Sequence[str]) -> list[str]:
        """Receivers are about to wait on ``names``: keep their normal channels consumed, and
        return the inboxes of their ``!`` channels that are not read here yet."""
        missing: list[str] = []
        now = asyncio.get_running_loop().time()
        for name in names:
            if "!" in name:
                inbox = self.broker.inbox_of(name)
                if inbox not in state.inboxes and inbox not in missing:
                    missing.append(inbox)
                continue
            fetcher = state.fetchers.get(name)
            if fetcher is None or fetcher.stopping or fetcher.task is None or fetcher.task.done():
                fetcher = self._start_fetcher(state, name)
            fetcher.last_wanted = now
        return missing

    def _start_fetcher(self, state: LoopState, channel: str) -> Fetcher:
        fetcher = state.fetchers[channel] = Fetcher(channel, self.broker.queue_of(channel))
        task = fetcher.task = asyncio.get_running_loop().create_task(
            self._fetch(state, fetcher), name=f"towpath-rabbitmq-fetch-{channel}"
        )
        restart = functools.partial(self._restart_fetcher, state, fetcher)
        self.guard.supervise(task, f"RabbitMQ fetcher of {fetcher.queue!r}", restart)
        return fetcher

    def _restart_fetcher(self, state: LoopState, dead: Fetcher) -> bool:
        """A fetcher died of a bug: a new one consumes for the receivers still waiting,
        unless the layer is closing or a receive started one meanwhile."""
        channel = dead.channel
        if state.closing or dead.stopping or channel in state.fetchers:
            return False
        if not state.mailbox.waiting(channel):
            return False  # nobody waits: the next receive starts one
        self._start_fetcher(state, channel).last_wanted = asyncio.get_running_loop().time()
        return True

    # -- inboxes -------------------------------------------------------------------------------

    async def open_inboxes(self, state: LoopState, inboxes: Sequence[str]) -> None:
        """Declare and consume ``inboxes`` not consumed now (concurrent callers, and a restore
        racing a first use, share one attempt)."""
        for inbox in inboxes:
            if state.inboxes.get(inbox):
                continue
            task = state.inbox_setup.get(inbox)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._open_inbox(state, inbox))
                state.inbox_setup[inbox] = task
                task.add_done_callback(functools.partial(_forget_setup, state, inbox))
            await asyncio.shield(task)

    async def _open_inbox(self, state: LoopState, inbox: str) -> None:
        """Declare an inbox and consume it, as its only consumer. Not an *exclusive* queue:
        other processes must be able to bind it to groups (``group_add`` of a channel read
        here); ``auto_delete`` removes it, with its bindings, when this consumer goes away."""
        broker = self.broker
        arguments = broker.inbox_arguments()
        declared = await broker.admin(
            state, lambda ch: ch.queue_declare(inbox, auto_delete=True, arguments=arguments)
        )
        if declared.consumer_count:
            # Checked first: a refused consume would close the channel every inbox uses.
            raise ChannelLayerError(
                f"the process-specific channels of inbox {inbox!r} are read by another "
                "process: only the process that made a '!' channel can receive on it"
            )
        channel = await state.inbox.get()
        if channel not in state.watched:
            state.watched.add(channel)
            channel.closing.add_done_callback(lambda _: self._inbox_channel_closed(state))
        try:
            ok = await channel.basic_consume(
                inbox, functools.partial(self._on_inbox, state), no_ack=True, exclusive=True
            )
        except ChannelAccessRefused as exc:
            raise ChannelLayerError(
                f"the process-specific channels of inbox {inbox!r} are read by another "
                f"process: only the process that made a '!' channel can receive on it ({exc})"
            ) from exc
        except FAILURES as exc:
            raise LayerConnectionError(
                f"RabbitMQ {broker.label}: could not consume {inbox!r} ({exc})"
            ) from exc
        state.inboxes[inbox] = ok.consumer_tag or "?"

    def _inbox_channel_closed(self, state: LoopState) -> None:
        """The channel consuming the inboxes closed. With the connection still up (a channel
        error), consume them again on a new one; after a lost connection the link's
        reconnect does it."""
        link = state.links[0]
        if state.closing or not link.up:
            return
        for inbox in state.inboxes:
            state.inboxes[inbox] = ""
        spawn(state, self.restore(state, link))

    async def restore(self, state: LoopState, link: Link) -> None:
        """After a reconnect: declare and consume the inboxes again (an auto-delete queue dies
        with its consumer's connection; its name comes from the client id, so every ``!``
        channel stays valid) and bind every membership of their channels again."""
        epoch = link.epoch
        delays: Backoff | None = None
        while link.up and link.epoch == epoch and not state.closing:
            try:
                await self.open_inboxes(
                    state, [inbox for inbox, tag in state.inboxes.items() if not tag]
                )
                for group, members in list(state.members.items()):
                    for channel in list(members):
                        await self.broker.bind(state, self.broker.inbox_of(channel), group, channel)
            except _RESTORE_FAILURES as exc:
                # The broker may not have noticed the old connection die yet: its consumer
                # still holds the inbox. It will; retry.
                logger.debug("RabbitMQ %s: restoring inboxes failed: %s", link.label, exc)
                if delays is None:
                    delays = reconnect_backoff()
                await asyncio.sleep(delays.pause())
                continue
            logger.info(
                "RabbitMQ %s: restored %d inbox(es) and %d membership(s) after a reconnect",
                link.label,
                len(state.inboxes),
                sum(len(members) for members in state.members.values()),
            )
            return

    async def _on_inbox(self, state: LoopState, message: aiormq.abc.DeliveredMessage) -> None:
        """Every entry of an inbox: a message, a membership change or a capacity notice. An
        entry that cannot be read is dropped, counted and logged (once per burst); it never
        stops the inbox."""
        try:
            self._dispatch(state, message)
        except Exception as exc:
            self.guard.dropped(f"the RabbitMQ inbox {state.own_inbox!r}", exc, message.body)

    def _ours(self, channel: str) -> str:
        """``channel`` if it is a ``!`` channel this layer instance made, else ``ValueError``:
        an inbox entry naming any other was not written by a towpath process."""
        require_valid_channel_name(channel)
        if "!" not in channel or not self.owns_inbox(non_local_name(channel)):
            raise ValueError(f"{channel!r} is not a channel of this process")
        return channel

    def _dispatch(self, state: LoopState, message: aiormq.abc.DeliveredMessage) -> None:
        body = message.body
        expires_at = parse_expiry(body)
        if expires_at is None:
            raise ValueError("no 13-digit expiry at its head")
        space = body.find(b" ", wire.HEADER)
        if space < 0:
            raise ValueError("no space after its expiry and tag")
        tag = body[wire.HEADER : space]
        now = time.time()
        if not tag or tag[0] == wire.ECHO:
            self._deliver_group(state, message.routing_key or "", expires_at, body[space + 1 :])
            if tag:
                echo = state.echoes.pop(tag, None)
                if echo is not None and not echo.done():
                    echo.set_result(None)
        elif tag[0] == wire.ADD or tag[0] == wire.DISCARD:
            group, _, channel = tag[1:].decode("ascii").partition(",")
            require_valid_group_name(group)
            self._ours(channel)
            members = state.members.setdefault(group, {})
            if tag[0] == wire.ADD:
                members[channel] = expires_at
            else:
                members.pop(channel, None)
                if not members:
                    del state.members[group]
        elif tag[0] == wire.NOTICE:
            channel = require_valid_channel_name(tag[2:].decode("ascii"))
            if tag.startswith(wire.FULL):
                state.blocked[channel] = expires_at
            else:
                state.blocked.pop(channel, None)
        else:
            name, _, sender = tag.partition(b",")
            channel = self._ours(name.decode("ascii"))
            if expires_at <= now:
                self.stats.expired += 1
            else:
                mailbox = state.mailbox
                mailbox.put(channel, expires_at, (body[space + 1 :], None, 0))
                if sender and mailbox.length(channel) >= self.broker.capacity_of(channel):
                    self._mark_full(state, channel, sender.decode())
        if now >= state.next_sweep:
            self._sweep(state, now)

    def _deliver_group(self, state: LoopState, group: str, expires_at: float, data: bytes) -> None:
        members = state.members.get(group)
        if not members:
            return
        now = time.time()
        if expires_at <= now:
            self.stats.expired += len(members)
            return
        mailbox, capacity, full = state.mailbox, self.broker.capacity_of, 0
        for channel, until in list(members.items()):
            if until <= now:
                del members[channel]
                self._unbind_later(state, group, channel)
                continue
            if not mailbox.put_within(channel, capacity(channel), expires_at, (data, None, 0), now):
                full += 1
        reached = len(members)
        if not members:
            del state.members[group]
        if full:
            # at capacity here, where a ``!`` channel's backlog is known
            self.stats.group_full += full
            log_group_full(logger, group, full, reached)

    def _unbind_later(self, state: LoopState, group: str, channel: str) -> None:
        broker = self.broker
        spawn(state, broker.bind(state, broker.inbox_of(channel), group, channel, unbind=True))

    def _sweep(self, state: LoopState, now: float) -> None:
        """Drop expired messages, memberships and full notices."""
        state.next_sweep = now + min(self.expiry, self.group_expiry)
        state.mailbox.sweep(now)
        for group, members in list(state.members.items()):
            for channel in [c for c, until in members.items() if until <= now]:
                del members[channel]
                self._unbind_later(state, group, channel)
            if not members:
                del state.members[group]
        for channel in [c for c, until in state.blocked.items() if until <= now]:
            del state.blocked[channel]

    # -- capacity notices ----------------------------------------------------------------------

    def _mark_full(self, state: LoopState, channel: str, sender: str) -> None:
        told = state.marked.setdefault(channel, set())
        if sender not in told:
            told.add(sender)
            self._notify(state, sender, wire.FULL + channel.encode(), time.time() + self.expiry)

    def _maybe_free(self, state: LoopState, channel: str) -> None:
        if state.mailbox.length(channel) > self.broker.capacity_of(channel) // 2:
            return
        told = state.marked.pop(channel, ())
        for sender in told:
            self._notify(state, sender, wire.FREE + channel.encode(), time.time())

    def _notify(self, state: LoopState, sender: str, tag: bytes, until: float) -> None:
        broker = self.broker
        inbox = broker.inbox_of_segment(sender)
        slot = state.publishers[hash(inbox) % len(state.publishers)]
        spawn(
            state,
            _quietly(
                broker.publish(
                    slot,
                    "",
                    inbox,
                    wire.body(until, tag, b""),
                    mandatory=False,
                    expiration=broker.expiration,
                )
            ),
        )

    # -- fetchers ------------------------------------------------------------------------------

    def _wanted(self, state: LoopState, fetcher: Fetcher) -> bool:
        """A receiver waits on the channel now, or wanted it less than ``fetch_idle`` ago."""
        if fetcher.stopping or state.closing:
            return False
        idle = asyncio.get_running_loop().time() - fetcher.last_wanted
        return state.mailbox.waiting(fetcher.channel) > 0 or idle < self.fetch_idle

    def _waiting(self, state: LoopState, fetcher: Fetcher) -> bool:
        """A receiver waits on the channel now: worth consuming again after a consumer ended
        (a queue deleted by ``flush`` is then declared again, and only then)."""
        if fetcher.stopping or state.closing:
            return False
        return state.mailbox.waiting(fetcher.channel) > 0

    async def _fetch(self, state: LoopState, fetcher: Fetcher) -> None:
        """Keep a consumer on ``fetcher.channel`` while receivers here want it."""
        delays: Backoff | None = None
        link = state.links[0]
        try:
            wanted = self._wanted(state, fetcher)
            while wanted:
                try:
                    consumer = await self._subscribe(state, fetcher)
                except _FAILURES as exc:
                    wanted = self._waiting(state, fetcher)
                    if not wanted:
                        return
                    # An outage is logged by the link; a queue deleted meanwhile is declared
                    # again by the next attempt. Anything else is worth a line.
                    if link.up and not isinstance(exc, ChannelNotFoundEntity):
                        logger.warning("RabbitMQ: consuming %r failed: %r", fetcher.channel, exc)
                    if delays is None:
                        delays = reconnect_backoff()
                    await asyncio.sleep(delays.pause())
                    continue
                delays = None
                while not consumer.ended.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.fetch_idle):
                            await consumer.ended.wait()
                    if not consumer.ended.is_set() and not self._wanted(state, fetcher):
                        await self._release(state, fetcher, consumer)
                        return
                self._ended(state, fetcher, consumer)
                await consumer.slot.close()
                wanted = self._waiting(state, fetcher)
        finally:
            fetcher.started.set()
            if state.fetchers.get(fetcher.channel) is fetcher:
                del state.fetchers[fetcher.channel]
            consumer_left = fetcher.consumer
            if consumer_left is not None and consumer_left.live:
                await self._release(state, fetcher, consumer_left)

    async def _subscribe(self, state: LoopState, fetcher: Fetcher) -> Consumer:
        broker = self.broker
        waiting = await broker.declare_now(state, fetcher.channel)
        slot = Slot(state.links[0], confirms=False)
        channel = await slot.get()
        consumer = Consumer(slot)
        ended = functools.partial(self._ended, state, fetcher, consumer)
        channel.closing.add_done_callback(lambda _: ended())
        channel.on_consumer_cancel_callbacks.add(lambda _: ended())
        fetcher.consumer = consumer
        fetcher.started.set()
        try:
            await channel.basic_qos(prefetch_count=self.prefetch)
            await channel.basic_consume(
                fetcher.queue,
                functools.partial(self._on_delivery, state, fetcher.channel, consumer),
            )
        except BaseException as exc:
            consumer.live = False
            consumer.settled.set()
            if isinstance(exc, ChannelNotFoundEntity):
                state.declared.pop(fetcher.queue, None)  # deleted since: declare it again
            await slot.close()
            raise
        if not waiting:
            consumer.settled.set()
        return consumer

    def unsettled(self, state: LoopState, names: Sequence[str]) -> list[Fetcher]:
        """The fetchers of ``names`` whose consumer is not running and primed yet."""
        starting = []
        for name in names:
            fetcher = state.fetchers.get(name)
            if fetcher is None:
                continue
            consumer = fetcher.consumer
            if consumer is None or not consumer.settled.is_set():
                starting.append(fetcher)
        return starting

    async def settle(self, fetchers: Sequence[Fetcher]) -> None:
        """Before the first of several channels is served: wait (briefly) until each one's
        consumer runs and has delivered its first message, if its queue had any. Otherwise
        the channel whose consumer started first would serve every receive until the others
        caught up, and a worker reading several channels would start unfairly."""
        waits = [asyncio.ensure_future(self._settled(fetcher)) for fetcher in fetchers]
        _, pending = await asyncio.wait(waits, timeout=min(1.0, self.retry_timeout))
        for task in pending:
            task.cancel()

    @staticmethod
    async def _settled(fetcher: Fetcher) -> None:
        await fetcher.started.wait()
        consumer = fetcher.consumer
        if consumer is not None:
            await consumer.settled.wait()

    async def _on_delivery(
        self,
        state: LoopState,
        channel: str,
        consumer: Consumer,
        message: aiormq.abc.DeliveredMessage,
    ) -> None:
        if not consumer.live:
            return  # given back: the broker requeues it when the channel closes
        consumer.settled.set()
        if state.mailbox.waiting(channel):
            # a receiver waited until now: the channel was wanted just now, however long
            # ago that receive began (else the idle check right after it is served would
            # hand back what the next receive of a busy process is about to take)
            fetcher = state.fetchers.get(channel)
            if fetcher is not None:
                fetcher.last_wanted = asyncio.get_running_loop().time()
        body = message.body
        tag = message.delivery_tag or 0
        expires_at = parse_expiry(body)
        space = body.find(b" ", wire.HEADER)
        if expires_at is None or space < 0:
            why = "no 13-digit expiry" if expires_at is None else "no space after its expiry"
            self.guard.dropped(f"the RabbitMQ queue {self.broker.queue_of(channel)!r}", why, body)
            state.mailbox.put(channel, 0.0, (DROPPED, consumer, tag))  # acknowledged in turn
            return
        data = body[space + 1 :]
        # Expired ones too: the buffer drops them in order, so acknowledgements stay in order.
        state.mailbox.put(channel, expires_at, (data, consumer, tag))

    def _ended(self, state: LoopState, fetcher: Fetcher, consumer: Consumer) -> None:
        """The consumer ended under us (broker cancel, channel or connection closed): what it
        buffered is the broker's again (requeued, or gone with a deleted queue)."""
        consumer.ended.set()
        consumer.settled.set()
        if not consumer.live:
            return
        consumer.live = False
        if fetcher.consumer is consumer:
            self.stats.given_back += len(state.mailbox.take(fetcher.channel))

    async def _release(self, state: LoopState, fetcher: Fetcher, consumer: Consumer) -> None:
        """Hand back what ``consumer`` fetched and nobody took: settle what was taken, then
        close its channel (the broker requeues the rest at the head, in order)."""
        if not consumer.live:
            return
        consumer.live = False
        if fetcher.consumer is consumer:
            self.stats.given_back += len(state.mailbox.take(fetcher.channel))
        await consumer.flush_acks()
        await consumer.slot.close()

    def connection_lost(self, state: LoopState, link: Link) -> None:
        for fetcher in list(state.fetchers.values()):
            consumer = fetcher.consumer
            if consumer is not None and consumer.slot.link is link:
                self._ended(state, fetcher, consumer)

    async def stop(self, state: LoopState, channels: Sequence[str]) -> None:
        for channel in channels:
            fetcher = state.fetchers.get(channel)
            if fetcher is None:
                continue
            fetcher.stopping = True
            consumer = fetcher.consumer
            if consumer is not None:
                await self._release(state, fetcher, consumer)

    async def close(self, state: LoopState) -> None:
        """Settle what receivers took; closing the connections gives back the rest."""
        tasks = []
        for fetcher in list(state.fetchers.values()):
            fetcher.stopping = True
            consumer = fetcher.consumer
            if consumer is not None and consumer.live:
                consumer.live = False
                await consumer.flush_acks()
            if fetcher.task is not None:
                fetcher.task.cancel()
                tasks.append(fetcher.task)
        for task in state.inbox_setup.values():
            task.cancel()
            tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.connect_timeout)


def _forget_setup(state: LoopState, inbox: str, task: asyncio.Task[None]) -> None:
    if state.inbox_setup.get(inbox) is task:
        del state.inbox_setup[inbox]
    if not task.cancelled():
        task.exception()  # raised to the callers that awaited it


async def _quietly(call: object) -> None:
    """Await a best-effort publish (a capacity notice); failures only go to the debug log."""
    try:
        await call  # type: ignore[misc]
    except Exception as exc:
        logger.debug("RabbitMQ capacity notice not sent: %r", exc)

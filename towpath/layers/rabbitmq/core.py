"""``RabbitMQChannelLayer``: channels and groups on RabbitMQ (AMQP 0-9-1), via aio-pika.

The mapping (``wire.py`` has the names and the message format):

* a **normal channel** is a durable queue shared by everyone who reads it, with
  ``x-max-length = capacity`` and ``x-overflow = reject-publish``: every publish waits for the
  broker's confirm, so a full queue answers with a nack and ``send`` raises ``ChannelFull``;
* the **``!`` channels** of a process share one queue, its *inbox*, that only it consumes and
  that the broker deletes when the process goes away (``auto_delete``); the process
  demultiplexes it into a local buffer;
* a **group** is a routing key on one direct exchange: a normal member's queue is bound to it,
  a ``!`` member's inbox is bound once per member (the binding's arguments name the member, so
  unbinding one member leaves the others), and ``group_send`` is **one** publish that the
  broker copies to every bound queue, in the same order everywhere;
* ``expiry`` is each message's ``expiration`` (and is checked again by the reader), and the
  capacity of a ``!`` channel is kept by the process that reads it, which tells senders when it
  is full (see ``receiving.py``).

Receives are cancel-safe as in every towpath layer: consumers put deliveries into a local
mailbox and a receive only takes from there, with no ``await`` between taking and returning
(``kernel.MailboxReceiving``).

The layer is composed, and nothing in this package imports this module back: a
:class:`~towpath.layers.rabbitmq.broker.Broker` (names and broker calls) and a
:class:`~towpath.layers.rabbitmq.receiving.Receiver` (inboxes, fetchers, the local buffer),
each given what it uses; every public call runs inside ``self.errors``
(:class:`~towpath.layers.rabbitmq.broker.BrokerErrors`), so aiormq's and aio-pika's exceptions
reach a caller as ``LayerConnectionError`` or ``ChannelLayerError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Iterable, Sequence
from urllib.parse import urlsplit

import aiormq.abc
from aiormq.exceptions import (
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

from towpath.layers.base import (
    ChannelCapacity,
    ChannelFull,
    ChannelLayerError,
    InvalidChannelLayerError,
    LayerConnectionError,
    LayerOptions,
    LayerStats,
    Message,
    require_valid_channel_name,
    require_valid_group_name,
    validate_message,
)
from towpath.layers.kernel import LoopStates, MailboxReceiving, OutageLog, ServerReachability
from towpath.layers.rabbitmq import wire
from towpath.layers.rabbitmq.broker import Broker, BrokerErrors, RabbitMQStats
from towpath.layers.rabbitmq.link import Link, Slot, describe
from towpath.layers.rabbitmq.receiving import Receiver
from towpath.layers.rabbitmq.state import Item, LocalMailbox, LoopState, spawn
from towpath.layers.serializers import build_serializer

__all__ = ["DEFAULT_URL", "RabbitMQChannelLayer", "RabbitMQStats"]

logger = logging.getLogger("towpath.layers.rabbitmq")

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"

_PREFIX = re.compile(r"^[a-zA-Z\d\-_.]+$")

#: the counters of ``LayerStats`` only this layer keeps
_COUNTERS = ("unroutable", "publish_failed", "given_back", "reconnects")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidChannelLayerError(f"{name} must be an int ≥ 1, not {value!r}")
    return value


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidChannelLayerError(f"{name} must be a positive number, not {value!r}")
    return float(value)


def _check_url(url: object) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("amqp", "amqps"):
        raise InvalidChannelLayerError(
            "url must be an AMQP URL such as amqp://guest:guest@rabbitmq:5672/%2F "
            f"(amqps:// for TLS), not {url!r:.80}"
        )
    try:
        describe(url)
    except (ValueError, TypeError) as exc:
        raise InvalidChannelLayerError(f"url {url!r:.80} cannot be parsed: {exc}") from exc
    return url


class RabbitMQChannelLayer(ServerReachability, MailboxReceiving[LoopState, Item]):
    """Channel layer on a RabbitMQ broker (3.8 or later), via aio-pika.

    ``CONFIG``: ``url`` (``amqp://user:password@host:5672/vhost``; ``host`` is accepted as
    channels_rabbitmq's name for it), ``prefix``, ``expiry``, ``group_expiry``, ``capacity``,
    ``channel_capacity``, ``symmetric_encryption_keys``, ``serializer_format``, and:

    * ``connection_pool_size`` (1): AMQP connections per process and event loop; sends are
      spread over them by destination;
    * ``channel_pool_size`` (4): publishing AMQP channels per connection (a destination always
      uses the same one, so FIFO holds);
    * ``retry_timeout`` (10 s): how long an operation waits for an unreachable broker before it
      raises ``LayerConnectionError``; ``connect_timeout`` (5 s) bounds one dial;
    * ``prefetch`` (16): messages of a normal channel a receiving process may hold unreceived;
      ``fetch_idle`` (1 s): after that long with no receiver waiting, it hands them back;
    * ``inbox_capacity`` (``INBOX_CAPACITY_FACTOR`` = 10,000 times ``capacity``, a guard):
      messages a process's inbox may hold at the
      broker (a process that stopped reading); beyond, sends to it raise ``ChannelFull``;
    * ``queue_expiry`` (3600 s): a normal channel's queue nobody declared or read for this
      long is deleted by the broker (``x-expires``; senders renew it), so names used once do
      not pile up.
    """

    concurrent_sends = True  # send_many: every send at once, sharing round trips

    def __init__(
        self,
        url: str | None = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: ChannelCapacity | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        *,
        host: str | None = None,
        connection_pool_size: int = 1,
        channel_pool_size: int = 4,
        retry_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        prefetch: int = 16,
        fetch_idle: float = 1.0,
        inbox_capacity: int | None = None,
        queue_expiry: float = 3600,
    ) -> None:
        super().__init__(LayerOptions.pick(locals()))
        if url is not None and host is not None:
            raise InvalidChannelLayerError(
                "give url or host (channels_rabbitmq's name for the same setting), not both"
            )
        self.url = _check_url(url if url is not None else host if host is not None else DEFAULT_URL)
        self.label = describe(self.url)
        if not isinstance(prefix, str) or not _PREFIX.match(prefix) or len(prefix) > 100:
            raise InvalidChannelLayerError(
                f"prefix must be 1-100 ASCII letters, digits, '-', '_' or '.', not {prefix!r:.120}"
            )
        self.prefix = prefix
        self.connection_pool_size = _positive_int("connection_pool_size", connection_pool_size)
        self.channel_pool_size = _positive_int("channel_pool_size", channel_pool_size)
        self.retry_timeout = _positive_number("retry_timeout", retry_timeout)
        self.connect_timeout = _positive_number("connect_timeout", connect_timeout)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidChannelLayerError(
                f"prefetch must be an int ≥ 1 (AMQP reads 0 as unlimited), not {prefetch!r}"
            )
        self.prefetch = prefetch
        self.fetch_idle = _positive_number("fetch_idle", fetch_idle)
        self.inbox_capacity = self.options.inbox_limit
        self.queue_expiry = _positive_number("queue_expiry", queue_expiry)
        if self.queue_expiry < self.expiry:
            raise InvalidChannelLayerError(
                f"queue_expiry ({queue_expiry!r} s) must be at least expiry ({expiry!r} s): "
                "a queue must outlive the messages in it"
            )
        self.stats = LayerStats(kept=_COUNTERS)
        self._serializer = build_serializer(
            self.options.serializer_format, self.options.symmetric_encryption_keys
        )
        #: names and broker calls, shared by sending (here) and receiving
        self.broker = Broker(
            prefix=prefix,
            label=self.label,
            capacity_of=self.get_capacity,
            inbox_capacity=self.inbox_capacity,
            expiry=self.expiry,
            queue_expiry=self.queue_expiry,
        )
        #: around every public call: aiormq's exceptions leave as towpath's
        self.errors = BrokerErrors(self.label)
        self.receiving = Receiver(
            self.broker,
            self.stats,
            self._serializer,
            self.owns_inbox,
            expiry=self.expiry,
            group_expiry=self.group_expiry,
            prefetch=self.prefetch,
            fetch_idle=self.fetch_idle,
            retry_timeout=self.retry_timeout,
            connect_timeout=self.connect_timeout,
        )
        self._loop_serial = itertools.count()
        self._echo_ids = itertools.count(1)
        self._states: LoopStates[LoopState] = LoopStates(self, self._new_state)

    # -- names ---------------------------------------------------------------------------------

    def queue_of(self, channel: str) -> str:
        """The queue of a normal channel."""
        return self.broker.queue_of(channel)

    def inbox_of(self, channel: str) -> str:
        """The inbox queue of a ``!`` channel: that of the process named in it."""
        return self.broker.inbox_of(channel)

    # -- per-loop state ------------------------------------------------------------------------

    def _state(self) -> LoopState:
        return self._states.current()

    def _outage_logs(self) -> list[OutageLog]:
        return [link.outage for state in self._states.values() for link in state.links]

    def _new_state(self, loop: asyncio.AbstractEventLoop) -> LoopState:
        serial = next(self._loop_serial)
        segment = f"{self.client_prefix}-{serial}" if serial else self.client_prefix
        holder: list[LoopState] = []
        links = [
            Link(
                self.url,
                label=self.label if self.connection_pool_size == 1 else f"{self.label}#{n}",
                connect_timeout=self.connect_timeout,
                retry_timeout=self.retry_timeout,
                on_up=lambda link: self._on_up(holder[0], link),
                on_down=lambda link: self._on_down(holder[0], link),
                client_name=f"towpath {self.prefix} {self.client_prefix}",
            )
            for n in range(self.connection_pool_size)
        ]
        first = links[0]
        state = LoopState(
            links=links,
            admin=Slot(first, confirms=False),
            admin_lock=asyncio.Lock(),
            inbox=Slot(first, confirms=False),
            publishers=[
                Slot(link, confirms=True) for link in links for _ in range(self.channel_pool_size)
            ],
            group_publishers=[Slot(link, confirms=True) for link in links],
            mailbox=LocalMailbox(time.time),
            segment=segment,
            own_inbox=self.broker.inbox_of_segment(segment),
        )
        state.mailbox.on_expired = lambda channel, count: self.receiving.expired(
            state, channel, count
        )
        state.next_sweep = time.time() + self.expiry
        holder.append(state)
        return state

    def _on_up(self, state: LoopState, link: Link) -> None:
        if link.epoch > 1:
            self.stats.reconnects += 1
        if link is state.links[0] and (state.inboxes or state.members):
            spawn(state, self.receiving.restore(state, link))

    def _on_down(self, state: LoopState, link: Link) -> None:
        if link is state.links[0]:
            state.groups_epoch = 0
            for queue in state.inboxes:
                state.inboxes[queue] = ""
        self.receiving.connection_lost(state, link)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        require_valid_channel_name(channel)
        data = self._serializer.serialize(validate_message(message))
        state = self._state()
        try:
            with self.errors:
                if "!" in channel:
                    await self._send_process(state, channel, data)
                else:
                    await self._send_normal(state, channel, data)
        except LayerConnectionError:
            self.stats.publish_failed += 1
            raise

    async def _send_normal(self, state: LoopState, channel: str, data: bytes) -> None:
        broker = self.broker
        queue = broker.queue_of(channel)
        when = state.declared.get(queue)
        if when is None or asyncio.get_running_loop().time() - when >= self.queue_expiry / 2:
            await broker.declare(state, channel)
        payload = wire.body(time.time() + self.expiry, b"", data)
        slot = state.publishers[hash(queue) % len(state.publishers)]
        for _ in range(2):
            try:
                await broker.publish(
                    slot, "", queue, payload, mandatory=True, expiration=broker.expiration
                )
                return
            except PublishError:
                # The queue is gone (a flush elsewhere, x-expires): nothing was routed.
                state.declared.pop(queue, None)
                await broker.declare(state, channel)
            except DeliveryError:
                self.stats.full += 1
                raise ChannelFull(channel) from None
        self.stats.unroutable += 1
        logger.warning("RabbitMQ queue %r vanished twice while sending; message dropped", queue)

    async def _send_process(self, state: LoopState, channel: str, data: bytes) -> None:
        broker = self.broker
        inbox = broker.inbox_of(channel)
        now = time.time()
        if inbox in state.inboxes:
            # A channel read by this very process: straight into its buffer, exact capacity.
            if not self.receiving.deliver_local(state, channel, now + self.expiry, data):
                self.stats.full += 1
                raise ChannelFull(channel)
            return
        until = state.blocked.get(channel)
        if until is not None:
            if until > now:
                self.stats.full += 1
                raise ChannelFull(channel)
            del state.blocked[channel]
        tag = channel.encode()
        if state.own_inbox in state.inboxes:
            tag += b"," + state.segment.encode()  # where its reader can say it is full
        payload = wire.body(now + self.expiry, tag, data)
        slot = state.publishers[hash(inbox) % len(state.publishers)]
        try:
            await broker.publish(
                slot, "", inbox, payload, mandatory=True, expiration=broker.expiration
            )
        except PublishError:
            self.stats.unroutable += 1
            logger.debug(
                "No inbox %r for %r (its process is gone): message dropped", inbox, channel
            )
        except DeliveryError:
            self.stats.full += 1
            raise ChannelFull(channel) from None

    # -- receiving -----------------------------------------------------------------------------

    async def receive(self, channel: str) -> Message:
        with self.errors:
            return await super().receive(channel)

    async def _receive(self, names: tuple[str, ...]) -> tuple[str, Message]:
        with self.errors:
            if len(names) > 1:
                state = self._state()
                receiving = self.receiving
                missing = receiving.want(state, names)
                if missing:
                    await receiving.open_inboxes(state, missing)
                starting = receiving.unsettled(state, names)
                if starting:
                    await receiving.settle(starting)
            return await super()._receive(names)

    def _taken(self, state: LoopState, channel: str, item: Item) -> Message | None:
        return self.receiving.taken(state, channel, item)

    def _wanted(self, state: LoopState, names: tuple[str, ...]) -> Awaitable[None] | None:
        """Keep the normal channels of ``names`` consumed; the inboxes of its ``!`` channels
        that are not read here yet are opened before the receive looks again."""
        missing = self.receiving.want(state, names)
        return self.receiving.open_inboxes(state, missing) if missing else None

    async def stop_receiving(self, channels: Iterable[str]) -> None:
        """Stop consuming the normal ``channels`` and hand what was fetched for them and not
        received back to the broker (it requeues it at the head, in order)."""
        state = self._states.get()
        if state is not None:
            with self.errors:
                await self.receiving.stop(state, [c for c in channels if "!" not in c])

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new ``!`` channel of this process; its inbox is declared and consumed on the first
        call (one queue per process, whatever the number of channels)."""
        state = self._state()
        name = f"{prefix}.{state.segment}!{os.urandom(8).hex()}"
        require_valid_channel_name(name)
        if state.own_inbox not in state.inboxes:
            with self.errors:
                await self.receiving.open_inboxes(state, [state.own_inbox])
        return name

    # -- groups --------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        with self.errors:
            await self._group_add(self._state(), group, channel)

    async def _group_add(self, state: LoopState, group: str, channel: str) -> None:
        broker = self.broker
        if "!" not in channel:
            queue = await broker.declare(state, channel)
            if not await broker.bind(state, queue, group, None):
                state.declared.pop(queue, None)  # deleted meanwhile: once more
                await broker.bind(state, await broker.declare(state, channel), group, None)
            return
        inbox = broker.inbox_of(channel)
        until = time.time() + self.group_expiry
        if inbox in state.inboxes:
            state.members.setdefault(group, {})[channel] = until
        elif not await self._tell_owner(state, inbox, b"+", group, channel, until):
            return  # no such inbox: the process that read the channel is gone
        await broker.bind(state, inbox, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        with self.errors:
            await self._group_discard(self._state(), group, channel)

    async def _group_discard(self, state: LoopState, group: str, channel: str) -> None:
        broker = self.broker
        if "!" not in channel:
            await broker.bind(state, broker.queue_of(channel), group, None, unbind=True)
            return
        inbox = broker.inbox_of(channel)
        if inbox in state.inboxes:
            members = state.members.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del state.members[group]
        elif not await self._tell_owner(state, inbox, b"-", group, channel, time.time()):
            return
        await broker.bind(state, inbox, group, channel, unbind=True)

    async def _tell_owner(
        self, state: LoopState, inbox: str, op: bytes, group: str, channel: str, until: float
    ) -> bool:
        """Queue a membership change in the inbox of the process reading ``channel``, before
        its binding changes: that process learns of it before any message it routes. False
        when the inbox does not exist."""
        tag = b"%b%b,%b" % (op, group.encode(), channel.encode())
        slot = state.publishers[hash(inbox) % len(state.publishers)]
        try:
            await self.broker.publish(
                slot, "", inbox, wire.body(until, tag, b""), mandatory=True, expiration=None
            )
        except PublishError:
            return False
        except DeliveryError:
            raise ChannelLayerError(
                f"could not change the groups of {channel!r}: the inbox of its process is full "
                f"(inbox_capacity {self.inbox_capacity}); that process has stopped reading"
            ) from None
        return True

    async def group_send(self, group: str, message: Message) -> None:
        """Publish once to the group's routing key; the broker copies it to every member's
        queue. A ``!`` member at capacity is skipped where it is read, as the copy arrives.
        When this event loop reads members of the group itself, the call returns once their
        copy has arrived (one more broker hop), so they are judged against their backlog as
        it is when the call is made, not after receives that follow it."""
        require_valid_group_name(group)
        data = self._serializer.serialize(validate_message(message))
        state = self._state()
        tag, echo = b"", None
        if state.members.get(group) and state.own_inbox in state.inboxes:
            tag = b"@%d" % next(self._echo_ids)
            echo = state.echoes[tag] = asyncio.get_running_loop().create_future()
        try:
            await self._publish_group(state, group, wire.body(time.time() + self.expiry, tag, data))
            if echo is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.retry_timeout):
                        await echo
        finally:
            if echo is not None:
                state.echoes.pop(tag, None)

    async def _publish_group(self, state: LoopState, group: str, payload: bytes) -> None:
        broker = self.broker
        slot = state.group_publishers[hash(group) % len(state.group_publishers)]
        try:
            with self.errors:
                for attempt in range(2):
                    try:
                        await broker.ensure_exchange(state)
                        await broker.publish(
                            slot,
                            broker.groups,
                            group,
                            payload,
                            mandatory=False,
                            expiration=broker.expiration,
                        )
                        return
                    except DeliveryError:
                        # At least one normal member's queue was at its length limit; the
                        # others have it. The broker does not say which, nor how many members
                        # the group has.
                        self.stats.group_full += 1
                        logger.info(
                            "at least 1 channel over capacity in group %s (a normal channel's "
                            "queue at its length limit; the broker does not say how many)",
                            group,
                        )
                        return
                    except ChannelNotFoundEntity:
                        if attempt:
                            raise
                        state.groups_epoch = 0  # the exchange was deleted (a flush elsewhere)
        except LayerConnectionError:
            self.stats.publish_failed += 1
            raise

    # -- housekeeping --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete the queues of the normal channels this process used (with their bindings),
        the groups exchange (every membership under ``prefix``), purge this process's inboxes
        and drop what it buffered. RabbitMQ lists nothing by prefix over AMQP, so queues this
        process never touched are left to ``queue_expiry``."""
        state = self._state()
        state.mailbox.clear()
        state.members.clear()
        state.marked.clear()
        state.blocked.clear()
        with self.errors:
            await self._flush(state)
        state.mailbox.clear()

    async def _flush(self, state: LoopState) -> None:
        admin = functools.partial(self.broker.admin, state)
        for queue in list(state.declared):
            await admin(functools.partial(_delete_queue, queue))
        state.declared.clear()
        await admin(functools.partial(_delete_exchange, self.broker.groups))
        state.groups_epoch = 0
        for inbox in [name for name, tag in state.inboxes.items() if tag]:
            try:
                await admin(functools.partial(_purge_queue, inbox))
            except ChannelNotFoundEntity:
                continue

    async def close(self) -> None:
        """Settle what receivers took, close the connections (the broker requeues what was
        fetched and not received, and deletes this process's inboxes) and stop the tasks."""
        loop = asyncio.get_running_loop()
        state = self._states.pop(loop)
        if state is None:
            return
        state.closing = True
        for echo in state.echoes.values():
            if not echo.done():
                echo.set_result(None)
        with self.errors:
            await self.receiving.close(state)
        tasks = list(state.background)
        for task in tasks:
            task.cancel()
        for link in state.links:
            await link.close()
        if tasks:
            await asyncio.wait(tasks, timeout=self.connect_timeout)
        state.mailbox.clear()

    async def close_pools(self) -> None:
        """channels_redis's call, for code written for it: ``close()`` for this event loop.
        The layer stays usable: the next call, in any event loop, connects again."""
        await self.close()
        self._states.forget_closed()

    def __repr__(self) -> str:
        return (
            f"<RabbitMQChannelLayer url={self.label} prefix={self.prefix!r} "
            f"capacity={self.capacity}>"
        )


async def _delete_queue(queue: str, channel: aiormq.abc.AbstractChannel) -> None:
    await channel.queue_delete(queue)


async def _delete_exchange(exchange: str, channel: aiormq.abc.AbstractChannel) -> None:
    await channel.exchange_delete(exchange)


async def _purge_queue(queue: str, channel: aiormq.abc.AbstractChannel) -> None:
    await channel.queue_purge(queue)

"""``RedisPubSubChannelLayer``: channels and groups on Redis Pub/Sub, a drop-in for
``channels_redis.pubsub.RedisPubSubChannelLayer``.

Nothing is stored in Redis. ``send`` PUBLISHes to the Redis channel ``{prefix}__channel__{name}``
and ``group_send`` to ``{prefix}__group__{group}``; every process subscribed to it gets a copy
and hands it to its local receivers. That makes it the lowest-latency layer (one PUBLISH, no
script, no polling) and fire-and-forget: a message for a channel nobody subscribes to right now
is gone, a normal channel is broadcast to every process receiving on it, and there is no
``capacity``/``ChannelFull`` (see docs/redis-pubsub.md for the full list of differences).

Per event loop and per shard (a Redis channel lives on ``shard_for(redis_name, len(hosts))``)
the layer keeps a :class:`~towpath.layers.redis.pubsub_shard.PubSubShard`: a pipelining command
connection for PUBLISH (``connection.Shard``, as the queue layer uses) and a subscription
connection with its reader task, which reconnects and subscribes everything again after a loss.

What the reader receives goes into a local :class:`~towpath.layers._mailbox.Mailbox`, so
``receive``/``receive_many`` are cancel-safe (a cancelled receive took nothing) and fair between
channels. A message is decoded by the receive that takes it: one that cannot be decoded (a wrong
``symmetric_encryption_keys``, bytes no towpath process published) is dropped, counted in
``stats.undecodable`` and logged once per subscription connection per burst, and the next one
is delivered. A subscription reader that dies of an unexpected exception is logged and started
again (``stats.reader_restarts``); see ``towpath/layers/_readers.py``.

Ordering inside one process: a PUBLISH is written only once the SUBSCRIBEs this process has
issued for that Redis channel are confirmed, so a ``send`` following a ``receive`` (or a
``new_channel``/``group_add``) in the same process is never lost to the race between the two
connections. A ``!`` channel this instance made and reads is delivered in-process.

Subscriptions are not leaked: a channel whose last receive was cancelled (its consumer went
away), or that was made by ``new_channel()`` and never read, is unsubscribed once ``expiry``
seconds pass with nobody waiting and nothing buffered for it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from towpath.layers._mailbox import Mailbox
from towpath.layers._readers import ReaderGuard
from towpath.layers.base import (
    BaseChannelLayer,
    ChannelCapacity,
    InvalidChannelLayerError,
    LayerOptions,
    Message,
    require_valid_channel_name,
    require_valid_group_name,
    validate_message,
)
from towpath.layers.kernel import LoopStates, OutageLog, ServerReachability
from towpath.layers.redis.connection import Shard
from towpath.layers.redis.hosts import create_pool, decode_hosts, describe, shard_for
from towpath.layers.redis.pubsub_shard import CLOSE_GRACE, PubSubShard
from towpath.layers.serializers import build_serializer

__all__ = ["RedisPubSubChannelLayer"]

logger = logging.getLogger("towpath.layers.redis.pubsub")

#: ``on_disconnect``/``on_reconnect``: a message type delivered to every local channel (as
#: channels_redis 3 did), or a callable (plain or async) called with no arguments.
Callback: TypeAlias = "str | Callable[[], Any] | None"


@dataclass(eq=False, slots=True)
class _Local:
    """A channel this process subscribes to, and what tells whether anyone still reads it."""

    #: when it was subscribed, or when its last receive was cancelled
    last: float
    received: bool = False
    abandoned: bool = False


@dataclass(eq=False)
class _LoopState:
    """Everything bound to one event loop."""

    shards: list[PubSubShard | None]
    mailbox: Mailbox[bytes]
    #: Redis channel name -> (is a group, channel or group name)
    routes: dict[bytes, tuple[bool, str]] = field(default_factory=dict)
    #: channels subscribed for receiving
    channels: dict[str, _Local] = field(default_factory=dict)
    #: group -> local member channels (an ordered set)
    groups: dict[str, dict[str, None]] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    next_sweep: float = 0.0


class RedisPubSubChannelLayer(ServerReachability, BaseChannelLayer):
    """Channel layer on Redis Pub/Sub (one or more servers, sharded; Sentinel hosts work).

    Same ``CONFIG`` names as channels_redis's ``RedisPubSubChannelLayer``: ``hosts``,
    ``prefix``, ``on_disconnect``, ``on_reconnect``, ``symmetric_encryption_keys``,
    ``serializer_format``.

    ``expiry``, ``group_expiry``, ``capacity`` and ``channel_capacity`` are accepted (and
    checked) so a settings file written for another layer loads, but Redis Pub/Sub stores
    nothing, so none of them applies in Redis: ``send`` never raises ``ChannelFull``.
    ``expiry`` does bound how long a message waits in this process for a receiver before it is
    dropped (counted in ``stats.expired``); memberships never expire.

    towpath's own knobs: ``retry_timeout`` (10 s) is how long a ``send``, ``new_channel`` or
    ``group_add`` waits for an unreachable Redis before raising ``LayerConnectionError``;
    ``command_timeout`` (10 s) how long a written PUBLISH may wait for its reply;
    ``ping_interval`` (30 s, ``None`` to disable) how often an idle subscription connection is
    checked.

    Counters besides ``stats``: ``reconnects`` (subscription connections restored after a
    loss: messages published during the outage were lost) and ``undelivered`` (PUBLISHes no
    subscriber received); ``undecodable`` is ``stats.undecodable`` (messages dropped because
    they did not decode).
    """

    concurrent_sends = True  # send_many: every send at once, sharing round trips

    def __init__(
        self,
        hosts: object = None,
        prefix: str = "asgi",
        on_disconnect: Callback = None,
        on_reconnect: Callback = None,
        *,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: ChannelCapacity | None = None,
        retry_timeout: float = 10.0,
        command_timeout: float = 10.0,
        ping_interval: float | None = 30.0,
    ) -> None:
        super().__init__(LayerOptions.pick(locals()))
        if not isinstance(prefix, str):
            raise InvalidChannelLayerError(f"prefix must be a str, not {prefix!r}")
        for name, callback in (("on_disconnect", on_disconnect), ("on_reconnect", on_reconnect)):
            if callback is not None and not isinstance(callback, str) and not callable(callback):
                raise InvalidChannelLayerError(
                    f"{name} must be a message type (str) or a callable, not {callback!r}"
                )
        for name, value in (("retry_timeout", retry_timeout), ("command_timeout", command_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidChannelLayerError(f"{name} must be a positive number, not {value!r}")
        if ping_interval is not None and (
            isinstance(ping_interval, bool)
            or not isinstance(ping_interval, int | float)
            or ping_interval <= 0
        ):
            raise InvalidChannelLayerError(
                f"ping_interval must be a positive number or None, not {ping_interval!r}"
            )
        self.prefix = prefix
        self.hosts = decode_hosts(hosts)
        self.ring_size = len(self.hosts)
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.retry_timeout = float(retry_timeout)
        self.command_timeout = float(command_timeout)
        self.ping_interval = None if ping_interval is None else float(ping_interval)
        self._local_marker = f".{self.client_prefix}!"
        self._serializer = build_serializer(
            self.options.serializer_format, self.options.symmetric_encryption_keys
        )
        self._states: LoopStates[_LoopState] = LoopStates(self, self._new_state)
        #: Subscription connections restored after a loss (what was published meanwhile is lost).
        self.reconnects = 0
        #: PUBLISHes that reached no subscriber at all.
        self.undelivered = 0
        self._guard = ReaderGuard(self.stats, logger)

    @property
    def undecodable(self) -> int:
        """Received messages dropped because they could not be decoded (``stats.undecodable``,
        under the name this layer gave it first)."""
        return self.stats.undecodable

    # -- channels_redis compatibility ----------------------------------------------------------

    def serialize(self, message: Message) -> bytes:
        return self._serializer.serialize(message)

    def deserialize(self, data: bytes) -> Message:
        return self._serializer.deserialize(data)

    # -- per-loop state and routing ------------------------------------------------------------

    def _new_state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        state = _LoopState([None] * self.ring_size, Mailbox(time.monotonic, self._expired))
        state.next_sweep = time.monotonic() + self._sweep_period
        return state

    def _state(self) -> _LoopState:
        return self._states.current()

    def _outage_logs(self) -> list[OutageLog]:
        return [
            shard.commands.outage
            for state in self._states.values()
            for shard in state.shards
            if shard is not None
        ]

    @property
    def _sweep_period(self) -> float:
        return min(self.expiry, 60.0)

    def _expired(self, channel: str, count: int) -> None:
        self.stats.expired += count

    def _reader_of(self, state: _LoopState, channel: str) -> str:
        """What read ``channel``'s messages: the subscription connection of its shard."""
        index = shard_for(self._channel_key(channel), self.ring_size)
        shard = state.shards[index]
        label = shard.label if shard is not None else describe(self.hosts[index])
        return f"the Redis {label} subscription"

    def _channel_key(self, channel: str) -> str:
        return f"{self.prefix}__channel__{channel}"

    def _group_key(self, group: str) -> str:
        # The same Redis channel channels_redis's pub/sub layer uses for a group.
        return f"{self.prefix}__group__{group}"

    def _shard(self, state: _LoopState, key: str) -> PubSubShard:
        index = shard_for(key, self.ring_size)
        shard = state.shards[index]
        if shard is None:
            host = self.hosts[index]
            pool = create_pool(
                host,
                socket_timeout=None,
                socket_connect_timeout=5,
                protocol=2,
                decode_responses=False,
            )
            commands = Shard(
                index,
                pool,
                describe(host),
                retry_timeout=self.retry_timeout,
                command_timeout=self.command_timeout,
            )
            shard = state.shards[index] = PubSubShard(
                commands,
                guard=self._guard,
                ping_interval=self.ping_interval,
                on_message=lambda key, data: self._dispatch(state, key, data),
                on_lost=lambda: self._notify(state, self.on_disconnect, "on_disconnect"),
                on_restored=lambda: self._restored(state),
            )
        return shard

    # -- sending -------------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """PUBLISH ``message`` to ``channel``: every process subscribed to it right now gets a
        copy; if none is, the message is gone (counted in ``undelivered``)."""
        require_valid_channel_name(channel)
        data = self._serializer.serialize(validate_message(message))
        state = self._state()
        if "!" in channel and channel in state.channels and self._local_marker in channel:
            # A process-specific channel this instance made and still reads: only this process
            # subscribes to it, so it is delivered here without the round trip to Redis.
            state.mailbox.put(channel, time.monotonic() + self.expiry, data)
            return
        await self._publish(state, self._channel_key(channel), data)

    async def _publish(self, state: _LoopState, key: str, data: bytes) -> None:
        receivers = await self._shard(state, key).publish(key.encode(), data)
        if not receivers:
            self.undelivered += 1

    # -- receiving -----------------------------------------------------------------------------

    async def _receive(self, names: tuple[str, ...]) -> tuple[str, Message]:
        """Subscribe to every channel not subscribed yet (they stay subscribed, so a cancelled
        receive loses nothing) and wait for the first message on any of them."""
        state = self._state()
        mailbox = state.mailbox
        self._listen(state, names)
        while True:
            found = mailbox.pop(names)
            if found is not None:
                channel, data = found
                try:
                    return channel, self._serializer.deserialize(data)
                except Exception as exc:
                    self._guard.dropped(self._reader_of(state, channel), exc, data)
                    continue
            try:
                await mailbox.wait(names)
            except asyncio.CancelledError:
                now = time.monotonic()
                for name in names:
                    local = state.channels.get(name)
                    if local is not None and not mailbox.waiting(name):
                        local.abandoned = True
                        local.last = now
                raise
            # A flush (or a reap) may have dropped a subscription this receive still needs.
            self._listen(state, names)

    async def subscribe(self, *channels: str) -> None:
        """Start receiving on ``channels`` now, before the first ``receive``: messages sent to
        them once this returns (the subscriptions are in effect in Redis) are kept for the next
        receive. A worker calls it before it announces that it is ready."""
        for name in channels:
            require_valid_channel_name(name, receive=True)
            if "!" in name:
                self.require_own_channel(name)
        state = self._state()
        self._listen(state, channels)
        await asyncio.gather(*(self._confirmed(state, self._channel_key(n)) for n in channels))

    def _listen(self, state: _LoopState, names: Sequence[str]) -> None:
        """Make sure every channel of ``names`` is subscribed, and note that it is read."""
        channels = state.channels
        for name in names:
            local = channels.get(name)
            if local is None:
                local = self._subscribe_channel(state, name, time.monotonic())
            local.received = True
            local.abandoned = False

    def _subscribe_channel(self, state: _LoopState, name: str, now: float) -> _Local:
        local = state.channels[name] = _Local(now)
        key = self._channel_key(name)
        state.routes[key.encode()] = (False, name)
        self._shard(state, key).subscribe(key.encode())
        return local

    def _forget_channel(self, state: _LoopState, name: str) -> None:
        if state.channels.pop(name, None) is None:
            return
        key = self._channel_key(name)
        state.routes.pop(key.encode(), None)
        self._shard(state, key).unsubscribe(key.encode())

    async def _confirmed(self, state: _LoopState, key: str) -> None:
        """Wait until the subscription to ``key`` is in effect in Redis."""
        await self._shard(state, key).subscribed(key.encode())

    def _dispatch(self, state: _LoopState, key: bytes, data: bytes) -> None:
        """A message arrived on the Redis channel ``key``: hand it to the local receivers."""
        route = state.routes.get(key)
        if route is None:
            return  # unsubscribed while it was on its way
        now = time.monotonic()
        expires_at = now + self.expiry
        is_group, name = route
        mailbox = state.mailbox
        if is_group:
            for member in state.groups.get(name, ()):
                mailbox.put(member, expires_at, data)
        else:
            mailbox.put(name, expires_at, data)
        if now >= state.next_sweep:
            self._housekeep(state, now)

    def _housekeep(self, state: _LoopState, now: float) -> None:
        """Drop expired messages, and unsubscribe channels nobody reads any more: those whose
        last receive was cancelled (the consumer went away) and those never received from,
        once ``expiry`` has passed with nothing buffered and nobody waiting."""
        state.next_sweep = now + self._sweep_period
        mailbox = state.mailbox
        mailbox.sweep(now)
        idle = [
            name
            for name, local in state.channels.items()
            if (local.abandoned or not local.received)
            and now - local.last >= self.expiry
            and not mailbox.waiting(name)
            and not mailbox.length(name)
        ]
        for name in idle:
            self._forget_channel(state, name)

    # -- names and groups ----------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new ``prefix.<client-id>!<random>`` channel, subscribed before it is returned, so a
        message sent to it from anywhere once this returns reaches it."""
        name = self._random_channel_name(prefix)
        require_valid_channel_name(name)
        state = self._state()
        now = time.monotonic()
        if now >= state.next_sweep:
            self._housekeep(state, now)
        self._subscribe_channel(state, name, now)
        try:
            await self._confirmed(state, self._channel_key(name))
        except BaseException:
            self._forget_channel(state, name)
            raise
        return name

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` in this process, and subscribe this process to the
        group's Redis channel (returns once the subscription is in effect)."""
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        key = self._group_key(group)
        members = state.groups.get(group)
        if members is None:
            members = state.groups[group] = {}
            state.routes[key.encode()] = (True, group)
            self._shard(state, key).subscribe(key.encode())
        added = channel not in members
        members[channel] = None
        try:
            await self._confirmed(state, key)
        except BaseException:
            if added:
                self._discard(state, group, channel)
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; the last local member leaving unsubscribes."""
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        self._discard(self._state(), group, channel)

    def _discard(self, state: _LoopState, group: str, channel: str) -> None:
        members = state.groups.get(group)
        if members is None or channel not in members:
            return
        del members[channel]
        if not members:
            del state.groups[group]
            key = self._group_key(group)
            state.routes.pop(key.encode(), None)
            self._shard(state, key).unsubscribe(key.encode())

    async def group_send(self, group: str, message: Message) -> None:
        """One PUBLISH to the group's Redis channel; every process delivers it to its members."""
        require_valid_group_name(group)
        data = self._serializer.serialize(validate_message(message))
        await self._publish(self._state(), self._group_key(group), data)

    # -- connection events ---------------------------------------------------------------------

    def _restored(self, state: _LoopState) -> None:
        self.reconnects += 1
        self._notify(state, self.on_reconnect, "on_reconnect")

    def _notify(self, state: _LoopState, callback: Callback, event: str) -> None:
        if callback is None:
            return
        if isinstance(callback, str):
            # channels_redis 3's form: every local channel gets {"type": callback}.
            data = self._serializer.serialize({"type": callback})
            expires_at = time.monotonic() + self.expiry
            targets = dict.fromkeys(state.channels)
            for members in state.groups.values():
                targets.update(members)
            for name in targets:
                state.mailbox.put(name, expires_at, data)
            return
        try:
            result = callback()
        except Exception:
            logger.exception("%s callback %r failed", event, callback)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            state.tasks.add(task)
            task.add_done_callback(lambda done: _log_callback(state, done, event))

    # -- housekeeping --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Unsubscribe from everything and drop every buffered message and membership of this
        process. (Nothing is stored in Redis.) A receive still waiting subscribes again."""
        state = self._states.get()
        if state is None:
            return
        shards = [shard for shard in state.shards if shard is not None]
        for shard in shards:
            shard.unsubscribe_all()
        state.routes.clear()
        state.channels.clear()
        state.groups.clear()
        # messages already on their way (published before the flush, not yet read) must not
        # be delivered after it: wait until each subscription connection has caught up
        await asyncio.gather(*(shard.barrier() for shard in shards))
        state.mailbox.clear()
        state.mailbox.wake_all()

    async def close(self) -> None:
        """Unsubscribe, stop this loop's reader tasks and close its connections."""
        await self._close_loop()

    async def close_pools(self) -> None:
        """channels_redis's call: ``close()`` for this event loop. The layer stays usable; a
        later receive (in any loop) subscribes again, and what was delivered to this loop and
        not received is dropped, as everything published while nobody is subscribed."""
        await self._close_loop()
        self._states.forget_closed()

    async def _close_loop(self) -> None:
        state = self._states.pop()
        if state is None:
            return
        await asyncio.gather(*(shard.close() for shard in state.shards if shard is not None))
        for task in state.tasks:
            task.cancel()
        if state.tasks:
            await asyncio.wait(state.tasks, timeout=CLOSE_GRACE)
        state.mailbox.clear()

    def __repr__(self) -> str:
        hosts = ", ".join(describe(host) for host in self.hosts)
        return f"<RedisPubSubChannelLayer hosts=[{hosts}] prefix={self.prefix!r}>"


def _log_callback(state: _LoopState, task: asyncio.Future[Any], event: str) -> None:
    if isinstance(task, asyncio.Task):
        state.tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s callback failed", event, exc_info=task.exception())

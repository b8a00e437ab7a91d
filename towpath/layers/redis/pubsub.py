"""``RedisPubSubChannelLayer``: channels and groups on Redis Pub/Sub, a drop-in for
``channels_redis.pubsub.RedisPubSubChannelLayer``.

Nothing is stored in Redis. ``send`` PUBLISHes to the Redis channel ``{prefix}__channel__{name}``
and ``group_send`` to ``{prefix}__group__{group}``; every process subscribed to it gets a copy
and hands it to its local receivers. That makes it the lowest-latency layer (one PUBLISH, no
script, no polling) and fire-and-forget: a message for a channel nobody subscribes to right now
is gone, a normal channel is broadcast to every process receiving on it, and there is no
``capacity``/``ChannelFull`` (see docs/redis-pubsub.md for the full list of differences).

Per event loop and per shard (a Redis channel lives on ``shard_for(redis_name, len(hosts))``)
the layer keeps two connections:

* a *command* connection for PUBLISH: the publishes of one event-loop tick leave in one write,
  pipelined behind those still awaiting their replies, so concurrent senders share round trips
  instead of each waiting for a pooled connection;
* a *subscription* connection with one reader task that blocks on it indefinitely (no socket
  timeout, so an idle subscription never times out), sends a PING every ``ping_interval``
  seconds to notice a half-open connection, and reconnects with exponential back-off and jitter
  when the connection is lost, subscribing every channel and group again.

What the reader receives goes into a local :class:`~towpath.layers._mailbox.Mailbox`, so
``receive``/``receive_many`` are cancel-safe (a cancelled receive took nothing) and fair between
channels. A message is decoded by the receive that takes it: one that cannot be decoded (a wrong
``symmetric_encryption_keys``) is logged and dropped, and the reader never sees it.

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
import contextlib
import inspect
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from towpath.layers._loops import close_with_loop
from towpath.layers._mailbox import Mailbox
from towpath.layers.base import (
    BaseChannelLayer,
    ChannelCapacity,
    InvalidChannelLayerError,
    LayerConnectionError,
    Message,
    require_valid_channel_name,
    require_valid_group_name,
    validate_message,
)
from towpath.layers.redis.connection import CONNECTION_ERRORS, backoff_delays
from towpath.layers.redis.hosts import create_pool, decode_hosts, describe, shard_for
from towpath.layers.serializers import build_serializer

__all__ = ["RedisPubSubChannelLayer"]

logger = logging.getLogger("towpath.layers.redis.pubsub")

#: ``on_disconnect``/``on_reconnect``: a message type delivered to every local channel (as
#: channels_redis 3 did), or a callable (plain or async) called with no arguments.
Callback: TypeAlias = "str | Callable[[], Any] | None"

_SUBSCRIBE = b"SUBSCRIBE"
_UNSUBSCRIBE = b"UNSUBSCRIBE"
_PING = b"PING"
_MAX_NAMES_PER_COMMAND = 1000
_CLOSE_GRACE = 1.0
#: Bound on connecting, handshake included (sockets have no timeout once connected).
_CONNECT_TIMEOUT = 5.0


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

    shards: list[_Shard | None]
    mailbox: Mailbox[bytes]
    #: Redis channel name -> (is a group, channel or group name)
    routes: dict[bytes, tuple[bool, str]] = field(default_factory=dict)
    #: channels subscribed for receiving
    channels: dict[str, _Local] = field(default_factory=dict)
    #: group -> local member channels (an ordered set)
    groups: dict[str, dict[str, None]] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    next_sweep: float = 0.0


class RedisPubSubChannelLayer(BaseChannelLayer):
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
    loss: messages published during the outage were lost), ``undelivered`` (PUBLISHes no
    subscriber received) and ``undecodable`` (messages dropped because they did not decode).
    """

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
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
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
        self._serializer = build_serializer(serializer_format, symmetric_encryption_keys)
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        #: Subscription connections restored after a loss (what was published meanwhile is lost).
        self.reconnects = 0
        #: PUBLISHes that reached no subscriber at all.
        self.undelivered = 0
        #: Received messages dropped because they could not be decoded.
        self.undecodable = 0

    # -- channels_redis compatibility ----------------------------------------------------------

    def serialize(self, message: Message) -> bytes:
        return self._serializer.serialize(message)

    def deserialize(self, data: bytes) -> Message:
        return self._serializer.deserialize(data)

    # -- per-loop state and routing ------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = _LoopState([None] * self.ring_size, Mailbox(time.monotonic, self._expired))
            state.next_sweep = time.monotonic() + self._sweep_period
            self._states[loop] = state
            close_with_loop(loop, self)
        return state

    @property
    def _sweep_period(self) -> float:
        return min(self.expiry, 60.0)

    def _expired(self, channel: str, count: int) -> None:
        self.stats.expired += count

    def _channel_key(self, channel: str) -> str:
        return f"{self.prefix}__channel__{channel}"

    def _group_key(self, group: str) -> str:
        # The same Redis channel channels_redis's pub/sub layer uses for a group.
        return f"{self.prefix}__group__{group}"

    def _shard(self, state: _LoopState, key: str) -> _Shard:
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
            shard = state.shards[index] = _Shard(self, state, pool, describe(host))
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

    async def send_many(self, messages: Iterable[tuple[str, Message]]) -> list[str]:
        """Every PUBLISH is issued at once, so they share round trips; order per channel holds.
        Nothing is ever full: the result is always empty."""
        results = await asyncio.gather(
            *(self.send(channel, message) for channel, message in messages),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return []

    async def _publish(self, state: _LoopState, key: str, data: bytes) -> None:
        receivers = await self._shard(state, key).publish(key.encode(), data)
        if not receivers:
            self.undelivered += 1

    # -- receiving -----------------------------------------------------------------------------

    async def receive_many(self, channels: Iterable[str]) -> tuple[str, Message]:
        """Subscribe to every channel not subscribed yet (they stay subscribed, so a cancelled
        receive loses nothing) and wait for the first message on any of them."""
        names = tuple(channels)
        if not names:
            raise TypeError("receive_many() needs at least one channel name")
        for name in names:
            require_valid_channel_name(name, receive=True)
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
                    self.undecodable += 1
                    logger.error(
                        "Dropped a message on %r that could not be decoded (%s: %s); "
                        "check symmetric_encryption_keys and serializer_format",
                        channel,
                        type(exc).__name__,
                        exc,
                    )
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
        shard = self._shard(state, key)
        pending = shard.confirmation(key.encode())
        if pending is None:
            return
        try:
            async with asyncio.timeout(self.retry_timeout):
                await asyncio.shield(pending)
        except TimeoutError:
            raise LayerConnectionError(
                f"Redis {shard.label}: could not subscribe to {key!r} "
                f"within {self.retry_timeout:g} s"
            ) from None

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
        state = self._states.get(asyncio.get_running_loop())
        if state is None:
            return
        for shard in state.shards:
            if shard is not None:
                shard.unsubscribe_all()
        state.routes.clear()
        state.channels.clear()
        state.groups.clear()
        state.mailbox.clear()
        state.mailbox.wake_all()

    async def close(self) -> None:
        """Unsubscribe, stop this loop's reader tasks and close its connections."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is None:
            return
        await asyncio.gather(*(shard.close() for shard in state.shards if shard is not None))
        for task in state.tasks:
            task.cancel()
        if state.tasks:
            await asyncio.wait(state.tasks, timeout=_CLOSE_GRACE)
        state.mailbox.clear()

    def __repr__(self) -> str:
        hosts = ", ".join(describe(host) for host in self.hosts)
        return f"<RedisPubSubChannelLayer hosts=[{hosts}] prefix={self.prefix!r}>"


def _log_callback(state: _LoopState, task: asyncio.Future[Any], event: str) -> None:
    if isinstance(task, asyncio.Task):
        state.tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s callback failed", event, exc_info=task.exception())


# -- one shard ---------------------------------------------------------------------------------


_Batch: TypeAlias = list[tuple[bytes, bytes, "asyncio.Future[int]"]]


class _Shard:
    """One Redis server as one event loop sees it: a pipelined PUBLISH connection and a
    subscription connection with its reader task."""

    def __init__(
        self,
        layer: RedisPubSubChannelLayer,
        state: _LoopState,
        pool: ConnectionPool,
        label: str,
    ) -> None:
        self.layer = layer
        self.state = state
        self.pool = pool
        self.label = label
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        # publishing
        self._pub_queue: _Batch = []
        self._pub_kicked = False
        self._pub_slow: asyncio.Task[None] | None = None
        self._pub_conn: AbstractConnection | None = None
        self._pub_waiting: deque[asyncio.Future[int]] = deque()
        self._pub_reader: asyncio.Task[None] | None = None
        self._pub_started: float | None = None
        self._pub_watchdog: asyncio.TimerHandle | None = None
        self._pub_timed_out = False
        # subscribing
        self.wanted: set[bytes] = set()
        self.active: set[bytes] = set()
        self._inflight: dict[bytes, int] = {}
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._outgoing: list[tuple[bytes, bytes | None]] = []
        self._sub_writer: asyncio.Task[None] | None = None
        self._sub_conn: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reading = False
        self._awaiting_marker = False
        self._reconnected = False
        self._delays: Iterator[float] | None = None
        self._pings_out = 0
        self._keepalive: asyncio.TimerHandle | None = None

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- publishing ----------------------------------------------------------------------------
    #
    # PUBLISHes are written by a callback scheduled with call_soon (so a task that was already
    # scheduled, a receive about to subscribe say, runs first), all those queued by then in one
    # write, without waiting for the replies to earlier ones: one reader task per connection
    # resolves the senders' futures in order. Anything that needs waiting (no connection yet, a
    # subscription of this process still being confirmed) goes through a task instead, and
    # later publishes queue behind it so the order per channel holds.

    def publish(self, key: bytes, data: bytes) -> asyncio.Future[int]:
        """Queue a PUBLISH; the future resolves with the number of subscribers reached."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if self.closed:
            future.set_exception(LayerConnectionError(f"Redis {self.label}: the layer is closed"))
            return future
        self._pub_queue.append((key, data, future))
        if not self._pub_kicked and self._pub_slow is None:
            self._pub_kicked = True
            loop.call_soon(self._pub_kick)
        return future

    def _pub_kick(self) -> None:
        self._pub_kicked = False
        if self._pub_slow is not None or not self._pub_queue or self.closed:
            return
        connection = self._pub_conn
        if (
            connection is None
            or _at_eof(connection)
            or any(self.confirmation(key) is not None for key, _, _ in self._pub_queue)
            or not self._pub_write(connection)
        ):
            self._pub_slow = self._spawn(
                self._pub_prepare(), f"towpath-pubsub-publish-{self.label}"
            )

    def _pub_write(self, connection: AbstractConnection) -> bool:
        """Write everything queued on ``connection``; False if it has no live stream."""
        writer = getattr(connection, "_writer", None)
        if not isinstance(writer, asyncio.StreamWriter) or writer.transport.is_closing():
            return False
        batch = [entry for entry in self._pub_queue if not entry[2].done()]  # not cancelled
        self._pub_queue = []
        if not batch:
            return True
        writer.write(b"".join([_pack_publish(key, data) for key, data, _ in batch]))
        loop = asyncio.get_running_loop()
        waiting = self._pub_waiting
        if not waiting:
            self._pub_started = loop.time()
        waiting.extend(future for _, _, future in batch)
        if self._pub_watchdog is None:
            self._pub_watchdog = loop.call_later(self.layer.command_timeout, self._pub_watch)
        if self._pub_reader is None:
            self._pub_reader = self._spawn(
                self._pub_read(connection, waiting), f"towpath-pubsub-replies-{self.label}"
            )
        return True

    async def _pub_read(
        self, connection: AbstractConnection, waiting: deque[asyncio.Future[int]]
    ) -> None:
        """Read the replies to the PUBLISHes written on ``connection``, in order."""
        loop = asyncio.get_running_loop()
        try:
            while waiting:
                try:
                    reply = await connection.read_response(timeout=math.inf)
                except ResponseError as exc:
                    future = waiting.popleft()
                    if not future.done():
                        future.set_exception(exc)
                    continue
                future = waiting.popleft()
                if not future.done():
                    future.set_result(int(reply))
                self._pub_started = loop.time() if waiting else None
        except BaseException as exc:
            if self._pub_conn is connection:
                self._pub_conn = None
                self._pub_waiting = deque()
                self._pub_started = None
            if self.closed:
                reason = "the layer was closed"
            elif self._pub_timed_out:
                reason = f"no reply within command_timeout={self.layer.command_timeout:g} s"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            self._pub_timed_out = False
            error = LayerConnectionError(
                f"Redis {self.label}: connection lost while publishing ({reason}); "
                "the message may or may not have been sent"
            )
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_exception(error)
            await asyncio.shield(_discard(connection))
            if not isinstance(exc, Exception):
                raise
            if self._pub_queue and not self._pub_kicked and self._pub_slow is None:
                self._pub_kicked = True
                loop.call_soon(self._pub_kick)
        finally:
            if self._pub_reader is asyncio.current_task():
                self._pub_reader = None

    async def _pub_prepare(self) -> None:
        """Wait for what the queued PUBLISHes need (a connection, this process's pending
        subscriptions to their channels), then write them; publishes queued meanwhile follow."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.layer.retry_timeout
        try:
            while self._pub_queue and not self.closed:
                # Subscriptions this process has asked for must be in effect before its own
                # publishes to them are written: the two go over different connections.
                pending = {
                    confirmation
                    for key in {key for key, _, _ in self._pub_queue}
                    if (confirmation := self.confirmation(key)) is not None
                }
                left = deadline - loop.time()
                if pending and left > 0:
                    await asyncio.wait(pending, timeout=left)
                    continue
                try:
                    connection = await self._pub_connect(deadline)
                except LayerConnectionError as exc:
                    queued, self._pub_queue = self._pub_queue, []
                    _fail(queued, exc)
                    return
                if not self._pub_write(connection):
                    self._pub_conn = None
                    self._pub_waiting = deque()
                    await _discard(connection)
        finally:
            self._pub_slow = None
            if self.closed:
                queued, self._pub_queue = self._pub_queue, []
                _fail(queued, LayerConnectionError(f"Redis {self.label}: the layer is closed"))

    async def _pub_connect(self, deadline: float) -> AbstractConnection:
        current = self._pub_conn
        if current is not None:
            if current.is_connected and not _at_eof(current):
                return current
            # Closed by the server (a restart) before we wrote anything: reconnect first, so
            # the publish is not lost for nothing.
            self._pub_conn = None
            self._pub_waiting = deque()
            await _discard(current)
        loop = asyncio.get_running_loop()
        delays = backoff_delays()
        while True:
            if self.closed:
                raise LayerConnectionError(f"Redis {self.label}: the layer is closed")
            connection: AbstractConnection = self.pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):  # the handshake has no timeout
                    await connection.connect()  # type: ignore[no-untyped-call]
            except CONNECTION_ERRORS as exc:
                await _discard(connection)
                delay = next(delays)
                if loop.time() + delay > deadline:
                    raise LayerConnectionError(
                        f"Redis {self.label} unreachable for {self.layer.retry_timeout:g} s: {exc}"
                    ) from exc
                logger.warning("Redis %s unreachable (%s); retrying", self.label, exc)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                await asyncio.shield(_discard(connection))
                raise
            self._pub_conn = connection
            self._pub_waiting = deque()
            self._pub_reader = None
            return connection

    def _pub_watch(self) -> None:
        """Break the PUBLISH connection when a reply has been awaited ``command_timeout``
        seconds (a hung server); re-armed while replies are awaited, silent otherwise. A
        watchdog rather than a timeout per batch: arming and cancelling a timer for every
        batch costs more than a loopback round trip."""
        self._pub_watchdog = None
        started = self._pub_started
        if started is None or self.closed:
            return
        loop = asyncio.get_running_loop()
        left = started + self.layer.command_timeout - loop.time()
        if left > 0:
            self._pub_watchdog = loop.call_later(left, self._pub_watch)
        elif self._pub_conn is not None:
            self._pub_timed_out = True
            _abort(self._pub_conn)

    # -- subscribing ---------------------------------------------------------------------------

    def subscribe(self, key: bytes) -> None:
        """Want ``key`` subscribed (now, and after every reconnect)."""
        if key in self.wanted or self.closed:
            return
        self.wanted.add(key)
        self._queue(_SUBSCRIBE, key)
        if self._reader is None or self._reader.done():
            self._reader = self._spawn(self._read_loop(), f"towpath-pubsub-reader-{self.label}")

    def unsubscribe(self, key: bytes) -> None:
        if key not in self.wanted:
            return
        self.wanted.discard(key)
        self.active.discard(key)
        _resolve(self._confirmations.pop(key, None))
        self._queue(_UNSUBSCRIBE, key)

    def unsubscribe_all(self) -> None:
        for key in list(self.wanted):
            self.unsubscribe(key)

    def confirmation(self, key: bytes) -> asyncio.Future[None] | None:
        """A future resolved once the subscription to ``key`` is in effect; ``None`` when it is
        already, or when ``key`` is not wanted."""
        if key in self.active or key not in self.wanted:
            return None
        future = self._confirmations.get(key)
        if future is None:
            future = self._confirmations[key] = asyncio.get_running_loop().create_future()
        return future

    def _queue(self, command: bytes, key: bytes | None) -> None:
        """Queue a command for the subscription connection; dropped when there is none (the
        next connection subscribes everything wanted)."""
        if self._sub_conn is None:
            return
        self._outgoing.append((command, key))
        if key is not None:
            self._inflight[key] = self._inflight.get(key, 0) + 1
        if self._sub_writer is None:
            self._sub_writer = self._spawn(self._write(), f"towpath-pubsub-writer-{self.label}")

    async def _write(self) -> None:
        try:
            while self._outgoing:
                batch, self._outgoing = self._outgoing, []
                connection = self._sub_conn
                if connection is None or not connection.is_connected:
                    return
                try:
                    await connection.send_packed_command(
                        connection.pack_commands(_merge(batch)), check_health=False
                    )
                except Exception as exc:
                    # The reader notices the broken connection and reconnects.
                    logger.debug("Redis %s: subscription write failed: %s", self.label, exc)
                    _abort(connection)
                    return
        finally:
            self._sub_writer = None

    async def _read_loop(self) -> None:
        """Keep a subscription connection: connect, subscribe everything wanted, dispatch what
        arrives; on a loss, back off (exponentially, with jitter) and do it again."""
        lost = False
        while not self.closed:
            if lost or self._delays is not None:
                self._delays = self._delays or backoff_delays()
                await asyncio.sleep(next(self._delays))
                if self.closed:
                    return
            connection = self.pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):  # the handshake has no timeout
                    await connection.connect()
            except Exception as exc:
                await _discard(connection)
                if not self.closed:
                    self._delays = self._delays or backoff_delays()
                    logger.warning(
                        "Redis %s: cannot subscribe (%s: %s); retrying",
                        self.label,
                        type(exc).__name__,
                        exc,
                    )
                continue
            except BaseException:
                await asyncio.shield(_discard(connection))
                raise
            self._connected(connection, reconnected=lost)
            lost = False
            try:
                self._reading = True
                while True:
                    try:
                        reply = await connection.read_response(timeout=math.inf)
                    except ResponseError as exc:
                        logger.error("Redis %s: subscription error: %s", self.label, exc)
                        continue
                    self._pings_out = 0
                    self._handle(reply)
            except Exception as exc:
                if not self.closed:
                    logger.warning(
                        "Redis %s: subscription connection lost (%s: %s); reconnecting",
                        self.label,
                        type(exc).__name__,
                        exc,
                    )
                    lost = True
            finally:
                self._reading = False
                self._disconnected()
                await asyncio.shield(_discard(connection))
            if lost:
                self.layer._notify(self.state, self.layer.on_disconnect, "on_disconnect")

    def _connected(self, connection: AbstractConnection, *, reconnected: bool) -> None:
        self._sub_conn = connection
        self.active.clear()
        self._inflight.clear()
        self._outgoing.clear()
        for key in self.wanted:
            self._queue(_SUBSCRIBE, key)
        # The PONG to this PING says every SUBSCRIBE before it is in effect.
        self._queue(_PING, None)
        self._awaiting_marker = True
        self._reconnected = reconnected
        self._pings_out = 0
        self._schedule_keepalive()

    def _disconnected(self) -> None:
        self._sub_conn = None
        self.active.clear()
        self._inflight.clear()
        self._outgoing.clear()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _handle(self, reply: Any) -> None:
        # Outside subscribe mode (nothing subscribed) a PING is answered with a plain PONG.
        kind = reply[0] if isinstance(reply, list) else b"pong" if reply == b"PONG" else None
        if kind == b"message":
            self.layer._dispatch(self.state, reply[1], reply[2])
        elif kind in (b"subscribe", b"unsubscribe"):
            key = reply[1]
            remaining = self._inflight.get(key, 0) - 1
            if remaining > 0:
                self._inflight[key] = remaining
                return
            self._inflight.pop(key, None)
            if key in self.wanted:
                self.active.add(key)
                _resolve(self._confirmations.pop(key, None))
        elif kind == b"pong" and self._awaiting_marker:
            self._awaiting_marker = False
            self._delays = None  # a healthy connection: the next loss retries at once
            if self._reconnected:
                self._reconnected = False
                self.layer.reconnects += 1
                logger.info("Redis %s: subscriptions restored", self.label)
                self.layer._notify(self.state, self.layer.on_reconnect, "on_reconnect")

    def _schedule_keepalive(self) -> None:
        interval = self.layer.ping_interval
        if interval is not None:
            loop = asyncio.get_running_loop()
            self._keepalive = loop.call_later(interval, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        """PING an idle subscription; two PINGs without any reply mean the connection is dead
        (a half-open TCP connection never errors by itself): break it so the reader reconnects."""
        self._keepalive = None
        connection = self._sub_conn
        if connection is None:
            return
        if self._pings_out >= 2:
            logger.warning("Redis %s: subscription connection does not answer", self.label)
            _abort(connection)
            return
        self._pings_out += 1
        self._queue(_PING, None)
        self._schedule_keepalive()

    # -- closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        self.closed = True
        if self._sub_conn is not None and self.wanted:
            # Leave politely; the connection closes right after anyway.
            self.unsubscribe_all()
        self.wanted.clear()
        for future in self._confirmations.values():
            _resolve(future)
        self._confirmations.clear()
        reader = self._reader
        if reader is not None and not reader.done():
            if self._reading and self._sub_conn is not None:
                # Wait for the UNSUBSCRIBEs to be written, then break the read from outside
                # rather than cancelling deep inside redis-py.
                if self._sub_writer is not None:
                    await asyncio.wait([self._sub_writer], timeout=_CLOSE_GRACE)
                _abort(self._sub_conn)
            else:
                reader.cancel()
            await asyncio.wait([reader], timeout=_CLOSE_GRACE)
            if not reader.done():
                reader.cancel()
                await asyncio.wait([reader], timeout=_CLOSE_GRACE)
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE)
        for handle in (self._keepalive, self._pub_watchdog):
            if handle is not None:
                handle.cancel()
        self._keepalive = self._pub_watchdog = None
        for connection in (self._pub_conn, self._sub_conn):
            if connection is not None:
                await _discard(connection)
        self._pub_conn = self._sub_conn = None
        with contextlib.suppress(Exception):
            await self.pool.disconnect()
        # A Sentinel pool also holds clients connected to each sentinel.
        manager = getattr(self.pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            with contextlib.suppress(Exception):
                await sentinel.aclose()


def _merge(batch: list[tuple[bytes, bytes | None]]) -> list[list[bytes]]:
    """Consecutive (UN)SUBSCRIBEs become one command each (in order, so per-name order holds)."""
    commands: list[list[bytes]] = []
    for command, key in batch:
        if key is None:
            commands.append([command])
        elif (
            commands and commands[-1][0] == command and len(commands[-1]) <= _MAX_NAMES_PER_COMMAND
        ):
            commands[-1].append(key)
        else:
            commands.append([command, key])
    return commands


def _pack_publish(key: bytes, data: bytes) -> bytes:
    """``PUBLISH key data`` in RESP, without redis-py's general-purpose packer."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(data), data)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _fail(batch: _Batch, error: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)


def _at_eof(connection: AbstractConnection) -> bool:
    reader = getattr(connection, "_reader", None)
    return isinstance(reader, asyncio.StreamReader) and reader.at_eof()


def _abort(connection: AbstractConnection) -> None:
    """Break a connection from outside: a read in progress fails at once."""
    writer = getattr(connection, "_writer", None)
    if writer is not None:
        writer.transport.abort()


async def _discard(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.disconnect(nowait=True)
